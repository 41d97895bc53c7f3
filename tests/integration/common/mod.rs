//! Shared by the end-to-end tests: an engine on port 0, real FFmpeg media, small helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rdkafka::consumer::{BaseConsumer, Consumer};
use segflow::config::{Config, Secret};
use segflow::model::Topic;
use segflow::storage::object::ObjectStore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

/// Which backends an engine runs on: the end-to-end tests run once on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backends {
    /// Embedded log, local store, embedded metadata: nothing but the data dir.
    Embedded,
    /// Kafka, S3 (MinIO) and MongoDB (FerretDB): the servers `scripts/services.sh` starts.
    Services,
}

/// Runs each named `async fn name(backends: Backends)` as two tests, `name::embedded` and
/// `name::services`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name($crate::common::Backends::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
            async fn services() {
                super::$name($crate::common::Backends::Services).await
            }
        }
    )*};
}

impl Backends {
    /// Points `config` at the test servers, under names of its own derived from the data dir:
    /// tests never see each other's topics, buckets or documents, and an engine restarted on
    /// the same data dir finds its own.
    fn configure(self, config: &mut Config) {
        config.admin_token = Some(Secret(admin_token(&config.data_dir)));
        if self == Backends::Embedded {
            return;
        }
        let ns = namespace(&config.data_dir);
        config.kafka = Some(service_env("SERVICES_TEST_KAFKA"));
        config.kafka_topic_prefix = format!("{ns}-");
        config.kafka_group_id = format!("{ns}-segflow");
        config.s3_endpoint = Some(service_env("SERVICES_TEST_S3_ENDPOINT"));
        config.s3_access_key = Some(service_env("SERVICES_TEST_S3_ACCESS_KEY"));
        config.s3_secret_key = Some(Secret(service_env("SERVICES_TEST_S3_SECRET_KEY")));
        config.s3_bucket_prefix = format!("{ns}-");
        config.mongo_uri = Some(service_env("SERVICES_TEST_MONGO_URI"));
        config.mongo_database = format!("segflow_{ns}");
    }

    /// The default config of an engine on `data_dir`, on these backends.
    pub fn config(self, data_dir: &Path) -> Config {
        let mut config = Config { data_dir: data_dir.to_path_buf(), ..Config::default() };
        self.configure(&mut config);
        config
    }

    /// The same settings as `SEGFLOW_*` variables, for a spawned `segflow` process.
    pub fn env(self, data_dir: &Path) -> Vec<(String, String)> {
        let config = self.config(data_dir);
        let settings = [
            ("KAFKA", config.kafka),
            ("KAFKA_TOPIC_PREFIX", Some(config.kafka_topic_prefix)),
            ("KAFKA_GROUP_ID", Some(config.kafka_group_id)),
            ("S3_ENDPOINT", config.s3_endpoint),
            ("S3_ACCESS_KEY", config.s3_access_key),
            ("S3_SECRET_KEY", config.s3_secret_key.map(|s| s.0)),
            ("S3_BUCKET_PREFIX", Some(config.s3_bucket_prefix)),
            ("MONGO_URI", config.mongo_uri),
            ("MONGO_DATABASE", Some(config.mongo_database)),
            ("ADMIN_TOKEN", config.admin_token.map(|s| s.0)),
        ];
        settings.into_iter().filter_map(|(k, v)| v.map(|v| (format!("SEGFLOW_{k}"), v))).collect()
    }
}

/// `(partition, committed offset, end of log)` of each partition of `topic` of the stopped
/// engine on `data_dir`: from its embedded log, or its Kafka consumer group and watermarks.
pub fn topic_offsets(backends: Backends, data_dir: &Path, topic: Topic) -> Vec<(i32, i64, i64)> {
    let partitions = 0..topic.partitions() as i32;
    let Some((consumer, name)) = group_consumer(backends, data_dir, topic) else {
        let log = segflow::log::embedded::EmbeddedLog::open(&data_dir.join("log")).unwrap();
        let offsets = partitions
            .map(|p| (p, log.committed(topic, p as u32).unwrap() as i64, log.end(topic, p as u32) as i64))
            .collect();
        log.close();
        return offsets;
    };
    let mut list = rdkafka::TopicPartitionList::new();
    for p in partitions.clone() {
        list.add_partition(&name, p);
    }
    let committed = consumer.committed_offsets(list, KAFKA_TIMEOUT).unwrap();
    partitions
        .map(|p| {
            let (_, high) = consumer.fetch_watermarks(&name, p, KAFKA_TIMEOUT).unwrap();
            let offset = committed.find_partition(&name, p).unwrap().offset().to_raw().unwrap_or(0).max(0);
            (p, offset, high)
        })
        .collect()
}

