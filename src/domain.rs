//! Domain types, at the bottom of the layers: validated names (rooms, events, grants), the ids
//! of apps and connections, a room within its app, a presence member. Bytes from the outside
//! are parsed into these once, at the edge; inner code takes the newtypes.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest room name, in characters.
pub const MAX_ROOM_LEN: usize = 164;
/// Longest event name, in characters.
pub const MAX_EVENT_LEN: usize = 200;
/// Event names clients and apps may not use: the hub's own.
pub const RESERVED_EVENT_PREFIX: &str = "roomcast:";

/// A client-facing room name: 1–164 characters of `[A-Za-z0-9_\-=@,.;:]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Checks and wraps a room name.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > MAX_ROOM_LEN {
            return Err(format!("must be 1 to {MAX_ROOM_LEN} characters"));
        }
        if let Some(bad) = s.chars().find(|&c| !is_room_char(c)) {
            return Err(format!("contains {bad:?}; allowed are A-Z a-z 0-9 and _-=@,.;:"));
        }
        Ok(Self(Arc::from(s)))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Members are tracked in rooms starting with `presence-`.
    pub fn is_presence(&self) -> bool {
        self.0.starts_with("presence-")
    }

    /// Rooms starting with `private-` need an explicit grant.
    pub fn is_private(&self) -> bool {
        self.0.starts_with("private-")
    }
}

fn is_room_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';' | ':')
}

impl TryFrom<String> for RoomName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        RoomName::parse(&s)
    }
}

impl From<RoomName> for String {
    fn from(r: RoomName) -> String {
        r.0.to_string()
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event name: 1–200 characters, no control characters, not starting with `roomcast:`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventName(Arc<str>);

impl EventName {
    /// Checks and wraps an event name.
    pub fn parse(s: &str) -> Result<Self, String> {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_EVENT_LEN {
            return Err(format!("must be 1 to {MAX_EVENT_LEN} characters"));
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        if s.starts_with(RESERVED_EVENT_PREFIX) {
            return Err(format!("must not start with the reserved prefix {RESERVED_EVENT_PREFIX:?}"));
        }
        Ok(Self(Arc::from(s)))
    }

    /// The hub's own events (`user-joined`, …) skip the checks that apply to users' names.
    pub fn system(s: &'static str) -> Self {
        Self(Arc::from(s))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EventName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        EventName::parse(&s)
    }
}

impl From<EventName> for String {
    fn from(e: EventName) -> String {
        e.0.to_string()
    }
}

impl fmt::Debug for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A room grant from a token's `rooms` claim: exact, or a prefix when it ends with `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPattern {
    text: String,
    prefix: bool,
}

impl RoomPattern {
    /// Checks a pattern: a room name, optionally followed by one `*`; or `*` alone.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        if !(prefix && body.is_empty()) {
            if body.len() > MAX_ROOM_LEN || (!prefix && body.is_empty()) {
                return Err(format!("must be 1 to {MAX_ROOM_LEN} characters"));
            }
            if let Some(bad) = body.chars().find(|&c| !is_room_char(c)) {
                return Err(format!("contains {bad:?}; only a trailing * is a wildcard"));
            }
        }
        Ok(Self { text: body.to_owned(), prefix })
    }

    /// The pattern as written (`chat-*`).
    pub fn to_pattern(&self) -> String {
        if self.prefix { format!("{}*", self.text) } else { self.text.clone() }
    }

    /// Whether this pattern grants `room`. A `private-` room is granted only by a pattern that
    /// itself starts with `private-`, so `*` never opens private rooms.
    pub fn allows(&self, room: &RoomName) -> bool {
        if room.is_private() && !self.text.starts_with("private-") {
            return false;
        }
        if self.prefix { room.as_str().starts_with(&self.text) } else { room.as_str() == self.text }
    }
}

/// Which rooms a client may join: the token's patterns, or every non-private room.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomGrants(Option<Arc<[RoomPattern]>>);

impl RoomGrants {
    /// Grants from a `rooms` claim; `None` means every room except `private-*`.
    pub fn new(patterns: Option<Vec<RoomPattern>>) -> Self {
        Self(patterns.map(Arc::from))
    }

