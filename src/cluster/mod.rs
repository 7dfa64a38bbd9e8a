//! Cluster mode over Redis (DESIGN §7): the hub's ports implemented on Redis, one job per file.
//!
//! - [`broker`]: publications through pub/sub, one channel per room, the offset assigned by the
//!   script that publishes; the subscription connection and its reconnects.
//! - `counts`: each node's subscribers per room, and rewriting them after Redis came back.
//! - `presence`: presence members over all nodes.
//! - `rooms`: each app's list of occupied rooms, for `GET /api/rooms`.
//! - `nodes`: liveness, and cleaning up after dead nodes.
//!
//! [`RedisCluster`] is the [`ClusterState`] of the hub, made of the last four.
//!
//! Every key of a room carries the hash tag `{app:room}` (so does its channel), which keeps
//! them in one Redis Cluster slot: each script touches one room only. What spans rooms (a
//! node's rooms, dead-node cleanup) is done room by room.

pub mod broker;
mod counts;
mod nodes;
mod presence;
mod rooms;
mod streams;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::{AppId, Member, RoomKey};
use crate::hub::ports::{BrokerError, ClusterNews, ClusterState};
use crate::hub::registry::{HistoryPage, Registry, RoomInfo};
use crate::hub::stream::{Keep, Since, StreamRead};
use crate::protocol::RoomName;
use crate::redis_conn::{Commands, Link};
use streams::ReadArgs;

pub use nodes::NODES;

/// Prefix of the per-room subscriber counts: a hash of node id → that node's subscribers.
const COUNT_PREFIX: &str = "rc:count:";
/// A presence room's members: `rc:members:{app:room}`, user id → user_info JSON.
const MEMBERS_PREFIX: &str = "rc:members:";

/// `{app}:{room}`, the name of a room in Redis sets.
fn room_id(key: &RoomKey) -> String {
    format!("{}:{}", key.app_id, key.room)
}

/// The key `prefix{app:room}` of the room `id`.
fn room_key(prefix: &str, id: &str) -> String {
    format!("{prefix}{{{id}}}")
}

fn room_from_id(id: &str) -> Option<RoomKey> {
    let (app_id, room) = id.split_once(':')?;
    Some(RoomKey { app_id: AppId::parse(app_id).ok()?, room: RoomName::parse(room).ok()? })
}

/// Runs `f` for every room in `rooms`, up to 32 at once (rooms live in different Redis Cluster
/// slots, so they cannot share a pipeline or a script); stops at the first error.
async fn each_room<I, T, F, Fut>(rooms: impl IntoIterator<Item = I>, f: F) -> redis::RedisResult<Vec<T>>
where
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    futures_util::stream::iter(rooms)
        .map(f)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

/// The rooms' state over the cluster, in Redis: counts, presence, room lists, liveness.
pub struct RedisCluster {
    node_id: String,
    commands: Commands,
    /// The subscription connection, whose reconnects trigger a recount.
    link: Arc<Link>,
    /// What this node has: the truth its counts and members in Redis are rewritten from.
    registry: Arc<Registry>,
    /// A node silent this long is dead; its counts are removed by the others.
    node_timeout: Duration,
    /// Where news for the hub go: rooms left empty and members gone elsewhere.
    news: mpsc::Sender<ClusterNews>,
    counts: counts::Counts,
    presence: presence::Scripts,
    rooms: rooms::Scripts,
    streams: streams::Scripts,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// How many pieces of news may wait for the hub; a dead node's cleanup waits beyond.
const NEWS_QUEUE: usize = 1024;

impl RedisCluster {
    /// The cluster state of node `node_id`, whose rooms are in `registry`; returns the news the
    /// hub is to follow ([`crate::hub::Hub::follow`]).
    pub fn new(
        commands: Commands,
        link: Arc<Link>,
        node_id: &str,
        node_timeout: Duration,
        registry: Arc<Registry>,
    ) -> (Self, mpsc::Receiver<ClusterNews>) {
        let (news, follow) = mpsc::channel(NEWS_QUEUE);
        let cluster = Self {
            node_id: node_id.to_owned(),
            commands,
            link,
            registry,
            node_timeout,
            news,
            counts: counts::Counts::default(),
            presence: presence::Scripts::default(),
            rooms: rooms::Scripts::default(),
            streams: streams::Scripts::default(),
        };
        (cluster, follow)
    }

    fn commands(&self) -> Commands {
        self.commands.clone()
    }

    /// After a count that changed the room's subscribers by `delta` to `total` over the
    /// cluster: the room enters the room list with its first subscriber and leaves it with its
    /// last. Returns `total` as a count.
    async fn counted(&self, key: &RoomKey, delta: i64, total: i64) -> Result<usize, BrokerError> {
        if delta > 0 && total == delta {
            self.list_room(key, false).await.map_err(unavailable)?;
        } else if total <= 0 {
            self.unlist_if_empty(key).await.map_err(unavailable)?;
        }
        Ok(total.max(0) as usize)
    }

