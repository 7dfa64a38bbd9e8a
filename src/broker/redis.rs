//! The cluster broker (DESIGN §7): publications go through Redis pub/sub, one channel per room,
//! and come back to every node subscribed to the room, the publishing node included, so each
//! subscriber gets each event exactly once. A Lua script increments the room's offset and
//! publishes in one step, so offsets are cluster-wide and every node sees the same order.
//!
//! A node subscribes to a room's channel when the room gets its first local subscriber (the
//! `subscribed` frame waits for Redis to confirm) and unsubscribes after the last one leaves.
//! When the subscription connection drops, the node reconnects with backoff and subscribes
//! again to every room it still has; publications made meanwhile fail with `unavailable`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::redis_conn::{COMMAND_TIMEOUT, Commands, MAX_BACKOFF, Target};
use super::{Broker, BrokerError, Publication};
use crate::domain::AppId;
use crate::hub::Hub;
use crate::hub::registry::{FanoutOutcome, Member, Registry, RoomInfo, RoomKey};
use crate::protocol::{EventName, RoomName};

/// Prefix of room channels: `rc:room:{app_id}:{room}` (app ids have no `:`).
const CHANNEL_PREFIX: &str = "rc:room:";
/// Prefix of the per-room offset counters.
const OFFSET_PREFIX: &str = "rc:offset:";
/// A room's offset counter is forgotten after a day without publications.
const OFFSET_TTL_MS: u64 = 86_400_000;

/// Prefix of the per-room subscriber counts: a hash of node id → that node's subscribers.
const COUNT_PREFIX: &str = "rc:count:";
/// The rooms of an app that may be occupied: `rc:rooms:{app}`, all scores 0 (name order).
const ROOMS_PREFIX: &str = "rc:rooms:";
/// When each of them became occupied: `rc:room-since:{app}`, room → ms (raised by one when a
/// room is occupied again within the same millisecond, so each occupation has its own value).
const SINCE_PREFIX: &str = "rc:room-since:";
/// Every node's liveness key, refreshed while it runs: `rc:alive:{node}`.
const ALIVE_PREFIX: &str = "rc:alive:";
/// The rooms a node has counted subscribers in: `rc:node-rooms:{node}` (members `{app}:{room}`).
const NODE_ROOMS_PREFIX: &str = "rc:node-rooms:";
/// The set of node ids that registered.
pub const NODES: &str = "rc:nodes";
/// A presence room's members: `rc:members:{app}:{room}`, user id → user_info JSON.
const MEMBERS_PREFIX: &str = "rc:members:";
/// Which nodes hold each member: `rc:member-nodes:{app}:{room}`, field `{user}\n{node}`.
const MEMBER_NODES_PREFIX: &str = "rc:member-nodes:";
/// On how many nodes each member is: `rc:member-count:{app}:{room}`, user id → nodes.
const MEMBER_COUNT_PREFIX: &str = "rc:member-count:";
/// The presence rooms a node has members in: `rc:node-presence:{node}`.
const NODE_PRESENCE_PREFIX: &str = "rc:node-presence:";

// Every key of a room carries the hash tag `{app:room}` (so does its channel), which keeps
// them in one Redis Cluster slot: each script below touches one room only. What spans rooms
// (a node's rooms, dead-node cleanup) is done room by room.

/// Node ARGV[2] holds user ARGV[1] (user_info ARGV[3]): KEYS are the room's members, member
/// nodes and member counts. Returns 1 when the user is new to the room cluster-wide.
const PRESENCE_JOIN_SCRIPT: &str = r"
if redis.call('HSETNX', KEYS[2], ARGV[1] .. '\n' .. ARGV[2], 1) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[3], ARGV[1], 1) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
";

