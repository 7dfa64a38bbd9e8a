//! Analytics shared by a cluster (DESIGN §7): every node adds what it counted to buckets in
//! Redis once a second, so each event is counted once, by the node it happened on, and any node
//! reports the whole cluster.
//!
//! Keys of one app share the hash tag `{<app>}` (one Redis Cluster slot; `<…>` stands for a
//! value):
//! - `rc:an:{<app>}:m:<minute>`, `…:h:<hour>`, `…:d:<day>`: counters (`c` connections opened,
//!   `b` broadcasts, `ce` client events, `d` delivered, `wd`/`wf` webhooks delivered/failed),
//!   `p` the peak, and in minute buckets `p:<node>`, each node's own peak in that minute. The
//!   cluster's peak in a minute is the sum of its nodes' peaks (an upper bound when they did
//!   not peak at once); hours and days keep the highest minute. Minutes live 2 h, hours 8 days,
//!   days 31 days: enough for the 1 h, 24 h/7 d and 30 d reports that read them.
//! - `rc:an:{<app>}:u<level>:<start>`: HyperLogLogs (`PFADD`) of the users seen in 5-minute,
//!   hour, 6-hour and day buckets, each expiring when no report reads it any more;
//!   `users.total` is `PFCOUNT` over the buckets of the period (about 0.8 % standard error,
//!   at most 12 KiB a bucket whatever the number of users). Before them, a sorted set
//!   `rc:an:{<app>}:seen` held every user; nothing reads it now and it expires within 30 days.
//! - `rc:an:{<app>}:on:<node>`: the users connected to that node; it expires with the node's
//!   liveness, and `users.online` is the size of the union over live nodes. Each flush sends
//!   the changes; the first after a reconnection, and every 30th, rewrite it whole, in case
//!   Redis lost it.
//! - `rc:an:{<app>}:current`: node → connections open there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;

use super::distinct::Level;
use super::{AppDelta, Period, RETENTION_MS, Report};
use crate::cluster::NODES;
use crate::store::MinuteCounts;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// How long buckets are kept: long enough for every report that reads them.
const MINUTE_TTL_MS: i64 = 2 * HOUR_MS;
const HOUR_TTL_MS: i64 = 8 * DAY_MS;
const DAY_TTL_MS: i64 = 31 * DAY_MS;
/// Every this many flushes the online sets are rewritten whole rather than changed.
const REWRITE_EVERY: u64 = 30;
/// The counter fields, in the order a delta passes them.
const FIELDS: [&str; 6] = ["c", "b", "ce", "d", "wd", "wf"];

/// Adds one node's delta for one app. KEYS: the node's online set, current, then minute, hour
/// and day bucket per delta minute, then the distinct-user sketches to add to. ARGV: node,
/// current, the three bucket TTLs, current's TTL, online TTL, then the numbers of minutes, of
/// sketches, whether to replace the online set (1) and the number of users to add to it; then 7
/// values per minute (peak and FIELDS), per sketch its expiry time (ms) and user count and the
/// users, users to add to the online set, and last the users to remove from it.
const FLUSH_SCRIPT: &str = r"
local node = ARGV[1]
local n, g, a = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[11])
local names = {'c', 'b', 'ce', 'd', 'wd', 'wf'}
local i = 12
for m = 0, n - 1 do
  local keys = {KEYS[3 + 3 * m], KEYS[4 + 3 * m], KEYS[5 + 3 * m]}
  local peak = tonumber(ARGV[i])
  for f = 1, 6 do
    local v = tonumber(ARGV[i + f])
    if v > 0 then
      for k = 1, 3 do redis.call('HINCRBY', keys[k], names[f], v) end
    end
  end
  i = i + 7
  local mine = 'p:' .. node
  if peak > tonumber(redis.call('HGET', keys[1], mine) or '0') then
    redis.call('HSET', keys[1], mine, peak)
  end
  local sum = 0
  local all = redis.call('HGETALL', keys[1])
  for j = 1, #all, 2 do
    if string.sub(all[j], 1, 2) == 'p:' then sum = sum + tonumber(all[j + 1]) end
  end
  for k = 1, 3 do
    if sum > tonumber(redis.call('HGET', keys[k], 'p') or '0') then
      redis.call('HSET', keys[k], 'p', sum)
    end
    redis.call('PEXPIRE', keys[k], ARGV[2 + k])
  end
