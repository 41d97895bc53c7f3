//! One `Config` for the whole engine, layered: defaults < TOML file < `SEGFLOW_*` env (and the
//! seed's `DVR_WINDOW_SIZE`) < command-line flags.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::media::transcode::TranscodeMode;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Everything segflow stores: log, objects, metadata, signing secret.
    pub data_dir: PathBuf,
    /// HTTP address; port 0 picks a free one.
    pub listen: String,
    /// Timely worker threads.
    pub workers: usize,
    /// Segments kept in a live playlist (`DVR_WINDOW_SIZE` in seed 003).
    pub dvr_window: u64,
    /// Default `EXT-X-TARGETDURATION` of a live stream, in seconds.
    pub target_duration: u64,
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
    /// FFmpeg transcodes running at once in this process (each one uses every core).
    pub transcode_jobs: usize,
    /// One FFmpeg decoding once for every rung (`split`), or one FFmpeg per rung (`per_rung`).
    pub transcode_mode: TranscodeMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("segflow-data"),
            listen: "127.0.0.1:8080".into(),
            workers: 2,
            dvr_window: 10,
            target_duration: 6,
            max_segment_bytes: 64 * 1024 * 1024,
            max_json_bytes: 64 * 1024,
            signed_url_ttl_secs: 3600,
            public_url: None,
            max_upload_bytes: 8 * 1024 * 1024 * 1024,
            transcode_jobs: 1,
            transcode_mode: TranscodeMode::Split,
        }
    }
}

/// Flags given on the command line; `None` leaves the lower layers' value.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dvr_window: Option<u64>,
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
        let config: Config = figment
            .merge(Env::prefixed("SEGFLOW_"))
            .merge(Env::raw().only(&["DVR_WINDOW_SIZE"]).map(|_| "dvr_window".into()))
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
        if self.dvr_window == 0 {
            return invalid("dvr_window must be at least 1");
        }
        if self.target_duration == 0 {
            return invalid("target_duration must be at least 1 second");
        }
        if self.transcode_jobs == 0 {
            return invalid("transcode_jobs must be at least 1");
        }
        Ok(())
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
            Ok(())
        });
    }
}
