//! The hub: the one handle HTTP and WebSocket code call to join, leave and broadcast.

pub mod conn;
pub mod events;
pub mod local;
pub mod metrics;
pub mod ports;
pub mod registry;
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use serde_json::value::RawValue;

use self::metrics::{DropReason, HubMetrics};
use crate::clock::now_ms;
use crate::domain::{AppId, ConnectionId};
use crate::protocol::{CloseCode, EventName, RoomName, ServerFrame};
pub use conn::{ConnHandle, Delivery, OutboxLimits, Protocol, Wake};
use events::{EventBus, HubEvent, PublishKind};
pub use ports::{Broker, BrokerError, ClusterNews, ClusterState, Inbox, Publication, Published};
use registry::{
    FanoutOutcome, HistoryPage, JoinOutcome, Member, PresenceRequest, Registry, RoomInfo, RoomKey,
};
use stream::{Keep, Since};

/// One encoded server frame; clones share the bytes.
pub type Frame = Utf8Bytes;

/// What `Hub::broadcast` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastOutcome {
    pub subscriber_count: usize,
    pub offset: u64,
    /// The epoch of the room's stream the offset belongs to.
    pub epoch: Arc<str>,
    pub timestamp: i64,
}

/// What an app's rooms keep, by app id (the app's `history` settings).
pub type RetentionOf = Arc<dyn Fn(&str) -> Keep + Send + Sync>;

/// [`RetentionOf`], printable.
#[derive(Clone)]
struct Retention(RetentionOf);

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Retention")
    }
}

/// This node's fan-out: the registry, the counters and the event stream. It is the hub's
/// [`Inbox`]: every broker hands it the publications for this node's subscribers.
#[derive(Debug)]
pub struct Fanout {
    registry: Arc<Registry>,
    /// This node's connections by id, the hub's: a publication names the one it skips by id.
    connections: DashMap<ConnectionId, Arc<ConnHandle>>,
    events: EventBus,
    metrics: HubMetrics,
}

impl Fanout {
    /// A fan-out over `registry`, counting into `metrics`.
    pub fn new(registry: Arc<Registry>, metrics: HubMetrics) -> Self {
        Self { registry, connections: DashMap::new(), events: EventBus::default(), metrics }
    }

    /// Asks this node's connections that `which` picks to close with `code`; how many.
    fn close_where(&self, code: CloseCode, which: impl Fn(&ConnHandle) -> bool) -> usize {
        let mut closed = 0;
        for conn in self.connections.iter().filter(|c| which(c)) {
            conn.close(code);
            closed += 1;
        }
        closed
    }

    /// The room registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

impl Inbox for Fanout {
    fn deliver(&self, publication: &Publication<'_>, offset: Option<u64>) -> FanoutOutcome {
        let keep = offset.is_none().then_some((publication.keep, publication.timestamp));
        // Skipped only when it is here; a publication from another node may name one that is not.
        let exclude = publication.exclude.as_ref().and_then(|id| self.connections.get(id)).map(|c| c.seq);
        let outcome = self.registry.publish_at(
            &publication.key,
            exclude,
            offset,
            keep,
            &PublicationFrames(publication),
        );
        if outcome.subscribers == 0 {
            return outcome;
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
        outcome
    }

    fn close_user(&self, app_id: &str, user_id: &str) -> usize {
        let closed = self.close_where(CloseCode::Terminated, |conn| {
            *conn.app_id == *app_id && conn.user_id().is_some_and(|u| **u == *user_id)
        });
        if closed > 0 {
            tracing::info!(app_id, user_id, closed, "user's connections terminated");
        }
        closed
    }
}

/// A publication's frames: the native one, and Pusher's for Pusher subscribers.
struct PublicationFrames<'a>(&'a Publication<'a>);

impl registry::Encode for PublicationFrames<'_> {
    fn native(&self, offset: u64) -> Frame {
        let p = self.0;
        Frame::from(ServerFrame::event(&p.key.room, &p.event, p.data, offset, p.timestamp))
    }

