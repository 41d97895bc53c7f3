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
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Make, list and revoke API tokens, in the metadata store the config points at (the data
    /// dir's own while segflow is stopped, or MongoDB at any time).
    Token {
        #[command(subcommand)]
        action: TokenAction,
        /// TOML config file, as for `run`.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// The data dir, as for `run`.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        /// MongoDB connection string, as for `run`.
        #[arg(long, global = true)]
        mongo_uri: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Make a token and print it (shown this once; only its hash is kept).
    Create {
        /// What the token is for.
        #[arg(long, default_value = "cli")]
        name: String,
        /// admin, publish (which includes read) or read, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "admin")]
        scopes: Vec<String>,
    },
    /// List tokens (never their text).
    List,
    /// Revoke a token by its id (the 12 hex digits after `sft_`).
    Revoke { token_id: String },
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
    let done = match Cli::parse().command {
        Command::Run { config, overrides } => run(config.as_deref(), &overrides).await,
        Command::Token { action, config, data_dir, mongo_uri } => {
            let overrides = Overrides { data_dir, mongo_uri, ..Default::default() };
            token(action, config.as_deref(), &overrides).await
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Every message names its cause already; the chain is not printed again.
            eprintln!("segflow: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `segflow token create|list|revoke`, straight on the metadata store.
async fn token(action: TokenAction, config: Option<&Path>, overrides: &Overrides) -> anyhow::Result<()> {
    use segflow::api::{auth, tokens};
    use segflow::model::auth::Scope;
    let config = Config::load(config, overrides)?;
    let metadata = segflow::backends::open_metadata(&config).await.map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(is segflow running on {}? stop it first, or make the token with POST /tokens)",
            config.data_dir.display()
        )
    })?;
    match action {
        TokenAction::Create { name, scopes } => {
            let scopes = scopes
                .iter()
                .map(|s| {
                    Scope::parse(s.trim())
                        .ok_or_else(|| anyhow::anyhow!("unknown scope {s:?}: use admin, publish or read"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            tokens::check_request(&name, &scopes).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (doc, text) = auth::create_token(metadata.as_ref(), &name, scopes).await?;
            eprintln!("made token {} ({}); it is shown only now:", doc.token_id, doc.name);
            println!("{text}");
        }
        TokenAction::List => {
            for doc in metadata.list_tokens().await? {
                let scopes: Vec<&str> = doc.scopes.iter().map(|s| s.as_str()).collect();
                let state = if doc.revoked_at_ms.is_some() { "revoked" } else { "active" };
                println!("{}  {:8}  {:20}  {}", doc.token_id, state, scopes.join(","), doc.name);
            }
        }
        TokenAction::Revoke { token_id } => {
            auth::revoke_token(metadata.as_ref(), &token_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no token {token_id:?}"))?;
            eprintln!("revoked token {token_id}");
        }
    }
    Ok(())
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
    if let Some(token) = engine.first_admin_token() {
        eprintln!(
            "segflow: no API token existed, so this admin token was made; it is shown only now:\n\n    {token}\n\n\
             Send it as `Authorization: Bearer <token>`. Lost it? Stop segflow and run `segflow token create \
             --data-dir {}` (or, with MongoDB, at any time).",
            data_dir.display()
        );
    }
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
