//! The HTTP server: key upload, sessions, encrypted inference.
//!
//! # Routes
//!
//! | route | body in | answer |
//! |---|---|---|
//! | `GET /health` | | 200 `{"status":"ok"}` |
//! | `GET /v1/info` | | 200, [`Backend::info`] |
//! | `POST /v1/sessions` | raw evaluation-key bytes | 201 [`SessionCreated`] |
//! | `POST /v1/sessions/{id}/infer` | raw encrypted input | 200 `application/octet-stream`, the encrypted output |
//!
//! Every error is JSON, `{"error": {"code": "...", "message": "..."}}` ([`crate::wire::ErrorBody`]):
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `bad_session_id` | the id in the path is not 32 lowercase hex digits |
//! | 400 | `upload_interrupted` | the request body broke off (client gone, bad framing) |
//! | 404 | `not_found` | no such session, or no such route |
//! | 413 | `payload_too_large` | keys over `max_key_bytes` or input over `max_input_bytes` |
//! | 422 | `bad_keys`, `bad_input` | the backend refused the keys or the input ([`BackendError`]) |
//! | 500 | `internal` | disk or backend failure |
//! | 503 | `busy` | all `max_concurrent_inferences` slots are taken; `Retry-After` says when to retry |
//!
//! # Session creation
//!
//! Evaluation keys are gigabytes at real parameters, so the upload is streamed to disk in
//! `data_dir/tmp/<id>/keys.bin` and never held whole in memory. The size is checked twice: a
//! declared `Content-Length` over the limit is refused before a byte is read, and the bytes
//! actually received are counted so that a chunked (or lying) upload is cut off with 413 as soon
//! as it passes the limit. The backend then validates the file ([`Backend::load_keys`], on the
//! blocking pool); only if it accepts them is the staging directory renamed into
//! `data_dir/sessions/<id>/`. The storage layout, and why the rename makes a session appear
//! whole or not at all, is described in the `store` module: in short, a session directory is
//! built in `tmp/`, flushed, and moved in one atomic rename; every failure (size limit, bad keys,
//! client disconnecting, the request being cancelled) drops the staging directory, which deletes
//! it. `tmp/` is also wiped at start, for uploads killed with the process.
//!
//! # Inference
//!
//! At most `max_concurrent_inferences` run at once. A request that finds every slot taken is
//! answered 503 `busy` at once rather than queued: an inference holds the cores for seconds to
//! minutes, and a queue would hide the overload from clients and pile up connections; the client
//! decides whether and when to retry. A slot is held from before the input is read until the
//! backend returns, even if the client hangs up meanwhile, so the limit is real.
//!
//! Loaded keys are kept in a small LRU cache (`key_cache_capacity` sessions, 1 by default: each
//! is gigabytes); a session not in it is loaded from disk on its next inference, which is also
//! how sessions survive a restart. Peak memory is about (`key_cache_capacity` +
//! `max_concurrent_inferences`) key sets.
//!
//! One data directory belongs to one server process: two servers on the same directory would
//! wipe each other's uploads at start.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::backend::{Backend, BackendError};
use crate::store::{SessionId, Staging, Store};
use crate::wire::{ErrorBody, ErrorDetail, SessionCreated};

/// Seconds a client is told to wait (`Retry-After`) when the server answers 503 `busy`.
pub const BUSY_RETRY_AFTER_SECS: u64 = 5;

/// Write buffer of key uploads: large enough that the blocking pool sees few, big writes.
const UPLOAD_WRITE_BUFFER: usize = 1 << 20;

/// Where to listen, where to store sessions, and the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Root of the storage: `sessions/` and `tmp/` are created under it.
    pub data_dir: PathBuf,
    /// Largest evaluation-key upload accepted, in bytes.
    pub max_key_bytes: u64,
    /// Largest encrypted input accepted, in bytes (it is held in memory).
    pub max_input_bytes: u64,
    /// Inferences allowed to run at once; more are answered 503 `busy`. At least 1.
    pub max_concurrent_inferences: usize,
    /// Sessions whose loaded keys stay in memory between inferences (each is gigabytes).
    pub key_cache_capacity: usize,
}