    fn pusher(&self, _offset: u64) -> Frame {
        let p = self.0;
        Frame::from(crate::pusher::event(&p.key.room, &p.event, p.data, p.sender.as_deref()))
    }
}

/// Rooms, connections and the way publications reach them.
#[derive(Debug)]
pub struct Hub {
    fanout: Arc<Fanout>,
    broker: Arc<dyn Broker>,
    cluster: Arc<dyn ClusterState>,
    /// Open connections per app, for `max_connections`.
    per_app: DashMap<AppId, usize>,
    /// Connections per client address, for clients behind trusted proxies.
    per_ip: DashMap<std::net::IpAddr, usize>,
    next_seq: AtomicU64,
    limits: OutboxLimits,
    /// Origin of the hub clock that connections' `last_seen` is measured on.
    started: Instant,
    /// Set at shutdown: connections that arrive afterwards are closed at once.
    closing: AtomicBool,
    /// Most presence members listed in a `subscribed` frame.
    presence_list_max: usize,
    /// What each app's rooms keep.
    retention: Retention,
}

impl Hub {
    /// A hub delivering through `fanout`, publishing through `broker`, with the rooms' state
    /// over all nodes in `cluster`, and outboxes bounded by `limits`.
    pub fn new(
        fanout: Arc<Fanout>,
        broker: Arc<dyn Broker>,
        cluster: Arc<dyn ClusterState>,
        limits: OutboxLimits,
    ) -> Self {
        Self {
            fanout,
            broker,
            cluster,
            per_app: DashMap::new(),
            per_ip: DashMap::new(),
            next_seq: AtomicU64::new(1),
            limits,
            started: Instant::now(),
            closing: AtomicBool::new(false),
            presence_list_max: 1000,
            retention: Retention(Arc::new(|_| Keep::default())),
        }
    }

    /// Keeps history for each app as `retention` says (none by default).
    pub fn with_retention(mut self, retention: RetentionOf) -> Self {
        self.retention = Retention(retention);
        self
    }

    /// A hub of one node, counting into `metrics`.
    pub fn single_node(limits: OutboxLimits, metrics: HubMetrics) -> Self {
        let fanout = Arc::new(Fanout::new(Arc::new(Registry::default()), metrics));
        let broker = Arc::new(local::LocalBroker::new(fanout.clone()));
        let cluster = Arc::new(local::LocalCluster::new(fanout.registry().clone()));
        Self::new(fanout, broker, cluster, limits)
    }

    /// The counters sessions update too.
    pub fn metrics(&self) -> &HubMetrics {
        &self.fanout.metrics
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
        &self.fanout.registry
    }

    /// A handle on the room registry, shared with the cluster state.
    pub fn registry_handle(&self) -> Arc<Registry> {
        self.fanout.registry.clone()
    }

    /// Milliseconds since the hub started: the clock of connections' `last_seen`.
    pub fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The stream listeners subscribe to.
    pub fn events(&self) -> &EventBus {
        &self.fanout.events
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
        self.connect_as(Protocol::Native, app_id, user_id, client_ip)
    }

    /// [`Hub::connect_from`] for a connection speaking `protocol`; a Pusher connection gets a
    /// Pusher socket id.
    pub fn connect_as(
        &self,
        protocol: Protocol,
        app_id: &str,
        user_id: Option<&str>,
        client_ip: Option<std::net::IpAddr>,
    ) -> Arc<ConnHandle> {
        let id = match protocol {
            Protocol::Native => ConnectionId::generate(),
            Protocol::Pusher => ConnectionId::pusher(),
        };
        let handle = Arc::new(ConnHandle::new(
            self.next_seq.fetch_add(1, Ordering::Relaxed),
            (id, protocol),
            AppId::known(app_id),
            user_id.map(Arc::from),
            client_ip,
            self.limits,
            self.clock_ms(),
        ));
        self.fanout.connections.insert(handle.id.clone(), handle.clone());
        self.metrics().connections_opened.increment(1);
        *self.per_app.entry(handle.app_id.clone()).or_default() += 1;
        if let Some(ip) = client_ip {
            *self.per_ip.entry(ip).or_default() += 1;
        }
        if self.closing.load(Ordering::Acquire) {
            handle.close(CloseCode::ServiceRestart);
        }
        self.events().emit(HubEvent::ConnectionOpened {
            app_id: app_id.to_owned(),
            connection_id: handle.id.to_string(),
            user_id: user_id.map(str::to_owned),
        });
        handle
    }

