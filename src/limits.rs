//! API rate limits (governor, GCRA): one bucket per app shared by all its keys (the app's
//! `rate_limit` per minute, applied at once after a change), one for admin keys, and one per
//! client IP for `/api/token` and `/api/tickets`. Every limited answer carries `X-RateLimit-*`.

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

/// Requests per minute per client IP on `/api/token` and `/api/tickets`.
pub const PER_IP_PER_MINUTE: u32 = 100;

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

/// Every bucket of this node.
#[derive(Debug)]
pub struct ApiLimits {
    apps: DashMap<String, (u32, Arc<Limiter>)>,
    admin: Limiter,
    admin_limit: u32,
    ips: DashMap<IpAddr, Arc<Limiter>>,
}

impl ApiLimits {
    /// Buckets with `admin_per_minute` for admin keys.
    pub fn new(admin_per_minute: u32) -> Self {
        Self {
            apps: DashMap::new(),
            admin: limiter(admin_per_minute),
            admin_limit: admin_per_minute,
            ips: DashMap::new(),
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

    /// Charges one request to a client IP's bucket.
    pub fn charge_ip(&self, ip: IpAddr) -> RateInfo {
        let bucket = self.ips.entry(ip).or_insert_with(|| Arc::new(limiter(PER_IP_PER_MINUTE))).clone();
        charge(&bucket, PER_IP_PER_MINUTE)
    }

    /// Forgets IP buckets that are full again (idle for a minute), bounding memory.
    pub fn sweep(&self) {
        self.ips.retain(|_, l| charge_peek(l));
    }
}

/// Whether a bucket has been used recently (not back to full).
fn charge_peek(limiter: &Limiter) -> bool {
    // A full bucket admits a whole burst; checking one cell would spend it, so look at a burst
    // of the full size without spending (check_n fails without consuming when it cannot pass).
    limiter
        .check_n(NonZeroU32::new(PER_IP_PER_MINUTE).unwrap_or(NonZeroU32::MIN))
        .map(|r| r.is_err())
        .unwrap_or(true)
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
        let limits = ApiLimits::new(5);
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

    #[test]
    fn idle_ip_buckets_are_swept() {
        let limits = ApiLimits::new(5);
        limits.charge_ip("127.0.0.1".parse().unwrap());
        limits.sweep();
        assert_eq!(limits.ips.len(), 1, "a used bucket is kept");
    }
}