/// Node ARGV[2] no longer holds user ARGV[1]; KEYS as for joining. Returns 1 when the user is
/// gone from the room cluster-wide.
const PRESENCE_LEAVE_SCRIPT: &str = r"
if redis.call('HDEL', KEYS[2], ARGV[1] .. '\n' .. ARGV[2]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[3], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
";

/// Node ARGV[1] holds exactly the members given as user/user_info pairs after it (KEYS as for
/// joining): members of the node not given are removed, given ones added; with none given, the
/// node's members of the room are forgotten. Returns the users gone from the room cluster-wide.
const PRESENCE_RESYNC_SCRIPT: &str = r"
local node = ARGV[1]
local suffix = '\n' .. node
local now = {}
for i = 2, #ARGV, 2 do
  now[ARGV[i]] = ARGV[i + 1]
end
local gone = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(field, -string.len(suffix)) == suffix then
    local user = string.sub(field, 1, string.len(field) - string.len(suffix))
    if now[user] == nil then
      redis.call('HDEL', KEYS[2], field)
      if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
        redis.call('HDEL', KEYS[3], user)
        redis.call('HDEL', KEYS[1], user)
        table.insert(gone, user)
      end
    end
  end
end
for user, info in pairs(now) do
  if redis.call('HSETNX', KEYS[2], user .. suffix, 1) == 1 then
    if redis.call('HINCRBY', KEYS[3], user, 1) == 1 then redis.call('HSET', KEYS[1], user, info) end
  end
end
return gone
";

/// Increments the room's offset (KEYS[1]) and publishes `offset \n message` on KEYS[2] with
/// ARGV[3] (PUBLISH or SPUBLISH); returns the offset and the room's subscribers over the
/// cluster (KEYS[3]).
const PUBLISH_SCRIPT: &str = r"
local offset = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call(ARGV[3], KEYS[2], offset .. '\n' .. ARGV[1])
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do total = total + tonumber(v) end
return {offset, total}
";

/// Adds ARGV[2] to node ARGV[1]'s subscribers of a room (KEYS[1]); returns the room's
/// subscribers over the cluster.
const COUNT_SCRIPT: &str = r"
if redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
return total
";

/// Room ARGV[1] became occupied at ARGV[2] ms: listed in KEYS[1], its time in KEYS[2]. With
/// ARGV[3] = 1, a room already listed keeps its time (a node writing its rooms again).
const OCCUPY_SCRIPT: &str = r"
if ARGV[3] == '1' and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
local since = tonumber(ARGV[2])
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if old >= since then since = old + 1 end
redis.call('HSET', KEYS[2], ARGV[1], since)
return since
";

/// Unlists room ARGV[1] (KEYS as for occupying) if it was not occupied again since it was
/// found empty, i.e. its time is still ARGV[2].
const UNLIST_SCRIPT: &str = r"
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
";

/// Removes node ARGV[1]'s count of a room (KEYS[1]); returns 1 when this call removed it and
/// nobody is left in the room. Of several nodes cleaning up after a dead one, only one gets 1.
const FORGET_COUNT_SCRIPT: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and redis.call('HLEN', KEYS[1]) == 0 then return 1 end
return 0
";

fn channel(key: &RoomKey) -> String {
    format!("{CHANNEL_PREFIX}{{{}}}", room_id(key))
}

/// `{app}:{room}`, the name of a room in Redis sets.
fn room_id(key: &RoomKey) -> String {
    format!("{}:{}", key.app_id, key.room)
}

/// The key `prefix{app:room}` of the room `id`.
fn room_key(prefix: &str, id: &str) -> String {
    format!("{prefix}{{{id}}}")
}

/// A presence room's members, member-nodes and member-count hashes: the keys of the presence
/// scripts.
fn presence_keys(id: &str) -> Vec<String> {
    vec![room_key(MEMBERS_PREFIX, id), room_key(MEMBER_NODES_PREFIX, id), room_key(MEMBER_COUNT_PREFIX, id)]
}

/// An app's room list and occupation times (tag `{app}`).
fn room_list_keys(app_id: &str) -> [String; 2] {
    [format!("{ROOMS_PREFIX}{{{app_id}}}"), format!("{SINCE_PREFIX}{{{app_id}}}")]
}

fn room_from_id(id: &str) -> Option<RoomKey> {
    let (app_id, room) = id.split_once(':')?;
    Some(RoomKey { app_id: AppId::known(app_id), room: RoomName::parse(room).ok()? })
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

/// What a recount found, for the hub: rooms counted on this node that are empty now and have
/// nobody elsewhere, and members gone from here (while Redis was away) and from everywhere.
#[derive(Debug, Default)]
struct Recounted {
    vacated: Vec<RoomKey>,
    gone: Vec<(RoomKey, String)>,
}

/// This node's subscriber count in one room as Redis should hold it: every change that
/// succeeded, and decrements that failed (a recount writes them).
#[derive(Debug, Default)]
struct Counted {
    n: std::sync::atomic::AtomicI64,
    /// Shared by changes that keep `n` above zero; taken alone by changes to and from zero
    /// (which also add the room to, or take it from, the node's room set) and by recounts.
    steps: tokio::sync::RwLock<()>,
}

/// (Un)subscribes sharded `channels` on a cluster connection, one by one (they belong to
/// different slots).
async fn sharded_sub(
    conn: &mut redis::cluster_async::ClusterConnection,
    channels: Vec<String>,
    on: bool,
) -> redis::RedisResult<()> {
    for ch in channels {
        if on {
            conn.ssubscribe(ch).await?;
        } else {
            conn.sunsubscribe(ch).await?;
        }
    }
    Ok(())
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

/// A publication as it travels through Redis: `offset`, then (from the publisher)
/// `node`, `exclude` (a connection sequence number of that node, or `-`), `timestamp`, `event`,
/// `data`, separated by newlines. Names and node ids cannot hold a newline; `data` may, and is
/// last.
#[derive(Debug, PartialEq)]
struct Wire<'a> {
    offset: u64,
    node: &'a str,
    exclude: Option<u64>,
    timestamp: i64,
    event: &'a str,
    data: &'a str,
}

fn encode(node: &str, publication: &Publication<'_>) -> String {
    let exclude = publication.exclude.map_or_else(|| "-".to_owned(), |s| s.to_string());
    format!(
        "{node}\n{exclude}\n{}\n{}\n{}",
        publication.timestamp,
        publication.event.as_str(),
        publication.data.get()
    )
}

fn decode(message: &str) -> Option<Wire<'_>> {
    let mut parts = message.splitn(6, '\n');
    let offset = parts.next()?.parse().ok()?;
    let node = parts.next()?;
    let exclude = match parts.next()? {
        "-" => None,
        n => Some(n.parse().ok()?),
    };
    let timestamp = parts.next()?.parse().ok()?;
    let event = parts.next()?;
    let data = parts.next()?;
    Some(Wire { offset, node, exclude, timestamp, event, data })
}

fn room_of(channel: &str) -> Option<RoomKey> {
    room_from_id(channel.strip_prefix(CHANNEL_PREFIX)?.strip_prefix('{')?.strip_suffix('}')?)
}

/// The command half of the subscription connection.
enum Subscriptions {
    Single(redis::aio::PubSubSink),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// What arrives on the subscription connection.
enum Incoming {
    Single(std::pin::Pin<Box<dyn futures_util::Stream<Item = redis::Msg> + Send>>),
    Cluster(tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>),
}

/// [`Broker`] over Redis pub/sub.
pub struct RedisBroker {
    registry: Arc<Registry>,
    node_id: String,
    /// One server (PUBLISH/SUBSCRIBE), or a Redis Cluster (SPUBLISH/SSUBSCRIBE).
    target: Target,
    commands: Commands,
    script: redis::Script,
    count_script: redis::Script,
    forget_count_script: redis::Script,
    occupy_script: redis::Script,
    unlist_script: redis::Script,
    presence_join_script: redis::Script,
    presence_leave_script: redis::Script,
    presence_resync_script: redis::Script,
    /// A node silent this long is dead; its counts are removed by the others.
    node_timeout: Duration,
    /// The subscription connection's command half; `None` while disconnected.
    subscriptions: tokio::sync::Mutex<Option<Subscriptions>>,
    /// Whether the subscription connection is up; watched by [`RedisBroker::wait_up`].
    up: tokio::sync::watch::Sender<bool>,
    /// How many times the subscription connection came up.
    epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Since when the subscription connection is up.
    up_since: std::sync::Mutex<Option<std::time::Instant>>,
    /// Woken when another node (or this one) wrote to a Redis store.
    store_changes: Arc<tokio::sync::Notify>,
    /// Where received publications are fanned out (set once the hub exists).
    hub: OnceLock<Weak<Hub>>,
    /// This node's subscriber count per room as Redis should hold it (see [`Counted`]); a
    /// room leaves the map when its count is back to zero.
    counted: dashmap::DashMap<String, Arc<Counted>>,
    /// The server's tracker: shutdown waits for the tasks this broker starts.
    tracker: tokio_util::task::TaskTracker,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Connects to `url` (the command connection; the subscription connection is made by
    /// [`RedisBroker::run`]); with `sharded`, `url` lists seeds of a Redis Cluster. Fails when
    /// Redis cannot be reached at start.
    pub async fn connect(
        url: &str,
        sharded: bool,
        tls: &crate::redis_conn::TlsFiles,
        node_id: &str,
        node_timeout: Duration,
        registry: Arc<Registry>,
        tracker: tokio_util::task::TaskTracker,
    ) -> Result<Self, BrokerError> {
        let (target, commands) =
            crate::redis_conn::connect(url, sharded, tls).await.map_err(BrokerError::Unavailable)?;
        Ok(Self {
            registry,
            node_id: node_id.to_owned(),
            target,
            commands,
            script: redis::Script::new(PUBLISH_SCRIPT),
            count_script: redis::Script::new(COUNT_SCRIPT),
            forget_count_script: redis::Script::new(FORGET_COUNT_SCRIPT),
            occupy_script: redis::Script::new(OCCUPY_SCRIPT),
            unlist_script: redis::Script::new(UNLIST_SCRIPT),
            presence_join_script: redis::Script::new(PRESENCE_JOIN_SCRIPT),
            presence_leave_script: redis::Script::new(PRESENCE_LEAVE_SCRIPT),
            presence_resync_script: redis::Script::new(PRESENCE_RESYNC_SCRIPT),
            node_timeout,
            subscriptions: tokio::sync::Mutex::new(None),
            up: tokio::sync::watch::Sender::new(false),
            up_since: std::sync::Mutex::new(None),
            epoch: Arc::default(),
            store_changes: Arc::new(tokio::sync::Notify::new()),
            hub: OnceLock::new(),
            counted: dashmap::DashMap::new(),
            tracker,
        })
    }

    /// Tells the broker which hub fans received publications out.
    pub fn attach(&self, hub: &Arc<Hub>) {
        let _ = self.hub.set(Arc::downgrade(hub));
    }

    /// The hub received publications and cluster events go to (gone only at shutdown).
    fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.get().and_then(Weak::upgrade)
    }

    /// A handle on the command connection (reconnecting by itself), for other shared state.
    pub fn commands(&self) -> Commands {
        self.commands.clone()
    }

    /// Notified when the Redis store announces a write (`rc:store:changed`).
    pub fn store_changes(&self) -> Arc<tokio::sync::Notify> {
        self.store_changes.clone()
    }

    /// Counts the times the subscription connection came up: what was written to Redis before
    /// a change may be gone (a restarted Redis).
    pub fn epoch(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.epoch.clone()
    }

    /// Whether the subscription connection is up (for `/health`).
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Waits until the subscription connection is up, at most `within`; returns whether it is.
    pub async fn wait_up(&self, within: Duration) -> bool {
        let mut up = self.up.subscribe();
        tokio::time::timeout(within, up.wait_for(|up| *up)).await.is_ok_and(|r| r.is_ok())
    }

    /// Keeps the subscription connection: connects, re-subscribes every local room, delivers
    /// what arrives; after a drop, waits (100 ms doubling to 5 s) and starts again. Ends on
    /// `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = async {
                let rooms = self.registry.room_keys();
                let channels: Vec<String> = rooms.iter().map(channel).collect();
                let mut incoming = self.subscribe_all(channels).await?;
                // Whatever changed while disconnected is read now.
                self.store_changes.notify_one();
                self.refresh_commands().await;
                let news = self.recount().await?;
                self.up.send_replace(true);
                // Announced once publications flow again; before, they would be refused.
                self.tell(news);
                self.epoch.fetch_add(1, Ordering::Relaxed);
                *self.up_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
                tracing::info!(rooms = rooms.len(), "Redis subscription connection up");
                match &mut incoming {
                    Incoming::Single(stream) => {
                        while let Some(msg) = stream.next().await {
                            self.receive(msg.get_channel_name(), msg.get_payload_bytes());
                        }
                    }
                    Incoming::Cluster(pushes) => {
                        while let Some(push) = pushes.recv().await {
                            match push.kind {
                                // A connection to one of the cluster's nodes dropped: start over,
                                // as with a single server, so counts and presence are rewritten.
                                redis::PushKind::Disconnection => break,
                                redis::PushKind::Message | redis::PushKind::SMessage => {
                                    if let [
                                        redis::Value::BulkString(channel),
                                        redis::Value::BulkString(payload),
                                    ] = push.data.as_slice()
                                    {
                                        self.receive(&String::from_utf8_lossy(channel), payload);
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
                redis::RedisResult::Ok(())
            };
            let ended = tokio::select! {
                r = session => r,
                _ = shutdown.cancelled() => return,
            };
            let was_up = self.up.send_replace(false);
            *self.up_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
            *self.subscriptions.lock().await = None;
            match ended {
                Ok(()) => tracing::warn!("Redis subscription connection lost; reconnecting"),
                Err(e) => tracing::warn!(error = %e, "cannot reach Redis; retrying"),
            }
            if was_up {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// After (re)connecting: replaces this node's counts in Redis with the ones it keeps in
    /// [`RedisBroker::counted`] (a Redis that restarted lost them; decrements that failed while
    /// it was away left them wrong), and its presence entries with the registry's members;
    /// returns what the hub is to hear of it ([`RedisBroker::tell`]).
    async fn recount(&self) -> redis::RedisResult<Recounted> {
        self.refresh_liveness().await?;
        let mut commands = self.commands.clone();
        // Counts: every room this node counts now or is listed in Redis for, each under its
        // lock, so a subscriber joining meanwhile is counted exactly once. Counts are
        // overwritten in place, never removed first: while a node recounts, other nodes still
        // see its subscribers. Only rooms it no longer has lose its count.
        let listed: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.node_rooms()).query_async(&mut commands).await?;
        let rooms: std::collections::HashSet<String> =
            listed.into_iter().chain(self.counted.iter().map(|e| e.key().clone())).collect();
        let emptied = each_room(rooms, |id| async move {
            let entry = self.counted_entry(&id);
            let alone = entry.steps.write().await;
            let rewritten = self.rewrite_count(&id, entry.n.load(Ordering::Acquire)).await;
            drop(alone);
            self.release_counted(&id, entry);
            rewritten
        })
        .await?;
        let vacated: Vec<RoomKey> = emptied.into_iter().flatten().collect();
        each_room(vacated.clone(), |key| async move { self.unlist_if_empty(&key).await }).await?;
        let local: std::collections::HashSet<RoomKey> =
            self.registry.room_keys().into_iter().filter(|k| self.registry.subscriber_count(k) > 0).collect();
        // Presence: the same, member by member. Rooms left are forgotten; in the others the
        // node's members are replaced by the ones it has now. Users gone from here while Redis
        // was away, and from everywhere else, are announced as gone.
        let presence: Vec<(RoomKey, Vec<Member>)> = local
            .iter()
            .filter(|k| k.room.is_presence())
            .filter_map(|k| Some((k.clone(), self.registry.members(k, None, usize::MAX)?.0)))
            .collect();
        let keep: std::collections::HashSet<String> = presence.iter().map(|(k, _)| room_id(k)).collect();
        let mut gone = self.forget_presence(&self.node_id, &keep).await?;
        if !presence.is_empty() {
            let ids: Vec<&String> = keep.iter().collect();
            redis::cmd("SADD")
                .arg(format!("{NODE_PRESENCE_PREFIX}{}", self.node_id))
                .arg(ids)
                .query_async::<()>(&mut self.commands.clone())
                .await?;
        }
        let resynced = each_room(presence, |(key, members)| {
            let mut commands = self.commands.clone();
            async move {
                let mut call = self.presence_resync_script.key(presence_keys(&room_id(&key)));
                call.arg(&self.node_id);
                for m in &members {
                    call.arg(&*m.user_id).arg(m.user_info.get());
                }
                let left: Vec<String> = call.invoke_async(&mut commands).await?;
                Ok(left.into_iter().map(|u| (key.clone(), u)).collect::<Vec<_>>())
            }
        })
        .await?;
        gone.extend(resynced.into_iter().flatten());
        Ok(Recounted { vacated: vacated.into_iter().filter(|k| !local.contains(k)).collect(), gone })
    }

    /// Tells the hub what a recount found: rooms left empty, members gone cluster-wide.
    fn tell(&self, news: Recounted) {
        for key in news.vacated {
            self.vacated_elsewhere(key);
        }
        for (key, user) in news.gone {
            self.member_gone_elsewhere(key, user);
        }
    }

    /// Room `id`'s entry in [`RedisBroker::counted`] (made when missing); given back with
    /// [`RedisBroker::release_counted`].
    fn counted_entry(&self, id: &str) -> Arc<Counted> {
        self.counted.entry(id.to_owned()).or_default().clone()
    }

    /// Gives back an entry taken with [`RedisBroker::counted_entry`] (its locks released); it
    /// leaves the map when it is back to zero and nobody else holds it.
    fn release_counted(&self, id: &str, entry: Arc<Counted>) {
        drop(entry);
        // Held only by the map, and nobody can take it while `remove_if` checks.
        self.counted.remove_if(id, |_, e| {
            Arc::strong_count(e) == 1 && e.n.load(Ordering::Acquire) <= 0 && e.steps.try_write().is_ok()
        });
    }

    /// Adds `delta` (1 or -1) to this node's count in room `id`; returns the cluster's total.
    /// The room enters the node's room set before its first subscriber here is counted and
    /// leaves it after the last one left, so the set holds every room the node has a count
    /// in (what a dead node's cleanup relies on). Changes that keep the count above zero run
    /// side by side; the ones to and from zero, and recounts, one at a time.
    async fn change_count(&self, id: &str, delta: i64) -> redis::RedisResult<i64> {
        let entry = self.counted_entry(id);
        let changed = async {
            {
                let _shared = entry.steps.read().await;
                // Stays above zero: no change to the room set.
                if entry
                    .n
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n + delta > 0 && n > 0).then_some(n + delta)
                    })
                    .is_ok()
                {
                    let counted = self.count_once(id, delta).await;
                    // A failed increment was not counted (the hub takes the subscriber back); a
                    // failed decrement still happened here, and a recount writes it.
                    if counted.is_err() && delta > 0 {
                        entry.n.fetch_sub(1, Ordering::AcqRel);
                    }
                    return counted;
                }
            }
            let _alone = entry.steps.write().await;
            let before = entry.n.load(Ordering::Acquire);
            if delta > 0 && before == 0 {
                redis::cmd("SADD")
                    .arg(self.node_rooms())
                    .arg(id)
                    .query_async::<()>(&mut self.commands.clone())
                    .await?;
            }
            let counted = self.count_once(id, delta).await;
            if counted.is_ok() || delta < 0 {
                entry.n.store((before + delta).max(0), Ordering::Release);
            }
            if counted.is_ok() && before + delta <= 0 {
                redis::cmd("SREM")
                    .arg(self.node_rooms())
                    .arg(id)
                    .query_async::<()>(&mut self.commands.clone())
                    .await?;
            }
            counted
        }
        .await;
        self.release_counted(id, entry);
        changed
    }

    /// Adds `delta` to this node's count in room `id` in Redis; returns the cluster's total.
    async fn count_once(&self, id: &str, delta: i64) -> redis::RedisResult<i64> {
        self.count_script
            .key(room_key(COUNT_PREFIX, id))
            .arg(&self.node_id)
            .arg(delta)
            .invoke_async(&mut self.commands.clone())
            .await
    }

    /// Writes this node's count `mine` for room `id` as it is: listed, counted and in
    /// the room list when above zero, else removed; returns the room when that left it empty.
    async fn rewrite_count(&self, id: &str, mine: i64) -> redis::RedisResult<Option<RoomKey>> {
        let key = room_from_id(id);
        let mut commands = self.commands.clone();
        if mine <= 0 {
            let emptied = self.forget_count(id, &self.node_id).await?;
            redis::cmd("SREM").arg(self.node_rooms()).arg(id).query_async::<()>(&mut commands).await?;
            return Ok(emptied.then_some(key).flatten());
        }
        redis::cmd("SADD").arg(self.node_rooms()).arg(id).query_async::<()>(&mut commands).await?;
        redis::cmd("HSET")
            .arg(room_key(COUNT_PREFIX, id))
            .arg(&self.node_id)
            .arg(mine)
            .query_async::<()>(&mut commands)
            .await?;
        // A Redis that restarted lost the room lists too.
        if let Some(key) = key {
            self.occupy_script
                .key(&room_list_keys(&key.app_id)[..])
                .arg(key.room.as_str())
                .arg(crate::clock::now_ms())
                .arg(1)
                .invoke_async::<i64>(&mut commands)
                .await?;
        }
        Ok(None)
    }

    /// This node's set of the rooms it counted subscribers in.
    fn node_rooms(&self) -> String {
        format!("{NODE_ROOMS_PREFIX}{}", self.node_id)
    }

    /// Removes a node's presence entries, room by room; returns the members gone cluster-wide.
    async fn forget_presence(
        &self,
        node: &str,
        keep: &std::collections::HashSet<String>,
    ) -> redis::RedisResult<Vec<(RoomKey, String)>> {
        let gone = self
            .drain_rooms(&format!("{NODE_PRESENCE_PREFIX}{node}"), keep, |id| {
                let mut commands = self.commands.clone();
                async move {
                    let users: Vec<String> = self
                        .presence_resync_script
                        .key(presence_keys(&id))
                        .arg(node)
                        .invoke_async(&mut commands)
                        .await?;
                    Ok(room_from_id(&id)
                        .map(|key| users.into_iter().map(|u| (key.clone(), u)).collect::<Vec<_>>()))
                }
            })
            .await?;
        Ok(gone.into_iter().flatten().flatten().collect())
    }

    /// Runs `f` for each room of a node's room set `set` but those in `keep` (room by room),
    /// then takes those rooms out of the set; rooms added meanwhile stay.
    async fn drain_rooms<T, F, Fut>(
        &self,
        set: &str,
        keep: &std::collections::HashSet<String>,
        f: F,
    ) -> redis::RedisResult<Vec<T>>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut commands = self.commands.clone();
        let mut rooms: Vec<String> = redis::cmd("SMEMBERS").arg(set).query_async(&mut commands).await?;
        rooms.retain(|id| !keep.contains(id));
        let done = each_room(rooms.clone(), f).await?;
        if !rooms.is_empty() {
            redis::cmd("SREM").arg(set).arg(&rooms).query_async::<()>(&mut commands).await?;
        }
        Ok(done)
    }

    async fn presence_join_raw(
        &self,
        key: &RoomKey,
        user_id: &str,
        user_info: &str,
    ) -> redis::RedisResult<bool> {
        let id = room_id(key);
        let mut commands = self.commands.clone();
        // The node's set of presence rooms first: a superset is harmless, a missing room would
        // leave the node's members behind after it dies.
        redis::cmd("SADD")
            .arg(format!("{NODE_PRESENCE_PREFIX}{}", self.node_id))
            .arg(&id)
            .query_async::<()>(&mut commands)
            .await?;
        let joined: i64 = self
            .presence_join_script
            .key(presence_keys(&id))
            .arg(user_id)
            .arg(&self.node_id)
            .arg(user_info)
            .invoke_async(&mut commands)
            .await?;
        Ok(joined == 1)
    }

    fn member_gone_elsewhere(&self, key: RoomKey, user: String) {
        if let Some(hub) = self.hub() {
            self.tracker.spawn(async move { hub.member_left_elsewhere(key, &user).await });
        }
    }

    /// Removes a node's counts, room by room (but in the rooms `keep`), and the node itself
    /// from the node set when `gone`; returns the rooms this call left empty.
    async fn forget_node(
        &self,
        node: &str,
        gone: bool,
        keep: &std::collections::HashSet<String>,
    ) -> redis::RedisResult<Vec<RoomKey>> {
        let vacated = self
            .drain_rooms(&format!("{NODE_ROOMS_PREFIX}{node}"), keep, |id| async move {
                Ok(self.forget_count(&id, node).await?.then(|| room_from_id(&id)).flatten())
            })
            .await?;
        if gone {
            redis::cmd("SREM").arg(NODES).arg(node).query_async::<()>(&mut self.commands.clone()).await?;
        }
        let vacated: Vec<RoomKey> = vacated.into_iter().flatten().collect();
        each_room(vacated.clone(), |key| async move { self.unlist_if_empty(&key).await }).await?;
        Ok(vacated)
    }

    /// Removes `node`'s count of room `id`; returns whether that left the room with nobody
    /// (true for one caller only, however many clean up after a dead node at once).
    async fn forget_count(&self, id: &str, node: &str) -> redis::RedisResult<bool> {
        let emptied: i64 = self
            .forget_count_script
            .key(room_key(COUNT_PREFIX, id))
            .arg(node)
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok(emptied == 1)
    }

    /// The room's subscribers over the cluster.
    async fn total(&self, key: &RoomKey) -> redis::RedisResult<i64> {
        let counts: Vec<i64> = redis::cmd("HVALS")
            .arg(room_key(COUNT_PREFIX, &room_id(key)))
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(counts.iter().sum())
    }

    /// Takes a room off its app's list when nobody is in it, unless it was occupied again
    /// meanwhile (its occupation time then changed).
    async fn unlist_if_empty(&self, key: &RoomKey) -> redis::RedisResult<()> {
        let [rooms, since] = room_list_keys(&key.app_id);
        let mut commands = self.commands.clone();
        let at: Option<String> =
            redis::cmd("HGET").arg(&since).arg(key.room.as_str()).query_async(&mut commands).await?;
        let Some(at) = at else { return Ok(()) };
        if self.total(key).await? > 0 {
            return Ok(());
        }
        let _: i64 = self
            .unlist_script
            .key(&rooms)
            .key(&since)
            .arg(key.room.as_str())
            .arg(at)
            .invoke_async(&mut commands)
            .await?;
        Ok(())
    }

    fn vacated_elsewhere(&self, key: RoomKey) {
        if let Some(hub) = self.hub() {
            hub.room_vacated_elsewhere(key);
        }
    }

    /// Every third of the node timeout: refreshes this node's liveness key, and removes the
    /// counts of nodes whose key expired (killed, or cut off from Redis), reporting the rooms
    /// that leaves empty. Ends on `shutdown`.
    pub async fn keep_alive(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.node_timeout / 3;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = self.check_nodes().await {
                tracing::warn!(error = %e, "cannot refresh this node's liveness in Redis");
            }
        }
    }

    /// Refreshes this node's liveness key and its place in the node set; returns whether it
    /// had to be put back there (Redis lost it, or the other nodes took this one for dead).
    async fn refresh_liveness(&self) -> redis::RedisResult<bool> {
        let mut commands = self.commands.clone();
        let alive = redis::SetOptions::default()
            .with_expiration(redis::SetExpiry::PX(self.node_timeout.as_millis() as u64));
        redis::cmd("SET")
            .arg(format!("{ALIVE_PREFIX}{}", self.node_id))
            .arg(1)
            .arg(alive)
            .query_async::<()>(&mut commands)
            .await?;
        let added: i64 = redis::cmd("SADD").arg(NODES).arg(&self.node_id).query_async(&mut commands).await?;
        Ok(added == 1)
    }

    async fn check_nodes(&self) -> redis::RedisResult<()> {
        if self.refresh_liveness().await? && self.is_up() {
            tracing::warn!(
                "this node was missing from the cluster's node set (Redis lost it, or the other nodes took this one for dead); writing its counts and members again"
            );
            let news = self.recount().await?;
            self.tell(news);
        }
        // Others are judged only after this node has been connected for a whole node timeout:
        // after Redis lost its keys, every live node has written its own again by then.
        let connected = *self.up_since.lock().unwrap_or_else(|p| p.into_inner());
        if connected.is_none_or(|at| at.elapsed() < self.node_timeout) {
            return Ok(());
        }
        let mut commands = self.commands.clone();
        let nodes: Vec<String> = redis::cmd("SMEMBERS").arg(NODES).query_async(&mut commands).await?;
        for node in nodes.iter().filter(|n| **n != self.node_id) {
            let alive: bool =
                redis::cmd("EXISTS").arg(format!("{ALIVE_PREFIX}{node}")).query_async(&mut commands).await?;
            if !alive {
                let gone = self.forget_presence(node, &Default::default()).await?;
                let vacated = self.forget_node(node, true, &Default::default()).await?;
                tracing::warn!(node = %node, rooms_vacated = vacated.len(), members_gone = gone.len(), "a cluster node stopped refreshing its liveness; its subscriber counts and presence were removed");
                for (key, user) in gone {
                    self.member_gone_elsewhere(key, user);
                }
                for key in vacated {
                    self.vacated_elsewhere(key);
                }
            }
        }
        Ok(())
    }

    /// At shutdown, after every local client left: removes what is left of this node.
    pub async fn deregister(&self) {
        let mut commands = self.commands.clone();
        let done: redis::RedisResult<()> =
            redis::cmd("DEL").arg(format!("{ALIVE_PREFIX}{}", self.node_id)).query_async(&mut commands).await;
        let none = Default::default();
        let presence = self.forget_presence(&self.node_id, &none).await.map(drop);
        if let Err(e) = done.and(presence).and(self.forget_node(&self.node_id, true, &none).await.map(drop)) {
            tracing::warn!(error = %e, "cannot remove this node from Redis; the others will after the node timeout");
        }
    }

    /// After Redis came back: the command connection notices a dead connection only on the
    /// command that fails on it, so PING until one answers, before the node reports `ok` and
    /// publications flow again.
    async fn refresh_commands(&self) {
        for _ in 0..3 {
            let ping: redis::RedisResult<String> =
                redis::cmd("PING").query_async(&mut self.commands.clone()).await;
            if ping.is_ok() {
                return;
            }
        }
    }

    /// Opens the subscription connection, subscribed to `channels` and to store changes; sets
    /// it as the one rooms are subscribed on.
    async fn subscribe_all(&self, channels: Vec<String>) -> redis::RedisResult<Incoming> {
        let changed = crate::store::redis::CHANGED_CHANNEL;
        let (subscriptions, incoming) = match &self.target {
            Target::Single(client) => {
                let (mut sink, stream) = client.get_async_pubsub().await?.split();
                sink.subscribe(channels.iter().map(String::as_str).chain([changed]).collect::<Vec<_>>())
                    .await?;
                (Subscriptions::Single(sink), Incoming::Single(Box::pin(stream)))
            }
            Target::Cluster(seeds, certs) => {
                // Unbounded because that is what the client offers; it is drained at once by
                // the loop in `run`, which only hands each message to the hub.
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let mut conn =
                    Target::cluster_client(seeds, certs.as_ref(), Some(tx))?.get_async_connection().await?;
                conn.subscribe(changed).await?;
                sharded_sub(&mut conn, channels, true).await?;
                (Subscriptions::Cluster(conn), Incoming::Cluster(rx))
            }
        };
        *self.subscriptions.lock().await = Some(subscriptions);
        Ok(incoming)
    }

    /// Subscribes (`on`) or unsubscribes a room's channel, waiting for Redis to confirm.
    async fn set_subscribed(
        &self,
        subscriptions: &mut Subscriptions,
        key: &RoomKey,
        on: bool,
    ) -> Result<(), BrokerError> {
        let ch = channel(key);
        let confirmed = match subscriptions {
            Subscriptions::Single(sink) => {
                let change = async { if on { sink.subscribe(ch).await } else { sink.unsubscribe(ch).await } };
                tokio::time::timeout(COMMAND_TIMEOUT, change).await
            }
            Subscriptions::Cluster(conn) => {
                tokio::time::timeout(COMMAND_TIMEOUT, sharded_sub(conn, vec![ch], on)).await
            }
        };
        confirmed
            .map_err(|_| unavailable("Redis did not confirm the (un)subscription in time"))?
            .map_err(unavailable)
    }

    /// Delivers one message from Redis to this node's subscribers of its room.
    fn receive(&self, channel: &str, payload: &[u8]) {
        if channel == crate::store::redis::CHANGED_CHANNEL {
            self.store_changes.notify_one();
            return;
        }
        let Some(key) = room_of(channel) else { return };
        let Ok(payload) = std::str::from_utf8(payload) else { return };
        let Some(wire) = decode(payload) else {
            tracing::warn!(channel, "unreadable publication in Redis; skipped");
            return;
        };
        let (Ok(event), Ok(data)) =
            (EventName::parse(wire.event), serde_json::from_str::<&RawValue>(wire.data))
        else {
            tracing::warn!(channel, "publication with a bad event name or data in Redis; skipped");
            return;
        };
        let exclude = if wire.node == self.node_id { wire.exclude } else { None };
        let publication = Publication { key, event, data, exclude, timestamp: wire.timestamp };
        if let Some(hub) = self.hub() {
            hub.deliver_received(&publication, wire.offset);
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, publication: &Publication<'_>) -> Result<FanoutOutcome, BrokerError> {
        // Without the subscription connection this node's own subscribers would miss it.
        if !self.is_up() {
            return Err(unavailable("Redis is not connected"));
        }
        let key = &publication.key;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(room_key(OFFSET_PREFIX, &room_id(key)))
            .key(channel(key))
            .key(room_key(COUNT_PREFIX, &room_id(key)))
            .arg(encode(&self.node_id, publication))
            .arg(OFFSET_TTL_MS)
            .arg(if matches!(self.target, Target::Cluster(..)) { "SPUBLISH" } else { "PUBLISH" });
        // Not retried: a connection lost while the script ran leaves unknown whether it
        // published, and a retry could deliver twice. The caller gets 503 and may retry.
        let (offset, total): (u64, usize) =
            invocation.invoke_async(&mut self.commands.clone()).await.map_err(unavailable)?;
        // This node's subscribers get it when it comes back from Redis, like everyone else's.
        Ok(FanoutOutcome { subscribers: total, offset, ..Default::default() })
    }

    async fn subscribe(&self, key: &RoomKey) -> Result<(), BrokerError> {
        let mut guard = self.subscriptions.lock().await;
        let subscriptions = guard.as_mut().ok_or_else(|| unavailable("Redis is not connected"))?;
        self.set_subscribed(subscriptions, key, true).await
    }

    async fn count_subscribers(&self, key: &RoomKey, delta: i64) -> Result<Option<usize>, BrokerError> {
        let id = room_id(key);
        let total = self.change_count(&id, delta).await.map_err(unavailable)?;
        let mut commands = self.commands.clone();
        if delta > 0 && total == delta {
            let _: i64 = self
                .occupy_script
                .key(&room_list_keys(&key.app_id)[..])
                .arg(key.room.as_str())
                .arg(crate::clock::now_ms())
                .arg(0)
                .invoke_async(&mut commands)
                .await
                .map_err(unavailable)?;
        } else if total <= 0 {
            self.unlist_if_empty(key).await.map_err(unavailable)?;
        }
        Ok(Some(total.max(0) as usize))
    }

    async fn subscriber_total(&self, key: &RoomKey) -> Result<Option<usize>, BrokerError> {
        Ok(Some(self.total(key).await.map_err(unavailable)?.max(0) as usize))
    }

    async fn presence_join(
        &self,
        key: &RoomKey,
        user_id: &str,
        user_info: &RawValue,
    ) -> Result<Option<bool>, BrokerError> {
        self.presence_join_raw(key, user_id, user_info.get()).await.map(Some).map_err(unavailable)
    }

    async fn presence_leave(&self, key: &RoomKey, user_id: &str) -> Result<Option<bool>, BrokerError> {
        let id = room_id(key);
        let left: i64 = self
            .presence_leave_script
            .key(presence_keys(&id))
            .arg(user_id)
            .arg(&self.node_id)
            .invoke_async(&mut self.commands.clone())
            .await
            .map_err(unavailable)?;
        Ok(Some(left == 1))
    }

    async fn presence_members(
        &self,
        key: &RoomKey,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(Vec<Member>, usize)>, BrokerError> {
        // Whole hash, sorted by user id: fine for the rooms presence is for (hundreds to a few
        // thousand members); very large rooms pay one HGETALL per join.
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(room_key(MEMBERS_PREFIX, &room_id(key)))
            .query_async(&mut self.commands.clone())
            .await
            .map_err(unavailable)?;
        let count = all.len();
        let mut members: Vec<(String, String)> =
            all.into_iter().filter(|(user, _)| after.is_none_or(|a| user.as_str() > a)).collect();
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        members.truncate(limit);
        let members = members
            .into_iter()
            .map(|(user, info)| Member {
                user_id: Arc::from(user),
                user_info: RawValue::from_string(info)
                    .map(Arc::from)
                    .unwrap_or_else(|_| Arc::from(RawValue::NULL.to_owned())),
            })
            .collect();
        Ok(Some((members, count)))
    }

    async fn rooms_page(
        &self,
        app_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(Vec<RoomInfo>, bool)>, BrokerError> {
        let [rooms_key, since_key] = room_list_keys(app_id);
        let mut commands = self.commands.clone();
        // Names are ASCII up to `z`, so `prefix~` is past every name with the prefix.
        let mut min = match after {
            Some(a) if a >= prefix => format!("({a}"),
            _ => format!("[{prefix}"),
        };
        let max = if prefix.is_empty() { "+".to_owned() } else { format!("({prefix}~") };
        let mut found = Vec::new();
        // Listed rooms may have emptied since (they are unlisted right after); skip those.
        loop {
            let names: Vec<String> = redis::cmd("ZRANGEBYLEX")
                .arg(&rooms_key)
                .arg(&min)
                .arg(&max)
                .arg("LIMIT")
                .arg(0)
                .arg(limit + 1)
                .query_async(&mut commands)
                .await
                .map_err(unavailable)?;
            let Some(last) = names.last() else { break };
            min = format!("({last}");
            let since: Vec<Option<i64>> = redis::cmd("HMGET")
                .arg(&since_key)
                .arg(&names)
                .query_async(&mut commands)
                .await
                .map_err(unavailable)?;
            let app_id: Arc<str> = Arc::from(app_id);
            let rooms =
                each_room(names.iter().cloned().zip(since), |(name, since): (String, Option<i64>)| {
                    let app_id = app_id.clone();
                    let mut commands = self.commands.clone();
                    async move {
                        let Ok(room) = RoomName::parse(&name) else { return Ok(None) };
                        let key = RoomKey { app_id: AppId::known(&app_id), room };
                        let total = self.total(&key).await?;
                        let users = match key.room.is_presence() {
                            true => Some(
                                redis::cmd("HLEN")
                                    .arg(room_key(MEMBERS_PREFIX, &room_id(&key)))
                                    .query_async::<usize>(&mut commands)
                                    .await?,
                            ),
                            false => None,
                        };
                        Ok(Some((key, total, users, since)))
                    }
                })
                .await
                .map_err(unavailable)?;
            // `each_room` answers out of order.
            let mut rooms: Vec<_> = rooms.into_iter().flatten().collect();
            rooms.sort_unstable_by(|a, b| a.0.room.cmp(&b.0.room));
            let more = names.len() > limit;
            for (key, total, user_count, since) in rooms {
                if total > 0 {
                    found.push(RoomInfo {
                        room: key.room,
                        subscriber_count: total as usize,
                        user_count,
                        occupied_since: since.unwrap_or_default(),
                    });
                } else {
                    self.unlist_if_empty(&key).await.map_err(unavailable)?;
                }
            }
            if found.len() > limit || !more {
                break;
            }
        }
        let more = found.len() > limit;
        found.truncate(limit);
        Ok(Some((found, more)))
    }

    async fn unsubscribe(&self, key: &RoomKey) -> Result<(), BrokerError> {
        let mut guard = self.subscriptions.lock().await;
        // Disconnected: nothing to undo; the reconnect subscribes only to occupied rooms.
        let Some(subscriptions) = guard.as_mut() else { return Ok(()) };
        self.set_subscribed(subscriptions, key, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publications_survive_the_wire_format() {
        let data = RawValue::from_string(r#"{"text":"a\nb","n":[1,2]}"#.into()).unwrap();
        let publication = Publication {
            key: RoomKey { app_id: AppId::known("my-app"), room: RoomName::parse("chat:1").unwrap() },
            event: EventName::parse("new message").unwrap(),
            data: &data,
            exclude: Some(42),
            timestamp: 1_700_000_000_123,
        };
        let message = format!("7\n{}", encode("n_abc", &publication));
        let wire = decode(&message).unwrap();
        assert_eq!(
            wire,
            Wire {
                offset: 7,
                node: "n_abc",
                exclude: Some(42),
                timestamp: 1_700_000_000_123,
                event: "new message",
                data: r#"{"text":"a\nb","n":[1,2]}"#,
            }
        );
        let key = room_of(&channel(&publication.key)).unwrap();
        assert_eq!((&*key.app_id, key.room.as_str()), ("my-app", "chat:1"));
        assert!(decode("x\nn\n-\n1\ne\n{}").is_none());
        assert!(decode("1\nn\n-\n1\ne").is_none());
        assert!(room_of("other:my-app:chat").is_none());
    }
}
