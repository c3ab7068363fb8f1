//! Counts kept in memory by many tasks and added to the queue's store each minute and at
//! shutdown: the material of the daily reports (TLS sessions, DMARC results).

use std::sync::Arc;
use std::time::Duration;

use super::Queue;

/// Days of counts kept: reports cover the day before, and a week more is there to look at.
pub const KEEP_DAYS: i64 = 8;

/// Runs `flush` each minute and once more at shutdown, on a blocking thread (the store
/// may be slow), with the first day still kept (older counts are for it to forget).
pub async fn flush_each_minute(
    queue: Arc<dyn Queue>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    flush: impl Fn(&dyn Queue, &str) + Send + Sync + 'static,
) {
    let flush = Arc::new(flush);
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        let (flush, queue) = (flush.clone(), queue.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let kept_from =
                super::tls_policy::tally::day_of(super::now_unix() - KEEP_DAYS * 86_400);
            flush(queue.as_ref(), &kept_from);
        })
        .await;
        if stop {
            return;
        }
    }
}
