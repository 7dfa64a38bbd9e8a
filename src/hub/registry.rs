//! Rooms and their subscribers: a sharded map from room to a small per-room lock. Joins, leaves
//! and publishes to one room are ordered by that room's lock; different rooms never contend
//! beyond their map shard.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use indexmap::IndexMap;
use serde_json::value::RawValue;

use super::stream::{History, HistoryEvent, Keep, Since, StreamRead};
use super::{ConnHandle, Delivery, Frame, Protocol};
use crate::protocol::RoomName;

pub use crate::domain::{Member, RoomKey};

#[derive(Debug)]
struct MemberState {
    user_info: Arc<RawValue>,
    /// This user's connections in the room.
    connections: u32,
}

#[derive(Debug)]
struct RoomState {
    /// Keyed by the connection's sequence number: O(1) removal, dense iteration for fan-out.
    subscribers: IndexMap<u64, Arc<ConnHandle>>,
    /// Offset of the last publication; offsets count from 1 in each epoch.
    offset: u64,
    /// The stream's incarnation: made with the room, which lives while it has subscribers or
    /// retained history.
    epoch: Arc<str>,
    /// What this node retains of the stream, when it assigns the offsets (one node).
    history: History,
    /// Subscribers that joined and wait for what they missed (their recovery), or that just
    /// got it: see [`Hold`].
    pending: Vec<(u64, Hold)>,
    /// When the room got its current first subscriber (ms since the epoch).
    occupied_since: i64,
    /// Presence rooms only: members by user id, ordered for stable pagination.
    members: Option<BTreeMap<Arc<str>, MemberState>>,
}

/// A new subscriber's place between what it missed and the live stream.
#[derive(Debug)]
enum Hold {
    /// Its place is being read: what is published meanwhile is held, with its offset.
    Waiting(Vec<(u64, Frame)>),
    /// It got everything up to this offset; a publication at or below it still on its way
    /// (through a cluster broker, published before the read) is not delivered twice.
    Floor(u64),
}

impl Default for RoomState {
    fn default() -> Self {
        Self {
            subscribers: IndexMap::new(),
            offset: 0,
            epoch: Arc::from(crate::domain::random_base62(8)),
            history: History::default(),
            pending: Vec::new(),
            occupied_since: 0,
            members: None,
        }
    }
}

/// Presence details of a join.
#[derive(Debug, Clone)]
pub struct PresenceJoin {
    /// Whether this was the user's first connection in the room (others learn `user-joined`).
    pub joined: Option<Member>,
    /// Members right after the join, the joining user included, at most the requested number.
    pub members: Vec<Member>,
    /// Every member, however many were listed.
    pub member_count: usize,
}

/// What a join did.
#[derive(Debug, Clone)]
pub struct JoinOutcome {
    /// The connection was the room's first subscriber.
    pub occupied: bool,
    /// The room's subscribers on this node right after the join.
    pub subscribers: usize,
    /// The connection was not in the room before (a repeated join changes nothing).
    pub added: bool,
    /// Where the room's stream stood when the connection joined (filled in by the hub).
    pub stream: StreamRead,
    /// Set for presence joins.
    pub presence: Option<PresenceJoin>,
}

/// What a leave did.
#[derive(Debug, Clone)]
pub struct LeaveOutcome {
    /// The room has no subscribers left.
    pub vacated: bool,
    /// The room's subscribers on this node right after the leave.
    pub subscribers: usize,
    /// The user's last connection left a presence room (others learn `user-left`).
    pub left: Option<Member>,
}

/// A room's retained events, for the history route.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// `None` when the room has no stream.
    pub epoch: Option<Arc<str>>,
    pub offset: u64,
    /// Whether no event after the asked offset is missing.
    pub complete: bool,
    pub events: Vec<HistoryEvent>,
}

/// A room as introspection shows it.
#[derive(Debug, Clone)]
pub struct RoomInfo {
    pub room: RoomName,
    pub subscriber_count: usize,
    /// Distinct users, for presence rooms.
    pub user_count: Option<usize>,
    pub occupied_since: i64,
}

#[derive(Debug, Default)]
struct Room(Mutex<RoomState>);

