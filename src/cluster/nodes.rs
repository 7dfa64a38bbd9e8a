//! Liveness: each node refreshes `rc:alive:{node}` (expiring after the node timeout) and is in
//! the set `rc:nodes`; a node whose key expired (killed, or cut off from Redis) is dead, and
//! the others remove its counts and members, announcing what that empties. After its
//! subscription connection comes back, a node writes its own counts and members again.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::counts::NODE_ROOMS_PREFIX;
use super::rooms::unlist_each;
use super::{RedisCluster, each_room, room_from_id};
use crate::domain::RoomKey;
use crate::hub::ports::ClusterNews;

/// Every node's liveness key: `rc:alive:{node}`.
const ALIVE_PREFIX: &str = "rc:alive:";
/// The set of node ids that registered.
pub const NODES: &str = "rc:nodes";

impl RedisCluster {
    /// After (re)connecting: replaces this node's counts in Redis with the ones it keeps (a
    /// Redis that restarted lost them; decrements that failed while it was away left them
    /// wrong), and its presence entries with the registry's members; returns what the hub is
    /// to hear of it: rooms left empty and nobody elsewhere, members gone from here and from
    /// everywhere. The broker calls it before publications flow again, and tells the news
    /// once they do.
    pub async fn recount(&self) -> redis::RedisResult<Vec<ClusterNews>> {
        self.refresh_liveness().await?;
        let vacated = self.recount_rooms().await?;
        unlist_each(self, vacated.clone()).await?;
        let local: HashSet<RoomKey> =
            self.registry.room_keys().into_iter().filter(|k| self.registry.subscriber_count(k) > 0).collect();
        let gone = self.resync_presence(&local).await?;
        Ok(vacated
            .into_iter()
            .filter(|k| !local.contains(k))
            .map(ClusterNews::RoomVacated)
            .chain(gone.into_iter().map(|(key, user)| ClusterNews::MemberGone(key, user)))
            .collect())
    }

    /// Every third of the node timeout: refreshes this node's liveness key, and removes the
    /// counts of nodes whose key expired, reporting the rooms that leaves empty. Ends on
    /// `shutdown`.
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
        let mut commands = self.commands();
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
        if self.refresh_liveness().await? && self.link.is_up() {
            tracing::warn!(
                "this node was missing from the cluster's node set (Redis lost it, or the other nodes took this one for dead); writing its counts and members again"
            );
            let news = self.recount().await?;
            self.tell(news).await;
        }
        // Others are judged only after this node has been connected for a whole node timeout:
        // after Redis lost its keys, every live node has written its own again by then.
        if self.link.up_since().is_none_or(|at| at.elapsed() < self.node_timeout) {
            return Ok(());
        }
        let mut commands = self.commands();
        let nodes: Vec<String> = redis::cmd("SMEMBERS").arg(NODES).query_async(&mut commands).await?;
        for node in nodes.iter().filter(|n| **n != self.node_id) {
            let alive: bool =
                redis::cmd("EXISTS").arg(format!("{ALIVE_PREFIX}{node}")).query_async(&mut commands).await?;
            if !alive {
                let gone = self.forget_presence(node, &HashSet::new()).await?;
                let vacated = self.forget_node(node, true, &HashSet::new()).await?;
                tracing::warn!(node = %node, rooms_vacated = vacated.len(), members_gone = gone.len(), "a cluster node stopped refreshing its liveness; its subscriber counts and presence were removed");
                self.tell(gone.into_iter().map(|(key, user)| ClusterNews::MemberGone(key, user))).await;
                self.tell(vacated.into_iter().map(ClusterNews::RoomVacated)).await;
            }
        }
        Ok(())
    }

    /// At shutdown, after every local client left: removes what is left of this node.
    pub async fn deregister(&self) {
        let done: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(format!("{ALIVE_PREFIX}{}", self.node_id))
            .query_async(&mut self.commands())
            .await;
        let none = HashSet::new();
        let presence = self.forget_presence(&self.node_id, &none).await.map(drop);
        if let Err(e) = done.and(presence).and(self.forget_node(&self.node_id, true, &none).await.map(drop)) {
            tracing::warn!(error = %e, "cannot remove this node from Redis; the others will after the node timeout");
        }
    }

    /// Runs `f` for each room of a node's room set `set` but those in `keep` (room by room),
    /// then takes those rooms out of the set; rooms added meanwhile stay.
    pub(super) async fn drain_rooms<T, F, Fut>(
        &self,
        set: &str,
        keep: &HashSet<String>,
        f: F,
    ) -> redis::RedisResult<Vec<T>>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut commands = self.commands();
        let mut rooms: Vec<String> = redis::cmd("SMEMBERS").arg(set).query_async(&mut commands).await?;
        rooms.retain(|id| !keep.contains(id));
        let done = each_room(rooms.clone(), f).await?;
        if !rooms.is_empty() {
            redis::cmd("SREM").arg(set).arg(&rooms).query_async::<()>(&mut commands).await?;
        }
        Ok(done)
    }

    /// Removes a node's counts, room by room (but in the rooms `keep`), and the node itself
    /// from the node set when `gone`; returns the rooms this call left empty.
    async fn forget_node(
        &self,
        node: &str,
        gone: bool,
        keep: &HashSet<String>,
    ) -> redis::RedisResult<Vec<RoomKey>> {
        let vacated = self
            .drain_rooms(&format!("{NODE_ROOMS_PREFIX}{node}"), keep, |id| async move {
                Ok(self.forget_count(&id, node).await?.then(|| room_from_id(&id)).flatten())
            })
            .await?;
        if gone {
            redis::cmd("SREM").arg(NODES).arg(node).query_async::<()>(&mut self.commands()).await?;
        }
        let vacated: Vec<RoomKey> = vacated.into_iter().flatten().collect();
        unlist_each(self, vacated.clone()).await?;
        Ok(vacated)
    }
}
