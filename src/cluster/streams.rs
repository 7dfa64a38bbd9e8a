//! Rooms as streams in Redis (DESIGN §11): `rc:stream:{app:room}` holds the room's last
//! offset, its epoch and the Redis run that made the epoch; `rc:hist:{app:room}` the retained
//! events, oldest first, each as it went through pub/sub (offset first), so their offsets are
//! contiguous and end at the stream's. The broker's publish script appends to both in the step
//! that publishes; the scripts here read them for a joining or recovering client and for the
//! history route.
//!
//! A Redis that restarted, failed over or was restored from a snapshot may have lost writes, so
//! a stream whose epoch was made in another Redis run (`INFO server` `run_id`) is never
//! trusted: its next read gives it a new epoch and drops its history, and clients that left
//! before get `epoch_changed`, never events that are not what they missed.

use std::sync::Arc;

use redis::Value;

use super::broker::decode;
use super::{RedisCluster, room_id, room_key};
use crate::domain::RoomKey;
use crate::hub::Frame;
use crate::hub::ports::BrokerError;
use crate::hub::registry::HistoryPage;
use crate::hub::stream::{HistoryEvent, Keep, NotRecovered, Since, StreamRead};
use crate::protocol::{EventName, ServerFrame};

/// A room's stream: a hash of `offset`, `epoch` and `run`.
pub(super) const STREAM_PREFIX: &str = "rc:stream:";
/// A room's retained events.
pub(super) const HISTORY_PREFIX: &str = "rc:hist:";
/// A stream lives at least a day after its last publication or join (longer than any history).
pub(super) const STREAM_TTL_MS: u64 = 86_400_000;

/// The Lua that starts the read scripts: KEYS[1] is the stream, KEYS[2] its history; ARGV[1] a
/// new epoch, ARGV[2] the stream's time to live, ARGV[3] `1` to check the Redis run. Leaves
/// `offset` and `epoch` set.
const PROLOGUE: &str = r"
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local run = redis.call('HGET', KEYS[1], 'run')
local current = false
if ARGV[3] == '1' or not epoch then
  current = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
end
if not epoch or (current and run ~= current) then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'offset', offset, 'epoch', epoch, 'run', current)
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
";

/// Where the stream stands and, with ARGV[4] (`since` offset, or empty) and ARGV[5] (`since`
/// epoch), what was missed: `{offset, epoch}`, then `"recovered"` and the entries, or the reason
/// nothing is replayed. ARGV[6] is the app's history size, ARGV[7] its time to live in ms,
/// ARGV[8] now in ms.
const READ_BODY: &str = r"
if ARGV[4] == '' then return {offset, epoch} end
local since = tonumber(ARGV[4])
if ARGV[5] ~= epoch or since > offset then return {offset, epoch, 'epoch_changed'} end
if since == offset then return {offset, epoch, 'recovered', {}} end
if ARGV[6] == '0' then return {offset, epoch, 'history_disabled'} end
local len = redis.call('LLEN', KEYS[2])
local first = offset - len + 1
if len == 0 or since + 1 < first then return {offset, epoch, 'too_old'} end
local items = redis.call('LRANGE', KEYS[2], since + 1 - first, -1)
local at = tonumber(string.match(items[1], '^[^\n]*\n[^\n]*\n[^\n]*\n([^\n]*)'))
if at < tonumber(ARGV[8]) - tonumber(ARGV[7]) then return {offset, epoch, 'too_old'} end
return {offset, epoch, 'recovered', items}
";

/// The retained entries after ARGV[4], at most ARGV[5]: `{offset, epoch, entries}`.
const PAGE_BODY: &str = r"
local len = redis.call('LLEN', KEYS[2])
local first = offset - len + 1
local from = math.max(tonumber(ARGV[4]) + 1, first)
local items = {}
if len > 0 and from <= offset then
  items = redis.call('LRANGE', KEYS[2], from - first, from - first + tonumber(ARGV[5]) - 1)
end
return {offset, epoch, items}
";

/// The stream read's Lua: [`PROLOGUE`] then [`READ_BODY`].
pub(super) fn read_lua() -> String {
    format!("{PROLOGUE}{READ_BODY}")
}

/// The scripts.
pub(super) struct Scripts {
    read: redis::Script,
    page: redis::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            read: redis::Script::new(&read_lua()),
            page: redis::Script::new(&format!("{PROLOGUE}{PAGE_BODY}")),
        }
    }
}

/// What a stream read is given: the room, `since` and what the app keeps; added to
/// the read script or to a script that embeds its Lua ([`read_lua`]).
pub(super) struct ReadArgs<'a> {
    pub key: &'a RoomKey,
    pub since: Option<&'a Since>,
    pub keep: Keep,
}