impl Room {
    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // Nothing panics while holding this lock; recover rather than poison every later call.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The frames one publication becomes, by protocol.
pub trait Encode {
    /// The native frame of the publication at `offset`.
    fn native(&self, offset: u64) -> Frame;
    /// Its Pusher frame.
    fn pusher(&self, offset: u64) -> Frame;
}

/// One closure for every protocol (tests, and frames no protocol tells apart).
impl<F: Fn(u64) -> Frame> Encode for F {
    fn native(&self, offset: u64) -> Frame {
        self(offset)
    }
    fn pusher(&self, offset: u64) -> Frame {
        self(offset)
    }
}

/// What a publish reached.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FanoutOutcome {
    /// Subscribers in the room at publish time.
    pub subscribers: usize,
    /// Queues the frame was placed in.
    pub delivered: usize,
    /// Subscribers closed because their queue was full.
    pub dropped: usize,
    /// The publication's offset; 0 when the room had no stream (no subscriber, no history).
    pub offset: u64,
    /// The stream's epoch, when this node assigned the offset.
    pub epoch: Option<Arc<str>>,
}

/// The room → subscribers map.
#[derive(Debug)]
pub struct Registry {
    rooms: DashMap<RoomKey, Arc<Room>>,
    /// (connection, room) pairs on this node.
    subscriptions: AtomicUsize,
    /// Rooms with at least one subscriber.
    occupied: AtomicUsize,
    /// Bytes of history retained over all rooms, and the most allowed.
    history_bytes: AtomicUsize,
    max_history_bytes: usize,
    /// Woken when retained history passes its bound.
    over_bound: tokio::sync::Notify,
}

impl Default for Registry {
    fn default() -> Self {
        Self::with_history_bound(usize::MAX)
    }
}

/// Who joins a presence room, and how many members the caller wants listed back.
#[derive(Debug, Clone, Copy)]
pub struct PresenceRequest<'a> {
    pub user_id: &'a Arc<str>,
    pub user_info: &'a Arc<RawValue>,
    pub list_at_most: usize,
}

impl Registry {
    /// A registry retaining at most `max_bytes` of history over all rooms.
    pub fn with_history_bound(max_bytes: usize) -> Self {
        Self {
            rooms: DashMap::new(),
            subscriptions: AtomicUsize::new(0),
            occupied: AtomicUsize::new(0),
            history_bytes: AtomicUsize::new(0),
            max_history_bytes: max_bytes,
            over_bound: tokio::sync::Notify::new(),
        }
    }

    /// Adds `conn` to the room (a presence room when `presence` is given); a repeated join
    /// changes nothing. With `pending`, what is published to the room is held for the new
    /// subscriber until [`Registry::settle`].
    pub fn join(
        &self,
        key: &RoomKey,
        conn: &Arc<ConnHandle>,
        presence: Option<PresenceRequest<'_>>,
        now_ms: i64,
        pending: bool,
    ) -> JoinOutcome {
        // The entry guard (shard lock) is held while the room is changed, so a concurrent last
        // leave cannot remove the room between lookup and insert.
        let entry = self.rooms.entry(key.clone()).or_default();
        let mut room = entry.lock();
        let occupied = room.subscribers.is_empty();
        if occupied {
            room.occupied_since = now_ms;
        }
        let new = room.subscribers.insert(conn.seq, conn.clone()).is_none();
        if new {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
            if pending {
                room.pending.push((conn.seq, Hold::Waiting(Vec::new())));
            }
        }
        if occupied {
            self.occupied.fetch_add(1, Ordering::Relaxed);
        }
        let presence = presence.map(|p| {
            let members = room.members.get_or_insert_with(BTreeMap::new);
            let mut joined = None;
            if new {
                let member = members
                    .entry(p.user_id.clone())
                    .or_insert_with(|| MemberState { user_info: p.user_info.clone(), connections: 0 });
                member.connections += 1;
                if member.connections == 1 {
                    joined = Some(Member { user_id: p.user_id.clone(), user_info: member.user_info.clone() });
                }
            }
            PresenceJoin { joined, members: list(members, None, p.list_at_most), member_count: members.len() }
        });
        JoinOutcome {
            occupied,
            subscribers: room.subscribers.len(),
            added: new,
            stream: StreamRead::default(),
            presence,
        }
    }