/// Forgets the committed offsets of `topic` (engine stopped): the next start replays it all.
pub fn forget_offsets(backends: Backends, data_dir: &Path, topic: Topic) {
    let Some((consumer, name)) = group_consumer(backends, data_dir, topic) else {
        for p in 0..topic.partitions() {
            let _ = std::fs::remove_file(data_dir.join("log").join(topic.name()).join(format!("{p}.offset")));
        }
        return;
    };
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..topic.partitions() as i32 {
        list.add_partition_offset(&name, p, rdkafka::Offset::Offset(0)).unwrap();
    }
    consumer.commit(&list, rdkafka::consumer::CommitMode::Sync).unwrap();
}

/// Commits `offset` for one partition of `topic` in the Kafka group of the (stopped) engine on
/// `data_dir`.
pub fn commit_offset(backends: Backends, data_dir: &Path, topic: Topic, partition: i32, offset: i64) {
    let (consumer, name) = group_consumer(backends, data_dir, topic).expect("an engine on Kafka");
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(&name, partition, rdkafka::Offset::Offset(offset)).unwrap();
    consumer.commit(&list, rdkafka::consumer::CommitMode::Sync).unwrap();
}

const KAFKA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A consumer in the Kafka group of the engine on `data_dir` and its name for `topic`; `None`
/// on the embedded log.
fn group_consumer(backends: Backends, data_dir: &Path, topic: Topic) -> Option<(BaseConsumer, String)> {
    let config = backends.config(data_dir);
    let consumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", config.kafka?)
        .set("group.id", &config.kafka_group_id)
        .create()
        .unwrap();
    Some((consumer, format!("{}{}", config.kafka_topic_prefix, topic.name())))
}

/// The object store of the engine on `data_dir`, opened with its settings.
pub async fn open_store(backends: Backends, data_dir: &Path) -> std::sync::Arc<dyn ObjectStore> {
    let config = backends.config(data_dir);
    segflow::backends::open_store(&config).await.expect("the object store opens")
}

/// A plain S3 client of the test server, to look behind the store's back.
pub fn s3_client(endpoint: &str, access_key: &str, secret_key: &str, region: &str) -> aws_sdk_s3::Client {
    let credentials = aws_sdk_s3::config::Credentials::new(access_key, secret_key, None, None, "test");
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .endpoint_url(endpoint)
            .credentials_provider(credentials)
            .region(aws_sdk_s3::config::Region::new(region.to_string()))
            .force_path_style(true)
            .behavior_version_latest()
            .build(),
    )
}

/// Every object key of the engine on `data_dir` that starts with `prefix`, sorted: the files
/// under its objects folder (hidden spares left out), or the objects in its S3 buckets.
pub async fn list_keys(backends: Backends, data_dir: &Path, prefix: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, keys: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, keys);
            } else if !entry.file_name().to_string_lossy().starts_with('.') {
                keys.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let config = backends.config(data_dir);
    let mut keys = Vec::new();
    match &config.s3_endpoint {
        None => walk(&data_dir.join("objects"), &data_dir.join("objects"), &mut keys),
        Some(endpoint) => {
            let (access, secret) =
                (config.s3_access_key.as_deref().unwrap(), &config.s3_secret_key.as_ref().unwrap().0);
            let s3 = s3_client(endpoint, access, secret, &config.s3_region);
            for bucket in segflow::model::keys::bucket::ALL {
                let name = format!("{}{bucket}", config.s3_bucket_prefix);
                let mut pages = s3.list_objects_v2().bucket(name).into_paginator().send();
                while let Some(page) = pages.next().await {
                    let page = page.unwrap();
                    keys.extend(page.contents().iter().filter_map(|o| o.key()).map(|k| format!("{bucket}/{k}")));
                }
            }
        }
    }
    keys.retain(|k| k.starts_with(prefix));
    keys.sort();
    keys
}

/// A test server's address from the environment `scripts/services.sh env` prints.
pub fn service_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the real-service tests need the test servers. Run the suite with \
             scripts/test.sh, or `scripts/services.sh start && eval \"$(scripts/services.sh env)\"`"
        )
    })
}