impl ReadArgs<'_> {
    /// Adds the read's keys and arguments (KEYS[1..2], ARGV[1..8]) to `invocation`.
    pub(super) fn add_to(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        let since = self.since;
        invocation
            .key(&stream_keys(self.key)[..])
            .arg(new_epoch())
            .arg(STREAM_TTL_MS)
            .arg(if since.is_some() { "1" } else { "0" })
            .arg(since.map_or(String::new(), |s| s.offset.to_string()))
            .arg(since.map_or("", |s| s.epoch.as_str()))
            .arg(self.keep.size)
            .arg(self.keep.ttl_ms)
            .arg(crate::clock::now_ms());
    }

    /// The read's answer as the hub takes it.
    pub(super) fn answer(&self, answer: &[Value]) -> Result<StreamRead, BrokerError> {
        let (offset, epoch) = head(answer)?;
        let recovery = match answer.get(2).and_then(text).as_deref() {
            None => None,
            Some("recovered") => {
                let frames: Vec<Frame> = entries(answer.get(3))
                    .iter()
                    .filter_map(|e| frame(self.key, e))
                    .map(|(_, _, f)| f)
                    .collect();
                Some(Ok(frames))
            }
            Some("epoch_changed") => Some(Err(NotRecovered::EpochChanged)),
            Some("too_old") => Some(Err(NotRecovered::TooOld)),
            Some("history_disabled") => Some(Err(NotRecovered::HistoryDisabled)),
            Some(_) => return Err(bad_answer()),
        };
        Ok(StreamRead { epoch, offset, recovery })
    }
}

/// The `{offset, epoch}` every read script's answer starts with.
fn head(answer: &[Value]) -> Result<(u64, Arc<str>), BrokerError> {
    let offset = answer.first().and_then(int).ok_or_else(bad_answer)?;
    let epoch = answer.get(1).and_then(text).ok_or_else(bad_answer)?;
    Ok((offset, Arc::from(epoch)))
}

/// A room's stream and history keys.
pub(super) fn stream_keys(key: &RoomKey) -> [String; 2] {
    let id = room_id(key);
    [room_key(STREAM_PREFIX, &id), room_key(HISTORY_PREFIX, &id)]
}

/// A fresh epoch.
pub(super) fn new_epoch() -> String {
    crate::domain::random_base62(8)
}

fn bad_answer() -> BrokerError {
    BrokerError::Unavailable("unexpected answer from a stream script".into())
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The entries of a script's answer, as they went through pub/sub.
fn entries(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}

/// An entry as the `event` frame subscribers got, with its offset and time.
fn frame(key: &RoomKey, entry: &str) -> Option<(u64, i64, Frame)> {
    let wire = decode(entry)?;
    let event = EventName::parse(wire.event).ok()?;
    let data: &serde_json::value::RawValue = serde_json::from_str(wire.data).ok()?;
    let text = ServerFrame::event(&key.room, &event, data, wire.offset, wire.timestamp);
    Some((wire.offset, wire.timestamp, Frame::from(text)))
}

impl RedisCluster {
    /// [`crate::hub::ClusterState::read_stream`] in Redis.
    pub(super) async fn stream_read(
        &self,
        key: &RoomKey,
        since: Option<&Since>,
        keep: Keep,
    ) -> Result<StreamRead, BrokerError> {
        let read = ReadArgs { key, since, keep };
        let mut invocation = self.streams.read.prepare_invoke();
        read.add_to(&mut invocation);
        let answer: Vec<Value> =
            invocation.invoke_async(&mut self.commands()).await.map_err(super::unavailable)?;
        read.answer(&answer)
    }

    /// [`crate::hub::ClusterState::history`] in Redis.
    pub(super) async fn stream_page(
        &self,
        key: &RoomKey,
        since: u64,
        limit: usize,
        keep: Keep,
    ) -> Result<HistoryPage, BrokerError> {
        let answer: Vec<Value> = self
            .streams
            .page
            .key(&stream_keys(key)[..])
            .arg(new_epoch())
            .arg(STREAM_TTL_MS)
            .arg("1")
            .arg(since)
            .arg(limit)
            .invoke_async(&mut self.commands())
            .await
            .map_err(super::unavailable)?;
        let (offset, epoch) = head(&answer)?;
        let cutoff = crate::clock::now_ms() - keep.ttl_ms;
        let events: Vec<HistoryEvent> = entries(answer.get(2))
            .iter()
            .filter_map(|e| decode(e))
            .filter(|w| w.timestamp >= cutoff)
            .filter_map(|w| {
                Some(HistoryEvent {
                    event: w.event.to_owned(),
                    data: serde_json::value::RawValue::from_string(w.data.to_owned()).ok()?,
                    offset: w.offset,
                    timestamp: w.timestamp,
                })
            })
            .collect();
        let complete = match events.first() {
            Some(first) => first.offset == since + 1,
            None => offset <= since,
        } && (keep.size > 0 || offset <= since);
        Ok(HistoryPage { epoch: Some(epoch), offset, complete, events })
    }
}
