//! Each app's list of rooms that may be occupied, in name order, for `GET /api/rooms`: a
//! sorted set `rc:rooms:{app}` (all scores 0) and the time each became occupied,
//! `rc:room-since:{app}`. A room is listed when its first subscriber anywhere is counted and
//! unlisted when the last one goes; listing checks the counts, so a room that emptied a moment
//! ago is skipped.

use super::{MEMBERS_PREFIX, RedisCluster, each_room, room_id, room_key};
use crate::domain::{AppId, RoomKey};
use crate::hub::registry::RoomInfo;
use crate::protocol::RoomName;

/// The rooms of an app that may be occupied.
const ROOMS_PREFIX: &str = "rc:rooms:";
/// When each of them became occupied: room → ms (raised by one when a room is occupied again
/// within the same millisecond, so each occupation has its own value).
const SINCE_PREFIX: &str = "rc:room-since:";

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

pub(super) struct Scripts {
    occupy: redis::Script,
    unlist: redis::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self { occupy: redis::Script::new(OCCUPY_SCRIPT), unlist: redis::Script::new(UNLIST_SCRIPT) }
    }
}

/// An app's room list and occupation times (tag `{app}`).
fn room_list_keys(app_id: &str) -> [String; 2] {
    [format!("{ROOMS_PREFIX}{{{app_id}}}"), format!("{SINCE_PREFIX}{{{app_id}}}")]
}

impl RedisCluster {
    /// Lists the room as occupied now; with `again`, a room already listed keeps its time.
    pub(super) async fn list_room(&self, key: &RoomKey, again: bool) -> redis::RedisResult<()> {
        let _: i64 = self
            .rooms
            .occupy
            .key(&room_list_keys(&key.app_id)[..])
            .arg(key.room.as_str())
            .arg(crate::clock::now_ms())
            .arg(i32::from(again))
            .invoke_async(&mut self.commands())
            .await?;
        Ok(())
    }

    /// Takes a room off its app's list when nobody is in it, unless it was occupied again
    /// meanwhile (its occupation time then changed).
    pub(super) async fn unlist_if_empty(&self, key: &RoomKey) -> redis::RedisResult<()> {
        let [rooms, since] = room_list_keys(&key.app_id);
        let mut commands = self.commands();
        let at: Option<String> =
            redis::cmd("HGET").arg(&since).arg(key.room.as_str()).query_async(&mut commands).await?;
        let Some(at) = at else { return Ok(()) };
        if self.total(key).await? > 0 {
            return Ok(());
        }
        let _: i64 = self
            .rooms
            .unlist
            .key(&rooms)
            .key(&since)
            .arg(key.room.as_str())
            .arg(at)
            .invoke_async(&mut commands)
            .await?;
        Ok(())
    }

    /// Occupied rooms of `app_id` over the cluster whose names start with `prefix`, in name
    /// order after `after`: at most `limit`, and whether more follow.
    pub(super) async fn list_rooms(
        &self,
        app_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> redis::RedisResult<(Vec<RoomInfo>, bool)> {
        let [rooms_key, since_key] = room_list_keys(app_id);
        let mut commands = self.commands();
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
                .await?;
            let Some(last) = names.last() else { break };
            min = format!("({last}");
            let since: Vec<Option<i64>> =
                redis::cmd("HMGET").arg(&since_key).arg(&names).query_async(&mut commands).await?;
            let app_id = AppId::known(app_id);
            let rooms =
                each_room(names.iter().cloned().zip(since), |(name, since): (String, Option<i64>)| {
                    let app_id = app_id.clone();
                    let mut commands = self.commands();
                    async move {
                        let Ok(room) = RoomName::parse(&name) else { return Ok(None) };
                        let key = RoomKey { app_id, room };
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
                .await?;
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
                    self.unlist_if_empty(&key).await?;
                }
            }
            if found.len() > limit || !more {
                break;
            }
        }
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more))
    }
}

/// Unlists each room of `rooms` that nobody is in.
pub(super) async fn unlist_each(cluster: &RedisCluster, rooms: Vec<RoomKey>) -> redis::RedisResult<()> {
    each_room(rooms, |key| async move { cluster.unlist_if_empty(&key).await }).await.map(drop)
}