/// The admin token an engine on `data_dir` is configured with (`SEGFLOW_ADMIN_TOKEN`), as an
/// operator keeps one in a secret store: the same for every start on that data dir.
pub fn admin_token(data_dir: &Path) -> String {
    let seed = sha256_hex(data_dir.as_os_str().as_encoded_bytes());
    format!("sft_{}_{}", &seed[..12], sha256_hex(format!("{seed} secret").as_bytes()))
}

/// An HTTP client that sends `token` with every request, as an API client configured with one.
pub fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// A client holding the admin token of the engine on `data_dir`.
pub fn admin_client(data_dir: &Path) -> reqwest::Client {
    client_with(&admin_token(data_dir))
}

/// A short name unique to a data dir.
fn namespace(data_dir: &Path) -> String {
    format!("t{}", &sha256_hex(data_dir.as_os_str().as_encoded_bytes())[..10])
}

pub struct TestEngine {
    pub base: String,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
    /// The engine's object store, opened by the test with the engine's own settings.
    pub store: std::sync::Arc<dyn ObjectStore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), segflow::engine::EngineError>>>,
}

impl TestEngine {
    pub async fn start(data_dir: &Path, workers: usize) -> TestEngine {
        Self::start_on(Backends::Embedded, data_dir, workers).await
    }

    pub async fn start_on(backends: Backends, data_dir: &Path, workers: usize) -> TestEngine {
        Self::start_with(Config { workers, ..backends.config(data_dir) }).await
    }