    /// Removes `conn` from the room; `None` when it was not in it.
    pub fn leave(&self, key: &RoomKey, conn: &ConnHandle) -> Option<LeaveOutcome> {
        let mut outcome = None;
        // The room goes when nobody is in it and it retains nothing; else its stream lives on.
        self.rooms.remove_if(key, |_, room| {
            let mut room = room.lock();
            if room.subscribers.swap_remove(&conn.seq).is_none() {
                return false;
            }
            room.pending.retain(|(seq, _)| *seq != conn.seq);
            let left = match (room.members.as_mut(), conn.user_id()) {
                (Some(members), Some(user_id)) => leave_member(members, user_id),
                _ => None,
            };
            let vacated = room.subscribers.is_empty();
            outcome = Some(LeaveOutcome { vacated, subscribers: room.subscribers.len(), left });
            vacated && room.history.is_empty()
        });
        if let Some(outcome) = &outcome {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            if outcome.vacated {
                self.occupied.fetch_sub(1, Ordering::Relaxed);
            }
        }
        outcome
    }

    /// Hands one frame to every subscriber's queue except `exclude`. The frame is built once,
    /// under the room lock, from the offset assigned there, so every subscriber sees offsets in
    /// the same increasing order. Every protocol gets the same frame (see [`Registry::publish_at`]).
    pub fn publish(
        &self,
        key: &RoomKey,
        exclude: Option<u64>,
        build: impl Fn(u64) -> Frame,
    ) -> FanoutOutcome {
        self.publish_at(key, exclude, None, None, &build)
    }

    /// [`Registry::publish`] with the offset chosen elsewhere (cluster-wide, by the broker)
    /// when `offset` is given; the room's own counter follows it. Without `offset` this node
    /// owns the stream: the event is retained as `keep` says, with `keep.1` its time (ms), and
    /// a room with no subscriber gets it into its history too. The native frame is encoded for
    /// every publication; the Pusher frame once, at the first Pusher subscriber it reaches.
    pub fn publish_at(
        &self,
        key: &RoomKey,
        exclude: Option<u64>,
        offset: Option<u64>,
        keep: Option<(Keep, i64)>,
        frames: &impl Encode,
    ) -> FanoutOutcome {
        let retains = offset.is_none() && keep.is_some_and(|(k, _)| k.size > 0);
        let room = match self.rooms.get(key) {
            Some(room) => room.clone(),
            None if retains => self.rooms.entry(key.clone()).or_default().clone(),
            None => return FanoutOutcome::default(),
        };
        let mut state = room.lock();
        if state.subscribers.is_empty() && offset.is_some() {
            return FanoutOutcome::default();
        }
        state.offset = offset.unwrap_or(state.offset + 1);
        let frame = frames.native(state.offset);
        let mut pusher_frame: Option<Frame> = None;
        let mut outcome = FanoutOutcome {
            subscribers: state.subscribers.len(),
            offset: state.offset,
            epoch: offset.is_none().then(|| state.epoch.clone()),
            ..Default::default()
        };
        if offset.is_none()
            && let Some((keep, at)) = keep
        {
            let offset = state.offset;
            let change = state.history.append(offset, at, &frame, keep);
            self.account(change);
        }
        let RoomState { subscribers, pending, .. } = &mut *state;
        for (&seq, conn) in subscribers.iter() {
            if Some(seq) == exclude {
                continue;
            }
            let frame = match conn.protocol {
                Protocol::Native => &frame,
                Protocol::Pusher => pusher_frame.get_or_insert_with(|| frames.pusher(outcome.offset)),
            };
            if !pending.is_empty()
                && let Some(at) = pending.iter().position(|(s, _)| *s == seq)
            {
                match &mut pending[at].1 {
                    Hold::Waiting(held) => {
                        held.push((outcome.offset, frame.clone()));
                        continue;
                    }
                    Hold::Floor(floor) if outcome.offset <= *floor => continue,
                    // Past the floor: from here on it is an ordinary subscriber.
                    Hold::Floor(_) => {
                        pending.swap_remove(at);
                    }
                }
            }
            match conn.deliver(frame) {
                Delivery::Queued => outcome.delivered += 1,
                Delivery::Full => outcome.dropped += 1,
                Delivery::Gone => {}
            }
        }
        outcome
    }

