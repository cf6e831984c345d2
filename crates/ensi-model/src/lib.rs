//! BitNet b1.58 models in plaintext.
