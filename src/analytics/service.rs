//! [`Stats`], the analytics service: one type whatever the store. A single node keeps its
//! counters in memory and writes them to the store every 10 s; a cluster node adds them to the
//! buckets shared in Redis every second and reports from those.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::redis::SharedAnalytics;
use super::{Analytics, Period, RETENTION_MS, Report};
use crate::clock::now_ms;
use crate::store::{Store, StoreError};

/// How often analytics are written to the store: a crash loses at most this much.
const STORE_FLUSH: Duration = Duration::from_secs(10);
/// How often a cluster node adds its counts to the shared buckets: other nodes report them
/// this much later.
const SHARED_FLUSH: Duration = Duration::from_secs(1);

/// This node's counters, and where they are kept.
#[derive(Debug)]
pub struct Stats {
    counts: Arc<Analytics>,
    /// The cluster's buckets, in cluster mode.
    shared: Option<SharedAnalytics>,
    store: Arc<dyn Store>,
}

impl Stats {
    /// A single node's analytics, loaded from `store` (the last 30 days).
    pub async fn single(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let counts = Analytics::default();
        counts.load(store.load_analytics(now_ms() - RETENTION_MS).await?);
        Ok(Self { counts: Arc::new(counts), shared: None, store })
    }

    /// A cluster node's analytics, kept in Redis through `shared`.
    pub fn clustered(store: Arc<dyn Store>, shared: SharedAnalytics) -> Self {
        Self { counts: Arc::new(Analytics::shared()), shared: Some(shared), store }
    }

    /// The counters the hub's events and webhook outcomes are recorded in.
    pub fn counts(&self) -> &Arc<Analytics> {
        &self.counts
    }

    /// The report of `app_id` for the `period` ending at `now`: the cluster's in cluster mode.
    pub async fn report(&self, app_id: &str, period: Period, now: i64) -> Result<Report, String> {
        let local = self.counts.report(app_id, period, now);
        match &self.shared {
            Some(shared) => shared.report(app_id, period, now, &local).await.map_err(|e| e.to_string()),
            None => Ok(local),
        }
    }

    /// Erases a purged app's analytics.
    pub async fn forget(&self, app_id: &str) {
        self.counts.forget(app_id);
        if let Some(shared) = &self.shared
            && let Err(e) = shared.forget(app_id, now_ms()).await
        {
            tracing::warn!(error = %e, app_id = %app_id, "cannot erase a purged app's analytics in Redis");
        }
    }

    /// Starts the flush job (every 10 s, every second in a cluster); the last flush is
    /// [`Stats::save`] at shutdown.
    pub fn start(self: &Arc<Self>, shutdown: &CancellationToken, tracker: &TaskTracker) {
        let every = if self.shared.is_some() { SHARED_FLUSH } else { STORE_FLUSH };
        let stats = self.clone();
        tracker.spawn(crate::shutdown::every(every, shutdown.clone(), move || {
            let stats = stats.clone();
            async move { stats.save().await }
        }));
    }

    /// Writes the minutes and user sightings that changed (to Redis in a cluster); what cannot
    /// be written is kept for the next try.
    pub async fn save(&self) {
        let now = now_ms();
        self.counts.tick(now);
        if let Some(shared) = &self.shared {
            let deltas = self.counts.take_deltas();
            if let Err(e) = shared.flush(&deltas).await {
                tracing::warn!(error = %e, "cannot add analytics to Redis; will retry");
                self.counts.restore(deltas);
            }
            return;
        }
        let rows = self.counts.take_dirty();
        if rows.minutes.is_empty() && rows.sketches.is_empty() {
            return;
        }
        if let Err(e) = self.store.save_analytics(rows.clone(), now - RETENTION_MS, now).await {
            tracing::warn!(error = %e, "cannot save analytics; will retry");
            self.counts.mark_dirty(&rows);
        }
    }
}
