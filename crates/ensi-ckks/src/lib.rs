//! RNS-CKKS.
