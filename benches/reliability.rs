//! The reliability report's figures (BENCHMARKS.md, "Reliability"): the real binary attacked as
//! an attacker would, class by class, counting requests, crashes, hangs and data lost; then a
//! bounded load of concurrent live streams with `kill -9` at random moments, and (on the real
//! servers) a Kafka broker restart and a MinIO restart mid-stream, counting acknowledged
//! segments lost.
//!
//! `cargo bench --bench reliability` runs `attacks` and `kills` on the embedded backends;
//! `cargo bench --features real-services --bench reliability -- services` the load on Kafka,
//! MinIO and FerretDB (`scripts/services.sh start && eval "$(scripts/services.sh env)"` first).
//! Env: `SEED` (random), `STREAMS` (60), `SECONDS` (40), `KILLS` (4).

#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::{Backends, EngineProcess, sha256_hex};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A `segflow` process that can be killed and started again on the same data dir; its address
/// changes with each start, so clients read it from here.
struct Engine {
    backends: Backends,
    data: PathBuf,
    settings: Vec<(&'static str, &'static str)>,
    process: EngineProcess,
    base: Arc<RwLock<String>>,
}

impl Engine {
    fn spawn(backends: Backends, data: &Path, settings: &[(&'static str, &'static str)]) -> Engine {
        let (process, base) = common::spawn_segflow_with(backends, data, settings);
        Engine {
            backends,
            data: data.to_path_buf(),
            settings: settings.to_vec(),
            process,
            base: Arc::new(RwLock::new(base)),
        }
    }

    fn base(&self) -> String {
        self.base.read().unwrap().clone()
    }

    /// Starts the process again (after a crash or a kill); returns how long until it listened.
    fn restart(&mut self) -> Duration {
        let started = Instant::now();
        let (process, base) = common::spawn_segflow_with(self.backends, &self.data, &self.settings);
        self.process = process;
        *self.base.write().unwrap() = base;
        started.elapsed()
    }
}

// ------------------------------------------------------------------------------------------
// Attacks

/// What an attack request must get: anything else is counted as unexpected.
#[derive(Clone, Copy)]
enum Expect {
    /// A 4xx: refused, and nothing changes.
    Refused,
    /// Any answer but a 5xx (a valid request among random ones may be taken).
    NoServerError,
    /// Exactly this status.
    Status(u16),
}

impl Expect {
    fn holds(self, status: u16) -> bool {
        match self {
            Expect::Refused => (400..500).contains(&status),
            Expect::NoServerError => status < 500,
            Expect::Status(s) => status == s,
        }
    }
}

struct Probe {
    method: reqwest::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    expect: Expect,
}

impl Probe {
    fn new(method: reqwest::Method, path: impl Into<String>, expect: Expect) -> Probe {
        Probe { method, path: path.into(), headers: Vec::new(), body: Vec::new(), expect }
    }
    fn get(path: impl Into<String>, expect: Expect) -> Probe {
        Probe::new(reqwest::Method::GET, path, expect)
    }
    fn post(path: impl Into<String>, body: impl Into<Vec<u8>>, expect: Expect) -> Probe {
        Probe { body: body.into(), ..Probe::new(reqwest::Method::POST, path, expect) }
    }
    fn put(path: impl Into<String>, body: impl Into<Vec<u8>>, expect: Expect) -> Probe {
        Probe { body: body.into(), ..Probe::new(reqwest::Method::PUT, path, expect) }
    }
    fn header(mut self, name: &str, value: impl Into<String>) -> Probe {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    fn bearer(self, token: &str) -> Probe {
        self.header("authorization", format!("Bearer {token}"))
    }
}

/// An attack class: its name and the probes it sends.
type AttackClass<'a> = (&'static str, Box<dyn Fn(&mut StdRng) -> Vec<Probe> + 'a>);

/// One class's counts.
#[derive(Default)]
struct Tally {
    sent: u64,
    statuses: BTreeMap<u16, u64>,
    /// Connections the server closed without an answer (expected only where noted).
    closed: u64,
    hangs: u64,
    crashes: u64,
    unexpected: u64,
    /// The first few unexpected answers, shown under the class's line.
    examples: Vec<String>,
}

impl Tally {
    fn answered(&mut self, what: &str, status: u16, expect: Expect) {
        *self.statuses.entry(status).or_default() += 1;
        if !expect.holds(status) {
            self.unexpected(format!("{what} -> {status}"));
        }
    }

