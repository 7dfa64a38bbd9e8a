//! The seam between the hub and the transport of publications between nodes. A node subscribes
//! to a room when its first local subscriber joins and unsubscribes after the last one leaves.

pub mod local;
pub mod redis;

use async_trait::async_trait;
use serde_json::value::RawValue;

use crate::hub::registry::{FanoutOutcome, Member, RoomKey};
use crate::protocol::EventName;

/// One event on its way to a room's subscribers.
#[derive(Debug)]
pub struct Publication<'a> {
    pub key: RoomKey,
    pub event: EventName,
    pub data: &'a RawValue,
    /// Registry sequence number of a connection that must not receive it.
    pub exclude: Option<u64>,
    pub timestamp: i64,
}

/// Why a broker call failed: publications reached no one, so retrying is safe.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Carries publications to every node that has subscribers of the room.
#[async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes and reports what this node's fan-out reached.
    async fn publish(&self, publication: &Publication<'_>) -> Result<FanoutOutcome, BrokerError>;
    /// Starts receiving the room's publications; returns once they flow.
    async fn subscribe(&self, key: &RoomKey) -> Result<(), BrokerError>;
    /// Stops receiving the room's publications.
    async fn unsubscribe(&self, key: &RoomKey) -> Result<(), BrokerError>;
    /// Records that this node's subscribers of `key` changed by `delta` and returns the room's
    /// subscribers over the whole cluster; `None` on a single node, where the registry's count
    /// is the room's.
    async fn count_subscribers(&self, _key: &RoomKey, _delta: i64) -> Result<Option<usize>, BrokerError> {
        Ok(None)
    }
    /// The room's subscribers over the whole cluster; `None` on a single node.
    async fn subscriber_total(&self, _key: &RoomKey) -> Result<Option<usize>, BrokerError> {
        Ok(None)
    }
    /// A user's first connection on this node joined a presence room: returns whether it is the
    /// user's first anywhere (a cluster-wide `user-joined`); `None` on a single node.
    async fn presence_join(
        &self,
        _key: &RoomKey,
        _user_id: &str,
        _user_info: &RawValue,
    ) -> Result<Option<bool>, BrokerError> {
        Ok(None)
    }
    /// A user's last connection on this node left: returns whether it was the user's last
    /// anywhere (a cluster-wide `user-left`); `None` on a single node.
    async fn presence_leave(&self, _key: &RoomKey, _user_id: &str) -> Result<Option<bool>, BrokerError> {
        Ok(None)
    }
    /// Members of a presence room over the cluster, by user id after `after`, at most `limit`,
    /// and how many there are; `None` on a single node.
    async fn presence_members(
        &self,
        _key: &RoomKey,
        _after: Option<&str>,
        _limit: usize,
    ) -> Result<Option<(Vec<Member>, usize)>, BrokerError> {
        Ok(None)
    }
    /// Occupied rooms of `app_id` over the cluster whose names start with `prefix`, in name
    /// order after `after`: at most `limit`, and whether more follow; `None` on a single node.
    async fn rooms_page(
        &self,
        _app_id: &str,
        _prefix: &str,
        _after: Option<&str>,
        _limit: usize,
    ) -> Result<Option<(Vec<crate::hub::registry::RoomInfo>, bool)>, BrokerError> {
        Ok(None)
    }
}
