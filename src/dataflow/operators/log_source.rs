//! Source operator over this worker's partitions of one log topic.
//!
//! Timestamps are milliseconds since the engine started: every worker's capability follows
//! the clock, so an idle worker never holds the frontier back for long. For each time it
//! emits at, it records the offsets to commit once the sinks are durable past that time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::source;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use crate::dataflow::offsets::PendingCommits;
use crate::log::{LogRecord, TopicReader};

/// Records read per activation before yielding to other operators.
const MAX_RECORDS_PER_ACTIVATION: usize = 8192;
/// Wake-up interval with nothing to read, so the frontier (and offset commits) move on.
const IDLE_TICK: Duration = Duration::from_millis(50);

pub struct LogSourceConfig {
    pub reader: TopicReader,
    pub clock: Instant,
    /// Set at shutdown: read what is left, then finish.
    pub stop: Arc<AtomicBool>,
    /// Where the sinks of this dataflow are durable up to.
    pub durable_frontier: ProbeHandle<u64>,
    pub pending: PendingCommits,
    /// Stop reading while the durable frontier lags this far (ms) behind.
    pub max_durable_lag_ms: u64,
}

pub fn log_source<'s>(scope: Scope<'s, u64>, config: LogSourceConfig) -> StreamVec<'s, u64, LogRecord> {
    let LogSourceConfig { mut reader, clock, stop, durable_frontier, pending, max_durable_lag_ms } = config;
    source::<u64, CapacityContainerBuilder<Vec<LogRecord>>, _, _>(scope, "LogSource", move |cap, info| {
        let activator = scope.activator_for(info.address.clone());
        let wake = scope.worker().sync_activator_for(info.address.to_vec());
        reader.on_data(move || {
            let _ = wake.activate();
        });
        let mut cap = Some(cap);
        let mut batch = Vec::new();
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let now = clock.elapsed().as_millis() as u64;
            if now > *c.time() {
                c.downgrade(&now);
            }
            if durable_frontier.less_than(&c.time().saturating_sub(max_durable_lag_ms)) {
                activator.activate_after(Duration::from_millis(5));
                return;
            }
            let stopping = stop.load(Ordering::SeqCst);
            let read = reader.poll(MAX_RECORDS_PER_ACTIVATION, &mut batch);
            if !batch.is_empty() {
                let mut pending = pending.borrow_mut();
                let offsets = pending.entry(*c.time()).or_default();
                for record in &batch {
                    offsets.insert(record.partition, record.next_offset);
                }
                output.session(&*c).give_iterator(batch.drain(..));
            }
            if stopping && read == 0 {
                cap = None; // drained: this worker's input is finished
                return;
            }
            if read >= MAX_RECORDS_PER_ACTIVATION {
                activator.activate();
            } else {
                activator.activate_after(IDLE_TICK);
            }
        }
    })
}
