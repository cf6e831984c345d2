//! JSON bodies exchanged by the server and the client (the bytes of keys, inputs and outputs
//! travel raw, as `application/octet-stream`).

use serde::{Deserialize, Serialize};

/// Answer of `POST /v1/sessions` (HTTP 201).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCreated {
    /// The new session's id: 32 lowercase hex digits (128 random bits).
    pub session_id: String,
    /// The backend's description, the same as `GET /v1/info`.
    pub info: serde_json::Value,
}

/// Body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// A machine-readable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code a client may branch on: `bad_session_id`, `upload_interrupted`, `not_found`,
    /// `payload_too_large`, `bad_keys`, `bad_input`, `internal`, `busy`.
    pub code: String,
    /// Explanation for a person.
    pub message: String,
}