    fn unexpected(&mut self, what: String) {
        self.unexpected += 1;
        if self.examples.len() < 5 {
            self.examples.push(what);
        }
    }
}

/// Each probe answered within this, or it is a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

async fn send_all(client: &reqwest::Client, base: &str, probes: Vec<Probe>, tally: &mut Tally) {
    let answers: Vec<_> = futures_util::stream::iter(probes)
        .map(|probe| {
            let mut request = client.request(probe.method.clone(), format!("{base}{}", probe.path));
            for (name, value) in &probe.headers {
                request = request.header(name, value);
            }
            let request = request.body(probe.body.clone());
            async move {
                let what = format!("{} {}", probe.method, truncated(&probe.path));
                let answer = tokio::time::timeout(ANSWER_WITHIN, async {
                    let response = request.send().await?;
                    let status = response.status().as_u16();
                    response.bytes().await?;
                    Ok::<u16, reqwest::Error>(status)
                })
                .await;
                (what, probe.expect, answer)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (what, expect, answer) in answers {
        tally.sent += 1;
        match answer {
            Ok(Ok(status)) => tally.answered(&what, status, expect),
            Ok(Err(_)) => tally.closed += 1,
            Err(_) => tally.hangs += 1,
        }
    }
}

fn truncated(path: &str) -> String {
    if path.len() > 60 { format!("{}…", &path[..path.floor_char_boundary(60)]) } else { path.to_string() }
}

/// After each class: the process still runs (else a crash, and it is started again) and
/// `/health` answers 200 within 2 s (else a hang).
async fn still_healthy(engine: &mut Engine, client: &reqwest::Client, tally: &mut Tally) {
    if let Some(status) = engine.process.exited() {
        tally.crashes += 1;
        tally.unexpected(format!("the process exited: {status}"));
        engine.restart();
    }
    let health = client.get(format!("{}/health", engine.base())).send();
    match tokio::time::timeout(Duration::from_secs(2), health).await {
        Ok(Ok(response)) if response.status() == 200 => {}
        Ok(Ok(response)) => tally.unexpected(format!("/health -> {}", response.status())),
        _ => tally.hangs += 1,
    }
}

/// A stream an attack goes after, with what was acknowledged in it before.
struct Target {
    id: String,
    key: String,
    /// `(sequence number, SHA-256 of the bytes)` of each acknowledged segment.
    acked: Vec<(u64, String)>,
}

fn segment_bytes(id: &str, seq: u64, salt: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seq ^ salt.rotate_left(17) ^ sha_seed(id));
    let len = rng.random_range(2_000..8_000);
    (0..len).map(|_| rng.random()).collect()
}

fn sha_seed(id: &str) -> u64 {
    u64::from_str_radix(&sha256_hex(id.as_bytes())[..16], 16).unwrap()
}

/// A numbered segment PUT into `target` with its key in the path, as FFmpeg sends it.
fn segment_probe(target: &Target, seq: &str, duration: &str, bytes: Vec<u8>, expect: Expect) -> Probe {
    numbered(format!("/ingest/{}/{}/{seq}.ts", target.id, target.key), seq, duration, bytes, expect)
}

fn numbered(path: String, seq: &str, duration: &str, bytes: Vec<u8>, expect: Expect) -> Probe {
    let checksum = sha256_hex(&bytes);
    Probe::put(path, bytes, expect)
        .header("x-sequence-number", seq)
        .header("x-duration-ms", duration)
        .header("x-checksum-sha256", checksum)
}

async fn start_target(client: &reqwest::Client, base: &str, segments: u64) -> Target {
    let started: Value = loop {
        let response = client
            .post(format!("{base}/streams/start"))
            .body(r#"{"target_duration":2,"dvr_window_size":100}"#)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            // Rate limited, as a client that starts many streams may be: wait as told.
            let wait = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        assert_eq!(response.status(), 201);
        break response.json().await.unwrap();
    };
    let id = started["stream_id"].as_str().unwrap().to_string();
    let key = started["stream_key"].as_str().unwrap().to_string();
    let mut target = Target { id, key, acked: Vec::new() };
    let encoder = reqwest::Client::new();
    for seq in 0..segments {
        let bytes = segment_bytes(&target.id, seq, 0);
        let sha = sha256_hex(&bytes);
        let probe = segment_probe(&target, &seq.to_string(), "2000", bytes, Expect::Status(201));
        let mut tally = Tally::default();
        send_all(&encoder, base, vec![probe], &mut tally).await;
        assert_eq!(tally.statuses.get(&201), Some(&1), "segment {seq} of {} acknowledged", target.id);
        target.acked.push((seq, sha));
    }
    target
}

/// Sequence numbers, durations and dates out of range, one field at a time (the others valid),
/// in headers and in chunk events; start settings out of range.
fn numbers(rng: &mut StdRng, victim: &Target, next: u64) -> Vec<Probe> {
    let bad_seq = [
        u64::MAX.to_string(),
        (u64::MAX - 1).to_string(),
        "18446744073709551616".into(),
        (1u64 << 53).to_string(),
        (1u64 << 63).to_string(),
        (next + 10_001).to_string(),
        "1000000000000000".into(),
        "-1".into(),
        "1e3".into(),
        "0x10".into(),
        " 7".into(),
        "".into(),
    ];
    let bad_duration = ["0", "-1", "18446744073709551615", "18446744073709551616", "4001", "NaN", "1e30", "2.5", ""];
    let bad_date = [
        "9999-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "+275760-09-13T00:00:00Z",
        "garbage",
        "2026-13-45T99:99:99Z",
    ];
    let mut probes = Vec::new();
    for _ in 0..600 {
        let bytes = segment_bytes(&victim.id, next, rng.random());
        let (seq, duration) = (next.to_string(), "2000");
        let probe = match rng.random_range(0..3) {
            0 => segment_probe(victim, &bad_seq[rng.random_range(0..bad_seq.len())], duration, bytes, Expect::Refused),
            1 => segment_probe(
                victim,
                &seq,
                bad_duration[rng.random_range(0..bad_duration.len())],
                bytes,
                Expect::Refused,
            ),
            _ => segment_probe(victim, &seq, duration, bytes, Expect::Refused)
                .header("x-program-date-time", bad_date[rng.random_range(0..bad_date.len())]),
        };
        probes.push(probe);
    }
    let json_numbers = ["18446744073709551615", "18446744073709551616", "-1", "1e400", "1.5", "null", "\"7\""];
    for _ in 0..200 {
        let n = json_numbers[rng.random_range(0..json_numbers.len())];
        let body = match rng.random_range(0..2) {
            0 => format!(r#"{{"sequence_number":{n},"duration_ms":2000}}"#),
            _ => format!(r#"{{"sequence_number":{next},"duration_ms":{n}}}"#),
        };
        probes.push(
            Probe::post(format!("/streams/{}/chunks", victim.id), body, Expect::Refused)
                .header("x-stream-key", &victim.key),
        );
    }
    for settings in [
        r#"{"target_duration":0}"#,
        r#"{"target_duration":18446744073709551615}"#,
        r#"{"target_duration":-1}"#,
        r#"{"target_duration":1e9}"#,
        r#"{"dvr_window_size":0}"#,
        r#"{"dvr_window_size":1000000000000}"#,
        r#"{"playback_policy":"everyone"}"#,
        r#"{"title":12}"#,
    ] {
        probes.push(Probe::post("/streams/start", settings, Expect::Refused));
    }
    probes
}

/// Pushed playlists: out-of-range numbers, malformed EXTINF, too many segments, random bytes,
/// random lines of playlist grammar, and one over the size limit.
fn playlists(rng: &mut StdRng, victim: &Target) -> Vec<Probe> {
    let path = format!("/ingest/{}/{}/live.m3u8", victim.id, victim.key);
    let playlist = |sequence: &str, target: &str, entries: &[(&str, &str)]| {
        let mut text =
            format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n");
        for (extinf, uri) in entries {
            text.push_str(&format!("#EXTINF:{extinf},\n{uri}\n"));
        }
        text
    };
    let mut bodies: Vec<(String, Expect)> = vec![
        (playlist("18446744073709551615", "2", &[("2.0", "a0.ts")]), Expect::Refused),
        (playlist("18446744073709551614", "2", &[("2.0", "a0.ts"), ("2.0", "a1.ts")]), Expect::Refused),
        (playlist("9007199254740992", "2", &[("2.0", "a0.ts")]), Expect::Refused),
        (playlist("50", "2", &[("2.0", "../../etc/passwd")]), Expect::Refused),
        (playlist("50", "2", &[("2.0", "a0.mp4")]), Expect::Refused),
        (playlist("50", "2", &[("2.0", "init.mp4")]), Expect::Refused),
        // Taken: the stream's own target duration applies, not the playlist's, and a URI's
        // folders are not part of its name (FFmpeg's `-hls_base_url`).
        (playlist("50", "18446744073709551615", &[("2.0", "a0.ts")]), Expect::NoServerError),
        (playlist("50", "0", &[("2.0", "a0.ts")]), Expect::NoServerError),
        (playlist("50", "2", &[("2.0", "/abs/a0.ts")]), Expect::NoServerError),
    ];
    for extinf in ["-5", "NaN", "nan", "inf", "1e30", "0", "abc", "2.0e", "-0", "18446744073709551616"] {
        bodies.push((playlist("60", "2", &[(extinf, "b0.ts")]), Expect::Refused));
    }
    let many: Vec<(String, String)> = (0..20_000).map(|i| ("2.0".to_string(), format!("m{i}.ts"))).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(d, u)| (d.as_str(), u.as_str())).collect();
    bodies.push((playlist("100", "2", &many), Expect::Refused));
    bodies.push(("#EXTM3U\n".repeat((1 << 20) / 8 + 1), Expect::Refused));
    for _ in 0..150 {
        let len = rng.random_range(0..4096);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        bodies.push((String::from_utf8_lossy(&bytes).into_owned(), Expect::Refused));
    }
    // Random lines of playlist grammar: some are valid playlists (their segments never come).
    let tags = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-VERSION:99",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-TARGETDURATION:-2",
        "#EXT-X-MEDIA-SEQUENCE:200",
        "#EXT-X-MEDIA-SEQUENCE:-1",
        "#EXT-X-DISCONTINUITY",
        "#EXT-X-ENDLIST",
        "#EXT-X-PROGRAM-DATE-TIME:9999-12-31T23:59:59Z",
        "#EXT-X-MAP:URI=\"init.mp4\"",
        "#EXT-X-BYTERANGE:18446744073709551615@18446744073709551615",
        "#EXTINF:2.0,",
        "#EXTINF:1.999,",
        "#EXTINF:,",
        "#EXT-X-KEY:METHOD=AES-128,URI=\"http://x\"",
        "r0.ts",
        "r1.ts",
        "r1.ts",
        "x/../r2.ts",
        "",
    ];
    for _ in 0..300 {
        let lines = rng.random_range(1..40);
        let body: Vec<&str> = (0..lines).map(|_| tags[rng.random_range(0..tags.len())]).collect();
        bodies.push((body.join("\n"), Expect::NoServerError));
    }
    bodies.into_iter().map(|(body, expect)| Probe::put(path.clone(), body, expect)).collect()
}

/// Every route without a credential, with a wrong or malformed one, with too small a scope,
/// with a revoked token, and with another stream's or a wrong stream key.
fn credentials(victim: &Target, witness: &Target, read: &str, revoked: &str) -> Vec<Probe> {
    let (w, v) = (&witness.id, &victim.id);
    let segment = || segment_bytes(w, 999, 1);
    let routes = |credential: &dyn Fn(Probe) -> Probe| -> Vec<Probe> {
        let refused = Expect::Refused;
        [
            Probe::post("/streams/start", "{}", refused),
            Probe::post("/streams/end", format!(r#"{{"stream_id":"{w}"}}"#), refused),
            Probe::post(format!("/streams/{w}/key"), "", refused),
            Probe::post(format!("/streams/{w}/chunks"), r#"{"sequence_number":50,"duration_ms":2000}"#, refused),
            numbered(format!("/ingest/{w}/50.ts"), "50", "2000", segment(), refused),
            Probe::put(format!("/ingest/{w}/live.m3u8"), "#EXTM3U\n", refused),
            Probe::post("/tokens", r#"{"name":"stolen","scopes":["admin"]}"#, refused),
            Probe::new(reqwest::Method::DELETE, "/tokens/000000000000", refused),
            Probe::post("/vod/upload", "not a form", refused),
        ]
        .into_iter()
        .map(credential)
        .collect()
    };
    let mut probes = Vec::new();
    let with_path_key =
        |key: &str| numbered(format!("/ingest/{w}/{key}/50.ts"), "50", "2000", segment(), Expect::Refused);
    for _ in 0..10 {
        probes.extend(routes(&|p| p));
        probes.extend(routes(&|p| p.bearer("sft_000000000000_wrong")));
        probes.extend(routes(&|p| p.header("authorization", "Bearer")));
        probes.extend(routes(&|p| p.header("authorization", "Basic YWRtaW46YWRtaW4=")));
        probes.extend(routes(&|p| p.bearer(revoked)));
        probes.extend(routes(&|p| p.bearer(read)));
        probes.extend(routes(&|p| p.header("x-stream-key", &victim.key)));
        probes.extend(routes(&|p| p.bearer(&victim.key)));
        probes.push(with_path_key(&victim.key));
        probes.push(with_path_key("sk_0000"));
        probes.push(with_path_key(&witness.key.to_uppercase()));
        probes.push(with_path_key(&witness.key[..witness.key.len() - 1]));
        for read_only in [format!("/streams/{w}/metadata"), format!("/streams/{w}/live"), "/dead-letters".into()] {
            probes.push(Probe::get(read_only.clone(), Expect::Status(401)));
            probes.push(Probe::get(read_only, Expect::Status(401)).bearer(revoked));
        }
        probes.push(Probe::get(format!("/streams/{v}/live"), Expect::Refused).bearer(&witness.key));
    }
    probes
}

/// Accepted media sent again with other bytes (one by one and in racing pairs), a second
/// init section, and file names no encoder uses.
fn overwrites(witness: &Target) -> Vec<Probe> {
    let mut probes = Vec::new();
    for round in 0..5u64 {
        for (seq, _) in &witness.acked {
            let other = segment_bytes(&witness.id, *seq, 100 + round);
            probes.push(segment_probe(witness, &seq.to_string(), "2000", other, Expect::Status(409)));
        }
    }
    for salt in 2..12 {
        probes.push(init_probe(witness, salt, Expect::Status(409)));
    }
    for name in
        ["movie.mp4", "a.b.ts", "..%2F0.ts", "0.ts.ts", ".ts", "0.exe", "0.TS", "%2e%2e.ts", "0.ts%00", "a%2Fb.ts"]
    {
        let bytes = segment_bytes("name", 0, 0);
        probes.push(segment_probe(witness, "0", "2000", bytes.clone(), Expect::Refused).tap(|p| {
            p.path = format!("/ingest/{}/{}/{name}", witness.id, witness.key);
        }));
        probes.push(Probe::put(format!("/ingest/{}/{}/{name}", witness.id, witness.key), bytes, Expect::Refused));
    }
    probes
}

/// The witness's fMP4 init section: the first is taken, any other one refused.
fn init_probe(witness: &Target, salt: u64, expect: Expect) -> Probe {
    Probe::put(format!("/ingest/{}/{}/init.mp4", witness.id, witness.key), segment_bytes("init", 0, salt), expect)
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for Probe {}

/// Traversal, odd and huge ids, NUL bytes and random percent-encoded bytes in every path.
fn paths(rng: &mut StdRng) -> Vec<Probe> {
    let mut ids: Vec<String> = [
        "..",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "live-%00",
        "live-\u{202e}",
        "a".repeat(10_000).as_str(),
        "live-",
        "LIVE-ABC",
        "live-../../x",
        "%FF%FE",
        "vod-1;rm -rf",
        "live-1%0d%0aSet-Cookie:x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for _ in 0..100 {
        let len = rng.random_range(1..64);
        ids.push((0..len).map(|_| format!("%{:02X}", rng.random::<u8>())).collect());
    }
    let mut probes = Vec::new();
    for id in &ids {
        for path in [
            format!("/streams/{id}/metadata"),
            format!("/streams/{id}/live"),
            format!("/streams/{id}/chunks"),
            format!("/vod/{id}/metadata"),
            format!("/vod/{id}/manifest"),
            format!("/play/0/00/{id}/live.m3u8"),
            format!("/play/{id}"),
        ] {
            probes.push(Probe::get(path, Expect::Refused));
        }
        probes.push(Probe::put(format!("/ingest/{id}/0.ts"), "x", Expect::Refused));
        probes.push(Probe::post(
            "/streams/end",
            format!(r#"{{"stream_id":{}}}"#, Value::from(id.clone())),
            Expect::Refused,
        ));
    }
    probes
}

/// A valid signed URL altered: each signature character changed, upper-case hex, other forms
/// of the expiry, an expired one, another stream's path under the same signature.
fn signed_urls(manifest_path: &str, other_id: &str) -> Vec<Probe> {
    // /play/{expires}/{sig}/{stream_id}/live.m3u8
    let parts: Vec<&str> = manifest_path.trim_start_matches('/').split('/').collect();
    let (expires, sig, id) = (parts[1], parts[2], parts[3]);
    let at = |e: &str, s: &str, i: &str, file: &str| format!("/play/{e}/{s}/{i}/{file}");
    let mut probes = vec![Probe::get(manifest_path, Expect::Status(200))];
    for (i, c) in sig.char_indices() {
        let flipped = if c == '0' { '1' } else { '0' };
        let mut bad = sig.to_string();
        bad.replace_range(i..i + 1, &flipped.to_string());
        probes.push(Probe::get(at(expires, &bad, id, "live.m3u8"), Expect::Status(403)));
    }
    let expiry: u64 = expires.parse().unwrap();
    for (e, s) in [
        (expires.to_string(), sig.to_uppercase()),
        (format!("0{expires}"), sig.to_string()),
        (format!("+{expires}"), sig.to_string()),
        (format!("{expires}.0"), sig.to_string()),
        ((expiry + 1).to_string(), sig.to_string()),
        ((expiry - 100_000).to_string(), sig.to_string()),
        ("18446744073709551616".into(), sig.to_string()),
        ("-1".into(), sig.to_string()),
        (expires.to_string(), String::new()),
        (expires.to_string(), format!("{sig}00")),
        (expires.to_string(), sig[..sig.len() - 2].to_string()),
    ] {
        probes.push(Probe::get(at(&e, &s, id, "live.m3u8"), Expect::Refused));
    }
    probes.push(Probe::get(at(expires, sig, other_id, "live.m3u8"), Expect::Status(403)));
    probes.push(Probe::get(at(expires, sig, id, "../../other/live.m3u8"), Expect::Refused));
    probes.push(Probe::get(at(expires, sig, id, "chunks/..%2F..%2F..%2Fsigning.key"), Expect::Refused));
    probes.push(Probe::get(at(expires, sig, id, "signing.key"), Expect::Refused));
    probes
}

/// Range headers, valid and hostile, on a served segment: RFC 9110 answers only.
fn ranges(segment_path: &str, size: u64) -> Vec<Probe> {
    let last = size - 1;
    let (partial, unsatisfiable, whole) = (Expect::Status(206), Expect::Status(416), Expect::Status(200));
    let cases: Vec<(String, Expect)> = vec![
        ("bytes=0-99".into(), partial),
        (format!("bytes={last}-"), partial),
        ("bytes=-10".into(), partial),
        ("bytes=0-0".into(), partial),
        (format!("bytes=0-{}", u64::MAX), partial),
        (format!("bytes={size}-"), unsatisfiable),
        ("bytes=999999999-".into(), unsatisfiable),
        ("bytes=-0".into(), unsatisfiable),
        ("garbage".into(), whole),
        ("bytes=".into(), whole),
        ("bytes=5-1".into(), whole),
        ("bytes=a-b".into(), whole),
        ("items=0-1".into(), whole),
        ("bytes=--1".into(), whole),
        // Numbers past u64 and several ranges: any answer RFC 9110 allows, never a 5xx.
        ("bytes=0-99999999999999999999999".into(), Expect::NoServerError),
        ("bytes=99999999999999999999999-".into(), Expect::NoServerError),
        ("bytes=0-1,3-4".into(), Expect::NoServerError),
        (format!("bytes={}", "0-1,".repeat(2000)), Expect::NoServerError),
    ];
    let mut probes = Vec::new();
    for _ in 0..10 {
        for (range, expect) in &cases {
            probes.push(Probe::get(segment_path, *expect).header("range", range.clone()));
        }
    }
    probes
}

/// Malformed, deeply nested, duplicated and oversized JSON on every JSON route.
fn json_bodies(rng: &mut StdRng, victim: &Target) -> Vec<Probe> {
    let mut bodies: Vec<Vec<u8>> = vec![
        "[".repeat(100_000).into_bytes(),
        format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000)).into_bytes(),
        br#"{"stream_id":"a","stream_id":"b"}"#.to_vec(),
        br#"{"target_duration":2,"unknown":1}"#.to_vec(),
        vec![b' '; 2 << 20],
        format!(r#"{{"title":"{}"}}"#, "x".repeat(2 << 20)).into_bytes(),
        b"\xff\xfe{}".to_vec(),
        b"null".to_vec(),
        br#"{"title":"\ud800"}"#.to_vec(),
    ];
    for _ in 0..100 {
        let len = rng.random_range(1..512);
        bodies.push((0..len).map(|_| rng.random()).collect());
    }
    let routes = [
        "/streams/start".to_string(),
        "/streams/end".into(),
        format!("/streams/{}/chunks", victim.id),
        "/tokens".into(),
    ];
    let mut probes = Vec::new();
    for body in bodies {
        for route in &routes {
            let mut probe = Probe::post(route.clone(), body.clone(), Expect::Refused);
            if route.contains("/chunks") {
                probe = probe.header("x-stream-key", &victim.key);
            }
            probes.push(probe);
        }
    }
    probes
}

/// Idle connections, slow headers, a huge header, a declared 9 GiB body, a body that stops:
/// each closed or answered in bounded time, `/health` answering throughout.
async fn connections(engine: &Engine, client: &reqwest::Client, target: &Target, tally: &mut Tally) {
    let addr = engine.base().trim_start_matches("http://").to_string();
    let token = common::admin_token(&engine.data);
    // 2,000 idle connections; /health meanwhile; each closed by the header-read timeout.
    let mut idle = Vec::new();
    for _ in 0..2_000 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    tally.sent += 2_000;
    let health = tokio::time::timeout(Duration::from_secs(2), client.get(format!("{}/health", engine.base())).send());
    match health.await {
        Ok(Ok(r)) => tally.answered("/health among 2,000 idle connections", r.status().as_u16(), Expect::Status(200)),
        _ => tally.hangs += 1,
    }
    tally.sent += 1;
    let closed = futures_util::future::join_all(idle.into_iter().map(closed_within)).await;
    tally.closed += closed.iter().filter(|c| **c).count() as u64;
    tally.hangs += closed.iter().filter(|c| !**c).count() as u64;

    // Slow headers: one byte every 300 ms, never finished.
    let slow = (0..100).map(|_| async {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        let _ = stream.write_all(head).await;
        let dripping = async {
            loop {
                if stream.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        tokio::time::timeout(ANSWER_WITHIN, dripping).await.is_ok()
    });
    let slow = futures_util::future::join_all(slow).await;
    tally.sent += slow.len() as u64;
    tally.closed += slow.iter().filter(|c| **c).count() as u64;
    tally.hangs += slow.iter().filter(|c| !**c).count() as u64;

    // Raw requests: a 200 KB header (431), a declared 9 GiB segment (413), a body that stops (408).
    let big_header = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200_000));
    let nine_gib = format!(
        "PUT /ingest/{}/{}/77.ts HTTP/1.1\r\nHost: x\r\nX-Sequence-Number: 77\r\nX-Duration-Ms: 2000\r\nContent-Length: {}\r\n\r\n",
        target.id,
        target.key,
        9u64 << 30
    );
    let stalled = format!(
        "POST /streams/start HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n{{\"title\":"
    );
    for (request, status, count) in [(big_header, 431, 50), (nine_gib, 413, 50), (stalled, 408, 20)] {
        let answers = futures_util::future::join_all((0..count).map(|_| raw_status(&addr, request.as_bytes()))).await;
        for answer in answers {
            tally.sent += 1;
            match answer {
                Some(Some(got)) => {
                    tally.answered(&format!("raw request expecting {status}"), got, Expect::Status(status))
                }
                Some(None) => tally.closed += 1,
                None => tally.hangs += 1,
            }
        }
    }
}

/// True when the server closes the connection within [`ANSWER_WITHIN`].
async fn closed_within(mut stream: TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(ANSWER_WITHIN, stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

/// Sends raw bytes and reads the status line: `None` a hang, `Some(None)` closed unanswered.
async fn raw_status(addr: &str, request: &[u8]) -> Option<Option<u16>> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let exchange = async {
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&answer);
        line.split_whitespace().nth(1).and_then(|s| s.parse().ok())
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange).await.ok()
}

/// Control-plane floods: 2,000 stream starts and token listings as fast as one client can.
fn floods() -> Vec<Probe> {
    let mut probes = Vec::new();
    for i in 0..2_000 {
        probes.push(match i % 2 {
            0 => Probe::post("/streams/start", r#"{"title":"flood"}"#, Expect::NoServerError),
            _ => Probe::get("/tokens", Expect::NoServerError),
        });
    }
    probes
}

/// The chunks of a stream as its documents list them: `sequence number -> stored SHA-256`.
async fn stored_chunks(
    client: &reqwest::Client,
    base: &str,
    id: &str,
) -> Result<HashMap<u64, (String, String)>, String> {
    let mut chunks = HashMap::new();
    let mut from = 0;
    loop {
        let url = format!("{base}/streams/{id}/chunks?from={from}&limit=1000");
        let response = client.get(url).send().await.map_err(|e| e.to_string())?;
        let page: Value = response.json().await.map_err(|e| e.to_string())?;
        let page = page["chunks"].as_array().ok_or("no chunks")?;
        for chunk in page {
            let seq = chunk["sequence_number"].as_u64().unwrap();
            let sha = chunk["stored_sha256"].as_str().unwrap_or_default().to_string();
            let status = chunk["status"].as_str().unwrap_or_default().to_string();
            if chunks.insert(seq, (sha, status)).is_some() {
                return Err(format!("{id}: chunk {seq} listed twice"));
            }
            from = seq + 1;
        }
        if page.len() < 1000 {
            return Ok(chunks);
        }
    }
}

/// Segments acknowledged but missing, stored with other bytes, or not live.
fn lost(acked: &[(u64, String)], stored: &HashMap<u64, (String, String)>) -> u64 {
    acked.iter().filter(|(seq, sha)| stored.get(seq).is_none_or(|(s, status)| s != sha || status != "live")).count()
        as u64
}

/// The playlist's segments, each fetched and hashed against what was acknowledged.
async fn playlist_matches(client: &reqwest::Client, base: &str, target: &Target) -> Result<usize, String> {
    let live: Value =
        client.get(format!("{base}/streams/{}/live", target.id)).send().await.unwrap().json().await.unwrap();
    let manifest_url = live["manifest_url"].as_str().ok_or("no manifest_url")?;
    let text = reqwest::get(manifest_url).await.unwrap().text().await.unwrap();
    let manifest = reqwest::Url::parse(manifest_url).unwrap();
    let by_seq: HashMap<u64, &String> = target.acked.iter().map(|(s, h)| (*s, h)).collect();
    let mut checked = 0;
    let mut seen = std::collections::HashSet::new();
    for uri in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        if !seen.insert(uri.to_string()) {
            return Err(format!("{uri} listed twice"));
        }
        let file = uri.split('?').next().unwrap().rsplit('/').next().unwrap();
        let seq: u64 = file.trim_end_matches(".ts").parse().map_err(|_| format!("odd segment {uri}"))?;
        let bytes = reqwest::get(manifest.join(uri).unwrap()).await.unwrap().bytes().await.unwrap();
        if let Some(sha) = by_seq.get(&seq) {
            if sha256_hex(&bytes) != **sha {
                return Err(format!("segment {seq} of {} serves other bytes", target.id));
            }
            checked += 1;
        }
    }
    Ok(checked)
}

async fn attacks(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = tempfile::tempdir().unwrap();
    let settings = [
        ("SEGFLOW_HEADER_READ_TIMEOUT_SECS", "3"),
        ("SEGFLOW_BODY_READ_TIMEOUT_SECS", "2"),
        ("SEGFLOW_CONTROL_PLANE_BURST", "500"),
        ("SEGFLOW_CONTROL_PLANE_RATE_PER_S", "100"),
    ];
    let mut engine = Engine::spawn(Backends::Embedded, data.path(), &settings);
    let admin = common::admin_client(data.path());
    let anonymous = reqwest::Client::new();
    let base = engine.base();
    let mut witness = start_target(&admin, &base, 20).await;
    let mut victim = start_target(&admin, &base, 20).await;
    let token = |scope: &str| {
        let (admin, base) = (admin.clone(), base.clone());
        let body = format!(r#"{{"name":"attack-{scope}","scopes":["{scope}"]}}"#);
        async move {
            let made: Value =
                admin.post(format!("{base}/tokens")).body(body).send().await.unwrap().json().await.unwrap();
            (made["token"].as_str().unwrap().to_string(), made["token_id"].as_str().unwrap().to_string())
        }
    };
    let (read, _) = token("read").await;
    let (revoked, revoked_id) = token("publish").await;
    let status = admin.delete(format!("{base}/tokens/{revoked_id}")).send().await.unwrap().status();
    assert_eq!(status, 200, "token revoked");
    let mut tally = Tally::default();
    send_all(&admin, &base, vec![init_probe(&witness, 1, Expect::Status(201))], &mut tally).await;
    assert_eq!(tally.unexpected, 0, "the witness's init section is taken: {:?}", tally.examples);
    let live: Value =
        admin.get(format!("{base}/streams/{}/live", witness.id)).send().await.unwrap().json().await.unwrap();
    let manifest = reqwest::Url::parse(live["manifest_url"].as_str().unwrap()).unwrap();
    let playlist = reqwest::get(manifest.clone()).await.unwrap().text().await.unwrap();
    let first = playlist.lines().find(|l| !l.starts_with('#') && !l.is_empty()).expect("a segment is listed");
    let segment = manifest.join(first).unwrap();
    let segment_path = format!("{}?{}", segment.path(), segment.query().unwrap_or_default());
    let segment_size = reqwest::get(segment).await.unwrap().bytes().await.unwrap().len() as u64;

    println!("reliability attacks (seed {seed}): the segflow binary on the embedded backends");
    println!(
        "  {:<26} {:>8} {:>8} {:>6} {:>7} {:>10}  statuses",
        "class", "requests", "crashes", "hangs", "closed", "unexpected"
    );
    let mut totals = Tally::default();
    let classes: Vec<AttackClass<'_>> = vec![
        ("numbers out of range", Box::new(|rng| numbers(rng, &victim, 20))),
        ("pushed playlists", Box::new(|rng| playlists(rng, &victim))),
        ("credentials", Box::new(|_| credentials(&victim, &witness, &read, &revoked))),
        ("overwrites and names", Box::new(|_| overwrites(&witness))),
        ("paths and ids", Box::new(paths)),
        ("signed URLs", Box::new(|_| signed_urls(manifest.path(), &victim.id))),
        ("Range headers", Box::new(|_| ranges(&segment_path, segment_size))),
        ("malformed JSON", Box::new(|rng| json_bodies(rng, &victim))),
        ("control-plane floods", Box::new(|_| floods())),
    ];
    for (name, probes) in &classes {
        let mut tally = Tally::default();
        let client = if *name == "credentials"
            || name.starts_with("signed")
            || name.starts_with("Range")
            || name.starts_with("paths")
        {
            &anonymous
        } else {
            &admin
        };
        let probes = probes(&mut rng);
        send_all(client, &engine.base(), probes, &mut tally).await;
        still_healthy(&mut engine, &admin, &mut tally).await;
        report(name, &tally, &mut totals);
    }
    drop(classes);
    let mut tally = Tally::default();
    connections(&engine, &admin, &victim, &mut tally).await;
    still_healthy(&mut engine, &admin, &mut tally).await;
    report("connections", &tally, &mut totals);

    // Nothing the attacks sent changed what was acknowledged, and both streams go on.
    let base = engine.base();
    let mut lost_total = 0;
    for target in [&mut witness, &mut victim] {
        let next = target.acked.len() as u64;
        let bytes = segment_bytes(&target.id, next, 0);
        let sha = sha256_hex(&bytes);
        let mut tally = Tally::default();
        let probe = segment_probe(target, &next.to_string(), "2000", bytes, Expect::Status(201));
        send_all(&reqwest::Client::new(), &base, vec![probe], &mut tally).await;
        assert_eq!(tally.statuses.get(&201), Some(&1), "{} takes its next segment: {:?}", target.id, tally.examples);
        target.acked.push((next, sha));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for target in [&witness, &victim] {
        let stored = stored_chunks(&admin, &base, &target.id).await.unwrap();
        lost_total += lost(&target.acked, &stored);
        let served = playlist_matches(&admin, &base, target).await.unwrap();
        assert_eq!(served, target.acked.len(), "every acknowledged segment is served with its own bytes");
    }
    let dead: Value = admin.get(format!("{base}/dead-letters")).send().await.unwrap().json().await.unwrap();
    let dead = dead["dead_letters"].as_array().map_or(0, |d| d.len());
    println!(
        "  {:<26} {:>8} {:>8} {:>6} {:>7} {:>10}",
        "total", totals.sent, totals.crashes, totals.hangs, totals.closed, totals.unexpected
    );
    println!("  acknowledged segments lost or changed: {lost_total} of {}", witness.acked.len() + victim.acked.len());
    println!("  dead letters recorded: {dead}");
    assert!(engine.process.terminate().success(), "segflow drained and exited 0");
    assert_eq!((totals.crashes, totals.hangs, totals.unexpected, lost_total), (0, 0, 0, 0), "{:?}", totals.examples);
}

fn report(name: &str, tally: &Tally, totals: &mut Tally) {
    let statuses: Vec<String> = tally.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
    println!(
        "  {name:<26} {:>8} {:>8} {:>6} {:>7} {:>10}  {}",
        tally.sent,
        tally.crashes,
        tally.hangs,
        tally.closed,
        tally.unexpected,
        statuses.join(" ")
    );
    for line in &tally.examples {
        println!("      unexpected: {line}");
    }
    totals.sent += tally.sent;
    totals.crashes += tally.crashes;
    totals.hangs += tally.hangs;
    totals.closed += tally.closed;
    totals.unexpected += tally.unexpected;
    totals.examples.extend(tally.examples.iter().cloned());
}

// ------------------------------------------------------------------------------------------
// Load with faults

/// What happens to the system at a random moment of the load.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill9,
    /// `scripts/services.sh stop NAME`, a pause, then `start NAME`.
    Restart(&'static str),
}

#[derive(Default)]
struct LoadCounts {
    acked: AtomicU64,
    retried: AtomicU64,
    hangs: AtomicU64,
    conflicts: AtomicU64,
    /// Failed requests by status (1: connection refused, 2: other transport error).
    failures: std::sync::Mutex<BTreeMap<u64, u64>>,
}

/// `streams` encoders push segments as fast as acknowledged (each retried with the same bytes
/// until it is, as an encoder does) for `seconds`, while `faults` happen at random moments.
async fn load_with_faults(backends: Backends, seed: u64, streams: u64, seconds: u64, faults: &[Fault]) {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = tempfile::tempdir().unwrap();
    let mut engine = Engine::spawn(backends, data.path(), &[]);
    let admin = common::admin_client(data.path());
    let mut targets = Vec::new();
    for _ in 0..streams {
        targets.push(start_target(&admin, &engine.base(), 0).await);
    }
    let counts = Arc::new(LoadCounts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let encoders: Vec<_> = targets
        .into_iter()
        .map(|mut target| {
            let (base, counts, stop) = (engine.base.clone(), counts.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let bytes = segment_bytes(&target.id, seq, 0);
                    let sha = sha256_hex(&bytes);
                    let url = format!("{}/ingest/{}/{}/{seq}.ts", base.read().unwrap(), target.id, target.key);
                    let sent = client
                        .put(url)
                        .header("x-sequence-number", seq)
                        .header("x-duration-ms", 2000)
                        .header("x-checksum-sha256", &sha)
                        .body(bytes)
                        .send()
                        .await;
                    match sent.map(|r| r.status().as_u16()) {
                        Ok(201) => {
                            counts.acked.fetch_add(1, Ordering::Relaxed);
                            target.acked.push((seq, sha));
                            seq += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(409) => {
                            counts.conflicts.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        failed => {
                            if failed.as_ref().is_err_and(|e| e.is_timeout()) {
                                counts.hangs.fetch_add(1, Ordering::Relaxed);
                            }
                            let why = failed.map_or_else(|e| if e.is_connect() { 1 } else { 2 }, u64::from);
                            *counts.failures.lock().unwrap().entry(why).or_default() += 1;
                            counts.retried.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                target
            })
        })
        .collect();

    // The faults, at random moments spread over the run.
    let started = Instant::now();
    let slot = Duration::from_secs(seconds) / (faults.len() as u32 + 1);
    let mut events = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        let at = slot * (i as u32)
            + Duration::from_millis(rng.random_range(slot.as_millis() as u64 / 3..slot.as_millis() as u64));
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        let acked_before = counts.acked.load(Ordering::Relaxed);
        let note = match fault {
            Fault::Kill9 => {
                engine.process.kill();
                let took = tokio::task::block_in_place(|| engine.restart());
                format!("kill -9, listening again after {:.2} s", took.as_secs_f64())
            }
            Fault::Restart(service) => {
                let took = tokio::task::block_in_place(|| {
                    service_script("stop", service);
                    std::thread::sleep(Duration::from_secs(5));
                    let started = Instant::now();
                    service_script("start", service);
                    started.elapsed()
                });
                format!("{service} stopped 5 s, up again after {:.1} s", took.as_secs_f64())
            }
        };
        events.push(format!("{:>5.1} s  {note} ({acked_before} acknowledged before)", at.as_secs_f64()));
    }
    tokio::time::sleep(Duration::from_secs(seconds).saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let mut targets = Vec::new();
    for encoder in encoders {
        targets.push(encoder.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Every acknowledged segment: in its stream's documents with its own bytes, and served.
    let base = engine.base();
    let acked: u64 = targets.iter().map(|t| t.acked.len() as u64).sum();
    let (mut lost_total, mut served, mut errors) = (0, 0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    for target in &targets {
        loop {
            let stored = stored_chunks(&admin, &base, &target.id).await.unwrap();
            let missing = lost(&target.acked, &stored);
            if missing == 0 || Instant::now() > deadline {
                lost_total += missing;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match playlist_matches(&admin, &base, target).await {
            Ok(n) => served += n,
            Err(e) => errors.push(e),
        }
    }
    let mut gaps = 0;
    for target in &targets {
        let doc: Value =
            admin.get(format!("{base}/streams/{}/metadata", target.id)).send().await.unwrap().json().await.unwrap();
        gaps += doc["gaps_total"].as_u64().unwrap_or(0);
    }
    let kind = if backends == Backends::Embedded { "embedded backends" } else { "Kafka, MinIO, FerretDB" };
    println!("reliability under faults (seed {seed}): {streams} live streams on the {kind}, {elapsed:.0} s");
    for event in &events {
        println!("  {event}");
    }
    println!(
        "  segments acknowledged {acked} ({:.0}/s), retried after a failed request {}, hangs {}, conflicts {}",
        acked as f64 / elapsed,
        counts.retried.load(Ordering::Relaxed),
        counts.hangs.load(Ordering::Relaxed),
        counts.conflicts.load(Ordering::Relaxed)
    );
    let failures: Vec<String> = counts.failures.lock().unwrap().iter().map(|(s, n)| format!("{s}×{n}")).collect();
    println!("  failed requests by status (1 refused connection, 2 other): {}", failures.join(" "));
    println!("  acknowledged segments lost or changed: {lost_total} of {acked}; gaps {gaps}");
    println!("  playlist segments fetched and matched: {served}; playlist errors {}", errors.len());
    for error in errors.iter().take(5) {
        println!("      {error}");
    }
    assert!(engine.process.terminate().success(), "segflow drained and exited 0");
    assert_eq!((lost_total, gaps, errors.len()), (0, 0, 0));
    assert_eq!(counts.conflicts.load(Ordering::Relaxed), 0, "a retry with the same bytes is never refused");
}

fn service_script(action: &str, service: &str) {
    let script = common::service_env("SERVICES_SCRIPT");
    let status = std::process::Command::new(script).args([action, service]).status().unwrap();
    assert!(status.success(), "services.sh {action} {service}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; there is nothing to list
    }
    let seed = env("SEED", rand::random::<u32>() as u64);
    let (streams, seconds, kills) = (env("STREAMS", 60), env("SECONDS", 40), env("KILLS", 4));
    let wants = |phase: &str| if args.is_empty() { phase != "services" } else { args.iter().any(|a| a == phase) };
    if wants("attacks") {
        attacks(seed).await;
    }
    if wants("kills") {
        let faults = vec![Fault::Kill9; kills as usize];
        load_with_faults(Backends::Embedded, seed, streams, seconds, &faults).await;
    }
    if wants("services") {
        let faults = [Fault::Kill9, Fault::Restart("kafka"), Fault::Kill9, Fault::Restart("s3"), Fault::Kill9];
        load_with_faults(Backends::Services, seed, streams, seconds, &faults).await;
    }
}
