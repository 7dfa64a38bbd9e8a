//! The counters the hub and the sessions update on every event. The server's recorder
//! registers them (the server's metrics service); a hub built alone records nothing.

use ::metrics::{Counter, Histogram};

use super::events::PublishKind;
use super::stream::NotRecovered;

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A subscriber's queue was full (it is closed with 4008).
    SlowConsumer,
    /// A client frame over the connection's rate limit.
    RateLimit,
    /// A frame or event over `limits.max_message_bytes`.
    Oversize,
}

/// The counters the hub and sessions update on every event; cheap to clone.
#[derive(Debug, Clone)]
pub struct HubMetrics {
    pub connections_opened: Counter,
    published: [Counter; 3],
    pub delivered: Counter,
    dropped: [Counter; 3],
    pub fanout_seconds: Histogram,
    /// Recovering subscribes: recovered, then each [`NotRecovered`] reason.
    recoveries: [Counter; 4],
}

impl Default for HubMetrics {
    /// Handles that record nothing (hubs built without a server, as in unit tests).
    fn default() -> Self {
        Self {
            connections_opened: Counter::noop(),
            published: [Counter::noop(), Counter::noop(), Counter::noop()],
            delivered: Counter::noop(),
            dropped: [Counter::noop(), Counter::noop(), Counter::noop()],
            fanout_seconds: Histogram::noop(),
            recoveries: [Counter::noop(), Counter::noop(), Counter::noop(), Counter::noop()],
        }
    }
}

impl HubMetrics {
    /// Handles registered by the server's recorder: publications and drops in the order of
    /// [`PublishKind`] and [`DropReason`].
    pub fn new(
        connections_opened: Counter,
        published: [Counter; 3],
        delivered: Counter,
        dropped: [Counter; 3],
        fanout_seconds: Histogram,
        recoveries: [Counter; 4],
    ) -> Self {
        Self { connections_opened, published, delivered, dropped, fanout_seconds, recoveries }
    }

    /// The names of the recovery outcomes, in the order [`HubMetrics::new`] takes them.
    pub const RECOVERY_OUTCOMES: [&'static str; 4] =
        ["recovered", "epoch_changed", "too_old", "history_disabled"];

    /// One recovering subscribe that recovered (`None`) or not, for this reason.
    pub fn recovery(&self, not: Option<NotRecovered>) -> &Counter {
        &self.recoveries[match not {
            None => 0,
            Some(NotRecovered::EpochChanged) => 1,
            Some(NotRecovered::TooOld) => 2,
            Some(NotRecovered::HistoryDisabled) => 3,
        }]
    }

    /// One publication of `kind`.
    pub fn published(&self, kind: PublishKind) -> &Counter {
        &self.published[match kind {
            PublishKind::Broadcast => 0,
            PublishKind::Client => 1,
            PublishKind::System => 2,
        }]
    }

    /// Messages dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> &Counter {
        &self.dropped[match reason {
            DropReason::SlowConsumer => 0,
            DropReason::RateLimit => 1,
            DropReason::Oversize => 2,
        }]
    }
}
