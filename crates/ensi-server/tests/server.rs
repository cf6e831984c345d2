//! End-to-end tests of the server and the client over real loopback sockets, with a fake
//! backend: keys are `b"FAKEKEYS"` followed by a little-endian u64 (and any padding, to make
//! large uploads); an inference answers the input reversed followed by that u64.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensi_server::{
    Backend, BackendError, Client, ClientError, Server, ServerConfig, ServerError,
    BUSY_RETRY_AFTER_SECS,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const MAGIC: &[u8; 8] = b"FAKEKEYS";

struct FakeBackend {
    /// How many times keys were read from disk.
    loads: AtomicUsize,
    /// How long one inference takes.
    infer_time: Duration,
}

impl FakeBackend {
    fn new(infer_time: Duration) -> Arc<Self> {
        Arc::new(FakeBackend {
            loads: AtomicUsize::new(0),
            infer_time,
        })
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

impl Backend for FakeBackend {
    type Keys = u64;

    fn info(&self) -> serde_json::Value {
        serde_json::json!({ "preset": "fake", "model": "reverse" })
    }

    fn load_keys(&self, path: &Path) -> Result<u64, BackendError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let bytes = std::fs::read(path).map_err(|e| BackendError::Internal(e.to_string()))?;
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(BackendError::BadKeys("not a fake key file".into()));
        }
        Ok(u64::from_le_bytes(bytes[8..16].try_into().unwrap()))
    }

    fn infer(&self, keys: &u64, input: &[u8]) -> Result<Vec<u8>, BackendError> {
        if input.is_empty() {
            return Err(BackendError::BadInput("empty input".into()));
        }
        std::thread::sleep(self.infer_time);
        Ok(expected_output(*keys, input))
    }
}

fn expected_output(key: u64, input: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = input.iter().rev().copied().collect();
    out.extend_from_slice(&key.to_le_bytes());
    out
}

fn config(data_dir: &Path) -> ServerConfig {
    ServerConfig {
        max_key_bytes: 1024,
        max_input_bytes: 256,
        max_concurrent_inferences: 2,
        key_cache_capacity: 1,
        ..ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), data_dir)
    }
}

/// A server running on a loopback port, and a client of it.
struct Running {
    addr: SocketAddr,
    client: Client,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

async fn start(backend: Arc<FakeBackend>, config: ServerConfig) -> Running {
    let server = Server::bind(backend, config).await.unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let client = Client::new(&format!("http://{addr}")).unwrap();
    Running {
        addr,
        client,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }
}

fn write_keys(dir: &Path, name: &str, key: u64) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&key.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    path
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Waits until `tmp/` is empty (cleanup after a cancelled request happens on the server's own
/// schedule), failing after 5 s.
async fn wait_tmp_empty(data_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !entries(&data_dir.join("tmp")).is_empty() {
        assert!(Instant::now() < deadline, "tmp/ not cleaned up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn server_error(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Server { status, code, .. } => (status, code),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

/// Sends raw bytes, half-closes, and reads the whole answer: (status, body).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    // The server may close as soon as it has answered; what it sent is still readable.
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    assert!(
        read.await.is_ok(),
        "the server did not close the connection"
    );
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_info() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(FakeBackend::new(Duration::ZERO), config(dir.path())).await;
    server.client.health().await.unwrap();
    let info = server.client.info().await.unwrap();
    assert_eq!(
        info,
        serde_json::json!({ "preset": "fake", "model": "reverse" })
    );
    // The storage layout exists from the start.
    assert_eq!(entries(dir.path()), ["sessions", "tmp"]);
    // Unknown routes answer JSON too.
    let (status, body) = raw_exchange(
        server.addr,
        b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, error_code(&body).as_str()), (404, "not_found"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_session_then_infer() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::new(Duration::ZERO);
    let server = start(backend.clone(), config(dir.path())).await;
    let keys = write_keys(dir.path(), "keys.bin", 0x0102_0304_0506_0708);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let created = server
        .client
        .create_session(&keys, move |sent, total| {
            seen2.lock().unwrap().push((sent, total))
        })
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().last(), Some(&(16, 16)));
    assert_eq!(created.info, backend.info());
    assert_eq!(created.session_id.len(), 32);
    assert!(created
        .session_id
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));

    // Stored whole, and nothing left in staging.
    let data = dir.path();
    assert_eq!(
        entries(&data.join("sessions")),
        [created.session_id.as_str()]
    );
    let session_dir = data.join("sessions").join(&created.session_id);
    assert_eq!(entries(&session_dir), ["keys.bin", "session.json"]);
    assert_eq!(
        std::fs::read(session_dir.join("keys.bin")).unwrap(),
        std::fs::read(&keys).unwrap()
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(session_dir.join("session.json")).unwrap()).unwrap();
    assert_eq!(meta["key_bytes"], 16);
    assert!(meta["created_unix"].as_u64().unwrap() > 1_600_000_000);
    assert!(entries(&data.join("tmp")).is_empty());

    let input = b"encrypted input".to_vec();
    for _ in 0..2 {
        let output = server
            .client
            .infer(&created.session_id, input.clone())
            .await
            .unwrap();
        assert_eq!(output, expected_output(0x0102_0304_0506_0708, &input));
    }
    // Loaded once, at creation; the inferences used the cache.
    assert_eq!(backend.loads(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_in_chunks_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        max_key_bytes: 8 << 20,
        ..config(dir.path())
    };
    let server = start(FakeBackend::new(Duration::ZERO), config).await;
    let keys = dir.path().join("large.bin");
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&77u64.to_le_bytes());
    bytes.extend((0..5_000_000u32).map(|i| (i % 251) as u8));
    std::fs::write(&keys, &bytes).unwrap();
    let total = bytes.len() as u64;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let created = server
        .client
        .create_session(&keys, move |sent, total| {
            seen2.lock().unwrap().push((sent, total))
        })
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 5, "{} progress calls", seen.len());
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 == total));
    assert_eq!(seen.last(), Some(&(total, total)));