    /// Adds `change` to the retained bytes; wakes the trimmer past the bound.
    fn account(&self, change: isize) {
        let now = if change >= 0 {
            self.history_bytes.fetch_add(change as usize, Ordering::Relaxed) + change as usize
        } else {
            self.history_bytes.fetch_sub(change.unsigned_abs(), Ordering::Relaxed) - change.unsigned_abs()
        };
        if change > 0 && now > self.max_history_bytes {
            self.over_bound.notify_one();
        }
    }

    /// Where the room's stream stands for a connection that joined it, and (with `since`) what
    /// it missed, the app keeping `keep` now. This node's own stream: on one node.
    pub fn read_stream(&self, key: &RoomKey, since: Option<&Since>, keep: Keep, now: i64) -> StreamRead {
        let room = self.rooms.entry(key.clone()).or_default().clone();
        let state = room.lock();
        StreamRead {
            epoch: state.epoch.clone(),
            offset: state.offset,
            recovery: since.map(|s| state.history.recover(&state.epoch, state.offset, s, keep, now)),
        }
    }

    /// Ends the wait of a subscriber that joined with `pending`: `replay` (what it missed, up
    /// to offset `top`) goes to its queue first, then what was held for it after `top`; from
    /// now on it gets publications as they come, but none at or below what it already has (a
    /// cluster broker may still bring one published before the read).
    pub fn settle(&self, key: &RoomKey, conn: &ConnHandle, top: u64, replay: Vec<Frame>) {
        let Some(room) = self.rooms.get(key).map(|r| r.clone()) else { return };
        let mut state = room.lock();
        let Some(at) = state.pending.iter().position(|(seq, _)| *seq == conn.seq) else { return };
        let held = match std::mem::replace(&mut state.pending[at].1, Hold::Floor(top)) {
            Hold::Waiting(held) => held,
            Hold::Floor(_) => Vec::new(),
        };
        // The newest frame handed over is the floor: anything at or below it still on its way
        // is dropped, until a newer one arrives.
        let floor = held.iter().map(|(o, _)| *o).filter(|o| *o > top).max().unwrap_or(top);
        state.pending[at].1 = Hold::Floor(floor);
        conn.deliver_replay(
            replay.into_iter().chain(held.into_iter().filter(|(o, _)| *o > top).map(|(_, f)| f)),
        );
    }

    /// The room's retained events after `since`, at most `limit`, for the history route: the
    /// epoch, the last offset, the events and whether none after `since` is missing.
    pub fn history(&self, key: &RoomKey, since: u64, limit: usize, keep: Keep, now: i64) -> HistoryPage {
        let Some(room) = self.rooms.get(key).map(|r| r.clone()) else {
            return HistoryPage { complete: true, ..Default::default() };
        };
        let state = room.lock();
        let (events, complete) = state.history.page(since, limit, keep.ttl_ms, now);
        HistoryPage {
            epoch: Some(state.epoch.clone()),
            offset: state.offset,
            complete: complete && (keep.size > 0 || state.offset <= since),
            events: events.into_iter().filter_map(|k| HistoryEvent::from_frame(&k.frame)).collect(),
        }
    }

