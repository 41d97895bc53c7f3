//! One `Config` for the whole engine, layered: defaults < TOML file < `SEGFLOW_*` env (and the
//! legacy pipeline's names, [`LEGACY_ENV`]) < command-line flags.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// How a video's ladder is spread over FFmpeg processes: each group of rungs is a transcode
/// task of its own, exchanged to a worker by video and rung.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TranscodeMode {
    /// One FFmpeg decodes the source once and `split`s the picture to every rung.
    #[default]
    Split,
    /// One FFmpeg per rung: on a cluster the rungs of one video spread over processes.
    PerRung,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Everything segflow stores: log, objects, metadata, signing secret.
    pub data_dir: PathBuf,
    /// HTTP address; port 0 picks a free one.
    pub listen: String,
    /// Timely worker threads.
    pub workers: usize,
    /// Segments kept in a live playlist (`DVR_WINDOW_SIZE`).
    pub dvr_window: u64,
    /// Default `EXT-X-TARGETDURATION` of a live stream, in seconds.
    pub target_duration: u64,
    /// How far ahead of a live stream's head a chunk may jump (further is refused).
    pub max_sequence_jump: u64,
    /// Largest live segment accepted, in bytes.
    pub max_segment_bytes: u64,
    /// Largest JSON request body, in bytes.
    pub max_json_bytes: usize,
    /// Lifetime of signed playback URLs, in seconds.
    pub signed_url_ttl_secs: u64,
    /// Base URL players reach the API at; by default taken from the request's `Host`.
    pub public_url: Option<String>,
    /// Largest VOD upload accepted, in bytes (413 above it).
    pub max_upload_bytes: u64,
    /// Seconds a client has to send a request's headers: from the connection's start, or from
    /// the first byte of a later request on it.
    pub header_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait for its next request before it is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a request body may send nothing, once its handler reads it (408 after).
    pub body_read_timeout_secs: u64,
    /// Connections served at once; more wait to be accepted (kept below the open file limit).
    pub max_connections: usize,
    /// Largest request head (request line and headers), in bytes (431 above it).
    pub max_header_bytes: usize,
    /// FFmpeg transcodes running at once in this process (each one uses every core).
    pub transcode_jobs: usize,
    /// One FFmpeg decoding once for every rung (`split`), or one FFmpeg per rung (`per_rung`).
    pub transcode_mode: TranscodeMode,
    /// Kafka brokers `host:port[,…]` (`KAFKA_BOOTSTRAP_SERVERS`); unset: the embedded log.
    pub kafka: Option<String>,
    /// Prepended to the topic names `live-chunks` and `vod-chunks`.
    pub kafka_topic_prefix: String,
    /// Consumer group whose committed offsets are the restart point.
    pub kafka_group_id: String,
    /// S3 / MinIO endpoint URL (`MINIO_ENDPOINT`); unset: the local store under the data dir.
    pub s3_endpoint: Option<String>,
    /// Endpoint presigned URLs are made for, as players reach it (`MINIO_PUBLIC_ENDPOINT`).
    pub s3_public_endpoint: Option<String>,
    /// S3 access key (`MINIO_ROOT_USER`).
    pub s3_access_key: Option<String>,
    /// S3 secret key (`MINIO_ROOT_PASSWORD`); never printed.
    pub s3_secret_key: Option<Secret>,
    pub s3_region: String,
    /// Prepended to the bucket names `vod-raw`, `vod-variants`, `live-streams`, `manifests`.
    pub s3_bucket_prefix: String,
    /// MongoDB connection string (`MONGO_URI`); unset: the embedded metadata store.
    pub mongo_uri: Option<String>,
    /// MongoDB database (`MONGO_DB`).
    pub mongo_database: String,
    /// Control-plane requests (start, end, key, tokens, uploads) per second per credential,
    /// after a burst of `control_plane_burst`; 429 beyond.
    pub control_plane_rate_per_s: u32,
    pub control_plane_burst: u32,
    /// Serve without authentication (`--no-auth`): refused unless `listen` is a loopback address.
    pub no_auth: bool,
    /// An admin token to accept (`sft_…`, from `segflow token create` on another data dir, or
    /// a secret store); without one, the first start makes one and prints it once.
    pub admin_token: Option<Secret>,
    /// `/health` is degraded while the data dir's file system has less free space than this
    /// many bytes, or than `min_free_disk_percent` of its size.
    pub min_free_disk_bytes: u64,
    pub min_free_disk_percent: f64,
    /// The URL-signing secret (hex, at least 16 bytes); unset: `signing.key` in the data dir,
    /// made on first start. A cluster needs one shared by every process.
    pub signing_key: Option<Secret>,
    /// Processes in the timely cluster (timely's `-n`); above 1 needs Kafka, S3 and MongoDB.
    pub processes: usize,
    /// This process's index in the cluster, 0 to `processes` - 1 (timely's `-p`).
    pub process: usize,
    /// A file of the processes' timely addresses, one `host:port` a line in process order,
    /// this one's included (timely's `-h`); or give them as `peers`.
    pub hostfile: Option<PathBuf>,
    /// The processes' timely addresses in process order: a list, or `host:port,host:port`.
    #[serde(default, deserialize_with = "addresses")]
    pub peers: Option<Vec<String>>,
    /// Seconds to wait for every peer at start, and for a silent peer while running, before
    /// this process exits (timely cannot go on without one).
    pub peer_timeout_secs: u64,
    /// Seconds to wait at start for every peer to connect (timely retries for ever).
    pub peer_connect_timeout_secs: u64,
}

