//! Store reads for what this node's caches do not know yet (DESIGN §7, read your writes).
//!
//! In a cluster, an app, key, secret or webhook written through node A reaches node B's caches
//! when B hears A's change notice, a few milliseconds later; a client whose next request lands
//! on B sooner must not be refused. So before B refuses a credential because its cache does not
//! know it (or knows it as unusable), it asks the store. Forged credentials would turn that into
//! a store read per request, so what one node asks is bounded:
//!
//! - **one read per id per [`RECENT`]**: an id read less than a second ago is not read again
//!   (unless a store change was announced since), and concurrent askers of one id take turns,
//!   the later ones using the first one's read;
//! - **a node-wide budget** of `limits.store_lookups_per_s` reads per second: past it, an unknown
//!   credential is refused without a read. Under a flood of distinct forged ids a credential
//!   made on another node a moment ago may then be refused too, until the change notice arrives
//!   (milliseconds); the store is never read faster than the budget.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::metrics::{LookupMetrics, LookupOutcome};
use crate::store::StoreError;

/// How long a read answers for its id.
pub const RECENT: Duration = Duration::from_secs(1);

/// What is looked up: ids of different kinds never share a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    App,
    Key,
    Webhook,
}

type Id = (Kind, Box<str>);

/// The bounded asking of the store; see the module documentation.
#[derive(Debug)]
pub struct Lookups {
    budget: governor::DefaultDirectRateLimiter,
    /// When each id was last read, and the change generation at the time.
    recent: DashMap<Id, (Instant, u64)>,
    /// Askers of one id take turns.
    turns: DashMap<Id, Arc<tokio::sync::Mutex<()>>>,
    /// Moves on every announced store change, so reads made before it no longer count.
    generation: AtomicU64,
    metrics: LookupMetrics,
}

impl Lookups {
    /// At most `per_second` store reads per second (at least one).
    pub fn new(per_second: u32, metrics: LookupMetrics) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        Self {
            budget: governor::RateLimiter::direct(governor::Quota::per_second(rate)),
            recent: DashMap::new(),
            turns: DashMap::new(),
            generation: AtomicU64::new(0),
            metrics,
        }
    }

    /// The store changed (a change notice, a cache reload): reads made before say nothing now.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets reads older than [`RECENT`]; the heartbeat calls it, which bounds the map by the
    /// budget times the sweep interval.
    pub fn sweep(&self) {
        self.recent.retain(|_, (at, _)| at.elapsed() < RECENT);
    }

    fn read_lately(&self, id: &Id) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        self.recent.get(id).is_some_and(|r| r.1 == generation && r.0.elapsed() < RECENT)
    }

    /// Runs `read` (which reads the store and puts what it found into the cache, saying whether
    /// it found anything) for `id`, unless that id was read lately or the budget is spent. The
    /// caller looks at its cache afterwards, whatever happened here.
    pub async fn ask<F, Fut>(&self, kind: Kind, id: &str, read: F) -> Result<(), StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, StoreError>>,
    {
        let id: Id = (kind, Box::from(id));
        if self.read_lately(&id) {
            self.metrics.outcome(LookupOutcome::Recent).increment(1);
            return Ok(());
        }
        let turn = self.turns.entry(id.clone()).or_default().clone();
        let asked = {
            let _turn = turn.lock().await;
            self.ask_in_turn(&id, read).await
        };
        // The last asker out (the map and this one hold it) removes the turn.
        self.turns.remove_if(&id, |_, t| Arc::strong_count(t) <= 2);
        asked
    }

    /// [`Lookups::ask`] with a `read` of one record, which `keep` puts into the cache when the
    /// store has it.
    pub async fn fetch<T, F, Fut>(
        &self,
        kind: Kind,
        id: &str,
        read: F,
        keep: impl FnOnce(T),
    ) -> Result<(), StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, StoreError>>,
    {
        self.ask(kind, id, || async move {
            let Some(record) = read().await? else { return Ok(false) };
            keep(record);
            Ok(true)
        })
        .await
    }

    async fn ask_in_turn<F, Fut>(&self, id: &Id, read: F) -> Result<(), StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, StoreError>>,
    {
        // The asker before this one may have read it while this one waited.
        if self.read_lately(id) {
            self.metrics.outcome(LookupOutcome::Recent).increment(1);
            return Ok(());
        }
        if self.budget.check().is_err() {
            self.metrics.outcome(LookupOutcome::Throttled).increment(1);
            return Ok(());
        }
        let generation = self.generation.load(Ordering::Acquire);
        match read().await {
            Ok(found) => {
                self.recent.insert(id.clone(), (Instant::now(), generation));
                let outcome = if found { LookupOutcome::Found } else { LookupOutcome::Missing };
                self.metrics.outcome(outcome).increment(1);
                Ok(())
            }
            Err(e) => {
                self.metrics.outcome(LookupOutcome::Failed).increment(1);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn an_id_is_read_once_per_second_and_the_budget_bounds_the_rest() {
        let lookups = Lookups::new(5, LookupMetrics::default());
        let reads = AtomicUsize::new(0);
        let read = || async {
            reads.fetch_add(1, Ordering::Relaxed);
            Ok(false)
        };
        for _ in 0..100 {
            lookups.ask(Kind::Key, "same", read).await.unwrap();
        }
        assert_eq!(reads.load(Ordering::Relaxed), 1, "one id, one read");
        // The same text as another kind is another id.
        lookups.ask(Kind::App, "same", read).await.unwrap();
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        for n in 0..100 {
            lookups.ask(Kind::Key, &format!("forged-{n}"), read).await.unwrap();
        }
        assert_eq!(reads.load(Ordering::Relaxed), 5, "the budget of 5 per second, burst included");
        // A change notice makes the earlier reads stale.
        lookups.changed();
        let fresh = Lookups::new(100, LookupMetrics::default());
        fresh.ask(Kind::App, "a", read).await.unwrap();
        fresh.changed();
        fresh.ask(Kind::App, "a", read).await.unwrap();
        assert_eq!(reads.load(Ordering::Relaxed), 7);
    }

    #[tokio::test]
    async fn concurrent_askers_share_one_read() {
        let lookups = Arc::new(Lookups::new(100, LookupMetrics::default()));
        let reads = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut askers = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (lookups, reads, mut gate) = (lookups.clone(), reads.clone(), gate.clone());
            askers.spawn(async move {
                lookups
                    .ask(Kind::Webhook, "wh", || async move {
                        reads.fetch_add(1, Ordering::Relaxed);
                        gate.wait_for(|open| *open).await.unwrap();
                        Ok(true)
                    })
                    .await
            });
        }
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        while let Some(done) = askers.join_next().await {
            done.unwrap().unwrap();
        }
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        assert!(lookups.turns.is_empty(), "turns are removed when nobody waits");
    }

    #[tokio::test]
    async fn a_failed_read_is_not_remembered() {
        let lookups = Lookups::new(100, LookupMetrics::default());
        let failed = lookups.ask(Kind::App, "a", || async { Err(StoreError::Unavailable("down".into())) });
        assert!(failed.await.is_err());
        let reads = AtomicUsize::new(0);
        lookups
            .ask(Kind::App, "a", || async {
                reads.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            })
            .await
            .unwrap();
        assert_eq!(reads.load(Ordering::Relaxed), 1, "asked again after a failure");
    }
}
