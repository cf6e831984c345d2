//! The network face of ENSI: an HTTP server that holds evaluation keys and runs encrypted
//! inference, and the client that talks to it.
//!
//! The protocol is small:
//!
//! 1. `GET /v1/info`: the client learns the server's parameters (preset, packing, model).
//! 2. `POST /v1/sessions` with the evaluation keys (gigabytes, streamed): the server checks
//!    them, stores them and answers a session id.
//! 3. `POST /v1/sessions/{id}/infer` with an encrypted input, as many times as wanted: the
//!    server answers the encrypted output. It never sees a secret key or a plaintext.
//!
//! The server is generic over a [`Backend`] (the encrypted model), so this crate knows nothing
//! of CKKS and is tested with a fake backend. Routes, limits, error codes and the storage layout
//! are documented in [`server`]; the client is [`Client`].
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod backend;
pub mod client;
pub mod server;
mod store;
pub mod wire;

pub use backend::{Backend, BackendError};
pub use client::{Client, ClientError};
pub use server::{serve, Server, ServerConfig, ServerError, BUSY_RETRY_AFTER_SECS};
pub use wire::{ErrorBody, ErrorDetail, SessionCreated};
