//! What happened in the hub, for listeners (presence, analytics, metrics, webhooks) that must
//! not reach into it. Emitting never blocks: a full listener queue drops the event and counts it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::registry::RoomKey;
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

/// One thing that happened.
#[derive(Debug, Clone, PartialEq)]
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
    Published {
        room: RoomKey,
        event: EventName,
        kind: PublishKind,
        delivered: usize,
        dropped: usize,
    },
}

/// Fans [`HubEvent`]s out to listeners' bounded queues.
#[derive(Debug, Default)]
pub struct EventBus {
    listeners: Mutex<Vec<mpsc::Sender<HubEvent>>>,
    dropped: AtomicU64,
}

impl EventBus {
    /// A new listener with a queue of `capacity` events.
    pub fn subscribe(&self, capacity: usize) -> mpsc::Receiver<HubEvent> {
        let (tx, rx) = mpsc::channel(capacity);
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// Offers `event` to every listener without waiting; closed listeners are forgotten.
    pub fn emit(&self, event: HubEvent) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
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