    pub async fn start_with(config: Config) -> TestEngine {
        // The engine's log, shown with a failing test's output (`RUST_LOG` to change it).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        let data_dir = config.data_dir.clone();
        let store = segflow::backends::open_store(&config).await.expect("the object store opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let mut task = tokio::spawn(segflow::engine::run(config, listener, async {
            let _ = stopped.await;
        }));
        let client = admin_client(&data_dir);
        // Requests wait in the listen backlog while the engine starts; one that fails to start
        // says why here rather than as a reset connection later.
        let health = client.get(format!("{base}/health")).send();
        let answered = tokio::select! {
            answered = health => answered.is_ok(),
            _ = &mut task => false,
        };
        if !answered {
            let ended = tokio::time::timeout(std::time::Duration::from_secs(30), &mut task).await;
            panic!("the engine did not start: {ended:?}");
        }
        TestEngine { base, data_dir, client, store, stop: Some(stop), task: Some(task) }
    }

    /// Stops the engine the way SIGTERM does, and waits for the drain.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().expect("engine drained cleanly");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, body: &str) -> (u16, Value) {
        let response = self.client.post(self.url(path)).body(body.to_string()).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    pub async fn start_stream(&self, target_duration: u64) -> String {
        self.start_stream_keyed(target_duration).await.0
    }

    /// Starts a stream; returns its id and its key (for the encoder).
    pub async fn start_stream_keyed(&self, target_duration: u64) -> (String, String) {
        let (status, body) =
            self.post_json("/streams/start", &format!(r#"{{"target_duration":{target_duration}}}"#)).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "live");
        let key = body["stream_key"].as_str().expect("the stream's key, shown once").to_string();
        (body["stream_id"].as_str().unwrap().to_string(), key)
    }

    /// Polls the stream document until `done` holds (the dataflow is asynchronous to requests).
    pub async fn wait_stream(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..1200 {
            let (_, doc) = self.get_json(&format!("/streams/{id}/metadata")).await;
            if done(&doc) {
                return doc;
            }
            last = doc;
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("stream {id} never reached the expected state; last seen: {last}");
    }

    pub async fn metric(&self, name: &str) -> f64 {
        metric(&self.client, &self.base, name).await
    }
}

/// The value of series `name` (with its labels, if any) in `base`'s `/metrics`; 0 if absent.
pub async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One HLS segment FFmpeg produced.
pub struct Segment {
    pub bytes: Vec<u8>,
    pub duration_ms: u64,
}

/// Encodes `seconds` of test pattern and tone into 2-second H.264/AAC MPEG-TS segments.
pub fn ffmpeg_segments(dir: &Path, seconds: u32) -> Vec<Segment> {
    let playlist = dir.join("source.m3u8");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-f", "hls", "-hls_time", "2", "-hls_list_size", "0"])
        .arg(&playlist)
        .status()
        .expect("ffmpeg runs (scripts/install-deps.sh installs it)");
    assert!(status.success());
    let text = std::fs::read(&playlist).unwrap();
    let parsed = m3u8_rs::parse_media_playlist_res(&text).unwrap();
    parsed
        .segments
        .iter()
        .map(|s| Segment {
            bytes: std::fs::read(dir.join(&s.uri)).unwrap(),
            duration_ms: (s.duration as f64 * 1000.0).round() as u64,
        })
        .collect()
}

/// Decodes every video frame FFmpeg can reach from `url`; returns (exit ok, frames, stderr).
pub fn ffmpeg_decode(url: &str) -> (bool, usize, String) {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i", url, "-map", "0:v", "-f", "framecrc", "-"])
        .output()
        .expect("ffmpeg runs");
    let frames = String::from_utf8_lossy(&output.stdout).lines().filter(|l| !l.starts_with('#')).count();
    (output.status.success(), frames, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// hls.js playing a URL in headless Chromium, from a page of another origin, as a web viewer
/// does (`tests/player/play.mjs`, installed by `scripts/install-player.sh`); killed if dropped.
pub struct Player(Option<Child>);

impl Player {
    /// Starts playing `url` at `rate` times real time.
    pub fn start(url: &str, rate: f64) -> Player {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/player/play.mjs");
        let child = Command::new("node")
            .arg(script)
            .arg(url)
            .args(["--rate", &rate.to_string(), "--timeout-s", "300"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs the player: scripts/install-player.sh installs it");
        Player(Some(child))
    }

    /// Waits until the video ended or the player failed: what it saw (see play.mjs).
    pub fn report(mut self) -> Value {
        let output = self.0.take().unwrap().wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|_| panic!("the player printed no report: {stdout}\n{stderr}"))
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CPU seconds of process `pid` (or `self`) so far, user and kernel, from `/proc/{pid}/stat`:
/// its own (all threads), and its children's that it has waited for.
pub fn cpu_seconds_of(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised name, from the 12th: utime, stime, cutime, cstime, in
    // USER_HZ ticks (100 per second on Linux).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks = |k: usize| fields[k].parse::<u64>().unwrap();
    ((ticks(11) + ticks(12)) as f64 / 100.0, (ticks(13) + ticks(14)) as f64 / 100.0)
}

/// A `segflow` process started by a test or bench; killed when dropped while still running,
/// so a failed assertion leaves no engine behind.
pub struct EngineProcess(Child);

impl From<Child> for EngineProcess {
    fn from(child: Child) -> EngineProcess {
        EngineProcess(child)
    }
}

impl EngineProcess {
    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// CPU time the process has used so far, all threads, user and kernel.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.0.id().to_string()).0
    }

    /// CPU time of the processes it ran and has reaped (FFmpeg, ffprobe).
    pub fn children_cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.0.id().to_string()).1
    }

    /// How the process exited, if it has (a crash shows here).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().unwrap()
    }

    /// Sends SIGTERM and returns how the process exited.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().unwrap();
        self.0.wait().unwrap()
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill();
        }
    }
}

/// Starts the real `segflow` binary on a free port; returns the process and its base URL.
pub fn spawn_segflow(data_dir: &Path) -> (EngineProcess, String) {
    spawn_segflow_on(Backends::Embedded, data_dir)
}

pub fn spawn_segflow_on(backends: Backends, data_dir: &Path) -> (EngineProcess, String) {
    spawn_segflow_with(backends, data_dir, &[])
}

/// As [`spawn_segflow_on`], with more `SEGFLOW_*` settings.
pub fn spawn_segflow_with(backends: Backends, data_dir: &Path, settings: &[(&str, &str)]) -> (EngineProcess, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_segflow"))
        .args(["run", "--listen", "127.0.0.1:0", "--workers", "2", "--data-dir"])
        .arg(data_dir)
        .envs(backends.env(data_dir))
        .envs(settings.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the segflow binary runs");
    let base =
        listening_address(&mut child).unwrap_or_else(|stdout| panic!("segflow exited before it listened: {stdout}"));
    (EngineProcess(child), base)
}

/// The base URL a starting `segflow` prints on stdout once it serves (timely may print its
/// own connection progress first), or everything it printed if it exits first. Its stdout is
/// read to the end on a thread, so a later line never meets a closed pipe.
fn listening_address(child: &mut Child) -> Result<String, String> {
    watch_stdout(child).recv().unwrap_or_else(|_| Err(String::new()))
}

/// [`listening_address`], answered on a channel.
fn watch_stdout(child: &mut Child) -> std::sync::mpsc::Receiver<Result<String, String>> {
    use std::io::BufRead;
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (found, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut printed = String::new();
        let mut found = Some(found);
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                found.take().map(|found| found.send(Ok(url.to_string())));
            }
            printed.push_str(&line);
            printed.push('\n');
        }
        found.map(|found| found.send(Err(printed)));
    });
    listening
}