    /// Forgets a connection that has left all its rooms.
    pub fn disconnect(&self, conn: &ConnHandle) {
        if self.fanout.connections.remove(&conn.id).is_some() {
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
        self.events().emit(HubEvent::ConnectionClosed {
            app_id: conn.app_id.to_string(),
            connection_id: conn.id.to_string(),
            user_id: conn.user_id().map(|u| u.to_string()),
        });
    }

    /// Subscribes `conn` to `room` of its app. Returns once events published afterwards reach
    /// it, with the member list for a presence room. `user_info` is the connection's, as JSON
    /// text; a presence room needs the connection to have a user id (checked by the caller).
    /// When the broker or the cluster state fails midway, whatever was done is undone.
    pub async fn join(
        &self,
        conn: &Arc<ConnHandle>,
        room: &RoomName,
        user_info: Option<&Arc<RawValue>>,
        since: Option<&Since>,
    ) -> Result<JoinOutcome, BrokerError> {
        let key = RoomKey { app_id: conn.app_id.clone(), room: room.clone() };
        // Only a presence join needs a user_info; a missing one is JSON null.
        let null: Arc<RawValue>;
        let presence = match (conn.user_id(), room.is_presence()) {
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
        // Held pending: what is published until its place in the stream is known waits.
        let mut outcome = self.registry().join(&key, conn, presence, now_ms(), true);
        let keep = (self.retention.0)(&key.app_id);
        if !outcome.added {
            // Already subscribed: counted and announced when it first joined; the member list
            // and the stream's position are read again.
            if let Some(presence) = outcome.presence.as_mut() {
                let here = (std::mem::take(&mut presence.members), presence.member_count);
                (presence.members, presence.member_count) =
                    self.cluster.members_on_join(&key, here, self.presence_list_max).await?;
            }
            outcome.stream = self.cluster.read_stream(&key, None, keep).await?;
            return Ok(outcome);
        }
        let mut done = JoinStep::Registered;
        match self.join_cluster(conn, &key, &mut outcome, &mut done, since, keep).await {
            Ok(()) => {
                self.events().emit(HubEvent::Joined {
                    room: key,
                    connection_id: conn.id.clone(),
                    user_id: conn.user_id().cloned(),
                });
                Ok(outcome)
            }
            Err(e) => {
                // The one rollback: a join leaves as far as it got.
                self.leave_key(conn, &key, done).await;
                Err(e)
            }
        }
    }

    /// The steps of a join after the registry's, each noted in `done` once it succeeded.
    async fn join_cluster(
        &self,
        conn: &Arc<ConnHandle>,
        key: &RoomKey,
        outcome: &mut JoinOutcome,
        done: &mut JoinStep,
        since: Option<&Since>,
        keep: Keep,
    ) -> Result<(), BrokerError> {
        // Every joiner, not only the first: the second must not read its place in the stream
        // before the first's subscription reaches the node.
        self.broker.subscribe(key).await?;
        *done = JoinStep::Subscribed;
        // Publications flow to the held connection: its place in the stream is read with its
        // count, and whatever came meanwhile with a later offset follows what it missed.
        let (total, mut read) = self.cluster.count_and_read(key, outcome.subscribers, since, keep).await?;
        *done = JoinStep::Counted;
        self.announce_join(conn, key, outcome, total).await?;
        let replay = match &mut read.recovery {
            Some(Ok(frames)) => std::mem::take(frames),
            _ => Vec::new(),
        };
        if let Some(recovery) = &read.recovery {
            let outcome = recovery.as_ref().err().copied();
            self.metrics().recovery(outcome).increment(1);
        }
        self.registry().settle(key, conn, read.offset, replay);
        outcome.stream = read;
        Ok(())
    }

    /// What a join counted as `total` subscribers over the cluster tells: the room is occupied
    /// when its first subscriber anywhere joins; a presence join takes its member steps.
    async fn announce_join(
        &self,
        conn: &Arc<ConnHandle>,
        key: &RoomKey,
        outcome: &mut JoinOutcome,
        total: usize,
    ) -> Result<(), BrokerError> {
        if total == 1 {
            self.events().emit(HubEvent::RoomOccupied { room: key.clone() });
        }
        let Some(presence) = outcome.presence.as_mut() else { return Ok(()) };
        let first_anywhere = match &presence.joined {
            Some(member) => self.cluster.member_joined(key, member).await?,
            None => false,
        };
        let here = (std::mem::take(&mut presence.members), presence.member_count);
        (presence.members, presence.member_count) =
            self.cluster.members_on_join(key, here, self.presence_list_max).await?;
        if let (true, Some(member)) = (first_anywhere, &presence.joined) {
            self.announce(key, "user-joined", member, Some(conn.id.clone())).await;
            self.events()
                .emit(HubEvent::MemberJoined { room: key.clone(), user_id: member.user_id.to_string() });
        }
        Ok(())
    }

    /// The room's retained events after offset `since`, at most `limit` (the history route).
    pub async fn history(
        &self,
        app_id: &str,
        room: &RoomName,
        since: u64,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        let key = RoomKey { app_id: AppId::known(app_id), room: room.clone() };
        self.cluster.history(&key, since, limit, (self.retention.0)(app_id)).await
    }

    /// Members of a presence room by user id after `after`, over the cluster; `None` when
    /// nobody is in it.
    pub async fn presence_page(
        &self,
        key: &RoomKey,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(Vec<Member>, usize)>, BrokerError> {
        self.cluster.members(key, after, limit).await
    }

    /// What the cluster state learned on its own: rooms left empty and members gone with a
    /// dead node, or while Redis was away. Runs until `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        mut from_cluster: tokio::sync::mpsc::Receiver<ClusterNews>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let news = tokio::select! {
                news = from_cluster.recv() => match news {
                    Some(news) => news,
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            };
            match news {
                ClusterNews::RoomVacated(key) => self.events().emit(HubEvent::RoomVacated { room: key }),
                ClusterNews::MemberGone(key, user_id) => {
                    let member = Member {
                        user_id: Arc::from(user_id.as_str()),
                        user_info: Arc::from(RawValue::NULL.to_owned()),
                    };
                    self.announce(&key, "user-left", &member, None).await;
                    self.events().emit(HubEvent::MemberLeft { room: key, user_id });
                }
            }
        }
    }

    /// Unsubscribes `conn` from `room`; `false` when it was not subscribed.
    pub async fn leave(&self, conn: &ConnHandle, room: &RoomName) -> bool {
        let key = RoomKey { app_id: conn.app_id.clone(), room: room.clone() };
        self.leave_key(conn, &key, JoinStep::Counted).await
    }

    /// [`Hub::leave`] of a subscriber whose join got as far as `joined` (a join that failed
    /// midway was not subscribed, or not counted).
    async fn leave_key(&self, conn: &ConnHandle, key: &RoomKey, joined: JoinStep) -> bool {
        let counted = joined == JoinStep::Counted;
        let Some(outcome) = self.registry().leave(key, conn) else {
            return false;
        };
        let total = match counted {
            true => match self.cluster.count(key, -1, outcome.subscribers).await {
                Ok(total) => Some(total),
                Err(e) => {
                    tracing::warn!(room = ?key, error = %e, "cannot update the cluster's subscriber count");
                    None
                }
            },
            false => None,
        };
        // The room is vacated when its last subscriber anywhere leaves. A join that failed
        // before it was counted did not make the room occupied either.
        let vacated_everywhere = counted && total.map_or(outcome.vacated, |total| total == 0);
        if let Some(member) = &outcome.left {
            let gone = self.cluster.member_left(key, &member.user_id).await.unwrap_or_else(|e| {
                tracing::warn!(room = ?key, error = %e, "cannot record a presence leave in the cluster");
                false
            });
            if gone {
                // Nobody is left to hear it when the room emptied.
                if total.map_or(!outcome.vacated, |total| total > 0) {
                    self.announce(key, "user-left", member, None).await;
                }
                self.events()
                    .emit(HubEvent::MemberLeft { room: key.clone(), user_id: member.user_id.to_string() });
            }
        }
        if joined != JoinStep::Registered
            && let Err(e) = self.broker.unsubscribe(key).await
        {
            tracing::warn!(room = ?key, error = %e, "broker unsubscribe failed");
        }
        if counted {
            self.events().emit(HubEvent::Left {
                room: key.clone(),
                connection_id: conn.id.clone(),
                user_id: conn.user_id().cloned(),
            });
        }
        if vacated_everywhere {
            self.events().emit(HubEvent::RoomVacated { room: key.clone() });
        }
        true
    }

    /// Subscribers of one room over the cluster (failing when the cluster cannot be asked).
    pub async fn room_subscribers(&self, app_id: &str, room: &RoomName) -> Result<usize, BrokerError> {
        let key = RoomKey { app_id: AppId::known(app_id), room: room.clone() };
        self.cluster.subscribers(&key).await
    }

    /// Occupied rooms of `app_id` whose names start with `prefix`, in name order after `after`:
    /// at most `limit`, and whether more follow; over the cluster.
    pub async fn rooms_page(
        &self,
        app_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<RoomInfo>, bool), BrokerError> {
        self.cluster.rooms_page(app_id, prefix, after, limit).await
    }

    /// Tells a presence room's other subscribers that a member joined or left.
    async fn announce(
        &self,
        key: &RoomKey,
        event: &'static str,
        member: &Member,
        exclude: Option<ConnectionId>,
    ) {
        let data = ServerFrame::member(&member.user_id, &member.user_info);
        let Ok(data) = RawValue::from_string(data) else { return };
        let publication = Publication {
            key: key.clone(),
            event: EventName::system(event),
            data: &data,
            exclude,
            sender: None,
            timestamp: now_ms(),
            keep: (self.retention.0)(&key.app_id),
        };
        match self.broker.publish(&publication).await {
            Ok(published) => {
                self.metrics().published(PublishKind::System).increment(1);
                self.events().emit(HubEvent::Published {
                    room: publication.key,
                    event: publication.event,
                    kind: PublishKind::System,
                    data: None,
                    timestamp: publication.timestamp,
                    sender: None,
                    offset: published.offset,
                });
            }
            Err(e) => tracing::warn!(room = ?key, event, error = %e, "presence announcement failed"),
        }
    }

    /// Publishes one event to a room of `app_id`, skipping the connection `exclude` (a `c_…` id)
    /// when given. Returns after the frame is in every subscriber's queue on this node (on
    /// other nodes it follows through the broker), not after it is written.
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
        // An id of no connection excludes nobody; one of another node's connections travels
        // with the publication to be skipped there. (Another app's connection is in none of
        // this app's rooms.)
        let exclude = exclude.and_then(ConnectionId::parse);
        // A client event names its sender (which is here), and in a presence room its user.
        let origin = match (&exclude, kind) {
            (Some(id), PublishKind::Client) => self
                .fanout
                .connections
                .get(id)
                .filter(|c| *c.app_id == *app_id)
                .map(|c| events::Sender { connection_id: c.id.clone(), user_id: c.user_id().cloned() }),
            _ => None,
        };
        let sender = origin.as_ref().filter(|_| room.is_presence()).and_then(|o| o.user_id.clone());
        let timestamp = now_ms();
        let keep = (self.retention.0)(app_id);
        let publication = Publication { key, event: event.clone(), data, exclude, sender, timestamp, keep };
        let started = Instant::now();
        let published = self.broker.publish(&publication).await?;
        self.metrics().fanout_seconds.record(started.elapsed().as_secs_f64());
        self.metrics().published(kind).increment(1);
        let data = self.events().wants_payload(app_id).then(|| Arc::from(data.to_owned()));
        self.events().emit(HubEvent::Published {
            room: publication.key,
            event: event.clone(),
            kind,
            data,
            timestamp,
            sender: origin,
            offset: published.offset,
        });
        Ok(BroadcastOutcome {
            subscriber_count: published.subscribers,
            offset: published.offset,
            epoch: published.epoch,
            timestamp,
        })
    }

