//! The single-node broker: a publication goes straight to this node's registry.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Broker, BrokerError, Publication};
use crate::hub::fanout;
use crate::hub::registry::{FanoutOutcome, Registry, RoomKey};

/// In-process [`Broker`], the default.
#[derive(Debug)]
pub struct LocalBroker {
    registry: Arc<Registry>,
}

impl LocalBroker {
    /// A broker delivering into `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl Broker for LocalBroker {
    async fn publish(&self, publication: &Publication<'_>) -> Result<FanoutOutcome, BrokerError> {
        Ok(fanout(&self.registry, publication))
    }

    async fn subscribe(&self, _key: &RoomKey) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn unsubscribe(&self, _key: &RoomKey) -> Result<(), BrokerError> {
        Ok(())
    }
}