/// Free loopback ports for a cluster's timely addresses (bound once, then released).
pub fn free_addresses(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect()
}

/// The `segflow` command of process `process` of a cluster over `peers`, on the backends of
/// `shared` (one namespace and admin token for all) with its own data dir `data_dir`.
pub fn cluster_command(shared: &Path, data_dir: &Path, peers: &[String], process: usize, workers: usize) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_segflow"));
    command
        .args(["run", "--listen", "127.0.0.1:0", "--workers", &workers.to_string(), "--data-dir"])
        .arg(data_dir)
        .args(["--processes", &peers.len().to_string(), "--process", &process.to_string(), "--peers"])
        .arg(peers.join(","))
        .envs(Backends::Services.env(shared))
        .env("SEGFLOW_SIGNING_KEY", sha256_hex(shared.as_os_str().as_encoded_bytes()))
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A cluster of `peers.len()` `segflow` processes ([`cluster_command`]), each with data dir
/// `shared/p{i}`: every one started before any is waited for (timely connects them all
/// first). Returns each process with its base URL and its stderr, read on a thread.
pub fn spawn_cluster(shared: &Path, peers: &[String], workers: usize) -> Vec<(EngineProcess, String, Stderr)> {
    spawn_cluster_with(shared, peers, workers, &[])
}

/// As [`spawn_cluster`], with more `SEGFLOW_*` settings on every process.
pub fn spawn_cluster_with(
    shared: &Path,
    peers: &[String],
    workers: usize,
    settings: &[(&str, &str)],
) -> Vec<(EngineProcess, String, Stderr)> {
    // Each one owned at once, so a panic below kills every one started.
    let mut processes: Vec<EngineProcess> = (0..peers.len())
        .map(|i| {
            let dir = shared.join(format!("p{i}"));
            let mut command = cluster_command(shared, &dir, peers, i, workers);
            EngineProcess(command.envs(settings.iter().copied()).spawn().expect("the segflow binary runs"))
        })
        .collect();
    let stderrs: Vec<Stderr> = processes.iter_mut().map(|process| Stderr::read(&mut process.0)).collect();
    let stdouts: Vec<_> = processes.iter_mut().map(|process| watch_stdout(&mut process.0)).collect();
    let bases: Result<Vec<String>, String> =
        stdouts.iter().map(|stdout| stdout.recv().unwrap_or_else(|_| Err(String::new()))).collect();
    let bases = bases.unwrap_or_else(|stdout| {
        std::thread::sleep(std::time::Duration::from_millis(200)); // the rest of stderr
        let stderrs: Vec<String> = stderrs.iter().map(Stderr::text).collect();
        panic!("a cluster process exited before it listened; stdout: {stdout}\nstderr of each: {stderrs:#?}")
    });
    processes.into_iter().zip(bases).zip(stderrs).map(|((process, base), stderr)| (process, base, stderr)).collect()
}

/// Prints each stderr if the test panics while this lives: why a process of a cluster exited.
pub struct StderrOnPanic(pub Vec<Stderr>);

impl Drop for StderrOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (process, stderr) in self.0.iter().enumerate() {
                eprintln!("stderr of process {process}:\n{}", stderr.text());
            }
        }
    }
}

/// A child's stderr, gathered on a thread as it is written.
#[derive(Clone)]
pub struct Stderr(std::sync::Arc<std::sync::Mutex<String>>);

