//! What one client may take of the server, and the one reading of what it sends: header-read,
//! idle and body-read timeouts, the connection cap, header and declared body limits, `Range`
//! by RFC 9110, signed URLs in their one form.

use std::time::Duration;

use segflow::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Backends, TestEngine, put_segment};

/// A generous bound on what must happen within a 1 s timeout, so that a hang fails the test.
const WITHIN: Duration = Duration::from_secs(10);

async fn start(data: &tempfile::TempDir, configure: impl FnOnce(&mut Config)) -> TestEngine {
    let mut config = Config { workers: 1, ..Backends::Embedded.config(data.path()) };
    configure(&mut config);
    TestEngine::start_with(config).await
}

async fn connect(engine: &TestEngine) -> TcpStream {
    TcpStream::connect(engine.base.trim_start_matches("http://")).await.unwrap()
}

/// Everything the server sends until it closes the connection (a reset ends it too).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WITHIN, read).await.expect("the server closes the connection");
    seen
}

/// One response read off a kept-alive connection: its head, and its body by `Content-Length`.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let read = async {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if bytes.len() >= end + 4 + length {
                    return (head, bytes[end + 4..end + 4 + length].to_vec());
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed before a whole response: {:?}", String::from_utf8_lossy(&bytes));
            bytes.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(WITHIN, read).await.expect("a response")
}

