//! The single-node implementations of the hub's ports: a broker that hands each publication
//! straight to the hub's [`Inbox`], and a cluster state that answers from this node's
//! registry. Neither can fail.

use std::sync::Arc;

use async_trait::async_trait;

use super::ports::{Broker, BrokerError, ClusterState, Inbox, Publication, Published};
use super::registry::{HistoryPage, Registry, RoomInfo};
use super::stream::{Keep, Since, StreamRead};
use crate::clock::now_ms;
use crate::domain::{Member, RoomKey};

/// In-process [`Broker`]: publishing is delivering.
#[derive(Debug)]
pub struct LocalBroker {
    inbox: Arc<dyn Inbox>,
}

impl LocalBroker {
    /// A broker delivering into `inbox`.
    pub fn new(inbox: Arc<dyn Inbox>) -> Self {
        Self { inbox }
    }
}

#[async_trait]
impl Broker for LocalBroker {
    async fn publish(&self, publication: &Publication<'_>) -> Result<Published, BrokerError> {
        let outcome = self.inbox.deliver(publication, None);
        Ok(Published {
            offset: outcome.offset,
            epoch: outcome.epoch.unwrap_or_default(),
            subscribers: outcome.subscribers,
        })
    }

    async fn subscribe(&self, _key: &RoomKey) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn unsubscribe(&self, _key: &RoomKey) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn close_user(&self, app_id: &str, user_id: &str) -> Result<(), BrokerError> {
        self.inbox.close_user(app_id, user_id);
        Ok(())
    }
}

/// [`ClusterState`] of one node: this node's registry is the whole cluster.
#[derive(Debug)]
pub struct LocalCluster {
    registry: Arc<Registry>,
}

impl LocalCluster {
    /// The state of the rooms in `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl ClusterState for LocalCluster {
    async fn count(&self, _key: &RoomKey, _delta: i64, here: usize) -> Result<usize, BrokerError> {
        Ok(here)
    }

    async fn subscribers(&self, key: &RoomKey) -> Result<usize, BrokerError> {
        Ok(self.registry.subscriber_count(key))
    }

    async fn member_joined(&self, _key: &RoomKey, _member: &Member) -> Result<bool, BrokerError> {
        Ok(true)
    }

    async fn member_left(&self, _key: &RoomKey, _user_id: &str) -> Result<bool, BrokerError> {
        Ok(true)
    }

    async fn members_on_join(
        &self,
        _key: &RoomKey,
        here: (Vec<Member>, usize),
        _limit: usize,
    ) -> Result<(Vec<Member>, usize), BrokerError> {
        Ok(here)
    }

    async fn members(
        &self,
        key: &RoomKey,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(Vec<Member>, usize)>, BrokerError> {
        Ok(self.registry.members(key, after, limit))
    }

    async fn read_stream(
        &self,
        key: &RoomKey,
        since: Option<&Since>,
        keep: Keep,
    ) -> Result<StreamRead, BrokerError> {
        Ok(self.registry.read_stream(key, since, keep, now_ms()))
    }

    async fn history(
        &self,
        key: &RoomKey,
        since: u64,
        limit: usize,
        keep: Keep,
    ) -> Result<HistoryPage, BrokerError> {
        Ok(self.registry.history(key, since, limit, keep, now_ms()))
    }

    async fn rooms_page(
        &self,
        app_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<RoomInfo>, bool), BrokerError> {
        Ok(self.registry.rooms_of(app_id, prefix, after, limit))
    }
}