    /// Hands news to the hub.
    async fn tell(&self, news: impl IntoIterator<Item = ClusterNews>) {
        for item in news {
            // Closed only when the hub is gone, at shutdown.
            let _ = self.news.send(item).await;
        }
    }
}

#[async_trait]
impl ClusterState for RedisCluster {
    async fn count(&self, key: &RoomKey, delta: i64, _here: usize) -> Result<usize, BrokerError> {
        let (total, _) = self.change_count(&room_id(key), delta, None).await.map_err(unavailable)?;
        self.counted(key, delta, total).await
    }

    async fn count_and_read(
        &self,
        key: &RoomKey,
        _here: usize,
        since: Option<&Since>,
        keep: Keep,
    ) -> Result<(usize, StreamRead), BrokerError> {
        let read = ReadArgs { key, since, keep };
        let (total, answer) = self.change_count(&room_id(key), 1, Some(&read)).await.map_err(unavailable)?;
        Ok((self.counted(key, 1, total).await?, read.answer(&answer)?))
    }

    async fn subscribers(&self, key: &RoomKey) -> Result<usize, BrokerError> {
        Ok(self.total(key).await.map_err(unavailable)?.max(0) as usize)
    }

    async fn member_joined(&self, key: &RoomKey, member: &Member) -> Result<bool, BrokerError> {
        self.presence_join(key, &member.user_id, member.user_info.get()).await.map_err(unavailable)
    }

    async fn member_left(&self, key: &RoomKey, user_id: &str) -> Result<bool, BrokerError> {
        self.presence_leave(key, user_id).await.map_err(unavailable)
    }

    async fn members_on_join(
        &self,
        key: &RoomKey,
        _here: (Vec<Member>, usize),
        limit: usize,
    ) -> Result<(Vec<Member>, usize), BrokerError> {
        // Members of every node.
        self.presence_members(key, None, limit).await.map_err(unavailable)
    }

    async fn members(
        &self,
        key: &RoomKey,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(Vec<Member>, usize)>, BrokerError> {
        self.presence_members(key, after, limit).await.map(Some).map_err(unavailable)
    }

    async fn read_stream(
        &self,
        key: &RoomKey,
        since: Option<&Since>,
        keep: Keep,
    ) -> Result<StreamRead, BrokerError> {
        self.stream_read(key, since, keep).await
    }

    async fn history(
        &self,
        key: &RoomKey,
        since: u64,
        limit: usize,
        keep: Keep,
    ) -> Result<HistoryPage, BrokerError> {
        self.stream_page(key, since, limit, keep).await
    }

    async fn rooms_page(
        &self,
        app_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<RoomInfo>, bool), BrokerError> {
        self.list_rooms(app_id, prefix, after, limit).await.map_err(unavailable)
    }
}

/// A node's cluster parts, wired: the Redis connections, the broker and the cluster state.
#[derive(Debug)]
pub struct Node {
    /// Commands for the other shared state (store, tickets, analytics, webhook leases).
    pub commands: Commands,
    /// The subscription connection's state.
    pub link: Arc<Link>,
    pub broker: Arc<broker::RedisBroker>,
    pub state: Arc<RedisCluster>,
}

impl Node {
    /// Connects to Redis at `url` (a Redis Cluster's seeds with `sharded`) as node `node_id`,
    /// whose publications are delivered by `inbox` and whose rooms are in `registry`; returns
    /// the news the hub is to follow. Fails when Redis cannot be reached.
    pub async fn connect(
        url: &str,
        sharded: bool,
        tls: &crate::redis_conn::TlsFiles,
        node_id: &str,
        node_timeout: Duration,
        inbox: Arc<dyn crate::hub::ports::Inbox>,
        registry: Arc<Registry>,
    ) -> Result<(Self, mpsc::Receiver<ClusterNews>), BrokerError> {
        let (target, commands) =
            crate::redis_conn::connect(url, sharded, tls).await.map_err(BrokerError::Unavailable)?;
        let link = Arc::new(Link::default());
        let broker =
            Arc::new(broker::RedisBroker::new(target, commands.clone(), link.clone(), node_id, inbox));
        let (state, news) =
            RedisCluster::new(commands.clone(), link.clone(), node_id, node_timeout, registry);
        Ok((Self { commands, link, broker, state: Arc::new(state) }, news))
    }

    /// Starts the subscription connection and the liveness loop, until `shutdown`.
    pub fn start(&self, shutdown: &CancellationToken, tracker: &tokio_util::task::TaskTracker) {
        tracker.spawn(self.broker.clone().run(self.state.clone(), shutdown.clone()));
        tracker.spawn(self.state.clone().keep_alive(shutdown.clone()));
    }
}