    /// Subscribers of one room of one app on this node.
    pub fn subscriber_count(&self, app_id: &str, room: &RoomName) -> usize {
        self.registry().subscriber_count(&RoomKey { app_id: AppId::known(app_id), room: room.clone() })
    }

    /// Asks every connection of `app_id` (or all connections) to close with `code`.
    pub fn close_connections(&self, app_id: Option<&str>, code: CloseCode) -> usize {
        self.fanout.close_where(code, |conn| app_id.is_none_or(|a| *conn.app_id == *a))
    }

    /// Closes every connection of `user_id` in `app_id`, on every node, with 4009.
    pub async fn terminate_user(&self, app_id: &str, user_id: &str) -> Result<(), BrokerError> {
        self.broker.close_user(app_id, user_id).await
    }

    /// Open connections of one app on this node.
    pub fn app_connection_count(&self, app_id: &str) -> usize {
        self.per_app.get(app_id).map_or(0, |n| *n)
    }

    /// Open connections on this node.
    pub fn connection_count(&self) -> usize {
        self.fanout.connections.len()
    }

    /// Closes every connection with 1012 and every later one at birth.
    pub fn shutdown(&self) -> usize {
        self.closing.store(true, Ordering::Release);
        self.close_connections(None, CloseCode::ServiceRestart)
    }