impl Stderr {
    fn read(child: &mut Child) -> Stderr {
        use std::io::Read;
        let text = Stderr(std::sync::Arc::default());
        let (mut pipe, into) = (child.stderr.take().unwrap(), text.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                into.0.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        text
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// PUTs a small made-up segment with its sequence number, 2 s duration and checksum; returns
/// the HTTP status.
pub async fn put_segment(client: &reqwest::Client, base: &str, id: &str, seq: u64) -> u16 {
    try_put_segment(client, base, id, seq).await.expect("segflow answers")
}

/// [`put_segment`], `None` when no answer came (the process is gone).
pub async fn try_put_segment(client: &reqwest::Client, base: &str, id: &str, seq: u64) -> Option<u16> {
    let bytes = format!("segment {seq} of {id}").repeat(100).into_bytes();
    let sent = client
        .put(format!("{base}/ingest/{id}/{seq}.ts"))
        .header("X-Sequence-Number", seq.to_string())
        .header("X-Duration-Ms", "2000")
        .header("X-Checksum-Sha256", sha256_hex(&bytes))
        .body(bytes)
        .send()
        .await;
    sent.ok().map(|response| response.status().as_u16())
}

/// GETs a URL and parses its JSON body.
pub async fn fetch_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// `POST /streams/start` with `body`; returns the new stream's id.
pub async fn start_stream_at(client: &reqwest::Client, base: &str, body: &str) -> String {
    loop {
        let response = client.post(format!("{base}/streams/start")).body(body.to_string()).send().await.unwrap();
        if response.status() == 429 {
            // Rate limited, as a client that starts many streams may be: wait as told.
            let wait = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            continue;
        }
        assert_eq!(response.status(), 201);
        let started: Value = response.json().await.unwrap();
        return started["stream_id"].as_str().unwrap().to_string();
    }
}

/// Encodes a test clip with FFmpeg's own sources (`ultrafast`: only the test's input).
pub fn clip(dir: &Path, name: &str, size: &str, seconds: u32, audio: bool) -> PathBuf {
    let path = dir.join(name);
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg.args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"]);
    ffmpeg.arg(format!("testsrc2=size={size}:rate=30"));
    if audio {
        ffmpeg.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:a", "aac"]);
    }
    ffmpeg.args(["-t", &seconds.to_string(), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]);
    let status = ffmpeg.arg(&path).status().expect("ffmpeg runs (scripts/install-deps.sh installs it)");
    assert!(status.success());
    path
}

/// A clip as phones record them: HEVC 10-bit, coded 1280x720 with a quarter-turn rotation
/// (shown 720x1280), frames at a varying rate (30 fps for 1 s, then every third frame), AAC.
pub fn phone_clip(dir: &Path, name: &str) -> PathBuf {
    let coded = dir.join(format!("coded-{name}"));
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg.args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"]);
    ffmpeg.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3"]);
    ffmpeg.args(["-vf", "select='lt(t\\,1)+not(mod(n\\,3))'", "-fps_mode", "vfr"]);
    ffmpeg.args(["-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-tag:v", "hvc1", "-x265-params", "log-level=error"]);
    let status = ffmpeg.args(["-c:a", "aac"]).arg(&coded).status().expect("ffmpeg runs");
    assert!(status.success(), "encoding the phone clip");
    // The rotation goes into the container, as a phone writes it: FFmpeg 6 and later take
    // `-display_rotation`, FFmpeg 5 the `rotate` tag.
    let path = dir.join(name);
    let remux = |before: &[&str], after: &[&str]| {
        let mut ffmpeg = Command::new("ffmpeg");
        ffmpeg.args(["-hide_banner", "-loglevel", "quiet", "-y"]).args(before).arg("-i").arg(&coded);
        ffmpeg.args(["-c", "copy"]).args(after).arg(&path).status().expect("ffmpeg runs").success()
    };
    assert!(remux(&["-display_rotation", "90"], &[]) || remux(&[], &["-metadata:s:v:0", "rotate=90"]));
    path
}

/// `POST /vod/upload` as multipart, the way a browser form sends it.
pub async fn upload_video(client: &reqwest::Client, base: &str, file: &Path, title: &str) -> (u16, Value) {
    let bytes = std::fs::read(file).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let form = reqwest::multipart::Form::new()
        .text("title", title.to_string())
        .text("description", "made by ffmpeg's testsrc2")
        .part("video", reqwest::multipart::Part::bytes(bytes).file_name(name));
    let response = client.post(format!("{base}/vod/upload")).multipart(form).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Polls a video's document until `done` holds for it.
pub async fn wait_video(client: &reqwest::Client, base: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut seen = Vec::new();
    for _ in 0..2400 {
        let doc = fetch_json(client, &format!("{base}/vod/{id}/metadata")).await;
        let status = doc["status"].as_str().unwrap_or_default().to_string();
        if seen.last() != Some(&status) {
            seen.push(status);
        }
        if done(&doc) {
            return doc;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("video {id} never reached the expected state; statuses seen: {seen:?}");
}

/// Polls a video's document until its status is `ready` or `failed`.
pub async fn wait_video_final(client: &reqwest::Client, base: &str, id: &str) -> Value {
    wait_video(client, base, id, |doc| doc["status"] == "ready" || doc["status"] == "failed").await
}
