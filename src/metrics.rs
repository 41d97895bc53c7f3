//! Every Prometheus metric segflow exports, defined in one place: the legacy pipeline's names
//! (`live_chunk_gaps_total`, …) plus `segflow_*` ones. One registry per engine, so tests can run
//! several engines in one process.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub live_chunk_gaps_total: IntCounter,
    pub chunk_checksum_failures_total: IntCounter,
    pub chunk_processing_latency_seconds: Histogram,
    pub api_requests_total: IntCounterVec,
    /// Connections and requests cut off by a timeout (`header`, `idle`, `body`).
    pub http_timeouts_total: IntCounterVec,
    /// Live chunk events by outcome (`accepted`, `duplicate`, `late`, …).
    pub live_chunks_total: IntCounterVec,
    pub live_gaps_filled_total: IntCounter,
    /// Gap slots in the DVR windows of the streams this process counts, by cause (`missing`,
    /// `checksum_failed`): a cluster's total is the sum over its processes.
    pub live_gap_slots: IntGaugeVec,
    /// Log records that could not be processed, by reason.
    pub dead_letters_total: IntCounterVec,
    pub log_appends_total: IntCounterVec,
    pub playlists_written_total: IntCounter,
    pub sink_retries_total: IntCounter,
    /// Videos finished, by outcome (`ready`, `failed`).
    pub vod_videos_total: IntCounterVec,
    pub media_jobs_total: IntCounterVec,
    /// Upload acknowledged to `ready`.
    pub vod_processing_seconds: Histogram,
    /// Upload acknowledged to playable (its first segments published).
    pub vod_playable_seconds: Histogram,
    /// Rungs this process's FFmpeg runs encoded and stored (per-rung mode spreads them).
    pub vod_rungs_transcoded_total: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "chunk_processing_latency_seconds",
                "Live chunk latency from ingest to its playlist being written",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(latency.clone())).expect("unique metric");
        let seconds = |name: &str, help: &str| {
            let buckets = vec![1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        Metrics {
            live_chunk_gaps_total: counter("live_chunk_gaps_total", "Missing live sequence numbers detected"),
            chunk_checksum_failures_total: counter(
                "chunk_checksum_failures_total",
                "Live chunks whose bytes do not match their SHA-256",
            ),
            chunk_processing_latency_seconds: latency,
            api_requests_total: counter_vec(
                "api_requests_total",
                "HTTP requests by method, route and status",
                &["method", "route", "status"],
            ),
            http_timeouts_total: counter_vec(
                "segflow_http_timeouts_total",
                "Connections closed waiting for a request head (header) or kept alive too long (idle), \
                 and requests whose body stopped coming (body)",
                &["timeout"],
            ),
            live_chunks_total: counter_vec("segflow_live_chunks_total", "Live chunk events by outcome", &["outcome"]),
            live_gaps_filled_total: counter("segflow_live_gaps_filled_total", "Gaps later filled by a late chunk"),
            live_gap_slots: {
                let help = "Gap slots now in live streams' DVR windows, by cause";
                let g = IntGaugeVec::new(Opts::new("segflow_live_gap_slots", help), &["cause"]).expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            dead_letters_total: counter_vec(
                "segflow_dead_letters_total",
                "Log records moved to the dead-letter collection",
                &["reason"],
            ),
            log_appends_total: counter_vec("segflow_log_appends_total", "Events appended to the log", &["topic"]),
            playlists_written_total: counter("segflow_playlists_written_total", "Media playlists written"),
            sink_retries_total: counter("segflow_sink_retries_total", "Sink writes retried after an error"),
            vod_videos_total: counter_vec(
                "segflow_vod_videos_total",
                "Videos finished (ready, failed) or deleted, by outcome",
                &["outcome"],
            ),
            media_jobs_total: counter_vec(
                "segflow_media_jobs_total",
                "Media jobs finished, by status (completed, failed, cancelled)",
                &["status"],
            ),
            vod_processing_seconds: seconds("segflow_vod_processing_seconds", "VOD upload acknowledged to ready"),
            vod_playable_seconds: seconds(
                "segflow_vod_playable_seconds",
                "VOD upload acknowledged to playable (its first segments published)",
            ),
            vod_rungs_transcoded_total: counter(
                "segflow_vod_rungs_transcoded_total",
                "Rungs encoded and stored by this process's FFmpeg runs",
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
