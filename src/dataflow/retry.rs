//! Writes to a backend that fails are retried until they succeed: the log offsets behind them
//! stay uncommitted meanwhile, so nothing is lost while a backend is down.

use std::future::Future;
use std::time::Duration;

use crate::metrics::Metrics;

/// Retries `write` with backoff (50 ms, doubling, at most 5 s) until it succeeds.
pub async fn retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    metrics: &Metrics,
    mut write: impl FnMut() -> F,
) -> T {
    let mut backoff = Duration::from_millis(50);
    loop {
        match write().await {
            Ok(done) => return done,
            Err(error) => {
                tracing::error!(%error, "sink write failed; retrying (offsets stay uncommitted)");
                metrics.sink_retries_total.inc();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
