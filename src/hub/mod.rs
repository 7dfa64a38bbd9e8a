//! The hub: the one handle HTTP and WebSocket code call to join, leave and broadcast.

pub mod conn;
pub mod events;
pub mod metrics;
pub mod registry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use serde_json::value::RawValue;

use crate::broker::{Broker, BrokerError, Publication};
use crate::clock::now_ms;
use crate::domain::{AppId, ConnectionId};
use self::metrics::{DropReason, HubMetrics};
use crate::protocol::{CloseCode, EventName, RoomName, ServerFrame};
pub use conn::{ConnHandle, Delivery, OutboxLimits, Wake};
use events::{EventBus, HubEvent, PublishKind};
use registry::{FanoutOutcome, JoinOutcome, Member, PresenceRequest, Registry, RoomInfo, RoomKey};

/// One encoded server frame; clones share the bytes.
pub type Frame = Utf8Bytes;

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
    connections: DashMap<ConnectionId, Arc<ConnHandle>>,
    /// Open connections per app, for `max_connections`.
    per_app: DashMap<AppId, usize>,
    /// Connections per client address, for clients behind trusted proxies.
    per_ip: DashMap<std::net::IpAddr, usize>,
    events: EventBus,
    next_seq: AtomicU64,
    limits: OutboxLimits,
    /// Origin of the hub clock that connections' `last_seen` is measured on.
    started: Instant,
    /// Set at shutdown: connections that arrive afterwards are closed at once.
    closing: AtomicBool,
    /// Most presence members listed in a `subscribed` frame.
    presence_list_max: usize,
    metrics: HubMetrics,
}

impl Hub {
    /// A hub over `registry`, publishing through `broker`, with outboxes bounded by `limits`.
    pub fn new(registry: Arc<Registry>, broker: Arc<dyn Broker>, limits: OutboxLimits) -> Self {
        Self {
            registry,
            broker,
            connections: DashMap::new(),
            per_app: DashMap::new(),
            per_ip: DashMap::new(),
            events: EventBus::default(),
            next_seq: AtomicU64::new(1),
            limits,
            started: Instant::now(),
            closing: AtomicBool::new(false),
            presence_list_max: 1000,
            metrics: HubMetrics::default(),
        }
    }

