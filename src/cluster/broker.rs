//! The cluster [`Broker`]: publications go through Redis pub/sub, one channel per room, and
//! come back to every node subscribed to the room, the publishing node included, so each
//! subscriber gets each event exactly once, through the hub's [`Inbox`]. A Lua script
//! increments the room's offset and publishes in one step, so offsets are cluster-wide and
//! every node sees the same order.
//!
//! A node subscribes to a room's channel when the room gets its first local subscriber (the
//! `subscribed` frame waits for Redis to confirm) and unsubscribes after the last one leaves.
//! When the subscription connection drops, the node reconnects with backoff, subscribes again
//! to every room it still has and has the cluster state recount; publications made meanwhile
//! fail with `unavailable`. Other channels can be watched on the same connection
//! ([`RedisBroker::notify_on`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::streams::{STREAM_TTL_MS, new_epoch, stream_keys};
use super::{COUNT_PREFIX, RedisCluster, room_from_id, room_id, room_key, unavailable};
use crate::domain::{ConnectionId, RoomKey};
use crate::hub::ports::{Broker, BrokerError, Inbox, Publication, Published};
use crate::hub::stream::Keep;
use crate::protocol::EventName;
use crate::redis_conn::{COMMAND_TIMEOUT, Commands, Link, MAX_BACKOFF, Target};

/// Prefix of room channels: `rc:room:{app_id:room}` (app ids have no `:`).
const CHANNEL_PREFIX: &str = "rc:room:";
/// Takes the room's next offset in its stream (KEYS[1], [`super::streams`]; a new stream gets
/// the epoch ARGV[6] and the Redis run it was made in), publishes `offset \n message` on
/// KEYS[2] with ARGV[3] (PUBLISH or SPUBLISH), and keeps it in the room's history (KEYS[4]):
/// the last ARGV[4] entries, for ARGV[5] ms (none with ARGV[4] = 0, which also drops what was
/// kept, so the history's offsets stay contiguous). Returns the offset, the room's subscribers
/// over the cluster (KEYS[3]) and the epoch.
const PUBLISH_SCRIPT: &str = r"
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[6]
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'run', run)
  redis.call('DEL', KEYS[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local message = offset .. '\n' .. ARGV[1]
redis.call(ARGV[3], KEYS[2], message)
if ARGV[4] == '0' then
  redis.call('DEL', KEYS[4])
else
  redis.call('RPUSH', KEYS[4], message)
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[4]), -1)
  redis.call('PEXPIRE', KEYS[4], ARGV[5])
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do total = total + tonumber(v) end
return {offset, total, epoch}
";

/// Where nodes tell each other what to do with their connections: `terminate\n{app}\n{user}`.
const CONTROL_CHANNEL: &str = "rc:control";

fn channel(key: &RoomKey) -> String {
    format!("{CHANNEL_PREFIX}{{{}}}", room_id(key))
}

fn room_of(channel: &str) -> Option<RoomKey> {
    room_from_id(channel.strip_prefix(CHANNEL_PREFIX)?.strip_prefix('{')?.strip_suffix('}')?)
}

/// A publication as it travels through Redis: `offset`, then (from the publisher)
/// `node`, `exclude` (the id of a connection that must not get it, or `-`), `timestamp`,
/// `sender` (a client event's user as a JSON string, or `-`), `event`, `data`, separated by
/// newlines. Names and node ids cannot hold a newline, a JSON string holds none; `data` may,
/// and is last.
#[derive(Debug, PartialEq)]
pub(super) struct Wire<'a> {
    pub offset: u64,
    pub node: &'a str,
    pub exclude: Option<ConnectionId>,
    pub timestamp: i64,
    pub sender: Option<String>,
    pub event: &'a str,
    pub data: &'a str,
}

fn encode(node: &str, publication: &Publication<'_>) -> String {
    let exclude = publication.exclude.as_deref().unwrap_or("-");
    let sender = publication
        .sender
        .as_deref()
        .map_or_else(|| "-".to_owned(), |s| serde_json::to_string(s).expect("a string always serializes"));
    format!(
        "{node}\n{exclude}\n{}\n{sender}\n{}\n{}",
        publication.timestamp,
        publication.event.as_str(),
        publication.data.get()
    )
}

