//! What the hub needs from the layer above it, as traits that layer implements: a [`Broker`]
//! carrying publications between nodes and a [`ClusterState`] keeping counts, presence and room
//! lists. Each has a local implementation (one node) and a Redis one (a cluster); the hub calls
//! them the same way in both cases. Publications reach this node's subscribers through one
//! [`Inbox`], the hub's fan-out, whichever broker carried them.

use async_trait::async_trait;
use serde_json::value::RawValue;

use super::registry::{FanoutOutcome, HistoryPage, RoomInfo};
use super::stream::{Keep, Since, StreamRead};
use crate::domain::{Member, RoomKey};
use crate::protocol::EventName;

/// One event on its way to a room's subscribers.
#[derive(Debug)]
pub struct Publication<'a> {
    pub key: RoomKey,
    pub event: EventName,
    pub data: &'a RawValue,
    /// A connection that must not receive it, on whichever node it is.
    pub exclude: Option<crate::domain::ConnectionId>,
    /// The user who sent a client event to a presence room (Pusher clients are told who).
    pub sender: Option<std::sync::Arc<str>>,
    pub timestamp: i64,
    /// What the room keeps of it: the app's `history` (DESIGN §11).
    pub keep: Keep,
}

/// What publishing assigned: the event's offset in its room's stream and the stream's epoch,
/// and the room's subscribers over the cluster at that moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Published {
    pub offset: u64,
    pub epoch: std::sync::Arc<str>,
    pub subscribers: usize,
}

/// Why a broker or cluster-state call failed: publications reached no one, so retrying is safe.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Where a broker hands publications for this node's subscribers: the hub's fan-out.
pub trait Inbox: Send + Sync + std::fmt::Debug + 'static {
    /// Fans `publication` out to this node's subscribers of its room, with the offset the
    /// broker assigned (`None`: the room's next one, kept by this node).
    fn deliver(&self, publication: &Publication<'_>, offset: Option<u64>) -> FanoutOutcome;
    /// Closes this node's connections of `user_id` in `app_id` (terminated); how many.
    fn close_user(&self, app_id: &str, user_id: &str) -> usize;
}

/// Carries publications to every node that has subscribers of the room. Every local subscriber
/// of a room subscribes when it joins and unsubscribes when it leaves; a broker that needs to
/// (Redis) counts them, subscribes the node when the first one comes and unsubscribes it when
/// the last one goes, and `subscribe` returns only once the room's publications reach the node.
#[async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes; this node's subscribers get it through the [`Inbox`] like every other
    /// node's, before or after this returns.
    async fn publish(&self, publication: &Publication<'_>) -> Result<Published, BrokerError>;
    /// Starts receiving the room's publications; returns once they flow.
    async fn subscribe(&self, key: &RoomKey) -> Result<(), BrokerError>;
    /// Stops receiving the room's publications.
    async fn unsubscribe(&self, key: &RoomKey) -> Result<(), BrokerError>;
    /// Has every node (this one too) close the connections of `user_id` in `app_id`, through
    /// its [`Inbox`].
    async fn close_user(&self, app_id: &str, user_id: &str) -> Result<(), BrokerError>;
}

/// The state of rooms over all nodes. Each call is told what this node's registry saw, which
/// is the whole answer on one node.
#[async_trait]
pub trait ClusterState: Send + Sync + std::fmt::Debug + 'static {
    /// This node's subscribers of `key` changed by `delta` (1 or -1), leaving `here` on this
    /// node; returns the room's subscribers over the cluster.
    async fn count(&self, key: &RoomKey, delta: i64, here: usize) -> Result<usize, BrokerError>;
    /// The room's subscribers over the cluster.
    async fn subscribers(&self, key: &RoomKey) -> Result<usize, BrokerError>;
    /// A user's first connection on this node joined a presence room: whether it is the
    /// user's first anywhere (then the room hears `user-joined`).
    async fn member_joined(&self, key: &RoomKey, member: &Member) -> Result<bool, BrokerError>;
    /// A user's last connection on this node left: whether it was the user's last anywhere.
    async fn member_left(&self, key: &RoomKey, user_id: &str) -> Result<bool, BrokerError>;
    /// The member list a joining connection gets, at most `limit`, and how many there are;
    /// `here` is the registry's, taken as the connection joined.
    async fn members_on_join(
        &self,
        key: &RoomKey,
        here: (Vec<Member>, usize),
        limit: usize,
    ) -> Result<(Vec<Member>, usize), BrokerError>;
    /// Members of a presence room by user id after `after`, at most `limit`, and how many
    /// there are; `None` when nobody is in the room.
    async fn members(
        &self,
        key: &RoomKey,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(Vec<Member>, usize)>, BrokerError>;
    /// Where the room's stream stands for a connection that just joined it (held pending by
    /// the registry), and with `since` what it missed, the app keeping `keep`.
    async fn read_stream(
        &self,
        key: &RoomKey,
        since: Option<&Since>,
        keep: Keep,
    ) -> Result<StreamRead, BrokerError>;
    /// A connection joined `key` on this node (held pending by the registry), leaving `here`:
    /// [`ClusterState::count`] and [`ClusterState::read_stream`] in one step where the state
    /// allows it (one Redis round trip in cluster mode).
    async fn count_and_read(
        &self,
        key: &RoomKey,
        here: usize,
        since: Option<&Since>,
        keep: Keep,
    ) -> Result<(usize, StreamRead), BrokerError> {
        let total = self.count(key, 1, here).await?;
        Ok((total, self.read_stream(key, since, keep).await?))
    }
    /// The room's retained events after offset `since`, at most `limit`.
    async fn history(
        &self,
        key: &RoomKey,
        since: u64,
        limit: usize,
        keep: Keep,
    ) -> Result<HistoryPage, BrokerError>;
    /// Occupied rooms of `app_id` whose names start with `prefix`, in name order after `after`:
    /// at most `limit`, and whether more follow.
    async fn rooms_page(
        &self,
        app_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<RoomInfo>, bool), BrokerError>;
}

/// What the cluster state learns on its own and the hub must act on: news from dead nodes and
/// from recounts after Redis came back.
#[derive(Debug, Clone)]
pub enum ClusterNews {
    /// Nobody is left in the room on any node.
    RoomVacated(RoomKey),
    /// The user's last connection anywhere is gone: the room hears `user-left`.
    MemberGone(RoomKey, String),
}