    let stored = dir
        .path()
        .join("sessions")
        .join(&created.session_id)
        .join("keys.bin");
    assert!(std::fs::read(stored).unwrap() == bytes);
    let out = server
        .client
        .infer(&created.session_id, vec![4, 5])
        .await
        .unwrap();
    assert_eq!(out, expected_output(77, &[4, 5]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_cache_evicts_and_reloads_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::new(Duration::ZERO);
    let server = start(backend.clone(), config(dir.path())).await; // cache of 1
    let a = write_keys(dir.path(), "a.bin", 1);
    let b = write_keys(dir.path(), "b.bin", 2);
    let a = server.client.create_session(&a, |_, _| {}).await.unwrap();
    let b = server.client.create_session(&b, |_, _| {}).await.unwrap();
    assert_eq!(backend.loads(), 2);
    assert_eq!(entries(&dir.path().join("sessions")).len(), 2);

    // b is cached; a was evicted and comes back from disk.
    let out = server.client.infer(&b.session_id, vec![9]).await.unwrap();
    assert_eq!(out, expected_output(2, &[9]));
    assert_eq!(backend.loads(), 2);
    let out = server
        .client
        .infer(&a.session_id, vec![7, 8])
        .await
        .unwrap();
    assert_eq!(out, expected_output(1, &[7, 8]));
    assert_eq!(backend.loads(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(FakeBackend::new(Duration::ZERO), config(dir.path())).await;
    let keys = write_keys(dir.path(), "keys.bin", 42);
    let created = server
        .client
        .create_session(&keys, |_, _| {})
        .await
        .unwrap();
    server.stop().await;

    // A leftover of an upload killed with the previous process.
    let stale = dir
        .path()
        .join("tmp")
        .join("0123456789abcdef0123456789abcdef");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("keys.bin"), b"FAKEKEYS half").unwrap();

    let backend = FakeBackend::new(Duration::ZERO);
    let server = start(backend.clone(), config(dir.path())).await;
    assert!(entries(&dir.path().join("tmp")).is_empty());
    // Keys are loaded lazily, on the first inference.
    assert_eq!(backend.loads(), 0);
    let output = server
        .client
        .infer(&created.session_id, vec![1, 2, 3])
        .await
        .unwrap();
    assert_eq!(output, expected_output(42, &[1, 2, 3]));
    assert_eq!(backend.loads(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_cut_off_half_way_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::new(Duration::ZERO);
    let server = start(backend.clone(), config(dir.path())).await;

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    stream.write_all(&[b'k'; 500]).await.unwrap();
    // The upload is under way: it is staged in tmp/, not in sessions/.
    let deadline = Instant::now() + Duration::from_secs(5);
    while entries(&dir.path().join("tmp")).is_empty() {
        assert!(Instant::now() < deadline, "upload never staged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(entries(&dir.path().join("sessions")).is_empty());
    drop(stream);

    wait_tmp_empty(dir.path()).await;
    assert!(entries(&dir.path().join("sessions")).is_empty());
    assert_eq!(
        backend.loads(),
        0,
        "a partial upload must never reach the backend"
    );
    // The server is still fine.
    server.client.health().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(FakeBackend::new(Duration::ZERO), config(dir.path())).await;
    let client = &server.client;

    // Keys the backend refuses: 422 bad_keys, and no session appears.
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, b"NOTKEYS!12345678").unwrap();
    let e = client.create_session(&bad, |_, _| {}).await.unwrap_err();
    assert_eq!(server_error(e), (422, "bad_keys".to_owned()));
    assert!(entries(&dir.path().join("sessions")).is_empty());
    assert!(entries(&dir.path().join("tmp")).is_empty());

    let keys = write_keys(dir.path(), "keys.bin", 5);
    let created = client.create_session(&keys, |_, _| {}).await.unwrap();

    // Input the backend refuses: 422 bad_input.
    let e = client
        .infer(&created.session_id, Vec::new())
        .await
        .unwrap_err();
    assert_eq!(server_error(e), (422, "bad_input".to_owned()));

    // A well-formed id that names no session: 404.
    let e = client
        .infer("0123456789abcdef0123456789abcdef", vec![1])
        .await
        .unwrap_err();
    assert_eq!(server_error(e), (404, "not_found".to_owned()));

    // The client refuses ids that are not ids before sending anything.
    for bad_id in ["../../etc", "..", "", "0123456789ABCDEF0123456789ABCDEF"] {
        match client.infer(bad_id, vec![1]).await {
            Err(ClientError::BadSessionId(id)) => assert_eq!(id, bad_id),
            other => panic!("{bad_id:?}: {other:?}"),
        }
    }
    // The server refuses them too, before touching the file system: 400 for what decodes to a
    // bad id (slashes and dots percent-encoded, upper case, wrong length), 404 for literal dot
    // segments (they match no route).
    for (path, status, code) in [
        ("..%2F..%2Fetc", 400, "bad_session_id"),
        ("%2E%2E", 400, "bad_session_id"),
        ("0123456789ABCDEF0123456789ABCDEF", 400, "bad_session_id"),
        ("0123456789abcdef0123456789abcde", 400, "bad_session_id"),
        ("../../etc", 404, "not_found"),
    ] {
        let request = format!(
            "POST /v1/sessions/{path}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        );
        let (got_status, body) = raw_exchange(server.addr, request.as_bytes()).await;
        assert_eq!(
            (got_status, error_code(&body).as_str()),
            (status, code),
            "{path}"
        );
    }

    // Nothing but the one good session was ever written.
    assert_eq!(
        entries(dir.path()),
        ["bad.bin", "keys.bin", "sessions", "tmp"]
    );
    assert_eq!(
        entries(&dir.path().join("sessions")),
        [created.session_id.as_str()]
    );
    assert!(entries(&dir.path().join("tmp")).is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_keys_and_inputs_get_413() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::new(Duration::ZERO);
    let server = start(backend.clone(), config(dir.path())).await; // keys <= 1024, input <= 256

    // Declared too large (the client sends Content-Length): refused before reading.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 4096]).unwrap();
    let e = server
        .client
        .create_session(&big, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(server_error(e), (413, "payload_too_large".to_owned()));

    // Undeclared (chunked): cut off once more than the limit has arrived.
    let mut request =
        b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        request.extend_from_slice(b"200\r\n"); // 512 bytes per chunk
        request.extend_from_slice(&[b'k'; 512]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_exchange(server.addr, &request).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (413, "payload_too_large")
    );
    wait_tmp_empty(dir.path()).await;
    assert!(entries(&dir.path().join("sessions")).is_empty());
    assert_eq!(backend.loads(), 0);

    // Inputs: declared and undeclared.
    let keys = write_keys(dir.path(), "keys.bin", 5);
    let created = server
        .client
        .create_session(&keys, |_, _| {})
        .await
        .unwrap();
    let e = server
        .client
        .infer(&created.session_id, vec![1; 257])
        .await
        .unwrap_err();
    assert_eq!(server_error(e), (413, "payload_too_large".to_owned()));
    let mut request = format!(
        "POST /v1/sessions/{}/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        created.session_id
    )
    .into_bytes();
    for _ in 0..3 {
        request.extend_from_slice(b"80\r\n"); // 128 bytes per chunk
        request.extend_from_slice(&[1; 128]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_exchange(server.addr, &request).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (413, "payload_too_large")
    );

    // Exactly at the limit is fine.
    let output = server
        .client
        .infer(&created.session_id, vec![3; 256])
        .await
        .unwrap();
    assert_eq!(output, expected_output(5, &[3; 256]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_inference_while_busy_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        max_concurrent_inferences: 1,
        ..config(dir.path())
    };
    let server = start(FakeBackend::new(Duration::from_millis(1000)), config).await;
    let keys = write_keys(dir.path(), "keys.bin", 9);
    let id = server
        .client
        .create_session(&keys, |_, _| {})
        .await
        .unwrap()
        .session_id;

    let started = Instant::now();
    let (a, b) = tokio::join!(
        server.client.infer(&id, vec![1]),
        server.client.infer(&id, vec![2]),
    );
    let (ok, busy) = match (a, b) {
        (Ok(out), Err(e)) => ((out, vec![1]), e),
        (Err(e), Ok(out)) => ((out, vec![2]), e),
        other => panic!("expected one success and one refusal, got {other:?}"),
    };
    assert_eq!(ok.0, expected_output(9, &ok.1));
    assert!(busy.is_busy(), "{busy:?}");
    match busy {
        ClientError::Server {
            status,
            retry_after_secs,
            ..
        } => {
            assert_eq!(status, 503);
            assert_eq!(retry_after_secs, Some(BUSY_RETRY_AFTER_SECS));
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(1000));

    // The slot is free again once the first inference is done.
    let out = server.client.infer(&id, vec![3]).await.unwrap();
    assert_eq!(out, expected_output(9, &[3]));
    server.stop().await;
}
