//! Presence over the cluster: a room's members (`rc:members:{app:room}`, user → user_info),
//! which nodes hold each (`rc:member-nodes`, field `{user}\n{node}`) and on how many nodes each
//! is (`rc:member-count`). A user joins the room when its first node does and leaves when its
//! last node does, so `user-joined` and `user-left` are per user, not per node.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::{MEMBERS_PREFIX, RedisCluster, each_room, room_from_id, room_id, room_key};
use crate::domain::{Member, RoomKey};

/// Which nodes hold each member.
const MEMBER_NODES_PREFIX: &str = "rc:member-nodes:";
/// On how many nodes each member is.
const MEMBER_COUNT_PREFIX: &str = "rc:member-count:";
/// The presence rooms a node has members in: `rc:node-presence:{node}`.
const NODE_PRESENCE_PREFIX: &str = "rc:node-presence:";

/// Node ARGV[2] holds user ARGV[1] (user_info ARGV[3]): KEYS are the room's members, member
/// nodes and member counts. Returns 1 when the user is new to the room cluster-wide.
const JOIN_SCRIPT: &str = r"
if redis.call('HSETNX', KEYS[2], ARGV[1] .. '\n' .. ARGV[2], 1) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[3], ARGV[1], 1) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
";

/// Node ARGV[2] no longer holds user ARGV[1]; KEYS as for joining. Returns 1 when the user is
/// gone from the room cluster-wide.
const LEAVE_SCRIPT: &str = r"
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
const RESYNC_SCRIPT: &str = r"
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

pub(super) struct Scripts {
    join: redis::Script,
    leave: redis::Script,
    resync: redis::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            join: redis::Script::new(JOIN_SCRIPT),
            leave: redis::Script::new(LEAVE_SCRIPT),
            resync: redis::Script::new(RESYNC_SCRIPT),
        }
    }
}

/// A presence room's members, member-nodes and member-count hashes: the keys of the scripts.
fn presence_keys(id: &str) -> Vec<String> {
    vec![room_key(MEMBERS_PREFIX, id), room_key(MEMBER_NODES_PREFIX, id), room_key(MEMBER_COUNT_PREFIX, id)]
}

/// A node's set of presence rooms.
pub(super) fn node_presence(node: &str) -> String {
    format!("{NODE_PRESENCE_PREFIX}{node}")
}

impl RedisCluster {
    /// This node now holds `user_id` in the room: whether the user is new to it cluster-wide.
    pub(super) async fn presence_join(
        &self,
        key: &RoomKey,
        user_id: &str,
        user_info: &str,
    ) -> redis::RedisResult<bool> {
        let id = room_id(key);
        let mut commands = self.commands();
        // The node's set of presence rooms first: a superset is harmless, a missing room would
        // leave the node's members behind after it dies.
        redis::cmd("SADD")
            .arg(node_presence(&self.node_id))
            .arg(&id)
            .query_async::<()>(&mut commands)
            .await?;
        let joined: i64 = self
            .presence
            .join
            .key(presence_keys(&id))
            .arg(user_id)
            .arg(&self.node_id)
            .arg(user_info)
            .invoke_async(&mut commands)
            .await?;
        Ok(joined == 1)
    }

    /// This node no longer holds `user_id`: whether the user is gone from the room everywhere.
    pub(super) async fn presence_leave(&self, key: &RoomKey, user_id: &str) -> redis::RedisResult<bool> {
        let left: i64 = self
            .presence
            .leave
            .key(presence_keys(&room_id(key)))
            .arg(user_id)
            .arg(&self.node_id)
            .invoke_async(&mut self.commands())
            .await?;
        Ok(left == 1)
    }

    /// Members of a presence room over the cluster, by user id after `after`, at most `limit`,
    /// and how many there are.
    pub(super) async fn presence_members(
        &self,
        key: &RoomKey,
        after: Option<&str>,
        limit: usize,
    ) -> redis::RedisResult<(Vec<Member>, usize)> {
        // Whole hash, sorted by user id: fine for the rooms presence is for (hundreds to a few
        // thousand members); very large rooms pay one HGETALL per join.
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(room_key(MEMBERS_PREFIX, &room_id(key)))
            .query_async(&mut self.commands())
            .await?;
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
        Ok((members, count))
    }

    /// Replaces this node's presence entries with the registry's members: rooms it left are
    /// forgotten, in the others its members are the ones it has now. Returns the users gone
    /// from here (while Redis was away) and from everywhere else.
    pub(super) async fn resync_presence(
        &self,
        local: &HashSet<RoomKey>,
    ) -> redis::RedisResult<Vec<(RoomKey, String)>> {
        let presence: Vec<(RoomKey, Vec<Member>)> = local
            .iter()
            .filter(|k| k.room.is_presence())
            .filter_map(|k| Some((k.clone(), self.registry.members(k, None, usize::MAX)?.0)))
            .collect();
        let keep: HashSet<String> = presence.iter().map(|(k, _)| room_id(k)).collect();
        let mut gone = self.forget_presence(&self.node_id, &keep).await?;
        if !presence.is_empty() {
            let ids: Vec<&String> = keep.iter().collect();
            redis::cmd("SADD")
                .arg(node_presence(&self.node_id))
                .arg(ids)
                .query_async::<()>(&mut self.commands())
                .await?;
        }
        let resynced = each_room(presence, |(key, members)| {
            let mut commands = self.commands();
            async move {
                let mut call = self.presence.resync.key(presence_keys(&room_id(&key)));
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
        Ok(gone)
    }

    /// Removes a node's presence entries, room by room (but in the rooms `keep`); returns the
    /// members gone cluster-wide.
    pub(super) async fn forget_presence(
        &self,
        node: &str,
        keep: &HashSet<String>,
    ) -> redis::RedisResult<Vec<(RoomKey, String)>> {
        let gone = self
            .drain_rooms(&node_presence(node), keep, |id| {
                let mut commands = self.commands();
                async move {
                    let users: Vec<String> = self
                        .presence
                        .resync
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
}
