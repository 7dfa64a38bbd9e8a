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

use super::{ConnHandle, Delivery, Frame};
use crate::protocol::RoomName;

pub use crate::domain::{Member, RoomKey};

#[derive(Debug)]
struct MemberState {
    user_info: Arc<RawValue>,
    /// This user's connections in the room.
    connections: u32,
}

#[derive(Debug, Default)]
struct RoomState {
    /// Keyed by the connection's sequence number: O(1) removal, dense iteration for fan-out.
    subscribers: IndexMap<u64, Arc<ConnHandle>>,
    /// Offset of the last publication; offsets count from 1 while the room is occupied.
    offset: u64,
    /// When the room got its current first subscriber (ms since the epoch).
    occupied_since: i64,
    /// Presence rooms only: members by user id, ordered for stable pagination.
    members: Option<BTreeMap<Arc<str>, MemberState>>,
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

/// What a publish reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FanoutOutcome {
    /// Subscribers in the room at publish time.
    pub subscribers: usize,
    /// Queues the frame was placed in.
    pub delivered: usize,
    /// Subscribers closed because their queue was full.
    pub dropped: usize,
    /// The publication's offset; 0 when the room was empty.
    pub offset: u64,
}

/// The room → subscribers map.
#[derive(Debug, Default)]
pub struct Registry {
    rooms: DashMap<RoomKey, Arc<Room>>,
    /// (connection, room) pairs on this node.
    subscriptions: AtomicUsize,
}

/// Who joins a presence room, and how many members the caller wants listed back.
#[derive(Debug, Clone, Copy)]
pub struct PresenceRequest<'a> {
    pub user_id: &'a Arc<str>,
    pub user_info: &'a Arc<RawValue>,
    pub list_at_most: usize,
}

impl Registry {
    /// Adds `conn` to the room (a presence room when `presence` is given); a repeated join
    /// changes nothing.
    pub fn join(
        &self,
        key: &RoomKey,
        conn: &Arc<ConnHandle>,
        presence: Option<PresenceRequest<'_>>,
        now_ms: i64,
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
        JoinOutcome { occupied, subscribers: room.subscribers.len(), added: new, presence }
    }

    /// Removes `conn` from the room; `None` when it was not in it.
    pub fn leave(&self, key: &RoomKey, conn: &ConnHandle) -> Option<LeaveOutcome> {
        let mut outcome = None;
        let vacated = self
            .rooms
            .remove_if(key, |_, room| {
                let mut room = room.lock();
                if room.subscribers.swap_remove(&conn.seq).is_none() {
                    return false;
                }
                let left = match (room.members.as_mut(), conn.user_id.as_ref()) {
                    (Some(members), Some(user_id)) => leave_member(members, user_id),
                    _ => None,
                };
                outcome = Some(LeaveOutcome { vacated: false, subscribers: room.subscribers.len(), left });
                room.subscribers.is_empty()
            })
            .is_some();
        if let Some(outcome) = outcome.as_mut() {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            outcome.vacated = vacated;
        }
        outcome
    }

    /// Hands one frame to every subscriber's queue except `exclude`. The frame is built once,
    /// under the room lock, from the offset assigned there, so every subscriber sees offsets in
    /// the same increasing order.
    pub fn publish(
        &self,
        key: &RoomKey,
        exclude: Option<u64>,
        build: impl FnOnce(u64) -> Frame,
    ) -> FanoutOutcome {
        self.publish_at(key, exclude, None, build)
    }

