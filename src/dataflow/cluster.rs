//! What a process of a timely cluster knows of its peers: their heartbeats (a small dataflow
//! of their own), the lost connections timely's network threads panic with, and whether one
//! is stopping, so that a lost peer ends this process instead of hanging it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::vec::{Broadcast, Input};
use timely::worker::Worker;

use crate::config::{Config, ConfigError};

/// How often each process says it is alive.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The cluster this process belongs to (one process: a cluster of one).
pub struct Cluster {
    pub processes: usize,
    pub process: usize,
    pub workers_per_process: usize,
    /// Every process's timely address, in process order (empty for one process).
    pub addresses: Vec<String>,
    peer_timeout: Duration,
    /// Since when silence counts: the first look at [`Cluster::lost`], once serving.
    watching_since: OnceLock<Instant>,
    peers: Mutex<Vec<Peer>>,
    /// The first peer heard to be stopping: the cluster stops with it.
    stopping: tokio::sync::watch::Sender<Option<usize>>,
}

#[derive(Clone, Copy, Default)]
struct Peer {
    last_heard: Option<Instant>,
    stopping: bool,
}

/// timely's configuration for process `process` of a cluster over `addresses` (in process
/// order), with `threads` workers each.
pub fn cluster_config(threads: usize, process: usize, addresses: Vec<String>) -> timely::Config {
    timely::Config {
        communication: timely::CommunicationConfig::Cluster {
            threads,
            process,
            addresses,
            report: false,
            zerocopy: false,
        },
        worker: timely::WorkerConfig::default(),
    }
}

/// One process's heartbeat, broadcast to every worker of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Beat {
    process: usize,
    stopping: bool,
}

impl Cluster {
    pub fn new(config: &Config) -> Result<Cluster, ConfigError> {
        let addresses = if config.processes > 1 { config.cluster_addresses()? } else { Vec::new() };
        Ok(Cluster {
            processes: config.processes,
            process: config.process,
            workers_per_process: config.workers,
            addresses,
            peer_timeout: Duration::from_secs(config.peer_timeout_secs),
            watching_since: OnceLock::new(),
            peers: Mutex::new(vec![Peer::default(); config.processes]),
            stopping: tokio::sync::watch::channel(None).0,
        })
    }

    pub fn is_cluster(&self) -> bool {
        self.processes > 1
    }

    /// timely's configuration for this process.
    pub fn timely_config(&self) -> timely::Config {
        if !self.is_cluster() {
            return timely::Config::process(self.workers_per_process);
        }
        cluster_config(self.workers_per_process, self.process, self.addresses.clone())
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Vec<Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn heard(&self, beat: &Beat) {
        if let Some(peer) = self.peers().get_mut(beat.process) {
            peer.last_heard = Some(Instant::now());
            peer.stopping |= beat.stopping;
        }
        if beat.stopping && beat.process != self.process {
            self.stopping.send_if_modified(|first| first.is_none().then(|| *first = Some(beat.process)).is_some());
        }
    }

    /// Resolves with a peer's index once one says it is stopping (never on a cluster of one).
    pub async fn peer_stopping(&self) -> usize {
        let mut stopping = self.stopping.subscribe();
        loop {
            if let Some(peer) = *stopping.borrow_and_update() {
                return peer;
            }
            if stopping.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Why this process cannot go on, if it cannot: a peer's connection broke, or a peer
    /// that is not stopping has been silent longer than the peer timeout.
    pub fn lost(&self) -> Option<String> {
        if let Some(lost) = lost_connection() {
            return Some(lost);
        }
        let since = *self.watching_since.get_or_init(Instant::now);
        let silent_since = self.peers().iter().enumerate().find_map(|(index, peer)| {
            let heard = peer.last_heard.unwrap_or(since);
            (index != self.process && !peer.stopping && heard.elapsed() > self.peer_timeout).then_some(index)
        })?;
        Some(format!(
            "peer process {silent_since} ({}) has not been heard from for more than {:?}",
            self.address(silent_since),
            self.peer_timeout
        ))
    }

    fn address(&self, process: usize) -> &str {
        self.addresses.get(process).map_or("?", String::as_str)
    }

    /// The cluster as `/health` shows it.
    pub fn health(&self) -> serde_json::Value {
        let peers: Vec<serde_json::Value> = self
            .peers()
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != self.process)
            .map(|(index, peer)| {
                let heard_ms_ago = peer.last_heard.map(|at| at.elapsed().as_millis() as u64);
                let connected = heard_ms_ago.is_some_and(|ms| ms <= self.peer_timeout.as_millis() as u64);
                serde_json::json!({
                    "process": index,
                    "address": self.address(index),
                    "connected": connected,
                    "last_heard_ms_ago": heard_ms_ago,
                    "stopping": peer.stopping,
                })
            })
            .collect();
        let connected = peers.iter().filter(|p| p["connected"] == true).count();
        serde_json::json!({
            "processes": self.processes,
            "process": self.process,
            "workers_per_process": self.workers_per_process,
            "peers_connected": connected,
            "peers": peers,
        })
    }
}

/// A worker's heartbeat: the first worker of each process beats every [`BEAT_INTERVAL`];
/// every worker hears every beat. Closed once the engine stops, after a last beat saying so.
pub struct Heartbeat {
    input: Option<timely::dataflow::operators::vec::input::Handle<u64, Beat>>,
    beats: bool,
    last: Option<Instant>,
    process: usize,
}

impl Heartbeat {
    pub fn build(worker: &mut Worker, cluster: Arc<Cluster>) -> Heartbeat {
        let (process, beats) = (cluster.process, worker.index().is_multiple_of(cluster.workers_per_process));
        let input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, beats) = scope.new_input::<Beat>();
            beats.broadcast().inspect(move |beat| cluster.heard(beat));
            input
        });
        Heartbeat { input: Some(input), beats, last: None, process }
    }

    /// Beats if it is time; once `stopping`, says so once and closes.
    pub fn tick(&mut self, stopping: bool) {
        let Some(input) = &mut self.input else { return };
        let due = self.last.is_none_or(|last| last.elapsed() >= BEAT_INTERVAL);
        if self.beats && (due || stopping) {
            input.send(Beat { process: self.process, stopping });
            let next = input.time().saturating_add(1);
            input.advance_to(next);
            input.flush();
            self.last = Some(Instant::now());
        }
        if stopping {
            self.input = None;
        }
    }
}

/// The first panic of a timely network thread (`timely:recv-N`, `timely:send-N`, N the peer
/// process): the connection to that peer is gone.
static LOST_CONNECTION: OnceLock<String> = OnceLock::new();

pub fn lost_connection() -> Option<String> {
    LOST_CONNECTION.get().cloned()
}

/// Installs (once) the panic hook that records a lost peer connection, before the panic is
/// reported as usual. The workers then fail on the poisoned channel; the lost peer is named.
pub fn watch_network_threads(addresses: Vec<String>) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let peer = thread
                .name()
                .and_then(|name| name.strip_prefix("timely:recv-").or_else(|| name.strip_prefix("timely:send-")));
            if let Some(peer) = peer.and_then(|p| p.parse::<usize>().ok()) {
                let address = addresses.get(peer).map_or("?", String::as_str);
                let message = crate::panics::message(info.payload());
                let _ = LOST_CONNECTION.set(format!("lost peer process {peer} ({address}): {message}"));
            }
            previous(info);
        }));
    });
}
