//! The hub: the one handle HTTP and WebSocket code call to join, leave and broadcast.

pub mod events;
pub mod registry;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};

use crate::broker::{Broker, BrokerError, Publication};
use crate::protocol::{CloseCode, EventName, RoomName, ServerFrame};
use events::{EventBus, HubEvent, PublishKind};
use registry::{FanoutOutcome, Registry, RoomKey};

/// One encoded server frame; clones share the bytes.
pub type Frame = Utf8Bytes;

/// Result of offering a frame to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// The queue was full: the connection is being closed with 4008.
    Full,
    /// The connection is already closing.
    Gone,
}

/// The shared part of one connection: what the registry holds for it.
#[derive(Debug)]
pub struct ConnHandle {
    /// Process-unique number; registry maps key on it.
    pub seq: u64,
    /// `c_…`, the id clients see (and `exclude_connection_id` names).
    pub id: Arc<str>,
    pub app_id: Arc<str>,
    pub user_id: Option<Arc<str>>,
    queue: mpsc::Sender<Frame>,
    close_code: AtomicU16,
    close: Notify,
}

impl ConnHandle {
    /// Places `frame` in the connection's queue without waiting.
    pub fn deliver(&self, frame: &Frame) -> Delivery {
        match self.queue.try_send(frame.clone()) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CloseCode::SlowConsumer);
                Delivery::Full
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }

    /// Asks the connection's task to close with `code`; the first request wins.
    pub fn close(&self, code: CloseCode) {
        if self.close_code.compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.close.notify_one();
        }
    }

    /// Resolves once [`ConnHandle::close`] was called; returns the code asked for.
    pub async fn close_requested(&self) -> u16 {
        loop {
            let code = self.close_code.load(Ordering::Acquire);
            if code != 0 {
                return code;
            }
            self.close.notified().await;
        }
    }
}

/// What `Hub::broadcast` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BroadcastOutcome {
    pub subscriber_count: usize,
    pub offset: u64,
    pub timestamp: i64,
}

/// Rooms, connections and the way publications reach them.
#[derive(Debug)]
pub struct Hub {
    registry: Arc<Registry>,
    broker: Arc<dyn Broker>,
    connections: DashMap<Arc<str>, Arc<ConnHandle>>,
    events: EventBus,
    next_seq: AtomicU64,
}

impl Hub {
    /// A hub over `registry`, publishing through `broker`.
    pub fn new(registry: Arc<Registry>, broker: Arc<dyn Broker>) -> Self {
        Self {
            registry,
            broker,
            connections: DashMap::new(),
            events: EventBus::default(),
            next_seq: AtomicU64::new(1),
        }
    }

    /// The stream listeners subscribe to.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Registers a new connection with a queue of `queue_len` frames; returns its handle and
    /// the receiving end of its queue.
    pub fn connect(
        &self,
        app_id: &str,
        user_id: Option<&str>,
        queue_len: usize,
    ) -> (Arc<ConnHandle>, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(queue_len);
        let handle = Arc::new(ConnHandle {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            id: Arc::from(format!("c_{}", crate::auth::random_base62(16))),
            app_id: Arc::from(app_id),
            user_id: user_id.map(Arc::from),
            queue: tx,
            close_code: AtomicU16::new(0),
            close: Notify::new(),
        });
        self.connections.insert(handle.id.clone(), handle.clone());
        self.events.emit(HubEvent::ConnectionOpened {
            app_id: app_id.to_owned(),
            connection_id: handle.id.to_string(),
            user_id: user_id.map(str::to_owned),
        });
        (handle, rx)
    }

    /// Forgets a connection that has left all its rooms.
    pub fn disconnect(&self, conn: &ConnHandle) {
        self.connections.remove(&conn.id);
        self.events.emit(HubEvent::ConnectionClosed {
            app_id: conn.app_id.to_string(),
            connection_id: conn.id.to_string(),
            user_id: conn.user_id.as_deref().map(str::to_owned),
        });
    }

    /// Subscribes `conn` to `room` of its app. Returns once events published afterwards reach it.
    pub async fn join(&self, conn: &Arc<ConnHandle>, room: &RoomName) -> Result<(), BrokerError> {
        let key = RoomKey { app_id: conn.app_id.clone(), room: room.clone() };
        if self.registry.join(&key, conn) {
            if let Err(e) = self.broker.subscribe(&key).await {
                self.leave(conn, room).await;
                return Err(e);
            }
            self.events.emit(HubEvent::RoomOccupied { room: key });
        }
        Ok(())
    }

    /// Unsubscribes `conn` from `room`; `false` when it was not subscribed.
    pub async fn leave(&self, conn: &ConnHandle, room: &RoomName) -> bool {
        let key = RoomKey { app_id: conn.app_id.clone(), room: room.clone() };
        match self.registry.leave(&key, conn.seq) {
            None => false,
            Some(vacated) => {
                if vacated {
                    if let Err(e) = self.broker.unsubscribe(&key).await {
                        tracing::warn!(room = ?key, error = %e, "broker unsubscribe failed");
                    }
                    self.events.emit(HubEvent::RoomVacated { room: key });
                }
                true
            }
        }
    }