impl ServerConfig {
    /// A configuration with defaults sized for real parameters: keys up to 16 GiB, inputs up
    /// to 1 GiB, one inference at a time, one session's keys cached.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen,
            data_dir: data_dir.into(),
            max_key_bytes: 16 << 30,
            max_input_bytes: 1 << 30,
            max_concurrent_inferences: 1,
            key_cache_capacity: 1,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The data directory could not be created, cleaned or scanned.
    #[error("cannot prepare data directory {path}: {source}")]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// The accept loop failed.
    #[error("server failed: {0}")]
    Serve(#[source] io::Error),
}

/// A server bound to its socket, with its storage opened, not yet answering.
///
/// Binding first and serving second lets a caller learn the port when it asked for port 0.
pub struct Server {
    listener: TcpListener,
    router: Router,
    local_addr: SocketAddr,
}

impl Server {
    /// Opens the storage (creating it, wiping `tmp/`, finding the stored sessions) and binds
    /// the listening socket.
    pub async fn bind<B: Backend>(
        backend: Arc<B>,
        config: ServerConfig,
    ) -> Result<Server, ServerError> {
        if config.max_concurrent_inferences == 0 {
            return Err(ServerError::Config(
                "max_concurrent_inferences must be at least 1".into(),
            ));
        }
        let data_dir = config.data_dir.clone();
        let opened = tokio::task::spawn_blocking(move || Store::open(&data_dir))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
        let (store, sessions) = opened.map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        eprintln!(
            "ensi-server: listening on http://{local_addr}, data in {}, {} stored session(s)",
            config.data_dir.display(),
            sessions.len()
        );
        let state = Arc::new(AppState {
            backend,
            max_key_bytes: config.max_key_bytes,
            max_input_bytes: config.max_input_bytes,
            store,
            sessions: Mutex::new(sessions),
            cache: KeyCache::new(config.key_cache_capacity),
            slots: Arc::new(Semaphore::new(config.max_concurrent_inferences)),
            loading: Mutex::new(()),
        });
        Ok(Server {
            listener,
            router: router(state),
            local_addr,
        })
    }

    /// The address actually bound (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Answers requests until `shutdown` completes, then stops accepting connections and
    /// returns once the requests in flight are answered.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServerError::Serve)
    }
}

/// Binds to `config.listen` and serves until `shutdown` completes: [`Server::bind`] then
/// [`Server::run`].
pub async fn serve<B: Backend>(
    backend: Arc<B>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::bind(backend, config).await?.run(shutdown).await
}

/// Everything the handlers share.
struct AppState<B: Backend> {
    backend: Arc<B>,
    max_key_bytes: u64,
    max_input_bytes: u64,
    store: Store,
    /// Sessions stored under `sessions/`: the scan at start plus those created since.
    sessions: Mutex<HashSet<SessionId>>,
    cache: KeyCache<B::Keys>,
    /// One permit per inference allowed to run.
    slots: Arc<Semaphore>,
    /// Held while keys are read from disk, so that two requests for the same uncached session
    /// do not both read gigabytes.
    loading: Mutex<()>,
}

impl<B: Backend> AppState<B> {
    /// Validates the uploaded keys and, if the backend accepts them, publishes the session.
    /// Runs on the blocking pool.
    fn validate_and_commit(
        &self,
        id: SessionId,
        staging: Staging,
        key_bytes: u64,
    ) -> Result<(), BackendError> {
        let keys = self.backend.load_keys(&staging.keys_path())?;
        staging
            .commit(key_bytes)
            .map_err(|e| BackendError::Internal(format!("storing the session: {e}")))?;
        lock(&self.sessions).insert(id);
        self.cache.insert(id, Arc::new(keys));
        Ok(())
    }

    /// The keys of a stored session, from the cache or from disk. Runs on the blocking pool.
    fn keys(&self, id: SessionId) -> Result<Arc<B::Keys>, BackendError> {
        if let Some(keys) = self.cache.get(id) {
            return Ok(keys);
        }
        let _loading = lock(&self.loading);
        // Someone may have loaded them while we waited.
        if let Some(keys) = self.cache.get(id) {
            return Ok(keys);
        }
        let keys = Arc::new(self.backend.load_keys(&self.store.keys_path(id))?);
        self.cache.insert(id, Arc::clone(&keys));
        Ok(keys)
    }
}

/// Locks a mutex, ignoring poisoning: the guarded data (a set, a list) is never left half
/// updated by a panic, since no code that can panic runs while it is held.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Least-recently-used cache of loaded keys, a handful of entries at most.
struct KeyCache<K> {
    capacity: usize,
    /// Most recently used last.
    entries: Mutex<VecDeque<(SessionId, Arc<K>)>>,
}

impl<K> KeyCache<K> {
    fn new(capacity: usize) -> Self {
        KeyCache {
            capacity,
            entries: Mutex::new(VecDeque::new()),
        }
    }

    fn get(&self, id: SessionId) -> Option<Arc<K>> {
        let mut entries = lock(&self.entries);
        let pos = entries.iter().position(|(k, _)| *k == id)?;
        let entry = entries.remove(pos)?;
        let keys = Arc::clone(&entry.1);
        entries.push_back(entry);
        Some(keys)
    }

    fn insert(&self, id: SessionId, keys: Arc<K>) {
        let mut entries = lock(&self.entries);
        entries.retain(|(k, _)| *k != id);
        entries.push_back((id, keys));
        while entries.len() > self.capacity {
            entries.pop_front();
        }
    }
}