    /// Bytes of history retained on this node.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes.load(Ordering::Relaxed)
    }

    /// Waits until retained history passes its bound.
    pub async fn over_bound(&self) {
        self.over_bound.notified().await
    }

    /// Drops what rooms retain past their app's time (`keep_of` says it), then, past the bound,
    /// the oldest events of the least recently published rooms until a tenth under it; forgets
    /// rooms left with no subscriber and nothing retained.
    pub fn trim(&self, now: i64, keep_of: impl Fn(&RoomKey) -> Keep) {
        let mut kept: Vec<(i64, RoomKey, Arc<Room>)> = Vec::new();
        for entry in self.rooms.iter() {
            let mut state = entry.value().lock();
            if state.history.is_empty() {
                continue;
            }
            let freed = state.history.expire(now - keep_of(entry.key()).ttl_ms);
            self.account(-(freed as isize));
            if !state.history.is_empty() {
                kept.push((state.history.last_publish_ms, entry.key().clone(), entry.value().clone()));
            }
        }
        let target = self.max_history_bytes - self.max_history_bytes / 10;
        if self.history_bytes() > self.max_history_bytes {
            kept.sort_unstable_by_key(|(at, _, _)| *at);
            for (_, _, room) in &kept {
                let over = self.history_bytes().saturating_sub(target);
                if over == 0 {
                    break;
                }
                let freed = room.lock().history.evict(over);
                self.account(-(freed as isize));
            }
        }
        self.rooms.retain(|_, room| {
            let state = room.lock();
            !(state.subscribers.is_empty() && state.history.is_empty())
        });
    }

    /// Subscribers of one room right now.
    pub fn subscriber_count(&self, key: &RoomKey) -> usize {
        self.rooms.get(key).map(|r| r.lock().subscribers.len()).unwrap_or(0)
    }

    /// Every room of the node with subscribers.
    pub fn room_keys(&self) -> Vec<RoomKey> {
        self.rooms
            .iter()
            .filter(|r| !r.value().lock().subscribers.is_empty())
            .map(|r| r.key().clone())
            .collect()
    }

    /// Rooms with at least one subscriber.
    pub fn room_count(&self) -> usize {
        self.occupied.load(Ordering::Relaxed)
    }

    /// (connection, room) pairs on this node.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// One room's state; `None` when nobody is in it.
    pub fn room_info(&self, key: &RoomKey) -> Option<RoomInfo> {
        let room = self.rooms.get(key)?.clone();
        let state = room.lock();
        (!state.subscribers.is_empty()).then(|| info(&key.room, &state))
    }

    /// Occupied rooms of `app_id` whose names start with `prefix`, in name order after
    /// `after`; at most `limit`, and whether more follow. Walks every room of the node.
    pub fn rooms_of(
        &self,
        app_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<RoomInfo>, bool) {
        let mut names: Vec<(RoomName, Arc<Room>)> = self
            .rooms
            .iter()
            .filter(|e| {
                let k = e.key();
                *k.app_id == *app_id
                    && k.room.as_str().starts_with(prefix)
                    && after.is_none_or(|a| k.room.as_str() > a)
            })
            .map(|e| (e.key().room.clone(), e.value().clone()))
            .collect();
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut rooms = Vec::with_capacity(limit.min(names.len()));
        let mut more = false;
        for (name, room) in names {
            let state = room.lock();
            if state.subscribers.is_empty() {
                continue;
            }
            if rooms.len() == limit {
                more = true;
                break;
            }
            rooms.push(info(&name, &state));
        }
        (rooms, more)
    }

    /// Members of a presence room in user-id order after `after`: at most `limit`, and the
    /// total. `None` when the room is empty or not a presence room.
    pub fn members(&self, key: &RoomKey, after: Option<&str>, limit: usize) -> Option<(Vec<Member>, usize)> {
        let room = self.rooms.get(key)?.clone();
        let state = room.lock();
        let members = state.members.as_ref().filter(|_| !state.subscribers.is_empty())?;
        Some((list(members, after, limit), members.len()))
    }
}

fn info(name: &RoomName, state: &RoomState) -> RoomInfo {
    RoomInfo {
        room: name.clone(),
        subscriber_count: state.subscribers.len(),
        user_count: state.members.as_ref().map(BTreeMap::len),
        occupied_since: state.occupied_since,
    }
}

fn list(members: &BTreeMap<Arc<str>, MemberState>, after: Option<&str>, limit: usize) -> Vec<Member> {
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    members
        .range::<str, _>((start, Bound::Unbounded))
        .take(limit)
        .map(|(user_id, m)| Member { user_id: user_id.clone(), user_info: m.user_info.clone() })
        .collect()
}