    /// Starts the heartbeat job: every second, [`Hub::heartbeat`] with connections pinged every
    /// `ping_every_s` and closed after `idle_ms` of silence, until `shutdown`.
    pub fn start_heartbeats(
        self: &Arc<Self>,
        ping_every_s: u64,
        idle_ms: u64,
        shutdown: &tokio_util::sync::CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        let hub = self.clone();
        let mut tick = 0;
        crate::shutdown::start_every(std::time::Duration::from_secs(1), shutdown, tracker, move || {
            tick += 1;
            hub.heartbeat(tick, ping_every_s, idle_ms);
        });
    }

    /// Starts the history job: what rooms retain past their time is dropped every 5 s, and past
    /// the node's bound (at once) the oldest events of the least recently published rooms.
    pub fn start_history_upkeep(
        self: &Arc<Self>,
        shutdown: &tokio_util::sync::CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        let (hub, shutdown) = (self.clone(), shutdown.clone());
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = hub.registry().over_bound() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                }
                hub.registry().trim(now_ms(), |key| (hub.retention.0)(&key.app_id));
            }
        });
    }

    /// One heartbeat tick (the job calls it every second): closes connections silent for
    /// `idle_ms` with 4000, and asks the connections whose turn it is to ping. Each connection's
    /// turn comes once every `ping_every` ticks, so pings are spread over the period instead of
    /// all firing at once.
    pub fn heartbeat(&self, tick: u64, ping_every: u64, idle_ms: u64) {
        let now = self.clock_ms();
        let ping_every = ping_every.max(1);
        for conn in self.fanout.connections.iter() {
            if now.saturating_sub(conn.last_seen_ms()) >= idle_ms {
                conn.close(CloseCode::IdleTimeout);
            } else if conn.seq % ping_every == tick % ping_every {
                conn.request_ping();
            }
        }
    }
}

/// How far a join got: what its rollback must undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinStep {
    /// In this node's registry.
    Registered,
    /// Subscribed through the broker too.
    Subscribed,
    /// Counted in the cluster's subscriber count too.
    Counted,
}

#[cfg(test)]
mod tests;
