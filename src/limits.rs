//! API rate limits (governor, GCRA): one bucket per app shared by all its keys (the app's
//! `rate_limit` per minute, applied at once after a change), one for admin keys, one per client
//! IP for `/api/token` and `/api/tickets`, and one per client IP for WebSocket upgrades. Every
//! limited answer carries `X-RateLimit-*`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{HeaderValue, Response};
use axum::middleware::Next;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// The state of one bucket after a request, for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again (0–60).
    pub reset_s: u64,
    /// Set when the request was refused: seconds to wait.
    pub retry_after: Option<u64>,
}

fn limiter(per_minute: u32) -> Limiter {
    let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_minute(n)).with_middleware::<StateInformationMiddleware>()
}

fn charge(limiter: &Limiter, limit: u32) -> RateInfo {
    let limit = limit.max(1);
    match limiter.check() {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            // Each used slot comes back after 60/limit seconds.
            let reset_s = (u64::from(limit - remaining.min(limit)) * 60).div_ceil(u64::from(limit)).min(60);
            RateInfo { limit, remaining, reset_s, retry_after: None }
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
            RateInfo { limit, remaining: 0, reset_s: 60, retry_after: Some(retry_after) }
        }
    }
}

/// One bucket per client IP, all of the same size; `per_minute == 0` admits everything.
#[derive(Debug)]
pub struct IpBuckets {
    per_minute: u32,
    buckets: DashMap<IpAddr, Arc<Limiter>>,
}

impl IpBuckets {
    fn new(per_minute: u32) -> Self {
        Self { per_minute, buckets: DashMap::new() }
    }

    /// Charges one request to `ip`; `None` when this group is switched off.
    pub fn charge(&self, ip: IpAddr) -> Option<RateInfo> {
        if self.per_minute == 0 {
            return None;
        }
        let bucket = self.buckets.entry(ip).or_insert_with(|| Arc::new(limiter(self.per_minute))).clone();
        Some(charge(&bucket, self.per_minute))
    }

    /// Forgets buckets that are full again (idle for a minute), bounding memory.
    fn sweep(&self) {
        let full = NonZeroU32::new(self.per_minute).unwrap_or(NonZeroU32::MIN);
        // A full bucket admits a whole burst; checking one cell would spend it, so ask for a
        // burst of the full size: `check_n` spends nothing when it cannot pass.
        self.buckets.retain(|_, l| l.check_n(full).map(|r| r.is_err()).unwrap_or(true));
    }

    /// Buckets held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Every bucket of this node.
#[derive(Debug)]
pub struct ApiLimits {
    apps: DashMap<String, (u32, Arc<Limiter>)>,
    admin: Limiter,
    admin_limit: u32,
    /// `/api/token` and `/api/tickets`, per client IP.
    pub ips: IpBuckets,
    /// WebSocket upgrades, per client IP.
    pub upgrades: IpBuckets,
}

impl ApiLimits {
    /// Starts the sweep job: idle buckets are forgotten every minute, until `shutdown`.
    pub fn start(
        self: &Arc<Self>,
        shutdown: &tokio_util::sync::CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        let limits = self.clone();
        crate::shutdown::start_every(std::time::Duration::from_secs(60), shutdown, tracker, move || {
            limits.sweep()
        });
    }

    /// Buckets of the configured sizes.
    pub fn new(limits: &crate::config::LimitsConfig) -> Self {
        Self {
            apps: DashMap::new(),
            admin: limiter(limits.admin_rate_limit),
            admin_limit: limits.admin_rate_limit,
            ips: IpBuckets::new(limits.ip_rate_limit),
            upgrades: IpBuckets::new(limits.upgrade_rate_limit),
        }
    }

    /// Charges one request to `app_id`'s bucket of `per_minute`; a changed limit starts a fresh
    /// bucket, so a `PUT` takes effect at once.
    pub fn charge_app(&self, app_id: &str, per_minute: u32) -> RateInfo {
        let bucket = {
            let mut entry = self
                .apps
                .entry(app_id.to_owned())
                .or_insert_with(|| (per_minute, Arc::new(limiter(per_minute))));
            if entry.0 != per_minute {
                *entry = (per_minute, Arc::new(limiter(per_minute)));
            }
            entry.1.clone()
        };
        charge(&bucket, per_minute)
    }

    /// Charges one request to the admin keys' bucket.
    pub fn charge_admin(&self) -> RateInfo {
        charge(&self.admin, self.admin_limit)
    }

    /// Forgets IP buckets that are full again (idle for a minute), bounding memory.
    pub fn sweep(&self) {
        self.ips.sweep();
        self.upgrades.sweep();
    }
}

/// Where extractors leave the bucket state of the request for [`headers`] to report.
#[derive(Debug, Clone, Default)]
pub struct RateSlot(Arc<Mutex<Option<RateInfo>>>);

impl RateSlot {
    /// Records the state of the bucket this request was charged to.
    pub fn set(&self, info: RateInfo) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(info);
        }
    }
}

/// Middleware: gives each request a [`RateSlot`] and turns what was put in it into
/// `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` on the answer, errors
/// included.
pub async fn headers(mut req: Request, next: Next) -> Response<axum::body::Body> {
    let slot = RateSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut res = next.run(req).await;
    let info = slot.0.lock().ok().and_then(|s| *s);
    if let Some(info) = info {
        let h = res.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(info.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(info.remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(info.reset_s));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_past_the_limit_and_report_state() {
        let limits = ApiLimits::new(&config(5));
        let first = limits.charge_app("a", 3);
        assert_eq!((first.limit, first.remaining, first.retry_after), (3, 2, None));
        assert!(first.reset_s > 0 && first.reset_s <= 60);
        limits.charge_app("a", 3);
        limits.charge_app("a", 3);
        let refused = limits.charge_app("a", 3);
        assert_eq!(refused.remaining, 0);
        assert!(refused.retry_after.is_some_and(|s| (1..=20).contains(&s)), "{refused:?}");
        // Another app has its own bucket; a new limit applies at once.
        assert_eq!(limits.charge_app("b", 3).retry_after, None);
        assert_eq!(limits.charge_app("a", 10).retry_after, None);
        assert_eq!(limits.charge_admin().limit, 5);
    }

    fn config(admin: u32) -> crate::config::LimitsConfig {
        crate::config::LimitsConfig { admin_rate_limit: admin, upgrade_rate_limit: 0, ..Default::default() }
    }

    #[test]
    fn idle_ip_buckets_are_swept_and_zero_switches_a_group_off() {
        let limits = ApiLimits::new(&config(5));
        assert!(limits.ips.charge("127.0.0.1".parse().unwrap()).is_some());
        limits.sweep();
        assert_eq!(limits.ips.len(), 1, "a used bucket is kept");
        assert_eq!(limits.upgrades.charge("127.0.0.1".parse().unwrap()), None);
        assert!(limits.upgrades.is_empty());
    }
}
