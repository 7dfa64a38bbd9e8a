//! One-time tickets: short-lived, single-use credentials exchanged for a WebSocket connection,
//! so long-lived tokens never appear in URLs or logs. Only a SHA-256 of each ticket is kept:
//! in memory on a single node, in Redis in cluster mode (`rc:ticket:<hex>`, expiring with the
//! ticket, taken with GETDEL so a ticket bought on one node is used once on any node).

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::random_base62;
use super::token::Identity;
use crate::protocol::{RoomGrants, RoomPattern};

/// Redis failed; the caller answers 503 `unavailable`.
#[derive(Debug, thiserror::Error)]
#[error("ticket store unavailable: {0}")]
pub struct TicketStoreDown(String);

/// A ticket's identity as stored in Redis.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    app_id: String,
    user_id: Option<String>,
    user_info: Option<serde_json::Value>,
    rooms: Option<Vec<String>>,
    can_publish: bool,
    exp: i64,
    expires_at: i64,
}

impl Stored {
    fn new(identity: Identity, expires_at: i64) -> Self {
        Stored {
            rooms: identity.grants.patterns(),
            app_id: identity.app_id,
            user_id: identity.user_id,
            user_info: identity.user_info,
            can_publish: identity.can_publish,
            exp: identity.exp,
            expires_at,
        }
    }

    fn identity(self) -> Option<Identity> {
        let grants = match self.rooms {
            None => RoomGrants::default(),
            Some(rooms) => RoomGrants::new(Some(
                rooms.iter().map(|r| RoomPattern::parse(r)).collect::<Result<Vec<_>, _>>().ok()?,
            )),
        };
        Some(Identity {
            app_id: self.app_id,
            user_id: self.user_id,
            user_info: self.user_info,
            grants,
            can_publish: self.can_publish,
            exp: self.exp,
        })
    }
}

/// What a ticket stands for until it is used or expires.
#[derive(Debug)]
struct Ticket {
    identity: Identity,
    /// Milliseconds since the epoch.
    expires_at: i64,
}

/// Outstanding tickets by the hash of their text.
#[derive(Default)]
pub struct TicketBook {
    tickets: DashMap<[u8; 32], Ticket>,
    redis: Option<crate::redis_conn::Commands>,
}

impl std::fmt::Debug for TicketBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketBook").field("in_redis", &self.redis.is_some()).finish_non_exhaustive()
    }
}

fn redis_key(digest: &[u8; 32]) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("rc:ticket:{hex}")
}

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

impl TicketBook {
    /// A book kept in Redis, shared by every node of a cluster.
    pub fn in_redis(commands: crate::redis_conn::Commands) -> Self {
        Self { tickets: DashMap::new(), redis: Some(commands) }
    }

    /// Issues a ticket for `identity`, valid until `expires_at` (ms, after `now_ms`); returns its
    /// text, shown once.
    pub async fn issue(
        &self,
        identity: Identity,
        expires_at: i64,
        now_ms: i64,
    ) -> Result<String, TicketStoreDown> {
        let text = format!("tk_{}", random_base62(32));
        let Some(redis) = &self.redis else {
            self.tickets.insert(digest(&text), Ticket { identity, expires_at });
            return Ok(text);
        };
        let value = serde_json::to_string(&Stored::new(identity, expires_at)).expect("plain data serializes");
        let ttl_ms = (expires_at - now_ms).max(1);
        redis::cmd("SET")
            .arg(redis_key(&digest(&text)))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut redis.clone())
            .await
            .map_err(|e| TicketStoreDown(e.to_string()))?;
        Ok(text)
    }

    /// Uses up a ticket: `None` when it is unknown, already used, or expired at `now_ms`.
    pub async fn redeem(&self, text: &str, now_ms: i64) -> Result<Option<Identity>, TicketStoreDown> {
        let Some(redis) = &self.redis else {
            let Some((_, ticket)) = self.tickets.remove(&digest(text)) else { return Ok(None) };
            return Ok((ticket.expires_at > now_ms).then_some(ticket.identity));
        };
        let stored: Option<String> = redis::cmd("GETDEL")
            .arg(redis_key(&digest(text)))
            .query_async(&mut redis.clone())
            .await
            .map_err(|e| TicketStoreDown(e.to_string()))?;
        let Some(stored) = stored.and_then(|s| serde_json::from_str::<Stored>(&s).ok()) else {
            return Ok(None);
        };
        if stored.expires_at <= now_ms {
            return Ok(None);
        }
        Ok(stored.identity())
    }

    /// Forgets expired tickets.
    pub fn sweep(&self, now_ms: i64) {
        self.tickets.retain(|_, t| t.expires_at > now_ms);
    }

    /// Tickets issued and not yet used or swept.
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    /// Whether no ticket is outstanding.
    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RoomGrants;

    fn identity() -> Identity {
        Identity {
            app_id: "a".into(),
            user_id: Some("u".into()),
            user_info: None,
            grants: RoomGrants::default(),
            can_publish: false,
            exp: 0,
        }
    }

    #[tokio::test]
    async fn tickets_are_single_use_and_expire() {
        let book = TicketBook::default();
        let t = book.issue(identity(), 1_000, 0).await.unwrap();
        assert!(t.starts_with("tk_"));
        assert_eq!(book.redeem(&t, 500).await.unwrap().unwrap().user_id.as_deref(), Some("u"));
        assert!(book.redeem(&t, 500).await.unwrap().is_none(), "second use");
        let late = book.issue(identity(), 1_000, 0).await.unwrap();
        assert!(book.redeem(&late, 1_000).await.unwrap().is_none(), "expired");
        assert!(book.redeem("tk_unknown", 0).await.unwrap().is_none());
        book.issue(identity(), 10, 0).await.unwrap();
        book.issue(identity(), 10_000, 0).await.unwrap();
        book.sweep(100);
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn stored_identities_keep_their_grants() {
        let mut id = identity();
        id.grants = RoomGrants::new(Some(vec![
            RoomPattern::parse("chat-*").unwrap(),
            RoomPattern::parse("private-x").unwrap(),
        ]));
        let text = serde_json::to_string(&Stored::new(id.clone(), 5)).unwrap();
        let back = serde_json::from_str::<Stored>(&text).unwrap().identity().unwrap();
        assert_eq!(back.grants, id.grants);
        assert_eq!((back.app_id, back.user_id), (id.app_id, id.user_id));
    }
}