/// `peers` as a TOML list or as comma-separated text (`SEGFLOW_PEERS=a:1,b:2`, `--peers`).
fn addresses<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Addresses {
        List(Vec<String>),
        Text(String),
    }
    Ok(Option::<Addresses>::deserialize(deserializer)?.map(|addresses| match addresses {
        Addresses::List(list) => list,
        Addresses::Text(text) => text.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect(),
    }))
}

/// A credential: read from config like a string, shown as `***`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The environment names the legacy pipeline's deployment uses, and the config key each sets,
/// so that its docker-compose settings configure segflow unchanged.
pub const LEGACY_ENV: [(&str, &str); 8] = [
    ("DVR_WINDOW_SIZE", "dvr_window"),
    ("KAFKA_BOOTSTRAP_SERVERS", "kafka"),
    ("MINIO_ENDPOINT", "s3_endpoint"),
    ("MINIO_PUBLIC_ENDPOINT", "s3_public_endpoint"),
    ("MINIO_ROOT_USER", "s3_access_key"),
    ("MINIO_ROOT_PASSWORD", "s3_secret_key"),
    ("MONGO_URI", "mongo_uri"),
    ("MONGO_DB", "mongo_database"),
];

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("segflow-data"),
            listen: "127.0.0.1:8080".into(),
            workers: 2,
            dvr_window: 10,
            target_duration: 6,
            max_sequence_jump: crate::model::checks::DEFAULT_MAX_SEQUENCE_JUMP,
            max_segment_bytes: 64 * 1024 * 1024,
            max_json_bytes: 64 * 1024,
            signed_url_ttl_secs: 3600,
            public_url: None,
            max_upload_bytes: 8 * 1024 * 1024 * 1024,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_read_timeout_secs: 30,
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            transcode_jobs: 1,
            transcode_mode: TranscodeMode::Split,
            kafka: None,
            kafka_topic_prefix: String::new(),
            kafka_group_id: "segflow".into(),
            s3_endpoint: None,
            s3_public_endpoint: None,
            s3_access_key: None,
            s3_secret_key: None,
            s3_region: "us-east-1".into(),
            s3_bucket_prefix: String::new(),
            mongo_uri: None,
            mongo_database: "segflow".into(),
            control_plane_rate_per_s: 10,
            control_plane_burst: 50,
            no_auth: false,
            admin_token: None,
            min_free_disk_bytes: 1 << 30,
            min_free_disk_percent: 2.0,
            signing_key: None,
            processes: 1,
            process: 0,
            hostfile: None,
            peers: None,
            peer_timeout_secs: 10,
            peer_connect_timeout_secs: 60,
        }
    }
}