    /// Publishes one event to a room of `app_id`, skipping the connection `exclude` (a `c_…` id)
    /// when given. Returns after the frame is in every subscriber's queue, not after it is written.
    pub async fn broadcast(
        &self,
        app_id: &str,
        room: &RoomName,
        event: &EventName,
        data: &RawValue,
        exclude: Option<&str>,
        kind: PublishKind,
    ) -> Result<BroadcastOutcome, BrokerError> {
        let key = RoomKey { app_id: Arc::from(app_id), room: room.clone() };
        // An unknown or foreign connection id excludes nobody.
        let exclude =
            exclude.and_then(|id| self.connections.get(id)).filter(|c| *c.app_id == *app_id).map(|c| c.seq);
        let timestamp = now_ms();
        let publication = Publication { key, event: event.clone(), data, exclude, timestamp };
        let outcome = self.broker.publish(&publication).await?;
        self.events.emit(HubEvent::Published {
            room: publication.key,
            event: event.clone(),
            kind,
            delivered: outcome.delivered,
            dropped: outcome.dropped,
        });
        Ok(BroadcastOutcome { subscriber_count: outcome.subscribers, offset: outcome.offset, timestamp })
    }

    /// Subscribers of one room of one app on this node.
    pub fn subscriber_count(&self, app_id: &str, room: &RoomName) -> usize {
        self.registry.subscriber_count(&RoomKey { app_id: Arc::from(app_id), room: room.clone() })
    }

    /// Asks every connection of `app_id` (or all connections) to close with `code`.
    pub fn close_connections(&self, app_id: Option<&str>, code: CloseCode) -> usize {
        let mut closed = 0;
        for conn in self.connections.iter() {
            if app_id.is_none_or(|a| *conn.app_id == *a) {
                conn.close(code);
                closed += 1;
            }
        }
        closed
    }

    /// Open connections on this node.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }
}

/// Delivers a publication to this node's subscribers: the last step of every broker.
pub fn fanout(registry: &Registry, publication: &Publication<'_>) -> FanoutOutcome {
    registry.publish(&publication.key, publication.exclude, |offset| {
        Frame::from(ServerFrame::event(
            &publication.key.room,
            &publication.event,
            publication.data,
            offset,
            publication.timestamp,
        ))
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::local::LocalBroker;

    fn hub() -> Hub {
        let registry = Arc::new(Registry::default());
        Hub::new(registry.clone(), Arc::new(LocalBroker::new(registry)))
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn events_reach_only_the_same_apps_room() {
        let hub = hub();
        let room = RoomName::parse("chat").unwrap();
        let (a, mut a_rx) = hub.connect("app-a", None, 8);
        let (b, mut b_rx) = hub.connect("app-b", None, 8);
        hub.join(&a, &room).await.unwrap();
        hub.join(&b, &room).await.unwrap();
        let ev = EventName::parse("m").unwrap();
        let out = hub.broadcast("app-a", &room, &ev, &raw("1"), None, PublishKind::Broadcast).await.unwrap();
        assert_eq!((out.subscriber_count, out.offset), (1, 1));
        assert!(a_rx.try_recv().unwrap().as_str().contains(r#""offset":1"#));
        assert!(b_rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn full_queue_closes_with_4008_and_others_keep_receiving() {
        let hub = hub();
        let room = RoomName::parse("r").unwrap();
        let (slow, _slow_rx) = hub.connect("app-a", None, 2);
        let (fast, mut fast_rx) = hub.connect("app-a", None, 16);
        hub.join(&slow, &room).await.unwrap();
        hub.join(&fast, &room).await.unwrap();
        let ev = EventName::parse("m").unwrap();
        for _ in 0..3 {
            hub.broadcast("app-a", &room, &ev, &raw("null"), None, PublishKind::Broadcast).await.unwrap();
        }
        assert_eq!(slow.close_requested().await, 4008);
        for offset in 1..=3 {
            assert!(fast_rx.try_recv().unwrap().as_str().contains(&format!(r#""offset":{offset}"#)));
        }
    }

    #[tokio::test]
    async fn lifecycle_events_are_emitted_once() {
        let hub = hub();
        let mut rx = hub.events().subscribe(16);
        let room = RoomName::parse("r").unwrap();
        let (a, _qa) = hub.connect("app-a", Some("u1"), 4);
        let (b, _qb) = hub.connect("app-a", None, 4);
        hub.join(&a, &room).await.unwrap();
        hub.join(&b, &room).await.unwrap();
        assert!(hub.leave(&a, &room).await);
        assert!(!hub.leave(&a, &room).await);
        assert!(hub.leave(&b, &room).await);
        hub.disconnect(&a);
        let mut kinds = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            kinds.push(match ev {
                HubEvent::ConnectionOpened { .. } => "open",
                HubEvent::ConnectionClosed { .. } => "close",
                HubEvent::RoomOccupied { .. } => "occupied",
                HubEvent::RoomVacated { .. } => "vacated",
                HubEvent::Published { .. } => "published",
            });
        }
        assert_eq!(kinds, ["open", "open", "occupied", "vacated", "close"]);
        assert_eq!(hub.subscriber_count("app-a", &room), 0);
    }

    #[tokio::test]
    async fn exclude_skips_only_that_connection() {
        let hub = hub();
        let room = RoomName::parse("r").unwrap();
        let (a, mut qa) = hub.connect("app-a", None, 4);
        let (b, mut qb) = hub.connect("app-a", None, 4);
        hub.join(&a, &room).await.unwrap();
        hub.join(&b, &room).await.unwrap();
        let ev = EventName::parse("m").unwrap();
        hub.broadcast("app-a", &room, &ev, &raw("{}"), Some(&a.id), PublishKind::Client).await.unwrap();
        assert!(qa.try_recv().is_err());
        assert!(qb.try_recv().is_ok());
    }
}
