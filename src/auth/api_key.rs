//! API keys: `rc_admin_<key_id>_<secret>` / `rc_app_<key_id>_<secret>`, stored as SHA-256 of the
//! secret and checked in constant time. [`KeyRing`] is the in-memory copy the request path reads.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{is_base62, random_base62};
pub use crate::domain::{hex, unhex};
use crate::store::{KeyKind, KeyRecord};

/// Length of the public key id, which finds the key without scanning.
pub const KEY_ID_LEN: usize = 12;
/// Length of the secret part.
pub const SECRET_LEN: usize = 32;

/// A permission, spelled `resource:action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    BroadcastWrite,
    TokensWrite,
    TicketsWrite,
    AppsRead,
    AppsWrite,
    KeysWrite,
    WebhooksRead,
    WebhooksWrite,
    AnalyticsRead,
    RoomsRead,
    AdminFull,
}

impl Scope {
    /// Every scope an app-level key may hold; a new app's primary key gets all of them.
    pub const APP_LEVEL: [Scope; 10] = [
        Scope::BroadcastWrite,
        Scope::TokensWrite,
        Scope::TicketsWrite,
        Scope::AppsRead,
        Scope::AppsWrite,
        Scope::KeysWrite,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::AnalyticsRead,
        Scope::RoomsRead,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::BroadcastWrite => "broadcast:write",
            Scope::TokensWrite => "tokens:write",
            Scope::TicketsWrite => "tickets:write",
            Scope::AppsRead => "apps:read",
            Scope::AppsWrite => "apps:write",
            Scope::KeysWrite => "keys:write",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::AnalyticsRead => "analytics:read",
            Scope::RoomsRead => "rooms:read",
            Scope::AdminFull => "admin:full",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::APP_LEVEL.into_iter().chain([Scope::AdminFull]).find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key as presented, split into its parts. The secret is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedKey {
    pub kind: KeyKind,
    pub key_id: String,
    secret: String,
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rc_{}_{}_…", self.kind.as_str(), self.key_id)
    }
}

impl PresentedKey {
    /// Parses `rc_<kind>_<key_id>_<secret>`; `None` when the shape is wrong.
    pub fn parse(raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix("rc_")?;
        let (kind, rest) = if let Some(rest) = rest.strip_prefix("admin_") {
            (KeyKind::Admin, rest)
        } else {
            (KeyKind::App, rest.strip_prefix("app_")?)
        };
        let (key_id, secret) = rest.split_once('_')?;
        if !is_base62(key_id, KEY_ID_LEN) || !is_base62(secret, SECRET_LEN) {
            return None;
        }
        Some(Self { kind, key_id: key_id.to_owned(), secret: secret.to_owned() })
    }

    /// A fresh key of `kind` from the CSPRNG.
    pub fn generate(kind: KeyKind) -> Self {
        Self { kind, key_id: random_base62(KEY_ID_LEN), secret: random_base62(SECRET_LEN) }
    }

    /// The full key, for showing once to its owner.
    pub fn plaintext(&self) -> String {
        format!("rc_{}_{}_{}", self.kind.as_str(), self.key_id, self.secret)
    }

    /// `rc_<kind>_<key_id>`: identifies a key in listings and logs without revealing it.
    pub fn prefix(&self) -> String {
        key_prefix(self.kind, &self.key_id)
    }

    /// Lower-case hex SHA-256 of the secret: what the store keeps.
    pub fn secret_hash(&self) -> String {
        hex(&Sha256::digest(self.secret.as_bytes()))
    }
}

/// `rc_<kind>_<key_id>`.
pub fn key_prefix(kind: KeyKind, key_id: &str) -> String {
    format!("rc_{}_{}", kind.as_str(), key_id)
}

/// A key held in memory: its record, its decoded hash, and when it was last used.
#[derive(Debug)]
pub struct CachedKey {
    pub record: KeyRecord,
    pub scopes: Vec<Scope>,
    hash: [u8; 32],
    last_used_at: AtomicI64,
    last_flushed_at: AtomicI64,
}

impl CachedKey {
    /// Wraps a stored record; `None` when the stored hash is not 64 hex digits.
    pub fn new(record: KeyRecord) -> Option<Self> {
        let hash = unhex(&record.secret_hash)?;
        let scopes = record.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
        let used = record.last_used_at.unwrap_or(0);
        Some(Self {
            record,
            scopes,
            hash,
            last_used_at: AtomicI64::new(used),
            last_flushed_at: AtomicI64::new(used),
        })
    }

    /// Constant-time comparison of the presented secret's hash with the stored one.
    pub fn secret_matches(&self, presented: &PresentedKey) -> bool {
        let digest = Sha256::digest(presented.secret.as_bytes());
        bool::from(digest[..].ct_eq(&self.hash[..]))
    }

    /// Notes a use at `now_ms`; persisted later by [`KeyRing::unflushed_uses`].
    pub fn mark_used(&self, now_ms: i64) {
        self.last_used_at.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// The latest use seen, from the store or since.
    pub fn last_used_at(&self) -> Option<i64> {
        Some(self.last_used_at.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }
}

/// Every key by id. Writers update it right after the store accepted a change.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: DashMap<String, Arc<CachedKey>>,
}

impl KeyRing {
    /// The key with this id, if any.
    pub fn get(&self, key_id: &str) -> Option<Arc<CachedKey>> {
        self.keys.get(key_id).map(|k| k.clone())
    }