/// Flags given on the command line (`segflow run`'s, parsed by clap); `None` leaves the lower
/// layers' value.
#[derive(Clone, Debug, Default, Serialize, clap::Args)]
pub struct Overrides {
    /// Where segflow keeps its log, objects, metadata and signing secret.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// HTTP address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Timely worker threads.
    #[arg(short = 'w', long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Segments kept in a live playlist (env: DVR_WINDOW_SIZE or SEGFLOW_DVR_WINDOW).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dvr_window: Option<u64>,
    /// Kafka brokers host:port[,…] for the event log (env: KAFKA_BOOTSTRAP_SERVERS).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<String>,
    /// S3 / MinIO endpoint URL for the object store (env: MINIO_ENDPOINT).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// MongoDB connection string for the metadata store (env: MONGO_URI).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongo_uri: Option<String>,
    /// Serve without authentication; refused unless --listen is a loopback address.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_auth: Option<bool>,
    /// Processes in the timely cluster (above 1 needs --kafka, --s3-endpoint, --mongo-uri).
    #[arg(short = 'n', long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<usize>,
    /// This process's index in the cluster, from 0.
    #[arg(short = 'p', long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<usize>,
    /// File of the processes' timely addresses, one host:port a line, in process order.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostfile: Option<PathBuf>,
    /// The processes' timely addresses host:port,host:port,…, in process order.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads the layers; `file` is optional, but if named it must exist.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::MissingFile(file.to_path_buf()));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("SEGFLOW_"));
        for (name, key) in LEGACY_ENV {
            figment = figment.merge(Env::raw().only(&[name]).map(move |_| key.into()));
        }
        let config: Config = figment
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.workers == 0 {
            return invalid("workers must be at least 1");
        }
        use crate::model::checks::{DVR_WINDOW_SIZE, MAX_SEQUENCE_NUMBER, TARGET_DURATION_S};
        if !DVR_WINDOW_SIZE.contains(&self.dvr_window) {
            return invalid("dvr_window must be 1 to 100000");
        }
        if !TARGET_DURATION_S.contains(&self.target_duration) {
            return invalid("target_duration must be 1 to 60 seconds");
        }
        if !(1..=MAX_SEQUENCE_NUMBER).contains(&self.max_sequence_jump) {
            return invalid("max_sequence_jump must be at least 1");
        }
        if self.header_read_timeout_secs == 0 || self.idle_timeout_secs == 0 || self.body_read_timeout_secs == 0 {
            return invalid(
                "header_read_timeout_secs, idle_timeout_secs and body_read_timeout_secs must be at least 1 second",
            );
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1");
        }
        if self.max_header_bytes < 1024 {
            return invalid("max_header_bytes must be at least 1024");
        }
        if !(0.0..=100.0).contains(&self.min_free_disk_percent) {
            return invalid("min_free_disk_percent must be 0 to 100");
        }
        if self.transcode_jobs == 0 {
            return invalid("transcode_jobs must be at least 1");
        }
        if self.no_auth && !is_loopback(&self.listen) {
            return Err(ConfigError::Invalid(format!(
                "no_auth is refused on {}: anyone who reaches it could publish and read; listen on 127.0.0.1 \
                 or ::1, or keep authentication on",
                self.listen
            )));
        }
        if self.s3_endpoint.is_some() && (self.s3_access_key.is_none() || self.s3_secret_key.is_none()) {
            return invalid("s3_endpoint needs s3_access_key and s3_secret_key (MINIO_ROOT_USER, MINIO_ROOT_PASSWORD)");
        }
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.processes == 0 || self.process >= self.processes {
            return invalid(format!(
                "process {} is not in a cluster of {} processes: --process counts from 0 to --processes - 1",
                self.process, self.processes
            ));
        }
        if self.peer_timeout_secs == 0 || self.peer_connect_timeout_secs == 0 {
            return invalid("peer_timeout_secs and peer_connect_timeout_secs must be at least 1".into());
        }
        if self.processes == 1 {
            return Ok(());
        }
        let embedded: Vec<&str> = [
            (self.kafka.is_none(), "--kafka (KAFKA_BOOTSTRAP_SERVERS) for the event log"),
            (self.s3_endpoint.is_none(), "--s3-endpoint (MINIO_ENDPOINT) for the object store"),
            (self.mongo_uri.is_none(), "--mongo-uri (MONGO_URI) for the metadata store"),
        ]
        .into_iter()
        .filter_map(|(missing, flag)| missing.then_some(flag))
        .collect();
        if !embedded.is_empty() {
            return invalid(format!(
                "a cluster of {} processes needs backends every process reaches, not embedded ones: add {}",
                self.processes,
                embedded.join(", ")
            ));
        }
        if self.signing_key.is_none() {
            return invalid(
                "a cluster needs one URL-signing secret on every process, so that a URL one mints plays on all: set \
                 signing_key (SEGFLOW_SIGNING_KEY), e.g. from `openssl rand -hex 32`"
                    .into(),
            );
        }
        if self.hostfile.is_some() == self.peers.is_some() {
            return invalid(format!(
                "a cluster of {} processes needs the processes' timely addresses: give either --hostfile or --peers",
                self.processes
            ));
        }
        self.cluster_addresses().map(drop)
    }

    /// The timely address of every process of the cluster, in process order (read from the
    /// hostfile, whose first `processes` non-empty lines count, as timely reads it).
    pub fn cluster_addresses(&self) -> Result<Vec<String>, ConfigError> {
        let addresses = match (&self.hostfile, &self.peers) {
            (Some(file), _) => std::fs::read_to_string(file)
                .map_err(|e| ConfigError::Invalid(format!("hostfile {}: {e}", file.display())))?
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .take(self.processes)
                .map(String::from)
                .collect(),
            (None, Some(peers)) => peers.clone(),
            (None, None) => Vec::new(),
        };
        if addresses.len() != self.processes {
            return Err(ConfigError::Invalid(format!(
                "{} timely addresses given for a cluster of {} processes (one host:port per process, this one's                  included)",
                addresses.len(),
                self.processes
            )));
        }
        if let Some(bad) =
            addresses.iter().find(|a| a.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()))
        {
            return Err(ConfigError::Invalid(format!("timely address {bad:?} is not host:port")));
        }
        Ok(addresses)
    }
}