    /// The patterns as written; `None` for the default grant.
    pub fn patterns(&self) -> Option<Vec<String>> {
        self.0.as_ref().map(|p| p.iter().map(RoomPattern::to_pattern).collect())
    }

    /// Whether `room` may be joined.
    pub fn allows(&self, room: &RoomName) -> bool {
        match &self.0 {
            None => !room.is_private(),
            Some(patterns) => patterns.iter().any(|p| p.allows(room)),
        }
    }
}

/// A presence member: one user, however many of its connections are in the room.
#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: Arc<str>,
    /// The `user_info` of the connection that joined first, as JSON text.
    pub user_info: Arc<RawValue>,
}

/// A room inside one app. Rooms of different apps never compare equal, whatever their names.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomKey {
    pub app_id: AppId,
    pub room: RoomName,
}

impl Hash for RoomKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.app_id.hash(state);
        self.room.hash(state);
    }
}

impl RoomKey {
    /// The namespaced name `app-{app_id}-{room}` that broadcast results report.
    pub fn namespaced(&self) -> String {
        format!("app-{}-{}", self.app_id, self.room)
    }
}

impl fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app_id, self.room)
    }
}

/// An app's id: `[a-z0-9][a-z0-9-]{2,63}` (checked by [`AppId::parse`] where it enters).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(Arc<str>);

impl AppId {
    /// Checks an app id from outside.
    pub fn parse(s: &str) -> Result<Self, String> {
        check_app_id(s).map(|()| Self(Arc::from(s)))
    }

    /// An id read from this node's own store or caches, which only ever hold checked ones.
    pub fn known(s: &str) -> Self {
        Self(Arc::from(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for AppId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for AppId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connection's public id: `c_` and 16 base62 characters for a native connection, Pusher's
/// `{digits}.{digits}` socket id for a Pusher one; unique per node run.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnectionId(Arc<str>);

impl ConnectionId {
    /// A fresh id.
    pub fn generate() -> Self {
        Self(Arc::from(format!("c_{}", random_base62(16))))
    }

    /// A fresh Pusher socket id: two numbers of up to 10 digits joined by a dot, the form
    /// Pusher's SDKs check before they send a `socket_id`.
    pub fn pusher() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        let (a, b): (u32, u32) = (rng.random(), rng.random());
        Self(Arc::from(format!("{a}.{b}")))
    }

    /// An id named from outside (an API's `exclude_connection_id` or `socket_id`, or a peer
    /// node): `None` unless it has the form of one this hub makes.
    pub fn parse(s: &str) -> Option<Self> {
        let native = s.strip_prefix("c_").is_some_and(|rest| is_base62(rest, 16));
        let pusher = s.split_once('.').is_some_and(|(a, b)| {
            let digits = |p: &str| (1..=10).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
            digits(a) && digits(b)
        });
        (native || pusher).then(|| Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ConnectionId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ConnectionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an `app_id`: `[a-z0-9][a-z0-9-]{2,63}`.
pub fn check_app_id(s: &str) -> Result<(), String> {
    let ok_len = (3..=64).contains(&s.len());
    let mut bytes = s.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok_len && first_ok && rest_ok {
        Ok(())
    } else {
        Err("must be 3 to 64 characters of a-z, 0-9 and -, starting with a letter or digit".into())
    }
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters of `[0-9A-Za-z]` from the operating system's CSPRNG-seeded generator.
pub fn random_base62(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len).map(|_| BASE62[rng.random_range(0..BASE62.len())] as char).collect()
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `2 * N` hex digits (a SHA-256 digest or MAC for 32, an MD5 digest for 16) as bytes; `None`
/// for anything else.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    if s.len() != 2 * N {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether `s` is exactly `len` base62 characters.
pub fn is_base62(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::ConnectionId;

    #[test]
    fn connection_ids_from_outside_must_look_like_ours() {
        for made in [ConnectionId::generate(), ConnectionId::pusher()] {
            assert_eq!(ConnectionId::parse(&made).as_deref(), Some(&*made));
        }
        for bad in ["", "c_short", "12.", ".34", "1.2.3", "12345678901.1", "c_abcdefghijklmnop\n", "12.3a"] {
            assert!(ConnectionId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
