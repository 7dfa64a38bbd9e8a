//! Each node's subscribers per room: a hash `rc:count:{app:room}` of node id → count, which
//! the node keeps right as subscribers come and go, and rewrites whole after Redis came back.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use redis::Value;

use super::streams::ReadArgs;
use super::{COUNT_PREFIX, RedisCluster, each_room, room_from_id, room_id, room_key};
use crate::domain::RoomKey;

/// The rooms a node has counted subscribers in: `rc:node-rooms:{node}` (members `{app}:{room}`).
pub(super) const NODE_ROOMS_PREFIX: &str = "rc:node-rooms:";

/// Adds `delta` to node `node`'s subscribers of the room counted in `counted`; leaves the
/// room's subscribers over the cluster in `total`.
const COUNT_BODY: &str = r"
if redis.call('HINCRBY', counted, node, delta) <= 0 then redis.call('HDEL', counted, node) end
local total = 0
for _, v in ipairs(redis.call('HVALS', counted)) do total = total + tonumber(v) end
";

/// The count alone: KEYS[1] is the room's count, ARGV[1] the node, ARGV[2] the change; returns
/// the total.
fn count_script() -> redis::Script {
    redis::Script::new(&format!(
        "local counted, node, delta = KEYS[1], ARGV[1], ARGV[2]\n{COUNT_BODY}\nreturn total"
    ))
}

/// A joiner's count and its place in the stream in one step (the keys share the room's hash
/// tag): KEYS[1..2] and ARGV[1..8] as the stream read takes them (`streams::read_lua`),
/// KEYS[3] the count, ARGV[9] the node, ARGV[10] the change. The read comes first, so a script
/// that fails (a Redis error, an ACL refusal) has not counted the joiner: Redis does not undo a
/// script's writes made before its error. Returns the total, then the read's answer.
fn count_read_script() -> redis::Script {
    redis::Script::new(&format!(
        "local function read()\n{}\nend\nlocal answer = read()\n\
         local counted, node, delta = KEYS[3], ARGV[9], ARGV[10]\n{COUNT_BODY}\n\
         table.insert(answer, 1, total)\nreturn answer",
        super::streams::read_lua()
    ))
}

/// Removes node ARGV[1]'s count of a room (KEYS[1]); returns 1 when this call removed it and
/// nobody is left in the room. Of several nodes cleaning up after a dead one, only one gets 1.
const FORGET_COUNT_SCRIPT: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and redis.call('HLEN', KEYS[1]) == 0 then return 1 end
return 0
";

/// This node's subscriber count in one room as Redis should hold it: every change that
/// succeeded, and decrements that failed (a recount writes them).
#[derive(Debug, Default)]
struct Counted {
    n: AtomicI64,
    /// Shared by changes that keep `n` above zero; taken alone by changes to and from zero
    /// (which also add the room to, or take it from, the node's room set) and by recounts.
    steps: tokio::sync::RwLock<()>,
}

/// The scripts, and this node's count per room as Redis should hold it (see [`Counted`]); a
/// room leaves the map when its count is back to zero.
pub(super) struct Counts {
    counted: DashMap<String, Arc<Counted>>,
    count: redis::Script,
    count_read: redis::Script,
    forget: redis::Script,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            counted: DashMap::new(),
            count: count_script(),
            count_read: count_read_script(),
            forget: redis::Script::new(FORGET_COUNT_SCRIPT),
        }
    }
}

impl Counts {
    /// Room `id`'s entry (made when missing); given back with [`Counts::release`].
    fn entry(&self, id: &str) -> Arc<Counted> {
        self.counted.entry(id.to_owned()).or_default().clone()
    }

    /// Gives back an entry taken with [`Counts::entry`] (its locks released); it leaves the
    /// map when it is back to zero and nobody else holds it.
    fn release(&self, id: &str, entry: Arc<Counted>) {
        drop(entry);
        // Held only by the map, and nobody can take it while `remove_if` checks.
        self.counted.remove_if(id, |_, e| {
            Arc::strong_count(e) == 1 && e.n.load(Ordering::Acquire) <= 0 && e.steps.try_write().is_ok()
        });
    }
}

impl RedisCluster {
    /// This node's set of the rooms it counted subscribers in.
    pub(super) fn node_rooms(&self) -> String {
        format!("{NODE_ROOMS_PREFIX}{}", self.node_id)
    }