/// Whether `listen` (`host:port`) only takes connections from this machine.
pub fn is_loopback(listen: &str) -> bool {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(address) => address.ip().is_loopback(),
        Err(_) => listen.rsplit_once(':').is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's own error
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("segflow.toml", "dvr_window = 4\nworkers = 3\nlisten = \"127.0.0.1:9\"")?;
            jail.set_env("SEGFLOW_WORKERS", "5");
            jail.set_env("DVR_WINDOW_SIZE", "7");
            let flags = Overrides { listen: Some("127.0.0.1:0".into()), ..Default::default() };
            let config = Config::load(Some(Path::new("segflow.toml")), &flags).expect("loads");
            assert_eq!((config.workers, config.dvr_window, config.listen.as_str()), (5, 7, "127.0.0.1:0"));
            assert_eq!(config.target_duration, 6);
            jail.set_env("KAFKA_BOOTSTRAP_SERVERS", "k:9092");
            jail.set_env("MINIO_ENDPOINT", "http://m:9000");
            jail.set_env("MINIO_ROOT_USER", "u");
            jail.set_env("MINIO_ROOT_PASSWORD", "p");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(
                (config.kafka.as_deref(), config.s3_endpoint.as_deref()),
                (Some("k:9092"), Some("http://m:9000"))
            );
            assert_eq!(config.s3_secret_key, Some(Secret("p".into())));
            assert!(!format!("{config:?}").contains("\"p\""), "the secret is never printed");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SEGFLOW_WORKERS", "0");
            assert!(Config::load(None, &Overrides::default()).is_err());
            jail.set_env("SEGFLOW_WORKERS", "two");
            assert!(Config::load(None, &Overrides::default()).is_err());
            assert!(matches!(
                Config::load(Some(Path::new("nope.toml")), &Overrides::default()),
                Err(ConfigError::MissingFile(_))
            ));
            jail.set_env("SEGFLOW_WORKERS", "1");
            let open = Overrides { no_auth: Some(true), listen: Some("0.0.0.0:8080".into()), ..Default::default() };
            let refused = Config::load(None, &open).unwrap_err().to_string();
            assert!(refused.contains("no_auth is refused on 0.0.0.0:8080"), "{refused}");
            for loopback in ["127.0.0.1:0", "[::1]:80", "localhost:8080"] {
                let flags = Overrides { no_auth: Some(true), listen: Some(loopback.into()), ..Default::default() };
                assert!(Config::load(None, &flags).is_ok(), "{loopback}");
            }
            Ok(())
        });
    }

    #[test]
    fn a_cluster_needs_addresses_shared_backends_and_a_shared_signing_key() {
        figment::Jail::expect_with(|jail| {
            let two = Overrides { processes: Some(2), process: Some(1), ..Default::default() };
            let refused = Config::load(None, &two).unwrap_err().to_string();
            assert!(refused.contains("add --kafka") && refused.contains("--mongo-uri"), "{refused}");
            jail.set_env("SEGFLOW_KAFKA", "k:9092");
            jail.set_env("SEGFLOW_S3_ENDPOINT", "http://m:9000");
            jail.set_env("SEGFLOW_S3_ACCESS_KEY", "u");
            jail.set_env("SEGFLOW_S3_SECRET_KEY", "p");
            jail.set_env("SEGFLOW_MONGO_URI", "mongodb://m/");
            assert!(Config::load(None, &two).unwrap_err().to_string().contains("signing_key"));
            jail.set_env("SEGFLOW_SIGNING_KEY", "00112233445566778899aabbccddeeff");
            assert!(Config::load(None, &two).unwrap_err().to_string().contains("--hostfile or --peers"));
            jail.set_env("SEGFLOW_PEERS", "a:2101, b:2102");
            let config = Config::load(None, &two).expect("loads");
            assert_eq!(config.cluster_addresses().unwrap(), ["a:2101", "b:2102"]);
            let three = Overrides { processes: Some(3), ..Default::default() };
            assert!(
                Config::load(None, &three)
                    .unwrap_err()
                    .to_string()
                    .contains("2 timely addresses given for a cluster of 3")
            );
            let outside = Overrides { processes: Some(2), process: Some(2), ..Default::default() };
            assert!(
                Config::load(None, &outside).unwrap_err().to_string().contains("process 2 is not in a cluster of 2")
            );
            jail.set_env("SEGFLOW_PEERS", "a:2101,b");
            assert!(Config::load(None, &two).unwrap_err().to_string().contains("\"b\" is not host:port"));
            jail.create_file("hosts", "a:2101\n\nb:2102\nc:2103\n")?;
            let from_file = Config { processes: 2, hostfile: Some("hosts".into()), ..Config::default() };
            assert_eq!(from_file.cluster_addresses().unwrap(), ["a:2101", "b:2102"], "its first 2 lines");
            let both = Overrides { hostfile: Some("hosts".into()), ..two.clone() };
            jail.set_env("SEGFLOW_PEERS", "a:2101,b:2102");
            assert!(Config::load(None, &both).unwrap_err().to_string().contains("either --hostfile or --peers"));
            Ok(())
        });
    }
}
