//! The seam between the HTTP layer and the encrypted model.
//!
//! The server knows nothing of CKKS: it moves opaque bytes (evaluation keys, encrypted inputs,
//! encrypted outputs) between the network, the disk and a [`Backend`]. The real backend (the
//! encrypted BitNet) lives in other crates; the tests use a fake one.

/// What the server needs from the encrypted model.
///
/// Every method is synchronous and may take long: the server calls [`Backend::load_keys`] and
/// [`Backend::infer`] on Tokio's blocking thread pool, never on the async workers.
pub trait Backend: Send + Sync + 'static {
    /// Loaded, validated evaluation keys of one session (large: gigabytes at real parameters).
    type Keys: Send + Sync + 'static;
    /// What a client must know to talk to this server (parameter preset name, packing layout, model name...),
    /// returned by GET /v1/info and in the session-creation answer.
    fn info(&self) -> serde_json::Value;
    /// Reads and validates a key file written by the upload (checks it against the server's parameters).
    fn load_keys(&self, path: &std::path::Path) -> Result<Self::Keys, BackendError>;
    /// Runs one inference: encrypted input bytes in, encrypted output bytes out. Long (seconds to minutes).
    fn infer(&self, keys: &Self::Keys, input: &[u8]) -> Result<Vec<u8>, BackendError>;
}

/// Why a backend refused or failed; each variant becomes one HTTP status and one JSON error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The uploaded (or stored) evaluation keys are malformed or do not match the server's
    /// parameters. HTTP 422, code `bad_keys`.
    #[error("bad evaluation keys: {0}")]
    BadKeys(String),
    /// The encrypted input is malformed or does not fit the session's keys or the model.
    /// HTTP 422, code `bad_input`.
    #[error("bad encrypted input: {0}")]
    BadInput(String),
    /// The server itself failed (I/O, a bug). HTTP 500, code `internal`.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BackendError {
    /// The machine-readable code sent in the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            BackendError::BadKeys(_) => "bad_keys",
            BackendError::BadInput(_) => "bad_input",
            BackendError::Internal(_) => "internal",
        }
    }
}
