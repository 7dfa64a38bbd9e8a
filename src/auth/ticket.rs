//! One-time tickets: short-lived, single-use credentials exchanged for a WebSocket connection,
//! so long-lived tokens never appear in URLs or logs. Only a SHA-256 of each ticket is kept.

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use super::random_base62;
use super::token::Identity;

/// What a ticket stands for until it is used or expires.
#[derive(Debug)]
struct Ticket {
    identity: Identity,
    /// Milliseconds since the epoch.
    expires_at: i64,
}

/// Outstanding tickets by the hash of their text.
#[derive(Debug, Default)]
pub struct TicketBook {
    tickets: DashMap<[u8; 32], Ticket>,
}

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

impl TicketBook {
    /// Issues a ticket for `identity`, valid until `expires_at` (ms); returns its text, shown once.
    pub fn issue(&self, identity: Identity, expires_at: i64) -> String {
        let text = format!("tk_{}", random_base62(32));
        self.tickets.insert(digest(&text), Ticket { identity, expires_at });
        text
    }

    /// Uses up a ticket: `None` when it is unknown, already used, or expired at `now_ms`.
    pub fn redeem(&self, text: &str, now_ms: i64) -> Option<Identity> {
        let (_, ticket) = self.tickets.remove(&digest(text))?;
        (ticket.expires_at > now_ms).then_some(ticket.identity)
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

    #[test]
    fn tickets_are_single_use_and_expire() {
        let book = TicketBook::default();
        let t = book.issue(identity(), 1_000);
        assert!(t.starts_with("tk_"));
        assert_eq!(book.redeem(&t, 500).unwrap().user_id.as_deref(), Some("u"));
        assert!(book.redeem(&t, 500).is_none(), "second use");
        let late = book.issue(identity(), 1_000);
        assert!(book.redeem(&late, 1_000).is_none(), "expired");
        assert!(book.redeem("tk_unknown", 0).is_none());
        book.issue(identity(), 10);
        book.issue(identity(), 10_000);
        book.sweep(100);
        assert_eq!(book.len(), 1);
    }
}
