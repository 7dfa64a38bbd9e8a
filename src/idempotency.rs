//! Idempotent publishing (DESIGN §11): a broadcast carrying an `idempotency_key` already used
//! for the same app within `history.idempotency_window_s` publishes nothing and answers the
//! first result. The key is claimed before publishing and its result recorded after, in this
//! node's memory on one node and in Redis (`rc:idem:{app}:<key>`) for a whole cluster; a publish
//! that failed gives its key back, so the publisher's retry goes through.

use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::redis_conn::Commands;

/// Longest key.
const MAX_KEY_LEN: usize = 64;

/// Whether `key` is 1–64 characters of `[A-Za-z0-9_.:-]`.
pub fn is_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Unused: publish, then [`Idempotency::settle`].
    New,
    /// A publish with it is under way (on this node or another).
    Pending,
    /// Published: its result, as recorded.
    Done(String),
}

#[derive(Debug)]
struct Entry {
    expires_at: i64,
    /// The recorded result; `None` while pending.
    result: Option<String>,
}

/// The keys of the window.
#[derive(Debug)]
pub struct Idempotency {
    window_ms: i64,
    local: DashMap<(String, String), Entry>,
    /// In a cluster, where keys are claimed.
    redis: Option<Commands>,
}

fn redis_key(app_id: &str, key: &str) -> String {
    format!("rc:idem:{{{app_id}}}:{key}")
}

impl Idempotency {
    /// Keys remembered for `window_s`, in Redis when `redis` is given.
    pub fn new(window_s: u32, redis: Option<Commands>) -> Self {
        Self { window_ms: i64::from(window_s) * 1000, local: DashMap::new(), redis }
    }

    /// Claims `key` of `app_id` for a publish.
    pub async fn claim(&self, app_id: &str, key: &str) -> Result<Claim, String> {
        if let Some(redis) = &self.redis {
            let mut commands = redis.clone();
            let name = redis_key(app_id, key);
            let claimed: Option<String> = redis::cmd("SET")
                .arg(&name)
                .arg("")
                .arg("NX")
                .arg("PX")
                .arg(self.window_ms)
                .query_async(&mut commands)
                .await
                .map_err(|e| e.to_string())?;
            if claimed.is_some() {
                return Ok(Claim::New);
            }
            let result: Option<String> =
                redis::cmd("GET").arg(&name).query_async(&mut commands).await.map_err(|e| e.to_string())?;
            return Ok(match result {
                Some(r) if !r.is_empty() => Claim::Done(r),
                // Pending, or expired between the two calls: the caller may try again.
                _ => Claim::Pending,
            });
        }
        let now = now_ms();
        let mut entry = self
            .local
            .entry((app_id.to_owned(), key.to_owned()))
            .or_insert(Entry { expires_at: 0, result: None });
        if entry.expires_at <= now {
            *entry = Entry { expires_at: now + self.window_ms, result: None };
            return Ok(Claim::New);
        }
        Ok(match &entry.result {
            Some(result) => Claim::Done(result.clone()),
            None => Claim::Pending,
        })
    }

    /// Records the result of the publish `key` was claimed for, or with `None` (it failed)
    /// gives the key back.
    pub async fn settle(&self, app_id: &str, key: &str, result: Option<&str>) {
        if let Some(redis) = &self.redis {
            let mut commands = redis.clone();
            let name = redis_key(app_id, key);
            let written: redis::RedisResult<()> = match result {
                Some(r) => {
                    redis::cmd("SET")
                        .arg(&name)
                        .arg(r)
                        .arg("XX")
                        .arg("PX")
                        .arg(self.window_ms)
                        .query_async(&mut commands)
                        .await
                }
                None => redis::cmd("DEL").arg(&name).query_async(&mut commands).await,
            };
            if let Err(e) = written {
                tracing::warn!(error = %e, app_id, "cannot record an idempotent publish in Redis");
            }
            return;
        }
        let id = (app_id.to_owned(), key.to_owned());
        match result {
            Some(r) => {
                if let Some(mut entry) = self.local.get_mut(&id) {
                    entry.result = Some(r.to_owned());
                }
            }
            None => {
                self.local.remove(&id);
            }
        }
    }

    /// Starts the job that forgets expired keys (one node).
    pub fn start(self: &std::sync::Arc<Self>, shutdown: &CancellationToken, tracker: &TaskTracker) {
        if self.redis.is_some() {
            return;
        }
        let keys = self.clone();
        crate::shutdown::start_every(Duration::from_secs(10), shutdown, tracker, move || {
            let now = now_ms();
            keys.local.retain(|_, e| e.expires_at > now);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_and_plain() {
        assert!(is_key("order-42:retry_1.a"));
        for bad in ["", "a b", "é", &"k".repeat(65), "a/b"] {
            assert!(!is_key(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_key_publishes_once_and_a_failed_publish_gives_it_back() {
        let keys = Idempotency::new(300, None);
        assert_eq!(keys.claim("app", "k").await.unwrap(), Claim::New);
        assert_eq!(keys.claim("app", "k").await.unwrap(), Claim::Pending);
        assert_eq!(keys.claim("other-app", "k").await.unwrap(), Claim::New, "per app");
        keys.settle("app", "k", Some("{\"offset\":1}")).await;
        assert_eq!(keys.claim("app", "k").await.unwrap(), Claim::Done("{\"offset\":1}".into()));
        keys.settle("other-app", "k", None).await;
        assert_eq!(keys.claim("other-app", "k").await.unwrap(), Claim::New, "given back");
        let expired = Idempotency::new(0, None);
        assert_eq!(expired.claim("app", "k").await.unwrap(), Claim::New);
        assert_eq!(expired.claim("app", "k").await.unwrap(), Claim::New, "outside the window");
    }
}