/// One connection of `user_id` left; the member when it was the user's last.
fn leave_member(members: &mut BTreeMap<Arc<str>, MemberState>, user_id: &Arc<str>) -> Option<Member> {
    let member = members.get_mut(user_id)?;
    member.connections -= 1;
    if member.connections > 0 {
        return None;
    }
    let (user_id, state) = members.remove_entry(user_id)?;
    Some(Member { user_id, user_info: state.user_info })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AppId, ConnectionId};
    use crate::hub::OutboxLimits;

    fn conn(seq: u64, app: &str, user: Option<&str>) -> Arc<ConnHandle> {
        speaking(Protocol::Native, seq, app, user)
    }

    fn speaking(protocol: Protocol, seq: u64, app: &str, user: Option<&str>) -> Arc<ConnHandle> {
        Arc::new(ConnHandle::new(
            seq,
            (ConnectionId::generate(), protocol),
            AppId::known(app),
            user.map(Arc::from),
            None,
            OutboxLimits { messages: 16, bytes: 1 << 20 },
            0,
        ))
    }

    fn key(app: &str, room: &str) -> RoomKey {
        RoomKey { app_id: AppId::known(app), room: RoomName::parse(room).unwrap() }
    }

    fn presence<'a>(user: &'a Arc<str>, info: &'a Arc<RawValue>) -> Option<PresenceRequest<'a>> {
        Some(PresenceRequest { user_id: user, user_info: info, list_at_most: 10 })
    }

    fn frame(offset: u64) -> Frame {
        Frame::from(format!("{{\"offset\":{offset}}}"))
    }

    #[test]
    fn joins_and_leaves_report_occupation_and_counts() {
        let r = Registry::default();
        let (a, b) = (conn(1, "app", None), conn(2, "app", None));
        let k = key("app", "room");
        let first = r.join(&k, &a, None, 7, false);
        assert!(first.occupied && first.subscribers == 1);
        let second = r.join(&k, &b, None, 8, false);
        assert!(!second.occupied && second.subscribers == 2);
        let again = r.join(&k, &b, None, 9, false);
        assert_eq!(
            (again.occupied, again.subscribers, again.added),
            (false, 2, false),
            "a repeated join changes nothing"
        );
        assert_eq!((r.subscription_count(), r.room_count()), (2, 1));
        assert_eq!(r.room_info(&k).unwrap().occupied_since, 7);
        let left = r.leave(&k, &a).unwrap();
        assert_eq!((left.vacated, left.subscribers), (false, 1));
        assert!(r.leave(&k, &a).is_none(), "not in the room any more");
        assert!(r.leave(&k, &b).unwrap().vacated);
        assert_eq!((r.subscription_count(), r.room_count()), (0, 0), "an empty room is forgotten");
    }

    #[test]
    fn publications_take_increasing_offsets_and_skip_the_excluded() {
        let r = Registry::default();
        let (a, b) = (conn(1, "app", None), conn(2, "app", None));
        let k = key("app", "room");
        r.join(&k, &a, None, 0, false);
        r.join(&k, &b, None, 0, false);
        let one = r.publish(&k, Some(1), frame);
        assert_eq!((one.offset, one.subscribers, one.delivered), (1, 2, 1));
        assert!(a.next_frame().is_none() && b.next_frame().unwrap().as_str() == r#"{"offset":1}"#);
        assert_eq!(r.publish(&k, None, frame).offset, 2);
        // A broker's offset is taken as given, and the room's counter follows it.
        assert_eq!(r.publish_at(&k, None, Some(40), None, &frame).offset, 40);
        assert_eq!(r.publish(&k, None, frame).offset, 41);
        assert_eq!(
            r.publish(&key("other-app", "room"), None, frame),
            FanoutOutcome::default(),
            "rooms are per app"
        );
    }

    /// Counts the frames it makes.
    #[derive(Default)]
    struct Counting {
        native: std::cell::Cell<u32>,
        pusher: std::cell::Cell<u32>,
    }

    impl Encode for Counting {
        fn native(&self, offset: u64) -> Frame {
            self.native.set(self.native.get() + 1);
            Frame::from(format!("native {offset}"))
        }
        fn pusher(&self, offset: u64) -> Frame {
            self.pusher.set(self.pusher.get() + 1);
            Frame::from(format!("pusher {offset}"))
        }
    }

    #[test]
    fn the_pusher_frame_is_made_once_and_only_for_pusher_subscribers() {
        let r = Registry::default();
        let k = key("app", "room");
        let natives: Vec<_> = (1..=3).map(|seq| conn(seq, "app", None)).collect();
        for c in &natives {
            r.join(&k, c, None, 0, false);
        }
        let frames = Counting::default();
        r.publish_at(&k, None, None, None, &frames);
        assert_eq!(
            (frames.native.get(), frames.pusher.get()),
            (1, 0),
            "no Pusher subscriber, no Pusher frame"
        );
        let pushers: Vec<_> = (4..=5).map(|seq| speaking(Protocol::Pusher, seq, "app", None)).collect();
        for c in &pushers {
            r.join(&k, c, None, 0, false);
        }
        let frames = Counting::default();
        assert_eq!(r.publish_at(&k, None, None, None, &frames).delivered, 5);
        assert_eq!((frames.native.get(), frames.pusher.get()), (1, 1), "each made once, shared");
        let got: Vec<String> =
            std::iter::from_fn(|| natives[0].next_frame()).map(|f| f.to_string()).collect();
        assert_eq!(got, ["native 1", "native 2"]);
        assert_eq!(pushers[1].next_frame().unwrap().as_str(), "pusher 2");
    }

    #[test]
    fn presence_counts_users_not_connections() {
        let r = Registry::default();
        let k = key("app", "presence-team");
        let (ann, bob) = (Arc::<str>::from("ann"), Arc::<str>::from("bob"));
        let info: Arc<RawValue> = Arc::from(RawValue::from_string(r#"{"n":1}"#.into()).unwrap());
        let (ann1, ann2, bob1) =
            (conn(1, "app", Some("ann")), conn(2, "app", Some("ann")), conn(3, "app", Some("bob")));
        let joined = r.join(&k, &ann1, presence(&ann, &info), 0, false).presence.unwrap();
        assert_eq!(joined.joined.unwrap().user_id.as_ref(), "ann");
        let again = r.join(&k, &ann2, presence(&ann, &info), 0, false).presence.unwrap();
        assert!(again.joined.is_none(), "a second connection of ann is no new member");
        let with_bob = r.join(&k, &bob1, presence(&bob, &info), 0, false).presence.unwrap();
        assert_eq!(with_bob.member_count, 2);
        let (page, total) = r.members(&k, Some("ann"), 10).unwrap();
        assert_eq!((page.len(), page[0].user_id.as_ref(), total), (1, "bob", 2));
        assert_eq!(r.room_info(&k).unwrap().user_count, Some(2));
        assert!(r.leave(&k, &ann1).unwrap().left.is_none(), "ann is still here");
        assert_eq!(r.leave(&k, &ann2).unwrap().left.unwrap().user_id.as_ref(), "ann");
        assert!(r.leave(&k, &bob1).unwrap().vacated);
        assert!(r.members(&k, None, 10).is_none());
    }

    #[test]
    fn rooms_are_listed_by_name_in_pages() {
        let r = Registry::default();
        for (i, name) in ["b-2", "a-1", "b-1", "c-1"].iter().enumerate() {
            r.join(&key("app", name), &conn(i as u64, "app", None), None, 0, false);
        }
        r.join(&key("other", "b-0"), &conn(9, "other", None), None, 0, false);
        let names = |(rooms, more): (Vec<RoomInfo>, bool)| {
            (rooms.into_iter().map(|i| i.room.as_str().to_owned()).collect::<Vec<_>>(), more)
        };
        assert_eq!(names(r.rooms_of("app", "", None, 2)), (vec!["a-1".into(), "b-1".into()], true));
        assert_eq!(names(r.rooms_of("app", "", Some("b-1"), 2)), (vec!["b-2".into(), "c-1".into()], false));
        assert_eq!(names(r.rooms_of("app", "b-", None, 10)), (vec!["b-1".into(), "b-2".into()], false));
    }

    #[test]
    fn a_held_subscriber_gets_the_replay_then_what_came_after_it_and_nothing_twice() {
        let r = Registry::default();
        let k = key("app", "room");
        let (old, new) = (conn(1, "app", None), conn(2, "app", None));
        r.join(&k, &old, None, 0, false);
        r.join(&k, &new, None, 0, true);
        // Published while the newcomer's place is read (a cluster broker's offsets).
        r.publish_at(&k, None, Some(6), None, &frame);
        r.publish_at(&k, None, Some(7), None, &frame);
        assert!(new.next_frame().is_none(), "held");
        // Its place was offset 6: 5 and 6 come from the replay, 7 from what was held.
        r.settle(&k, &new, 6, vec![frame(5), frame(6)]);
        let got: Vec<String> = std::iter::from_fn(|| new.next_frame()).map(|f| f.to_string()).collect();
        assert_eq!(got, [frame(5), frame(6), frame(7)].map(|f| f.to_string()));
        // A publication at or below 7 still on its way is not delivered again; 8 is.
        r.publish_at(&k, None, Some(7), None, &frame);
        assert!(new.next_frame().is_none());
        r.publish_at(&k, None, Some(8), None, &frame);
        assert_eq!(new.next_frame().unwrap().as_str(), r#"{"offset":8}"#);
        assert_eq!(std::iter::from_fn(|| old.next_frame()).count(), 4, "the others get every publication");
    }
}