    /// [`Registry::publish`] with the offset chosen elsewhere (cluster-wide, by the broker)
    /// when `offset` is given; the room's own counter follows it.
    pub fn publish_at(
        &self,
        key: &RoomKey,
        exclude: Option<u64>,
        offset: Option<u64>,
        build: impl FnOnce(u64) -> Frame,
    ) -> FanoutOutcome {
        let Some(room) = self.rooms.get(key).map(|r| r.clone()) else {
            return FanoutOutcome::default();
        };
        let mut state = room.lock();
        if state.subscribers.is_empty() {
            return FanoutOutcome::default();
        }
        state.offset = offset.unwrap_or(state.offset + 1);
        let frame = build(state.offset);
        let mut outcome = FanoutOutcome {
            subscribers: state.subscribers.len(),
            offset: state.offset,
            ..Default::default()
        };
        for (&seq, conn) in &state.subscribers {
            if Some(seq) == exclude {
                continue;
            }
            match conn.deliver(&frame) {
                Delivery::Queued => outcome.delivered += 1,
                Delivery::Full => outcome.dropped += 1,
                Delivery::Gone => {}
            }
        }
        outcome
    }

    /// Subscribers of one room right now.
    pub fn subscriber_count(&self, key: &RoomKey) -> usize {
        self.rooms.get(key).map(|r| r.lock().subscribers.len()).unwrap_or(0)
    }

    /// Every occupied room of the node (a broker re-subscribes them after reconnecting).
    pub fn room_keys(&self) -> Vec<RoomKey> {
        self.rooms.iter().map(|r| r.key().clone()).collect()
    }

    /// Rooms with at least one subscriber.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
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
        Arc::new(ConnHandle::new(
            seq,
            ConnectionId::generate(),
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
        let first = r.join(&k, &a, None, 7);
        assert!(first.occupied && first.subscribers == 1);
        let second = r.join(&k, &b, None, 8);
        assert!(!second.occupied && second.subscribers == 2);
        let again = r.join(&k, &b, None, 9);
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
        r.join(&k, &a, None, 0);
        r.join(&k, &b, None, 0);
        let one = r.publish(&k, Some(1), frame);
        assert_eq!((one.offset, one.subscribers, one.delivered), (1, 2, 1));
        assert!(a.next_frame().is_none() && b.next_frame().unwrap().as_str() == r#"{"offset":1}"#);
        assert_eq!(r.publish(&k, None, frame).offset, 2);
        // A broker's offset is taken as given, and the room's counter follows it.
        assert_eq!(r.publish_at(&k, None, Some(40), frame).offset, 40);
        assert_eq!(r.publish(&k, None, frame).offset, 41);
        assert_eq!(
            r.publish(&key("other-app", "room"), None, frame),
            FanoutOutcome::default(),
            "rooms are per app"
        );
    }

    #[test]
    fn presence_counts_users_not_connections() {
        let r = Registry::default();
        let k = key("app", "presence-team");
        let (ann, bob) = (Arc::<str>::from("ann"), Arc::<str>::from("bob"));
        let info: Arc<RawValue> = Arc::from(RawValue::from_string(r#"{"n":1}"#.into()).unwrap());
        let (ann1, ann2, bob1) =
            (conn(1, "app", Some("ann")), conn(2, "app", Some("ann")), conn(3, "app", Some("bob")));
        let joined = r.join(&k, &ann1, presence(&ann, &info), 0).presence.unwrap();
        assert_eq!(joined.joined.unwrap().user_id.as_ref(), "ann");
        let again = r.join(&k, &ann2, presence(&ann, &info), 0).presence.unwrap();
        assert!(again.joined.is_none(), "a second connection of ann is no new member");
        let with_bob = r.join(&k, &bob1, presence(&bob, &info), 0).presence.unwrap();
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
            r.join(&key("app", name), &conn(i as u64, "app", None), None, 0);
        }
        r.join(&key("other", "b-0"), &conn(9, "other", None), None, 0);
        let names = |(rooms, more): (Vec<RoomInfo>, bool)| {
            (rooms.into_iter().map(|i| i.room.as_str().to_owned()).collect::<Vec<_>>(), more)
        };
        assert_eq!(names(r.rooms_of("app", "", None, 2)), (vec!["a-1".into(), "b-1".into()], true));
        assert_eq!(names(r.rooms_of("app", "", Some("b-1"), 2)), (vec!["b-2".into(), "c-1".into()], false));
        assert_eq!(names(r.rooms_of("app", "b-", None, 10)), (vec!["b-1".into(), "b-2".into()], false));
    }
}