/// A connection that has had one request answered and now sits idle, kept alive.
async fn idle_connection(engine: &TestEngine) -> TcpStream {
    let mut stream = connect(engine).await;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: segflow\r\n\r\n").await.unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_header_is_closed_after_the_header_read_timeout() {
    let data = tempfile::tempdir().unwrap();
    let engine = start(&data, |c| (c.header_read_timeout_secs, c.idle_timeout_secs) = (1, 3600)).await;
    let mut partial = connect(&engine).await;
    partial.write_all(b"GET /health HTTP/1.1\r\nHost: segflow\r\n").await.unwrap();
    assert_eq!(read_until_closed(&mut partial).await, b"", "closed without an answer");
    let mut silent = connect(&engine).await;
    assert_eq!(read_until_closed(&mut silent).await, b"", "a connection that sends nothing is closed too");
    // A later request's head has the same time from its first byte, not from the last answer.
    let mut kept = idle_connection(&engine).await;
    kept.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    assert_eq!(read_until_closed(&mut kept).await, b"");
    assert_eq!(engine.get_json("/health").await.0, 200);
    assert_eq!(engine.metric(r#"segflow_http_timeouts_total{timeout="header"}"#).await, 3.0);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let data = tempfile::tempdir().unwrap();
    let engine = start(&data, |c| (c.header_read_timeout_secs, c.idle_timeout_secs) = (3600, 1)).await;
    let mut stream = idle_connection(&engine).await;
    // Kept alive: a second request on it is answered.
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: segflow\r\n\r\n").await.unwrap();
    assert!(read_response(&mut stream).await.0.starts_with("http/1.1 200"));
    assert_eq!(read_until_closed(&mut stream).await, b"", "closed once idle");
    assert!(engine.metric(r#"segflow_http_timeouts_total{timeout="idle"}"#).await >= 1.0);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_wait_and_idle_ones_make_room() {
    let data = tempfile::tempdir().unwrap();
    let mut engine = start(&data, |c| (c.max_connections, c.idle_timeout_secs) = (2, 3600)).await;
    engine.client = reqwest::Client::new(); // its start-up connection, pooled, is closed
    let first = idle_connection(&engine).await;
    let _second = idle_connection(&engine).await;
    let url = engine.url("/health");
    let third = tokio::spawn(async move { reqwest::Client::new().get(url).send().await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "a third connection waits while two are open");
    drop(first);
    assert_eq!(tokio::time::timeout(WITHIN, third).await.unwrap().unwrap(), 200);
    engine.shutdown().await;

    // With an idle timeout, idle connections at the limit do not keep /health out.
    let data = tempfile::tempdir().unwrap();
    let engine = start(&data, |c| (c.max_connections, c.idle_timeout_secs) = (2, 1)).await;
    let (mut first, mut second) = (idle_connection(&engine).await, idle_connection(&engine).await);
    let health = reqwest::Client::new().get(engine.url("/health")).send();
    assert_eq!(tokio::time::timeout(WITHIN, health).await.unwrap().unwrap().status(), 200);
    assert_eq!(read_until_closed(&mut first).await, b"");
    assert_eq!(read_until_closed(&mut second).await, b"");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_over_the_limit_gets_431() {
    let data = tempfile::tempdir().unwrap();
    let engine = start(&data, |_| {}).await;
    let mut stream = connect(&engine).await;
    let request = format!("GET /health HTTP/1.1\r\nHost: segflow\r\nX-Big: {}\r\n\r\n", "a".repeat(200 * 1024));
    let (mut read, mut write) = stream.split();
    let exchange = async {
        tokio::join!(
            async {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = read.read(&mut buf).await {
                    seen.extend_from_slice(&buf[..n]);
                }
                seen
            },
            write.write_all(request.as_bytes()), // the server stops reading: this may fail
        )
    };
    let (seen, _) = tokio::time::timeout(WITHIN, exchange).await.expect("an answer, then the connection closed");
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 431"), "{seen:?}");
    // A header under the limit is served.
    let fine = engine.client.get(engine.url("/health")).header("X-Big", "a".repeat(8 * 1024)).send().await.unwrap();
    assert_eq!(fine.status(), 200);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_over_the_limit_is_refused_before_it_is_sent() {
    let data = tempfile::tempdir().unwrap();
    let engine = start(&data, |_| {}).await;
    let id = engine.start_stream(2).await;
    let segment_limit = Config::default().max_segment_bytes;
    let nine_gib = 9u64 << 30;
    let requests = [
        format!(
            "PUT /ingest/{id}/0.ts HTTP/1.1\r\nHost: s\r\nX-Sequence-Number: 0\r\nX-Duration-Ms: 2000\r\n\
             Content-Length: {}\r\n\r\n",
            segment_limit + 1
        ),
        format!("PUT /ingest/{id}/seg0.ts HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n\r\n", segment_limit + 1),
        format!("PUT /ingest/{id}/live.m3u8 HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n\r\n", 2 << 20),
        format!(
            "POST /vod/upload HTTP/1.1\r\nHost: s\r\nContent-Type: multipart/form-data; boundary=x\r\n\
             Expect: 100-continue\r\nContent-Length: {nine_gib}\r\n\r\n"
        ),
        format!("POST /vod/upload HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n\r\n", 1 << 20),
        format!("POST /streams/start HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n\r\n", 1 << 20),
    ];
    let token = crate::common::admin_token(data.path());
    for request in requests {
        let mut stream = connect(&engine).await;
        // Sent as a client holding a token does: its header first.
        let (line, rest) = request.split_once("\r\n").unwrap();
        let request = format!("{line}\r\nAuthorization: Bearer {token}\r\n{rest}");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut stream).await;
        assert!(head.starts_with("http/1.1 413"), "{request}: {head}");
        assert!(String::from_utf8_lossy(&body).contains("payload_too_large"), "{request}");
    }
    let (_, chunks) = engine.get_json(&format!("/streams/{id}/chunks")).await;
    assert_eq!(chunks["chunks"], serde_json::json!([]), "nothing was taken");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_coming_is_answered_408_and_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let engine = start(&data, |c| c.body_read_timeout_secs = 1).await;
    let (id, key) = engine.start_stream_keyed(2).await;
    let started = std::time::Instant::now();
    let mut stream = connect(&engine).await;
    let head = format!(
        "PUT /ingest/{id}/0.ts HTTP/1.1\r\nHost: s\r\nX-Stream-Key: {key}\r\nX-Sequence-Number: 0\r\n\
         X-Duration-Ms: 2000\r\nContent-Length: 1000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // A trickle faster than the timeout keeps the request going; then the body stops.
    for _ in 0..3 {
        stream.write_all(&[0x47; 10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 408"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("sent nothing for 1 s"), "{}", String::from_utf8_lossy(&body));
    // The last bytes went at 1 s: cut off 1 s after them, not while they trickled.
    assert!(started.elapsed() >= Duration::from_millis(1900), "the trickle was cut off: {:?}", started.elapsed());
    let (_, chunks) = engine.get_json(&format!("/streams/{id}/chunks")).await;
    assert_eq!(chunks["chunks"], serde_json::json!([]), "nothing was taken");
    assert_eq!(engine.metric(r#"segflow_http_timeouts_total{timeout="body"}"#).await, 1.0);
    // The number is still free: the whole segment is taken.
    assert_eq!(put_segment(&engine.client, &engine.base, &id, 0).await, 201);
    engine.shutdown().await;
}

/// An engine with one stored segment, and the signed URL of that segment.
async fn with_segment(data: &tempfile::TempDir) -> (TestEngine, String) {
    let engine = start(data, |_| {}).await;
    let id = engine.start_stream(2).await;
    assert_eq!(put_segment(&engine.client, &engine.base, &id, 0).await, 201);
    let (_, live) = engine.get_json(&format!("/streams/{id}/live")).await;
    let url = live["manifest_url"].as_str().unwrap().replace("live.m3u8", "chunks/0.ts");
    (engine, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_read_by_rfc_9110() {
    let data = tempfile::tempdir().unwrap();
    let (engine, url) = with_segment(&data).await;
    let get = |range: &str| engine.client.get(&url).header("Range", range).send();
    let whole = engine.client.get(&url).send().await.unwrap().bytes().await.unwrap();
    let n = whole.len();
    assert!(n > 1000);

    for ignored in ["garbage", "bytes=0-1,5-6", "items=0-1", "bytes=5-4", "bytes=0x1-2"] {
        let response = get(ignored).await.unwrap();
        assert_eq!(response.status(), 200, "{ignored}");
        assert_eq!(response.bytes().await.unwrap(), whole, "{ignored}");
    }
    let parts = [
        ("bytes=-500", n - 500, n - 1),
        ("bytes=500-", 500, n - 1),
        ("bytes=10-19", 10, 19),
        ("bytes=10-99999999", 10, n - 1),
        ("bytes=0-99999999999999999999999", 0, n - 1),
    ];
    for (range, first, last) in parts {
        let response = get(range).await.unwrap();
        assert_eq!(response.status(), 206, "{range}");
        assert_eq!(response.headers()["content-range"], format!("bytes {first}-{last}/{n}").as_str(), "{range}");
        assert_eq!(response.bytes().await.unwrap(), whole.slice(first..=last), "{range}");
    }
    for unsatisfiable in [format!("bytes={n}-"), "bytes=-0".into(), "bytes=99999999999999999999999-".into()] {
        let response = get(&unsatisfiable).await.unwrap();
        assert_eq!(response.status(), 416, "{unsatisfiable}");
        assert_eq!(response.headers()["content-range"], format!("bytes */{n}").as_str(), "{unsatisfiable}");
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_url_is_taken_only_in_its_own_form() {
    let data = tempfile::tempdir().unwrap();
    let (engine, url) = with_segment(&data).await;
    // `/play/{expires}/{sig}/…`: any other spelling of the same expiry or signature is refused.
    let path = url.strip_prefix(&format!("{}/play/", engine.base)).unwrap();
    let (expires, rest) = path.split_once('/').unwrap();
    let (signature, rest) = rest.split_once('/').unwrap();
    let first_letter = signature.find(|c: char| c.is_ascii_lowercase()).expect("hex has a letter");
    let encoded = format!(
        "{}%{:x}{}",
        &signature[..first_letter],
        signature.as_bytes()[first_letter],
        &signature[first_letter + 1..]
    );
    let forms = [
        format!("{expires}/{}/{rest}", signature.to_uppercase()),
        format!("0{expires}/{signature}/{rest}"),
        format!("+{expires}/{signature}/{rest}"),
        format!("{expires}/{encoded}/{rest}"),
    ];
    for form in forms {
        let response = engine.client.get(format!("{}/play/{form}", engine.base)).send().await.unwrap();
        assert_eq!(response.status(), 403, "{form}");
    }
    assert_eq!(engine.client.get(&url).send().await.unwrap().status(), 200);
    engine.shutdown().await;
}