    /// Records into `metrics` (Prometheus counters of the server).
    pub fn with_metrics(mut self, metrics: HubMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The counters sessions update too.
    pub fn metrics(&self) -> &HubMetrics {
        &self.metrics
    }

    /// Open connections of a client behind a trusted proxy, by its address.
    pub fn connections_from(&self, ip: std::net::IpAddr) -> usize {
        self.per_ip.get(&ip).map_or(0, |n| *n)
    }

    /// Open connections per app on this node.
    pub fn connections_per_app(&self) -> Vec<(AppId, usize)> {
        self.per_app.iter().map(|e| (e.key().clone(), *e.value())).collect()
    }

    /// Lists at most `n` members in a presence room's `subscribed` frame (the count stays exact).
    pub fn with_presence_list_max(mut self, n: usize) -> Self {
        self.presence_list_max = n;
        self
    }

    /// The room registry (for introspection).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Milliseconds since the hub started: the clock of connections' `last_seen`.
    pub fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The stream listeners subscribe to.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Registers a new connection. After [`Hub::shutdown`] it is born closing (1012).
    pub fn connect(&self, app_id: &str, user_id: Option<&str>) -> Arc<ConnHandle> {
        self.connect_from(app_id, user_id, None)
    }

    /// [`Hub::connect`] for a client behind a trusted proxy, counted under its address.
    pub fn connect_from(
        &self,
        app_id: &str,
        user_id: Option<&str>,
        client_ip: Option<std::net::IpAddr>,
    ) -> Arc<ConnHandle> {
        let handle = Arc::new(ConnHandle::new(
            self.next_seq.fetch_add(1, Ordering::Relaxed),
            ConnectionId::generate(),
            AppId::known(app_id),
            user_id.map(Arc::from),
            client_ip,
            self.limits,
            self.clock_ms(),
        ));
        self.connections.insert(handle.id.clone(), handle.clone());
        self.metrics.connections_opened.increment(1);
        *self.per_app.entry(handle.app_id.clone()).or_default() += 1;
        if let Some(ip) = client_ip {
            *self.per_ip.entry(ip).or_default() += 1;
        }
        if self.closing.load(Ordering::Acquire) {
            handle.close(CloseCode::ServiceRestart);
        }
        self.events.emit(HubEvent::ConnectionOpened {
            app_id: app_id.to_owned(),
            connection_id: handle.id.to_string(),
            user_id: user_id.map(str::to_owned),
        });
        handle
    }

    /// Forgets a connection that has left all its rooms.
    pub fn disconnect(&self, conn: &ConnHandle) {
        if self.connections.remove(&conn.id).is_some() {
            self.per_app.remove_if_mut(&conn.app_id, |_, n| {
                *n -= 1;
                *n == 0
            });
            if let Some(ip) = conn.client_ip {
                self.per_ip.remove_if_mut(&ip, |_, n| {
                    *n -= 1;
                    *n == 0
                });
            }
        }
        self.events.emit(HubEvent::ConnectionClosed {
            app_id: conn.app_id.to_string(),
            connection_id: conn.id.to_string(),
            user_id: conn.user_id.as_deref().map(str::to_owned),
        });
    }

    /// Subscribes `conn` to `room` of its app. Returns once events published afterwards reach
    /// it, with the member list for a presence room. `user_info` is the connection's, as JSON
    /// text; a presence room needs the connection to have a user id (checked by the caller).
    pub async fn join(
        &self,
        conn: &Arc<ConnHandle>,
        room: &RoomName,
        user_info: Option<&Arc<RawValue>>,
    ) -> Result<JoinOutcome, BrokerError> {
        let key = RoomKey { app_id: conn.app_id.clone(), room: room.clone() };
        // Only a presence join needs a user_info; a missing one is JSON null.
        let null: Arc<RawValue>;
        let presence = match (&conn.user_id, room.is_presence()) {
            (Some(user_id), true) => {
                let user_info = match user_info {
                    Some(info) => info,
                    None => {
                        null = Arc::from(RawValue::NULL.to_owned());
                        &null
                    }
                };
                Some(PresenceRequest { user_id, user_info, list_at_most: self.presence_list_max })
            }
            _ => None,
        };
        let mut outcome = self.registry.join(&key, conn, presence, now_ms());
        if outcome.occupied
            && let Err(e) = self.broker.subscribe(&key).await
        {
            self.leave_uncounted(conn, room).await;
            return Err(e);
        }
        // In a cluster the room is occupied when its first subscriber anywhere joins.
        let occupied = match self.broker.count_subscribers(&key, 1).await {
            Ok(Some(total)) => total == 1,
            Ok(None) => outcome.occupied,
            Err(e) => {
                self.leave_uncounted(conn, room).await;
                return Err(e);
            }
        };
        if occupied {
            self.events.emit(HubEvent::RoomOccupied { room: key.clone() });
        }
        if let Some(presence) = outcome.presence.as_mut() {
            let joined = match &presence.joined {
                Some(member) => {
                    match self.broker.presence_join(&key, &member.user_id, &member.user_info).await {
                        Ok(Some(first_anywhere)) => first_anywhere,
                        Ok(None) => true,
                        Err(e) => {
                            self.leave(conn, room).await;
                            return Err(e);
                        }
                    }
                }
                None => false,
            };
            // In a cluster the list comes from Redis: members of every node.
            match self.broker.presence_members(&key, None, self.presence_list_max).await {
                Ok(Some((members, count))) => (presence.members, presence.member_count) = (members, count),
                Ok(None) => {}
                Err(e) => {
                    self.leave(conn, room).await;
                    return Err(e);
                }
            }
            if let (true, Some(member)) = (joined, &presence.joined) {
                self.announce(&key, "user-joined", member, Some(conn.seq)).await;
                self.events.emit(HubEvent::MemberJoined { room: key, user_id: member.user_id.to_string() });
            }
        }
        Ok(outcome)
    }

    /// Members of a presence room by user id after `after`: the cluster's in cluster mode, else
    /// this node's; `None` when the room is empty here and not in a cluster.
    pub async fn presence_page(
        &self,
        key: &RoomKey,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(Vec<Member>, usize)>, BrokerError> {
        match self.broker.presence_members(key, after, limit).await? {
            Some(page) => Ok(Some(page)),
            None => Ok(self.registry.members(key, after, limit)),
        }
    }

    /// A member whose last connection was on a dead node: the others learn `user-left`.
    pub async fn member_left_elsewhere(&self, key: RoomKey, user_id: &str) {
        let member = Member { user_id: Arc::from(user_id), user_info: Arc::from(RawValue::NULL.to_owned()) };
        self.announce(&key, "user-left", &member, None).await;
        self.events.emit(HubEvent::MemberLeft { room: key, user_id: user_id.to_owned() });
    }

    /// Unsubscribes `conn` from `room`; `false` when it was not subscribed.
    pub async fn leave(&self, conn: &ConnHandle, room: &RoomName) -> bool {
        self.leave_counted(conn, room, true).await
    }

    /// [`Hub::leave`] for a join whose cluster count failed (it was never counted).
    async fn leave_uncounted(&self, conn: &ConnHandle, room: &RoomName) -> bool {
        self.leave_counted(conn, room, false).await
    }

    async fn leave_counted(&self, conn: &ConnHandle, room: &RoomName, counted: bool) -> bool {
        let key = RoomKey { app_id: conn.app_id.clone(), room: room.clone() };
        let Some(outcome) = self.registry.leave(&key, conn) else {
            return false;
        };
        let cluster_total = match counted {
            true => self.broker.count_subscribers(&key, -1).await.unwrap_or_else(|e| {
                tracing::warn!(room = ?key, error = %e, "cannot update the cluster's subscriber count");
                None
            }),
            false => None,
        };
        // In a cluster the room is vacated when its last subscriber anywhere leaves. A join
        // that failed before it was counted did not make the room occupied either.
        let vacated_cluster = counted && cluster_total.map_or(outcome.vacated, |total| total == 0);
        if let Some(member) = &outcome.left {
            let left_cluster = match self.broker.presence_leave(&key, &member.user_id).await {
                Ok(cluster) => cluster,
                Err(e) => {
                    tracing::warn!(room = ?key, error = %e, "cannot record a presence leave in Redis");
                    Some(false)
                }
            };
            match left_cluster {
                // One node: nobody here is left to hear it when the room emptied.
                None if outcome.vacated => {}
                None | Some(true) => self.announce(&key, "user-left", member, None).await,
                Some(false) => {}
            }
            if left_cluster != Some(false) {
                self.events
                    .emit(HubEvent::MemberLeft { room: key.clone(), user_id: member.user_id.to_string() });
            }
        }
        if outcome.vacated
            && let Err(e) = self.broker.unsubscribe(&key).await
        {
            tracing::warn!(room = ?key, error = %e, "broker unsubscribe failed");
        }
        if vacated_cluster {
            self.events.emit(HubEvent::RoomVacated { room: key });
        }
        true
    }

    /// A room vacated by a dead node of the cluster (its entries were removed here).
    pub fn room_vacated_elsewhere(&self, key: RoomKey) {
        self.events.emit(HubEvent::RoomVacated { room: key });
    }

    /// Subscribers of one room: over the whole cluster in cluster mode (failing when Redis
    /// cannot be asked), else on this node.
    pub async fn room_subscribers(&self, app_id: &str, room: &RoomName) -> Result<usize, BrokerError> {
        let key = RoomKey { app_id: AppId::known(app_id), room: room.clone() };
        match self.broker.subscriber_total(&key).await? {
            Some(total) => Ok(total),
            None => Ok(self.registry.subscriber_count(&key)),
        }
    }

    /// Occupied rooms of `app_id` whose names start with `prefix`, in name order after `after`:
    /// at most `limit`, and whether more follow. Over the whole cluster in cluster mode.
    pub async fn rooms_page(
        &self,
        app_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<RoomInfo>, bool), BrokerError> {
        match self.broker.rooms_page(app_id, prefix, after, limit).await? {
            Some(page) => Ok(page),
            None => Ok(self.registry.rooms_of(app_id, prefix, after, limit)),
        }
    }

    /// Tells a presence room's other subscribers that a member joined or left.
    async fn announce(&self, key: &RoomKey, event: &'static str, member: &Member, exclude: Option<u64>) {
        let data = ServerFrame::member(&member.user_id, &member.user_info);
        let Ok(data) = RawValue::from_string(data) else { return };
        let publication = Publication {
            key: key.clone(),
            event: EventName::system(event),
            data: &data,
            exclude,
            timestamp: now_ms(),
        };
        match self.broker.publish(&publication).await {
            Ok(outcome) => {
                self.count(PublishKind::System, &outcome);
                self.events.emit(HubEvent::Published {
                    room: publication.key,
                    event: publication.event,
                    kind: PublishKind::System,
                    data: None,
                    timestamp: publication.timestamp,
                    delivered: outcome.delivered,
                    dropped: outcome.dropped,
                });
            }
            Err(e) => tracing::warn!(room = ?key, event, error = %e, "presence announcement failed"),
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
        let key = RoomKey { app_id: AppId::known(app_id), room: room.clone() };
        // An unknown or foreign connection id excludes nobody.
        let exclude =
            exclude.and_then(|id| self.connections.get(id)).filter(|c| *c.app_id == *app_id).map(|c| c.seq);
        let timestamp = now_ms();
        let publication = Publication { key, event: event.clone(), data, exclude, timestamp };
        let started = Instant::now();
        let outcome = self.broker.publish(&publication).await?;
        self.metrics.fanout_seconds.record(started.elapsed().as_secs_f64());
        self.count(kind, &outcome);
        let data = self.events.wants_payload(app_id).then(|| Arc::from(data.to_owned()));
        self.events.emit(HubEvent::Published {
            room: publication.key,
            event: event.clone(),
            kind,
            data,
            timestamp,
            delivered: outcome.delivered,
            dropped: outcome.dropped,
        });
        Ok(BroadcastOutcome { subscriber_count: outcome.subscribers, offset: outcome.offset, timestamp })
    }

    /// Fans out a publication that came back from the cluster broker (published on any node,
    /// this one included), counting its deliveries here.
    pub fn deliver_received(&self, publication: &Publication<'_>, offset: u64) {
        let outcome = fanout_at(&self.registry, publication, Some(offset));
        if outcome.subscribers == 0 {
            return;
        }
        self.metrics.delivered.increment(outcome.delivered as u64);
        if outcome.dropped > 0 {
            self.metrics.dropped(DropReason::SlowConsumer).increment(outcome.dropped as u64);
        }
        self.events.emit(HubEvent::Delivered {
            room: publication.key.clone(),
            delivered: outcome.delivered,
            dropped: outcome.dropped,
        });
    }

    fn count(&self, kind: PublishKind, outcome: &FanoutOutcome) {
        self.metrics.published(kind).increment(1);
        self.metrics.delivered.increment(outcome.delivered as u64);
        if outcome.dropped > 0 {
            self.metrics.dropped(DropReason::SlowConsumer).increment(outcome.dropped as u64);
        }
    }

    /// Subscribers of one room of one app on this node.
    pub fn subscriber_count(&self, app_id: &str, room: &RoomName) -> usize {
        self.registry.subscriber_count(&RoomKey { app_id: AppId::known(app_id), room: room.clone() })
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

    /// Open connections of one app on this node.
    pub fn app_connection_count(&self, app_id: &str) -> usize {
        self.per_app.get(app_id).map_or(0, |n| *n)
    }

    /// Open connections on this node.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Closes every connection with 1012 and every later one at birth.
    pub fn shutdown(&self) -> usize {
        self.closing.store(true, Ordering::Release);
        self.close_connections(None, CloseCode::ServiceRestart)
    }

    /// One heartbeat tick (the sweeper calls it every second): closes connections silent for
    /// `idle_ms` with 4000, and asks the connections whose turn it is to ping. Each connection's
    /// turn comes once every `ping_every` ticks, so pings are spread over the period instead of
    /// all firing at once.
    pub fn heartbeat(&self, tick: u64, ping_every: u64, idle_ms: u64) {
        let now = self.clock_ms();
        let ping_every = ping_every.max(1);
        for conn in self.connections.iter() {
            if now.saturating_sub(conn.last_seen_ms()) >= idle_ms {
                conn.close(CloseCode::IdleTimeout);
            } else if conn.seq % ping_every == tick % ping_every {
                conn.request_ping();
            }
        }
    }
}

/// Delivers a publication to this node's subscribers: the last step of every broker.
pub fn fanout(registry: &Registry, publication: &Publication<'_>) -> FanoutOutcome {
    fanout_at(registry, publication, None)
}

/// [`fanout`] with the offset a cluster broker assigned.
fn fanout_at(registry: &Registry, publication: &Publication<'_>, offset: Option<u64>) -> FanoutOutcome {
    registry.publish_at(&publication.key, publication.exclude, offset, |offset| {
        Frame::from(ServerFrame::event(
            &publication.key.room,
            &publication.event,
            publication.data,
            offset,
            publication.timestamp,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::local::LocalBroker;

    fn hub_with(messages: usize) -> Hub {
        let registry = Arc::new(Registry::default());
        Hub::new(
            registry.clone(),
            Arc::new(LocalBroker::new(registry)),
            OutboxLimits { messages, bytes: 1 << 20 },
        )
    }

    fn hub() -> Hub {
        hub_with(16)
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn events_reach_only_the_same_apps_room() {
        let hub = hub();
        let room = RoomName::parse("chat").unwrap();
        let a = hub.connect("app-a", None);
        let b = hub.connect("app-b", None);
        hub.join(&a, &room, None).await.unwrap();
        hub.join(&b, &room, None).await.unwrap();
        let ev = EventName::parse("m").unwrap();
        let out = hub.broadcast("app-a", &room, &ev, &raw("1"), None, PublishKind::Broadcast).await.unwrap();
        assert_eq!((out.subscriber_count, out.offset), (1, 1));
        assert!(a.next_frame().unwrap().as_str().contains(r#""offset":1"#));
        assert!(b.next_frame().is_none());
    }

    #[tokio::test]
    async fn full_queue_closes_with_4008_and_others_keep_receiving() {
        let hub = hub_with(2);
        let room = RoomName::parse("r").unwrap();
        let slow = hub.connect("app-a", None);
        let fast = hub.connect("app-a", None);
        hub.join(&slow, &room, None).await.unwrap();
        hub.join(&fast, &room, None).await.unwrap();
        let ev = EventName::parse("m").unwrap();
        for _ in 0..2 {
            hub.broadcast("app-a", &room, &ev, &raw("null"), None, PublishKind::Broadcast).await.unwrap();
        }
        // `fast` reads its frames; `slow` does not, and the third broadcast overflows it.
        for offset in 1..=2 {
            assert!(fast.next_frame().unwrap().as_str().contains(&format!(r#""offset":{offset}"#)));
        }
        hub.broadcast("app-a", &room, &ev, &raw("null"), None, PublishKind::Broadcast).await.unwrap();
        assert_eq!(slow.closing().await, 4008);
        assert!(fast.next_frame().unwrap().as_str().contains(r#""offset":3"#));
        assert_eq!(fast.close_code(), None);
    }

    #[tokio::test]
    async fn lifecycle_events_are_emitted_once() {
        let hub = hub();
        let mut rx = hub.events().subscribe(16);
        let room = RoomName::parse("r").unwrap();
        let a = hub.connect("app-a", Some("u1"));
        let b = hub.connect("app-a", None);
        hub.join(&a, &room, None).await.unwrap();
        hub.join(&b, &room, None).await.unwrap();
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
                HubEvent::Delivered { .. } => "delivered",
                HubEvent::MemberJoined { .. } => "member joined",
                HubEvent::MemberLeft { .. } => "member left",
            });
        }
        assert_eq!(kinds, ["open", "open", "occupied", "vacated", "close"]);
        assert_eq!(hub.subscriber_count("app-a", &room), 0);
    }

    #[tokio::test]
    async fn heartbeat_pings_in_turn_and_closes_the_silent() {
        let hub = hub();
        let conns: Vec<_> = (0..4).map(|_| hub.connect("app-a", None)).collect();
        hub.heartbeat(0, 2, 60_000);
        let pinged: Vec<bool> = conns.iter().map(|c| c.take_ping()).collect();
        assert_eq!(pinged.iter().filter(|p| **p).count(), 2, "half of them this tick");
        hub.heartbeat(1, 2, 60_000);
        for (c, before) in conns.iter().zip(pinged) {
            assert_ne!(c.take_ping(), before, "the other half next tick");
        }
        assert!(conns.iter().all(|c| c.close_code().is_none()));
        hub.heartbeat(2, 2, 0);
        assert!(conns.iter().all(|c| c.close_code() == Some(4000)));
    }

    #[tokio::test]
    async fn connections_after_shutdown_are_born_closing() {
        let hub = hub();
        let before = hub.connect("app-a", None);
        assert_eq!(hub.shutdown(), 1);
        assert_eq!(before.close_code(), Some(1012));
        assert_eq!(hub.connect("app-a", None).close_code(), Some(1012));
    }

    #[tokio::test]
    async fn exclude_skips_only_that_connection() {
        let hub = hub();
        let room = RoomName::parse("r").unwrap();
        let a = hub.connect("app-a", None);
        let b = hub.connect("app-a", None);
        hub.join(&a, &room, None).await.unwrap();
        hub.join(&b, &room, None).await.unwrap();
        let ev = EventName::parse("m").unwrap();
        hub.broadcast("app-a", &room, &ev, &raw("{}"), Some(&a.id), PublishKind::Client).await.unwrap();
        assert!(a.next_frame().is_none());
        assert!(b.next_frame().is_some());
    }
}
