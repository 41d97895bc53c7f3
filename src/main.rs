//! The `segflow` command: parses flags, loads the layered config, runs the engine.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use segflow::config::{Config, Overrides};
use segflow::engine::Engine;

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

/// mimalloc: the dataflow allocates many small strings per event, which glibc's malloc
/// serves slowly (BENCHMARKS.md, "Live dataflow throughput").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to stderr, coloured only on a terminal; stdout carries only the bound address,
    // for whoever started us.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,segflow=info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Run { config, workers, data_dir, listen, dvr_window, kafka, s3_endpoint, mongo_uri } => {
            let overrides = Overrides { data_dir, listen, workers, dvr_window, kafka, s3_endpoint, mongo_uri };
            match run(config.as_deref(), &overrides).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    // Every message names its cause already; the chain is not printed again.
                    eprintln!("segflow: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `segflow run`: says where it listens once every backend has answered and the workers are
/// ready, then serves until SIGINT or SIGTERM.
async fn run(config: Option<&Path>, overrides: &Overrides) -> anyhow::Result<()> {
    let config = Config::load(config, overrides)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr()?;
    let data_dir = config.data_dir.clone();
    let engine = Engine::start(config).await?;
    println!("segflow listening on http://{address} (data dir {})", data_dir.display());
    engine.serve(listener, shutdown_signal()).await?;
    Ok(())
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