fn router<B: Backend>(state: Arc<AppState<B>>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/info", get(info::<B>))
        .route("/v1/sessions", post(create_session::<B>))
        .route("/v1/sessions/{id}/infer", post(infer::<B>))
        .fallback(no_route)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn info<B: Backend>(State(st): State<Arc<AppState<B>>>) -> Json<serde_json::Value> {
    Json(st.backend.info())
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn create_session<B: Backend>(
    State(st): State<Arc<AppState<B>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_declared_length(&headers, st.max_key_bytes, "evaluation keys")?;
    let id = SessionId::random().map_err(ApiError::internal)?;
    // From here on, returning early or being cancelled drops `staging`, which deletes it.
    let staging = st.store.stage(id).map_err(ApiError::internal)?;
    let key_bytes = write_body(body, &staging.keys_path(), st.max_key_bytes).await?;
    let state = Arc::clone(&st);
    // Validation and the final rename run as one blocking task: once the whole upload has
    // arrived, the session is finished even if the client hangs up during validation.
    tokio::task::spawn_blocking(move || state.validate_and_commit(id, staging, key_bytes))
        .await
        .map_err(ApiError::join)??;
    let created = SessionCreated {
        session_id: id.to_string(),
        info: st.backend.info(),
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn infer<B: Backend>(
    State(st): State<Arc<AppState<B>>>,
    id: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id: SessionId = id
        .ok()
        .and_then(|UrlPath(id)| id.parse().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_session_id",
                "a session id is 32 lowercase hex digits",
            )
        })?;
    if !lock(&st.sessions).contains(&id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no session {id}"),
        ));
    }
    check_declared_length(&headers, st.max_input_bytes, "encrypted input")?;
    let permit = Arc::clone(&st.slots)
        .try_acquire_owned()
        .map_err(|_| ApiError::busy())?;
    let input = read_body(body, st.max_input_bytes).await?;
    let state = Arc::clone(&st);
    let output = tokio::task::spawn_blocking(move || {
        // Held until the backend returns, even if the request is cancelled meanwhile.
        let _permit = permit;
        let keys = state.keys(id)?;
        state.backend.infer(&keys, &input)
    })
    .await
    .map_err(ApiError::join)??;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], output).into_response())
}

/// Refuses a body whose declared length is over the limit before reading any of it.
fn check_declared_length(headers: &HeaderMap, limit: u64, what: &str) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(ApiError::too_large(what, limit)),
        _ => Ok(()),
    }
}

/// Streams a request body into a new file, stopping as soon as it passes `limit` bytes.
/// Returns the number of bytes written; the file is flushed to disk.
async fn write_body(body: Body, path: &Path, limit: u64) -> Result<u64, ApiError> {
    let file = tokio::fs::File::create(path)
        .await
        .map_err(ApiError::internal)?;
    let mut out = BufWriter::with_capacity(UPLOAD_WRITE_BUFFER, file);
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ApiError::interrupted)?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::too_large("evaluation keys", limit));
        }
        out.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    out.flush().await.map_err(ApiError::internal)?;
    // On disk before the rename publishes the session (see the `store` module).
    out.into_inner()
        .sync_all()
        .await
        .map_err(ApiError::internal)?;
    Ok(written)
}

/// Reads a request body into memory, refusing it as soon as it passes `limit` bytes.
async fn read_body(body: Body, limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ApiError::interrupted)?;
        if (data.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::too_large("encrypted input", limit));
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// An error answer: status, code and message, sent as [`ErrorBody`].
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }

    fn join(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("backend task failed: {e}"))
    }

    fn interrupted(e: axum::Error) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "upload_interrupted",
            format!("request body broke off: {e}"),
        )
    }

    fn too_large(what: &str, limit: u64) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{what} over the limit of {limit} bytes"),
        )
    }

    fn busy() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "every inference slot is taken; retry later",
        )
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        let status = match e {
            BackendError::BadKeys(_) | BackendError::BadInput(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            BackendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(BUSY_RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// Logs one line per request to stderr when it ends: method, path, status, duration. A request
/// whose future is dropped (client gone mid-upload) is logged as `aborted`.
async fn log_request(request: Request, next: Next) -> Response {
    let mut entry = LogEntry {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        start: Instant::now(),
        status: None,
    };
    let response = next.run(request).await;
    entry.status = Some(response.status().as_u16());
    response
}

struct LogEntry {
    method: String,
    path: String,
    start: Instant,
    status: Option<u16>,
}

impl Drop for LogEntry {
    fn drop(&mut self) {
        let status = self
            .status
            .map_or_else(|| "aborted".to_owned(), |s| s.to_string());
        eprintln!(
            "ensi-server: {} {} {} {:.3}s",
            self.method,
            self.path,
            status,
            self.start.elapsed().as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> SessionId {
        format!("{n:032x}").parse().unwrap()
    }

    #[test]
    fn key_cache_keeps_the_most_recently_used() {
        let cache = KeyCache::new(2);
        cache.insert(id(1), Arc::new(1));
        cache.insert(id(2), Arc::new(2));
        assert_eq!(cache.get(id(1)).as_deref(), Some(&1)); // 1 is now the most recent
        cache.insert(id(3), Arc::new(3)); // evicts 2
        assert!(cache.get(id(2)).is_none());
        assert_eq!(cache.get(id(1)).as_deref(), Some(&1));
        assert_eq!(cache.get(id(3)).as_deref(), Some(&3));
    }

    #[test]
    fn key_cache_of_capacity_zero_keeps_nothing() {
        let cache = KeyCache::new(0);
        cache.insert(id(1), Arc::new(1));
        assert!(cache.get(id(1)).is_none());
    }
}