pub(super) fn decode(message: &str) -> Option<Wire<'_>> {
    let mut parts = message.splitn(7, '\n');
    let offset = parts.next()?.parse().ok()?;
    let node = parts.next()?;
    let exclude = match parts.next()? {
        "-" => None,
        id => Some(ConnectionId::parse(id)?),
    };
    let timestamp = parts.next()?.parse().ok()?;
    let sender = match parts.next()? {
        "-" => None,
        json => Some(serde_json::from_str(json).ok()?),
    };
    let event = parts.next()?;
    let data = parts.next()?;
    Some(Wire { offset, node, exclude, timestamp, sender, event, data })
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
    node_id: String,
    /// One server (PUBLISH/SUBSCRIBE), or a Redis Cluster (SPUBLISH/SSUBSCRIBE).
    target: Target,
    commands: Commands,
    script: redis::Script,
    /// Where received publications go: the hub's fan-out.
    inbox: Arc<dyn Inbox>,
    /// The subscription connection's command half; `None` while disconnected.
    subscriptions: tokio::sync::Mutex<Option<Subscriptions>>,
    /// The rooms subscribed to, with how many local subscribers asked for each (subscribed
    /// again after a reconnect). A room enters and leaves under `subscriptions`' lock, so the
    /// channel is never dropped while a subscriber counts on it.
    rooms: Mutex<HashMap<RoomKey, usize>>,
    /// Whether the subscription connection is up, for everyone who depends on it.
    link: Arc<Link>,
    /// Other channels watched on the subscription connection, and whom each wakes.
    watched: Mutex<Vec<(String, Arc<Notify>)>>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// The broker of node `node_id` on `target` (commands through `commands`), handing
    /// received publications to `inbox`. The subscription connection is made by
    /// [`RedisBroker::run`] and reported in `link`.
    pub fn new(
        target: Target,
        commands: Commands,
        link: Arc<Link>,
        node_id: &str,
        inbox: Arc<dyn Inbox>,
    ) -> Self {
        Self {
            node_id: node_id.to_owned(),
            target,
            commands,
            script: redis::Script::new(PUBLISH_SCRIPT),
            inbox,
            subscriptions: tokio::sync::Mutex::new(None),
            rooms: Mutex::new(HashMap::new()),
            link,
            watched: Mutex::new(Vec::new()),
        }
    }

    /// Wakes the returned [`Notify`] whenever something is published on `channel` (also each
    /// time the connection comes back: what was published meanwhile was missed). Call before
    /// [`RedisBroker::run`].
    pub fn notify_on(&self, channel: &str) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        self.watched.lock().unwrap_or_else(|p| p.into_inner()).push((channel.to_owned(), notify.clone()));
        notify
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomKey, usize>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the subscription connection: connects, subscribes every room again, has `cluster`
    /// recount, delivers what arrives; after a drop, waits (100 ms doubling to 5 s) and starts
    /// again. Ends on `shutdown`.
    pub async fn run(self: Arc<Self>, cluster: Arc<RedisCluster>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = async {
                let channels: Vec<String> = self.rooms().keys().map(channel).collect();
                let rooms = channels.len();
                let mut incoming = self.subscribe_all(channels).await?;
                // Whatever changed while disconnected is read now.
                for (_, notify) in self.watched.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    notify.notify_one();
                }
                self.refresh_commands().await;
                let news = cluster.recount().await?;
                self.link.set_up(true);
                // Announced once publications flow again; before, they would be refused.
                cluster.tell(news).await;
                tracing::info!(rooms, "Redis subscription connection up");
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
            let was_up = self.link.set_up(false);
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

    /// Opens the subscription connection, subscribed to `channels` and the watched ones; sets
    /// it as the one rooms are subscribed on.
    async fn subscribe_all(&self, channels: Vec<String>) -> redis::RedisResult<Incoming> {
        let mut watched: Vec<String> =
            self.watched.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(c, _)| c.clone()).collect();
        watched.push(CONTROL_CHANNEL.to_owned());
        let (subscriptions, incoming) = match &self.target {
            Target::Single(client) => {
                let (mut sink, stream) = client.get_async_pubsub().await?.split();
                let all: Vec<&str> = channels.iter().chain(&watched).map(String::as_str).collect();
                // SUBSCRIBE needs at least one channel.
                if !all.is_empty() {
                    sink.subscribe(all).await?;
                }
                (Subscriptions::Single(sink), Incoming::Single(Box::pin(stream)))
            }
            Target::Cluster(seeds, certs) => {
                // Unbounded because that is what the client offers; it is drained at once by
                // the loop in `run`, which only hands each message to the hub.
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let mut conn =
                    Target::cluster_client(seeds, certs.as_ref(), Some(tx))?.get_async_connection().await?;
                for ch in watched {
                    conn.subscribe(ch).await?;
                }
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
        if channel == CONTROL_CHANNEL {
            let order = std::str::from_utf8(payload).ok().and_then(|p| p.strip_prefix("terminate\n"));
            match order.and_then(|o| o.split_once('\n')) {
                Some((app_id, user_id)) => {
                    self.inbox.close_user(app_id, user_id);
                }
                None => tracing::warn!(channel, "unreadable control message in Redis; skipped"),
            }
            return;
        }
        if let Some((_, notify)) =
            self.watched.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(c, _)| c == channel)
        {
            notify.notify_one();
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
        let exclude = wire.exclude;
        // Kept in Redis by the publisher: nothing to keep here.
        let keep = Keep::default();
        let sender = wire.sender.map(std::sync::Arc::from);
        let publication = Publication { key, event, data, exclude, sender, timestamp: wire.timestamp, keep };
        self.inbox.deliver(&publication, Some(wire.offset));
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, publication: &Publication<'_>) -> Result<Published, BrokerError> {
        // Without the subscription connection this node's own subscribers would miss it.
        if !self.link.is_up() {
            return Err(unavailable("Redis is not connected"));
        }
        let key = &publication.key;
        let [stream, history] = stream_keys(key);
        let keep = publication.keep;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(stream)
            .key(channel(key))
            .key(room_key(COUNT_PREFIX, &room_id(key)))
            .key(history)
            .arg(encode(&self.node_id, publication))
            .arg(STREAM_TTL_MS.max(keep.ttl_ms as u64))
            .arg(if matches!(self.target, Target::Cluster(..)) { "SPUBLISH" } else { "PUBLISH" })
            .arg(keep.size)
            .arg(keep.ttl_ms.max(1))
            .arg(new_epoch());
        // Not retried: a connection lost while the script ran leaves unknown whether it
        // published, and a retry could deliver twice. The caller gets 503 and may retry.
        let (offset, subscribers, epoch): (u64, usize, String) =
            invocation.invoke_async(&mut self.commands.clone()).await.map_err(unavailable)?;
        // This node's subscribers get it when it comes back from Redis, like everyone else's.
        Ok(Published { offset, epoch: Arc::from(epoch), subscribers })
    }

    async fn subscribe(&self, key: &RoomKey) -> Result<(), BrokerError> {
        // One more subscriber of a room whose channel is on: nothing to ask Redis.
        let more = |rooms: &mut HashMap<RoomKey, usize>| rooms.get_mut(key).map(|n| *n += 1).is_some();
        if more(&mut self.rooms()) {
            return Ok(());
        }
        // The first: it (and whoever joins meanwhile) waits until Redis confirms the channel.
        let mut guard = self.subscriptions.lock().await;
        if more(&mut self.rooms()) {
            return Ok(());
        }
        let subscriptions = guard.as_mut().ok_or_else(|| unavailable("Redis is not connected"))?;
        self.set_subscribed(subscriptions, key, true).await?;
        self.rooms().insert(key.clone(), 1);
        Ok(())
    }

    async fn unsubscribe(&self, key: &RoomKey) -> Result<(), BrokerError> {
        let fewer = |rooms: &mut HashMap<RoomKey, usize>| match rooms.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => false,
            None => true,
        };
        if fewer(&mut self.rooms()) {
            return Ok(());
        }
        // Perhaps the last: decided under the lock subscribes take, so a join racing with this
        // leave either counts on the channel before it goes (and it stays) or subscribes after.
        let mut guard = self.subscriptions.lock().await;
        if fewer(&mut self.rooms()) {
            return Ok(());
        }
        self.rooms().remove(key);
        // Disconnected: nothing to undo; the reconnect subscribes only to the rooms left.
        let Some(subscriptions) = guard.as_mut() else { return Ok(()) };
        self.set_subscribed(subscriptions, key, false).await
    }

    async fn close_user(&self, app_id: &str, user_id: &str) -> Result<(), BrokerError> {
        // Every node gets it back on its subscription connection, this one too. A node away
        // from Redis at that moment misses it: its clients reconnect when it comes back, so
        // the app should also stop vouching for the user.
        let order = format!("terminate\n{app_id}\n{user_id}");
        let mut commands = self.commands.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(CONTROL_CHANNEL)
            .arg(order)
            .query_async(&mut commands)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AppId;
    use crate::protocol::RoomName;

    #[test]
    fn publications_survive_the_wire_format() {
        let data = RawValue::from_string(r#"{"text":"a\nb","n":[1,2]}"#.into()).unwrap();
        let publication = Publication {
            key: RoomKey { app_id: AppId::known("my-app"), room: RoomName::parse("chat:1").unwrap() },
            event: EventName::parse("new message").unwrap(),
            data: &data,
            exclude: ConnectionId::parse("12.34"),
            sender: Some("ann\nb".into()),
            timestamp: 1_700_000_000_123,
            keep: Keep::default(),
        };
        let message = format!("7\n{}", encode("n_abc", &publication));
        let wire = decode(&message).unwrap();
        assert_eq!(
            wire,
            Wire {
                offset: 7,
                node: "n_abc",
                exclude: ConnectionId::parse("12.34"),
                timestamp: 1_700_000_000_123,
                sender: Some("ann\nb".into()),
                event: "new message",
                data: r#"{"text":"a\nb","n":[1,2]}"#,
            }
        );
        let key = room_of(&channel(&publication.key)).unwrap();
        assert_eq!((&*key.app_id, key.room.as_str()), ("my-app", "chat:1"));
        assert!(decode("x\nn\n-\n1\n-\ne\n{}").is_none());
        assert!(decode("1\nn\n-\n1\n-\ne").is_none());
        assert!(decode("1\nn\n-\n1\nnot json\ne\n{}").is_none());
        assert!(decode("1\nn\n-\n1\n-\ne\n{}").is_some());
        assert!(room_of("other:my-app:chat").is_none());
    }
}
