//! Rooms and their subscribers: a sharded map from room to a small per-room lock. Joins, leaves
//! and publishes to one room are ordered by that room's lock; different rooms never contend
//! beyond their map shard.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use indexmap::IndexMap;

use super::{ConnHandle, Delivery, Frame};
use crate::protocol::RoomName;

/// A room inside one app. Rooms of different apps never compare equal, whatever their names.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomKey {
    pub app_id: Arc<str>,
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

#[derive(Debug, Default)]
struct RoomState {
    /// Keyed by the connection's sequence number: O(1) removal, dense iteration for fan-out.
    subscribers: IndexMap<u64, Arc<ConnHandle>>,
    /// Offset of the last publication; offsets count from 1 while the room is occupied.
    offset: u64,
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
}

impl Registry {
    /// Adds `conn` to the room; `true` when it was the room's first subscriber.
    pub fn join(&self, key: &RoomKey, conn: &Arc<ConnHandle>) -> bool {
        // The entry guard (shard lock) is held while the room is changed, so a concurrent last
        // leave cannot remove the room between lookup and insert.
        let entry = self.rooms.entry(key.clone()).or_default();
        let mut room = entry.lock();
        let first = room.subscribers.is_empty();
        room.subscribers.insert(conn.seq, conn.clone());
        first
    }

    /// Removes `seq` from the room; `Some(true)` when the room became empty, `None` when the
    /// connection was not in it.
    pub fn leave(&self, key: &RoomKey, seq: u64) -> Option<bool> {
        let mut removed = false;
        let vacated = self
            .rooms
            .remove_if(key, |_, room| {
                let mut room = room.lock();
                removed = room.subscribers.swap_remove(&seq).is_some();
                room.subscribers.is_empty()
            })
            .is_some();
        removed.then_some(vacated)
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
        let Some(room) = self.rooms.get(key).map(|r| r.clone()) else {
            return FanoutOutcome::default();
        };
        let mut state = room.lock();
        if state.subscribers.is_empty() {
            return FanoutOutcome::default();
        }
        state.offset += 1;
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

    /// Rooms with at least one subscriber.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }
}
