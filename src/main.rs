//! The `segflow` command: parses flags, loads the layered config, runs the engine.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use segflow::config::{Config, Overrides};

#[derive(Parser)]
#[command(name = "segflow", version, about = "Video streaming backend: live and VOD to HLS through a timely dataflow")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the engine: event log, timely workers, sinks and the HTTP API.
    Run {
        /// TOML config file (lowest layer above the defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Timely worker threads.
        #[arg(short = 'w', long)]
        workers: Option<usize>,
        /// Where segflow keeps its log, objects, metadata and signing secret.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// HTTP address to listen on (port 0: any free port; the bound address is printed).
        #[arg(long)]
        listen: Option<String>,
        /// Segments kept in a live playlist (env: DVR_WINDOW_SIZE or SEGFLOW_DVR_WINDOW).
        #[arg(long)]
        dvr_window: Option<u64>,
        /// Kafka brokers host:port[,…] for the event log (env: KAFKA_BOOTSTRAP_SERVERS).
        #[arg(long)]
        kafka: Option<String>,
        /// S3 / MinIO endpoint URL for the object store (env: MINIO_ENDPOINT).
        #[arg(long)]
        s3_endpoint: Option<String>,
        /// MongoDB connection string for the metadata store (env: MONGO_URI).
        #[arg(long)]
        mongo_uri: Option<String>,
    },
}

/// mimalloc: the dataflow allocates many small strings per event; glibc's malloc spent a
/// third of the live bench's time in its own bookkeeping (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr; stdout carries only the bound address, for whoever started us.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,segflow=info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Run { config, workers, data_dir, listen, dvr_window, kafka, s3_endpoint, mongo_uri } => {
            let overrides = Overrides { data_dir, listen, workers, dvr_window, kafka, s3_endpoint, mongo_uri };
            let config = Config::load(config.as_deref(), &overrides)?;
            let listener = tokio::net::TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let address = listener.local_addr()?;
            println!("segflow listening on http://{address} (data dir {})", config.data_dir.display());
            segflow::engine::run(config, listener, shutdown_signal()).await?;
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
