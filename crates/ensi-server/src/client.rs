//! The HTTP client: what the `ensi` command line (or any Rust program) uses to talk to a server.
//!
//! It mirrors the routes of [`crate::server`]. Key files are streamed from disk, never read
//! whole, and the upload reports its progress. Every error answer of the server comes back as
//! [`ClientError::Server`] with the server's code, so a caller can branch on `busy` and retry.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Body, Response, Url};
use tokio_util::io::ReaderStream;

use crate::store::SessionId;
use crate::wire::{ErrorBody, SessionCreated};

/// Read size of key uploads: large enough that a 4 GB file is a few thousand reads.
const UPLOAD_READ_CHUNK: usize = 1 << 20;

/// How much of a non-JSON error body is kept in [`ClientError::Server`]'s message.
const MAX_RAW_ERROR_CHARS: usize = 500;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL given to [`Client::new`] is not an absolute http(s) URL.
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The session id is not one a server hands out (32 lowercase hex digits); refused before
    /// sending, since URLs cannot carry some texts (`..`) as one path segment.
    #[error("invalid session id {0:?}")]
    BadSessionId(String),
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No answer: connection refused or broken, or a body that could not be read.
    #[error("HTTP transport failed: {0}")]
    Transport(#[source] reqwest::Error),
    /// The server answered with an error status.
    #[error("server answered {status} {code}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's error code (`busy`, `bad_keys`, `not_found`, ...), or `http_<status>`
        /// when the body was not the server's JSON error.
        code: String,
        /// The server's message.
        message: String,
        /// Seconds the server asked to wait before retrying (`Retry-After`), if it said.
        retry_after_secs: Option<u64>,
    },
    /// The server answered success with a body this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, if the server answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when every inference slot of the server was taken: retrying later may succeed.
    pub fn is_busy(&self) -> bool {
        self.code() == Some("busy")
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError::Transport(e)
    }
}

/// A client of one ENSI server. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    /// A client of the server at `base_url`, e.g. `http://127.0.0.1:8080` (a path prefix such
    /// as `http://host/ensi/` is kept).
    pub fn new(base_url: &str) -> Result<Client, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            url: base_url.to_owned(),
            reason,
        };
        let mut base = Url::parse(base_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad("not an http URL".into()));
        }
        // Paths are appended segment by segment; a trailing empty segment would add "//".
        base.path_segments_mut()
            .map_err(|()| bad("not an http URL".into()))?
            .pop_if_empty();
        // No timeout: uploads of gigabytes and inferences of minutes are normal.
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Client { http, base })
    }

    /// The URL of a route, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        url
    }

    /// `GET /health`: succeeds if the server answers `{"status":"ok"}`.
    pub async fn health(&self) -> Result<(), ClientError> {
        let response = check(self.http.get(self.url(&["health"])).send().await?).await?;
        let body: serde_json::Value = json(response).await?;
        if body["status"] == "ok" {
            Ok(())
        } else {
            Err(ClientError::Protocol(format!("health answered {body}")))
        }
    }

    /// `GET /v1/info`: what the server's backend says about itself.
    pub async fn info(&self) -> Result<serde_json::Value, ClientError> {
        let response = check(self.http.get(self.url(&["v1", "info"])).send().await?).await?;
        json(response).await
    }

    /// `POST /v1/sessions`: uploads the evaluation keys in `keys_path`, streamed from disk.
    ///
    /// `progress(sent, total)` is called after each chunk handed to the connection, and
    /// `progress(total, total)` last. It runs inside the connection's task: keep it quick.
    pub async fn create_session(
        &self,
        keys_path: &Path,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<SessionCreated, ClientError> {
        let io_error = |source| ClientError::Io {
            path: keys_path.to_owned(),
            source,
        };
        let file = tokio::fs::File::open(keys_path).await.map_err(io_error)?;
        let total = file.metadata().await.map_err(io_error)?.len();
        let mut sent = 0u64;
        let chunks = ReaderStream::with_capacity(file, UPLOAD_READ_CHUNK).map(move |chunk| {
            if let Ok(bytes) = &chunk {
                sent += bytes.len() as u64;
                progress(sent, total);
            }
            chunk
        });
        let request = self
            .http
            .post(self.url(&["v1", "sessions"]))
            .header(CONTENT_TYPE, "application/octet-stream")
            // Declared so that the server can refuse an oversized upload before it starts.
            .header(CONTENT_LENGTH, total)
            .body(Body::wrap_stream(chunks));
        let response = check(request.send().await?).await?;
        json(response).await
    }

    /// `POST /v1/sessions/{id}/infer`: runs one inference on the encrypted `input` and returns
    /// the encrypted output. Takes as long as the inference (seconds to minutes).
    pub async fn infer(&self, session_id: &str, input: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        if session_id.parse::<SessionId>().is_err() {
            return Err(ClientError::BadSessionId(session_id.to_owned()));
        }
        let request = self
            .http
            .post(self.url(&["v1", "sessions", session_id, "infer"]))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(input);
        let response = check(request.send().await?).await?;
        Ok(response.bytes().await?.to_vec())
    }
}

/// Passes a success through; turns an error status into [`ClientError::Server`].
async fn check(response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after_secs = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let text = response.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error.code, body.error.message),
        // Not our server's error format (a proxy, say): keep the start of what it said.
        Err(_) => (
            format!("http_{}", status.as_u16()),
            text.chars().take(MAX_RAW_ERROR_CHARS).collect(),
        ),
    };
    Err(ClientError::Server {
        status: status.as_u16(),
        code,
        message,
        retry_after_secs,
    })
}

async fn json<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    let bytes = response.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
}