    /// Adds `delta` (1 or -1) to this node's count in room `id`; returns the cluster's total,
    /// and with `read` (a joiner) the stream read's answer from the same script. The room
    /// enters the node's room set before its first subscriber here is counted and leaves it
    /// after the last one left, so the set holds every room the node has a count
    /// in (what a dead node's cleanup relies on). Changes that keep the count above zero run
    /// side by side; the ones to and from zero, and recounts, one at a time.
    pub(super) async fn change_count(
        &self,
        id: &str,
        delta: i64,
        read: Option<&ReadArgs<'_>>,
    ) -> redis::RedisResult<(i64, Vec<Value>)> {
        let entry = self.counts.entry(id);
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
                    let counted = self.count_once(id, delta, read).await;
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
                    .query_async::<()>(&mut self.commands())
                    .await?;
            }
            let counted = self.count_once(id, delta, read).await;
            if counted.is_ok() || delta < 0 {
                entry.n.store((before + delta).max(0), Ordering::Release);
            }
            if counted.is_ok() && before + delta <= 0 {
                redis::cmd("SREM")
                    .arg(self.node_rooms())
                    .arg(id)
                    .query_async::<()>(&mut self.commands())
                    .await?;
            }
            counted
        }
        .await;
        self.counts.release(id, entry);
        changed
    }

    /// Adds `delta` to this node's count in room `id` in Redis, with `read` also reading the
    /// stream; returns the cluster's total and the read's answer (empty without `read`).
    async fn count_once(
        &self,
        id: &str,
        delta: i64,
        read: Option<&ReadArgs<'_>>,
    ) -> redis::RedisResult<(i64, Vec<Value>)> {
        let counted = room_key(COUNT_PREFIX, id);
        let Some(read) = read else {
            let total = self
                .counts
                .count
                .key(counted)
                .arg(&self.node_id)
                .arg(delta)
                .invoke_async(&mut self.commands())
                .await?;
            return Ok((total, Vec::new()));
        };
        let mut invocation = self.counts.count_read.prepare_invoke();
        read.add_to(&mut invocation);
        invocation.key(counted).arg(&self.node_id).arg(delta);
        let mut answer: Vec<Value> = invocation.invoke_async(&mut self.commands()).await?;
        let total = match answer.first() {
            Some(Value::Int(total)) => *total,
            _ => return Err((redis::ErrorKind::UnexpectedReturnType, "count answer without a total").into()),
        };
        answer.remove(0);
        Ok((total, answer))
    }

    /// Rewrites this node's counts: every room it counts now or is listed in Redis for, each
    /// under its lock, so a subscriber joining meanwhile is counted exactly once. Counts are
    /// overwritten in place, never removed first: while a node recounts, other nodes still
    /// see its subscribers. Only rooms it no longer has lose their count. Returns the rooms
    /// that left empty.
    pub(super) async fn recount_rooms(&self) -> redis::RedisResult<Vec<RoomKey>> {
        let listed: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.node_rooms()).query_async(&mut self.commands()).await?;
        let rooms: HashSet<String> =
            listed.into_iter().chain(self.counts.counted.iter().map(|e| e.key().clone())).collect();
        let emptied = each_room(rooms, |id| async move {
            let entry = self.counts.entry(&id);
            let alone = entry.steps.write().await;
            let rewritten = self.rewrite_count(&id, entry.n.load(Ordering::Acquire)).await;
            drop(alone);
            self.counts.release(&id, entry);
            rewritten
        })
        .await?;
        Ok(emptied.into_iter().flatten().collect())
    }

    /// Writes this node's count `mine` for room `id` as it is: listed, counted and in
    /// the room list when above zero, else removed; returns the room when that left it empty.
    async fn rewrite_count(&self, id: &str, mine: i64) -> redis::RedisResult<Option<RoomKey>> {
        let key = room_from_id(id);
        let mut commands = self.commands();
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
            self.list_room(&key, true).await?;
        }
        Ok(None)
    }

    /// Removes `node`'s count of room `id`; returns whether that left the room with nobody
    /// (true for one caller only, however many clean up after a dead node at once).
    pub(super) async fn forget_count(&self, id: &str, node: &str) -> redis::RedisResult<bool> {
        let emptied: i64 = self
            .counts
            .forget
            .key(room_key(COUNT_PREFIX, id))
            .arg(node)
            .invoke_async(&mut self.commands())
            .await?;
        Ok(emptied == 1)
    }

    /// The room's subscribers over the cluster.
    pub(super) async fn total(&self, key: &RoomKey) -> redis::RedisResult<i64> {
        let counts: Vec<i64> = redis::cmd("HVALS")
            .arg(room_key(COUNT_PREFIX, &room_id(key)))
            .query_async(&mut self.commands())
            .await?;
        Ok(counts.iter().sum())
    }
}