    /// Inserts or replaces one key, keeping a newer in-memory `last_used_at`.
    pub fn put(&self, record: KeyRecord) {
        let Some(cached) = CachedKey::new(record) else {
            tracing::error!("ignoring key with a malformed stored hash");
            return;
        };
        if let Some(old) = self.keys.get(&cached.record.key_id) {
            cached.mark_used(old.last_used_at.load(Ordering::Relaxed));
            cached.last_flushed_at.fetch_max(old.last_flushed_at.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.keys.insert(cached.record.key_id.clone(), Arc::new(cached));
    }

    /// Caches a key read from the store unless the ring already has it (a reload put it there
    /// meanwhile, as new as this or newer).
    pub fn put_if_absent(&self, record: KeyRecord) {
        if !self.keys.contains_key(&record.key_id) {
            self.put(record);
        }
    }

    /// Replaces the whole ring with `records` (after a reload from the store).
    pub fn replace_all(&self, records: Vec<KeyRecord>) {
        let ids: std::collections::HashSet<String> = records.iter().map(|r| r.key_id.clone()).collect();
        for record in records {
            self.put(record);
        }
        self.keys.retain(|id, _| ids.contains(id));
    }

    /// Keys of one app, oldest first.
    pub fn of_app(&self, app_id: &str) -> Vec<Arc<CachedKey>> {
        let mut keys: Vec<_> = self
            .keys
            .iter()
            .filter(|k| k.record.app_id.as_deref() == Some(app_id))
            .map(|k| k.clone())
            .collect();
        keys.sort_by(|a, b| {
            (a.record.created_at, &a.record.key_id).cmp(&(b.record.created_at, &b.record.key_id))
        });
        keys
    }

    /// Whether any admin key exists (bootstrap looks at this).
    pub fn has_admin(&self) -> bool {
        self.keys.iter().any(|k| k.record.kind == KeyKind::Admin && k.record.revoked_at.is_none())
    }

    /// `(key_id, last_used_at)` for keys used since the last call; marks them flushed.
    pub fn unflushed_uses(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for key in self.keys.iter() {
            let used = key.last_used_at.load(Ordering::Relaxed);
            if key.last_flushed_at.swap(used, Ordering::Relaxed) < used {
                out.push((key.record.key_id.clone(), used));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back() {
        for kind in [KeyKind::Admin, KeyKind::App] {
            let key = PresentedKey::generate(kind);
            let text = key.plaintext();
            assert!(text.starts_with(&format!("rc_{}_", kind.as_str())));
            assert_eq!(PresentedKey::parse(&text), Some(key.clone()));
            assert_eq!(key.prefix(), text[..text.len() - SECRET_LEN - 1]);
            assert!(!format!("{key:?}").contains(&key.secret));
        }
    }

    #[test]
    fn hex_round_trips_and_refuses_bad_text() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 8) as u8);
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert!(unhex::<32>(&"a".repeat(63)).is_none());
        assert!(unhex::<32>(&"zz".repeat(32)).is_none());
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = PresentedKey::generate(KeyKind::App).plaintext();
        for bad in [
            "",
            "rc_app_",
            "rc_user_abcdefghijkl_abcdefghijklmnopqrstuvwxyzABCDEF",
            "rc_app_abcdefghijk_abcdefghijklmnopqrstuvwxyzABCDEF",
            "rc_app_abcdefghijkl_abcdefghijklmnopqrstuvwxyzABCDE!",
            "rc_app_abcdefghijkl_abcdefghijklmnopqrstuvwxyzABCDEFG",
            &good[..good.len() - 1],
            &format!("{good}x"),
        ] {
            assert_eq!(PresentedKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_the_right_secret_matches() {
        let key = PresentedKey::generate(KeyKind::Admin);
        let record = KeyRecord {
            key_id: key.key_id.clone(),
            kind: KeyKind::Admin,
            app_id: None,
            name: "n".into(),
            scopes: vec!["admin:full".into()],
            secret_hash: key.secret_hash(),
            primary: false,
            created_at: 0,
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
        };
        let cached = CachedKey::new(record).unwrap();
        assert!(cached.secret_matches(&key));
        let mut other = PresentedKey::generate(KeyKind::Admin);
        other.key_id = key.key_id.clone();
        assert!(!cached.secret_matches(&other));
        assert_eq!(cached.scopes, vec![Scope::AdminFull]);
    }

    #[test]
    fn uses_are_flushed_once() {
        let ring = KeyRing::default();
        let key = PresentedKey::generate(KeyKind::App);
        ring.put(KeyRecord {
            key_id: key.key_id.clone(),
            kind: KeyKind::App,
            app_id: Some("a-1".into()),
            name: "n".into(),
            scopes: vec![],
            secret_hash: key.secret_hash(),
            primary: true,
            created_at: 0,
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
        });
        assert!(ring.unflushed_uses().is_empty());
        ring.get(&key.key_id).unwrap().mark_used(500);
        assert_eq!(ring.unflushed_uses(), vec![(key.key_id.clone(), 500)]);
        assert!(ring.unflushed_uses().is_empty());
    }

    #[test]
    fn scopes_round_trip() {
        for scope in Scope::APP_LEVEL.into_iter().chain([Scope::AdminFull]) {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("apps:delete"), None);
    }
}
