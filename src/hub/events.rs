//! What happened in the hub, for listeners (analytics, webhooks) that must not reach into it.
//! Two kinds of listener: sinks, called inline for counters that must be exact and readable at
//! once (they only add to in-memory counters and never block), and queued listeners, which get
//! a bounded queue; emitting never waits on those, a full queue drops the event and counts it.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::domain::RoomKey;
use crate::protocol::EventName;

/// Who published an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishKind {
    /// `POST /api/broadcast` (or batch).
    Broadcast,
    /// A client's `publish` frame.
    Client,
    /// The hub's own events (`user-joined`, `user-left`).
    System,
}

/// Who sent a client event.
#[derive(Debug, Clone)]
pub struct Sender {
    pub connection_id: crate::domain::ConnectionId,
    /// The connection's user, if it has one.
    pub user_id: Option<Arc<str>>,
}

/// One thing that happened.
#[derive(Debug, Clone)]
pub enum HubEvent {
    ConnectionOpened {
        app_id: String,
        connection_id: String,
        user_id: Option<String>,
    },
    ConnectionClosed {
        app_id: String,
        connection_id: String,
        user_id: Option<String>,
    },
    RoomOccupied {
        room: RoomKey,
    },
    RoomVacated {
        room: RoomKey,
    },
    /// A user's first connection joined a presence room.
    MemberJoined {
        room: RoomKey,
        user_id: String,
    },
    /// A user's last connection left a presence room.
    MemberLeft {
        room: RoomKey,
        user_id: String,
    },
    /// Frames of a publication placed in this node's queues (on every node that has
    /// subscribers of the room, whichever node published it).
    Delivered {
        room: RoomKey,
        delivered: usize,
        dropped: usize,
    },
    Published {
        room: RoomKey,
        event: EventName,
        kind: PublishKind,
        /// The event's `data`, only for apps a listener asked payloads of
        /// ([`EventBus::set_payload_filter`]): copying it for every publication would cost the
        /// fan-out path for nothing.
        data: Option<Arc<serde_json::value::RawValue>>,
        /// When it was published (ms).
        timestamp: i64,
        /// A client event's sender.
        sender: Option<Sender>,
        /// Its place in the room's stream (0 when the room kept no stream).
        offset: u64,
    },
    /// A connection of this node subscribed to a room.
    Joined {
        room: RoomKey,
        connection_id: crate::domain::ConnectionId,
        user_id: Option<Arc<str>>,
    },
    /// A connection of this node left a room (or closed while in it).
    Left {
        room: RoomKey,
        connection_id: crate::domain::ConnectionId,
        user_id: Option<Arc<str>>,
    },
}

/// A listener called inline on every event; it must be quick and must not block.
pub type Sink = Arc<dyn Fn(&HubEvent) + Send + Sync>;

/// Says whether publications of an app should carry their `data`; called inline, must be quick.
pub type PayloadFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Fans [`HubEvent`]s out to sinks and to listeners' bounded queues.
#[derive(Default)]
pub struct EventBus {
    sinks: ArcSwap<Vec<Sink>>,
    payloads: arc_swap::ArcSwapOption<PayloadFilter>,
    /// Each listener's queue, and how many events it refused.
    listeners: Mutex<Vec<(mpsc::Sender<HubEvent>, Arc<AtomicU64>)>>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").field("sinks", &self.sinks.load().len()).finish_non_exhaustive()
    }
}

impl EventBus {
    /// Calls `sink` with every later event, inline.
    pub fn add_sink(&self, sink: Sink) {
        self.sinks.rcu(|sinks| {
            let mut sinks = Vec::clone(sinks);
            sinks.push(sink.clone());
            sinks
        });
    }

    /// Publications of apps `filter` accepts carry their data from now on.
    pub fn set_payload_filter(&self, filter: PayloadFilter) {
        self.payloads.store(Some(Arc::new(filter)));
    }

    /// Whether publications of `app_id` should carry their data.
    pub fn wants_payload(&self, app_id: &str) -> bool {
        self.payloads.load().as_ref().is_some_and(|f| f(app_id))
    }

    /// A new listener with a queue of `capacity` events.
    pub fn subscribe(&self, capacity: usize) -> mpsc::Receiver<HubEvent> {
        self.subscribe_counted(capacity).0
    }

    /// A new listener with a queue of `capacity` events, and the count of events its full
    /// queue refused.
    pub fn subscribe_counted(&self, capacity: usize) -> (mpsc::Receiver<HubEvent>, Arc<AtomicU64>) {
        let (tx, rx) = mpsc::channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).push((tx, dropped.clone()));
        (rx, dropped)
    }

    /// Offers `event` to every listener without waiting; closed listeners are forgotten.
    pub fn emit(&self, event: HubEvent) {
        for sink in self.sinks.load().iter() {
            sink(&event);
        }
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.retain(|(tx, refused)| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                refused.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Events that found a listener's queue full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_listener_counts_what_its_own_full_queue_refused() {
        let bus = EventBus::default();
        let (mut slow, slow_refused) = bus.subscribe_counted(1);
        let (mut fast, fast_refused) = bus.subscribe_counted(8);
        let event =
            || HubEvent::ConnectionOpened { app_id: "a".into(), connection_id: "c".into(), user_id: None };
        for _ in 0..3 {
            bus.emit(event());
        }
        assert_eq!(slow_refused.load(Ordering::Relaxed), 2);
        assert_eq!(fast_refused.load(Ordering::Relaxed), 0);
        assert_eq!(bus.dropped(), 2, "the node-wide count for the metric");
        assert!(slow.try_recv().is_ok() && slow.try_recv().is_err());
        assert!((0..3).all(|_| fast.try_recv().is_ok()));
    }
}
