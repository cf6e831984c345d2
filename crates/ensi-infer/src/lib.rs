//! Encrypted BitNet inference (ENSI). Built in later issues.