end
for s = 0, g - 1 do
  local sketch, expires, count = KEYS[3 + 3 * n + s], ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local last = i + count - 1
  while i <= last do
    local upto = math.min(i + 999, last)
    redis.call('PFADD', sketch, unpack(ARGV, i, upto))
    i = upto + 1
  end
  redis.call('PEXPIREAT', sketch, expires)
end
if ARGV[10] == '1' then redis.call('DEL', KEYS[1]) end
for j = 1, a do
  redis.call('SADD', KEYS[1], ARGV[i])
  i = i + 1
end
while i <= #ARGV do
  redis.call('SREM', KEYS[1], ARGV[i])
  i = i + 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[2], node)
else
  redis.call('HSET', KEYS[2], node, ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
return 0
";

/// The number of distinct users in the sets KEYS.
const UNION_SCRIPT: &str = "return #redis.call('SUNION', unpack(KEYS))";

fn key(app_id: &str, part: &str) -> String {
    format!("rc:an:{{{app_id}}}:{part}")
}

fn bucket(app_id: &str, kind: char, start: i64) -> String {
    key(app_id, &format!("{kind}:{start}"))
}

/// The HyperLogLog of the users seen in one bucket of `level`.
fn sketch_key(app_id: &str, level: Level, start: i64) -> String {
    key(app_id, &format!("u{}:{start}", level.as_u8()))
}

type Written = HashMap<Arc<str>, HashSet<Arc<str>>>;

/// The cluster's analytics buckets in Redis.
pub struct SharedAnalytics {
    commands: crate::redis_conn::Commands,
    node_id: String,
    /// A node's online set outlives it by at most this (its liveness timeout).
    online_ttl_ms: u64,
    flush_script: redis::Script,
    union_script: redis::Script,
    /// The apps this node has connections or users of in Redis, with those users; `None`
    /// after a failed flush, when Redis may hold anything (or nothing, after a restart) and
    /// the next flush rewrites it.
    written: Mutex<Option<Written>>,
    flushes: AtomicU64,
    /// The broker's connection count, and its value at the last flush.
    epoch: Arc<AtomicU64>,
    flushed_epoch: AtomicU64,
}

impl std::fmt::Debug for SharedAnalytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedAnalytics").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl SharedAnalytics {
    /// Shares analytics through `commands` as node `node_id`, whose liveness timeout is
    /// `node_timeout_ms`; `epoch` counts the broker's (re)connections.
    pub fn new(
        commands: crate::redis_conn::Commands,
        node_id: &str,
        node_timeout_ms: u64,
        epoch: Arc<AtomicU64>,
    ) -> Self {
        Self {
            commands,
            node_id: node_id.to_owned(),
            online_ttl_ms: node_timeout_ms,
            flush_script: redis::Script::new(FLUSH_SCRIPT),
            union_script: redis::Script::new(UNION_SCRIPT),
            written: Mutex::new(None),
            flushes: AtomicU64::new(0),
            flushed_epoch: AtomicU64::new(epoch.load(Relaxed)),
            epoch,
        }
    }

    fn written(&self) -> std::sync::MutexGuard<'_, Option<Written>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds this node's deltas to the shared buckets, one atomic script per app (the apps'
    /// keys live in different Redis Cluster slots), up to 32 at once. On an error the caller puts
    /// the deltas back: a connection lost after Redis ran a script then counts it twice, which
    /// is preferred to losing it.
    pub async fn flush(&self, deltas: &[AppDelta]) -> redis::RedisResult<()> {
        let mut calls = Vec::new();
        // After the node reconnected (Redis may have restarted empty), and now and then anyway.
        let epoch = self.epoch.load(Relaxed);
        let reconnected = self.flushed_epoch.swap(epoch, Relaxed) != epoch;
        let rewrite = reconnected || self.flushes.fetch_add(1, Relaxed).is_multiple_of(REWRITE_EVERY);
        {
            let guard = self.written();
            let written = guard.as_ref().filter(|_| !rewrite);
            for d in deltas {
                let before = written.and_then(|w| w.get(&d.app_id));
                // Apps with nothing new and nothing of this node in Redis are skipped.
                let idle = d.minutes.is_empty() && d.seen.is_empty() && d.online.is_empty() && d.current == 0;
                if idle && written.is_some() && before.is_none() {
                    continue;
                }
                calls.push(self.invocation(d, before));
            }
        }
        // EVALSHA, loading the script on the shard that lacks it.
        let sends: Vec<_> = calls
            .iter()
            .map(|call| {
                let mut commands = self.commands.clone();
                async move { call.invoke_async::<()>(&mut commands).await }
            })
            .collect();
        let sent = futures_util::stream::iter(sends).buffer_unordered(32).collect::<Vec<_>>().await;
        let done: redis::RedisResult<()> = sent.into_iter().collect();
        let mut written = self.written();
        match done {
            Ok(()) => {
                let map = written.get_or_insert_with(HashMap::new);
                for d in deltas {
                    if d.online.is_empty() && d.current == 0 {
                        map.remove(&d.app_id);
                    } else {
                        map.insert(d.app_id.clone(), d.online.iter().cloned().collect());
                    }
                }
                Ok(())
            }
            Err(e) => {
                *written = None;
                Err(e)
            }
        }
    }

    fn invocation<'a>(
        &'a self,
        d: &AppDelta,
        before: Option<&HashSet<Arc<str>>>,
    ) -> redis::ScriptInvocation<'a> {
        let app = &*d.app_id;
        let mut inv = self.flush_script.prepare_invoke();
        inv.key(key(app, &format!("on:{}", self.node_id))).key(key(app, "current"));
        for (minute, _) in &d.minutes {
            inv.key(bucket(app, 'm', *minute))
                .key(bucket(app, 'h', minute - minute.rem_euclid(HOUR_MS)))
                .key(bucket(app, 'd', minute - minute.rem_euclid(DAY_MS)));
        }
        // Each user seen goes into the sketch of its time at every level.
        let mut sketches: BTreeMap<(Level, i64), Vec<&str>> = BTreeMap::new();
        for (user, seen) in &d.seen {
            for level in Level::ALL {
                sketches.entry((level, level.start(*seen))).or_default().push(user);
            }
        }
        for (level, start) in sketches.keys() {
            inv.key(sketch_key(app, *level, *start));
        }
        // After a failed flush the online set is rewritten whole.
        let empty = HashSet::new();
        let (replace, before) = match before {
            Some(w) => (false, w),
            None => (true, &empty),
        };
        let online: HashSet<&Arc<str>> = d.online.iter().collect();
        let added: Vec<&Arc<str>> = online.iter().copied().filter(|u| !before.contains(*u)).collect();
        inv.arg(&self.node_id)
            .arg(d.current)
            .arg(MINUTE_TTL_MS)
            .arg(HOUR_TTL_MS)
            .arg(DAY_TTL_MS)
            .arg(RETENTION_MS)
            .arg(self.online_ttl_ms)
            .arg(d.minutes.len())
            .arg(sketches.len())
            .arg(if replace { "1" } else { "0" })
            .arg(added.len());
        for (_, c) in &d.minutes {
            inv.arg(c.peak_connections)
                .arg(c.connections_opened)
                .arg(c.broadcasts)
                .arg(c.client_events)
                .arg(c.delivered)
                .arg(c.webhooks_delivered)
                .arg(c.webhooks_failed);
        }
        for ((level, start), users) in &sketches {
            inv.arg(start + level.keep_ms()).arg(users.len());
            for user in users {
                inv.arg(*user);
            }
        }
        for user in added {
            inv.arg(&**user);
        }
        for user in before.iter().filter(|u| !online.contains(u)) {
            inv.arg(&**user);
        }
        inv
    }

    /// The cluster's report of `app_id` for the `period` ending at `now`, with `local`, this
    /// node's report of what it has not flushed yet (and its connections now).
    pub async fn report(
        &self,
        app_id: &str,
        period: Period,
        now: i64,
        local: &Report,
    ) -> redis::RedisResult<Report> {
        let steps = period.steps(now);
        let first = steps[0];
        // Series points of a week are 6 h, made of hour buckets.
        let (kind, width) = match period {
            Period::Hour => ('m', MINUTE_MS),
            Period::Day | Period::Week => ('h', HOUR_MS),
            Period::Month => ('d', DAY_MS),
        };
        let buckets: Vec<i64> = (0..)
            .map(|i| first + i * width)
            .take_while(|t| *t < steps[steps.len() - 1] + period.step_ms())
            .collect();
        let mut commands = self.commands.clone();
        let nodes: Vec<String> = redis::cmd("SMEMBERS").arg(NODES).query_async(&mut commands).await?;
        // Distinct users: Redis's estimate of the union of the period's sketches.
        let level = Level::of(period);
        let sketches: Vec<String> = (0..)
            .map(|i| level.start(first) + i * level.width_ms())
            .take_while(|t| *t <= now)
            .map(|t| sketch_key(app_id, level, t))
            .collect();
        let mut pipe = redis::pipe();
        pipe.cmd("PFCOUNT").arg(&sketches);
        pipe.cmd("HGETALL").arg(key(app_id, "current"));
        for t in &buckets {
            pipe.cmd("HGETALL").arg(bucket(app_id, kind, *t));
        }
        let mut values: Vec<redis::Value> = pipe.query_async(&mut commands).await?;
        let counts: Vec<HashMap<String, u64>> =
            values.split_off(2).into_iter().map(redis::from_redis_value).collect::<Result<_, _>>()?;
        let (users_total, current): (u64, HashMap<String, u64>) =
            redis::from_redis_value(redis::Value::Array(values))?;
        let users_online: u64 = if nodes.is_empty() {
            0
        } else {
            let mut union = self.union_script.prepare_invoke();
            for node in &nodes {
                union.key(key(app_id, &format!("on:{node}")));
            }
            union.invoke_async(&mut commands).await?
        };
        // This node's connections are counted now, the others' as of their last flush.
        let elsewhere: u64 =
            nodes.iter().filter(|n| **n != self.node_id).filter_map(|n| current.get(n)).sum();
        let mut report = Report {
            current: elsewhere + local.current,
            users_online,
            users_total,
            series: steps.iter().map(|t| (*t, MinuteCounts::default())).collect(),
            ..Report::default()
        };
        let step = period.step_ms();
        for (t, fields) in buckets.iter().zip(counts) {
            let get = |name: &str| fields.get(name).copied().unwrap_or(0);
            let c = MinuteCounts {
                connections_opened: get(FIELDS[0]),
                broadcasts: get(FIELDS[1]),
                client_events: get(FIELDS[2]),
                delivered: get(FIELDS[3]),
                webhooks_delivered: get(FIELDS[4]),
                webhooks_failed: get(FIELDS[5]),
                peak_connections: get("p"),
            };
            report.totals.add(&c);
            if let Some((_, point)) = report.series.get_mut(((t - first) / step) as usize) {
                point.add(&c);
            }
        }
        report.peak_connections = report.totals.peak_connections.max(report.current);
        report.merge(local);
        Ok(report)
    }

    /// Erases an app's analytics (purged).
    pub async fn forget(&self, app_id: &str, now: i64) -> redis::RedisResult<()> {
        let nodes: Vec<String> =
            redis::cmd("SMEMBERS").arg(NODES).query_async(&mut self.commands.clone()).await?;
        let mut keys = vec![key(app_id, "seen"), key(app_id, "current")];
        keys.extend(nodes.iter().map(|n| key(app_id, &format!("on:{n}"))));
        for level in Level::ALL {
            let last = level.start(now);
            keys.extend(
                (0..=level.keep_ms() / level.width_ms())
                    .map(|i| sketch_key(app_id, level, last - i * level.width_ms())),
            );
        }
        for (kind, width, ttl) in
            [('m', MINUTE_MS, MINUTE_TTL_MS), ('h', HOUR_MS, HOUR_TTL_MS), ('d', DAY_MS, DAY_TTL_MS)]
        {
            let last = now - now.rem_euclid(width);
            keys.extend((0..=ttl / width).map(|i| bucket(app_id, kind, last - i * width)));
        }
        let mut pipe = redis::pipe();
        for chunk in keys.chunks(100) {
            pipe.cmd("DEL").arg(chunk).ignore();
        }
        pipe.query_async::<()>(&mut self.commands.clone()).await?;
        if let Some(w) = self.written().as_mut() {
            w.remove(app_id);
        }
        Ok(())
    }
}
