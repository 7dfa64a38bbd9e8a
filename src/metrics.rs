//! Prometheus metrics (`GET /metrics`): one recorder per server (metrics-exporter-prometheus),
//! with the hot-path counters registered once as handles so an increment is one atomic add and
//! never a name lookup. Label sets are bounded: app ids, route templates, status codes, kinds and
//! reasons; never room names or user ids. Gauges that describe the hub's state (connections,
//! rooms, subscriptions, uptime) are set when the page is rendered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

pub use crate::hub::metrics::{DropReason, HubMetrics};

const META: Metadata<'static> = Metadata::new("roomcast", Level::INFO, Some(module_path!()));

/// Buckets of the fan-out histogram: 10 µs to 1 s.
const FANOUT_BUCKETS: &[f64] =
    &[0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
/// Buckets of the HTTP histogram: 100 µs to 10 s.
const HTTP_BUCKETS: &[f64] =
    &[0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// How one webhook delivery attempt (or a matched event) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// A 2xx answer.
    Succeeded,
    /// A failed attempt with another one scheduled.
    Retried,
    /// A failed attempt that ended the delivery (out of retries, or 410).
    Failed,
    /// A matched event the full intake queue refused: no delivery was made.
    Dropped,
}

/// Counters of webhook deliveries by outcome; cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    outcomes: [Counter; 4],
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self { outcomes: [Counter::noop(), Counter::noop(), Counter::noop(), Counter::noop()] }
    }
}

impl WebhookMetrics {
    /// The counter of `outcome`.
    pub fn outcome(&self, outcome: WebhookOutcome) -> &Counter {
        &self.outcomes[outcome as usize]
    }
}

/// How a node's question to the store about a credential its caches do not know ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupOutcome {
    /// The store had it; it is cached now.
    Found,
    /// The store does not have it either.
    Missing,
    /// Not asked: the same id was asked about less than a second ago.
    Recent,
    /// Not asked: the node's budget (`limits.store_lookups_per_s`) was spent.
    Throttled,
    /// The store did not answer.
    Failed,
}

/// Counters of store lookups by outcome; cheap to clone.
#[derive(Debug, Clone)]
pub struct LookupMetrics {
    outcomes: [Counter; 5],
}

impl Default for LookupMetrics {
    fn default() -> Self {
        Self { outcomes: std::array::from_fn(|_| Counter::noop()) }
    }
}

impl LookupMetrics {
    /// The counter of `outcome`.
    pub fn outcome(&self, outcome: LookupOutcome) -> &Counter {
        &self.outcomes[outcome as usize]
    }
}

/// Why a connection was refused before it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReason {
    /// Its client IP holds `limits.connections_per_ip` connections already.
    IpLimit,
    /// The node is at `limits.max_connections` WebSockets or over `limits.max_memory_mb`.
    NodeFull,
}

/// Why the listener closed an HTTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedReason {
    /// Its request headers did not arrive within `server.header_timeout_s`.
    HeaderTimeout,
    /// It sat idle between requests for `server.http_idle_timeout_s`.
    IdleTimeout,
    /// Its request was not answered within `server.request_timeout_s`.
    RequestTimeout,
}

impl ClosedReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedReason::HeaderTimeout => "header_timeout",
            ClosedReason::IdleTimeout => "idle_timeout",
            ClosedReason::RequestTimeout => "request_timeout",
        }
    }
}

/// Counters of the listener; cheap to clone.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    refused: [Counter; 2],
    closed: [Counter; 3],
    accept_errors: [Counter; 2],
}

impl Default for ListenerMetrics {
    fn default() -> Self {
        Self {
            refused: std::array::from_fn(|_| Counter::noop()),
            closed: std::array::from_fn(|_| Counter::noop()),
            accept_errors: std::array::from_fn(|_| Counter::noop()),
        }
    }
}

impl ListenerMetrics {
    /// Connections refused for `reason`.
    pub fn refused(&self, reason: RefusedReason) -> &Counter {
        &self.refused[reason as usize]
    }

    /// HTTP connections closed for `reason`.
    pub fn closed(&self, reason: ClosedReason) -> &Counter {
        &self.closed[reason as usize]
    }

    /// Failed accepts: for want of file descriptors, or for another reason.
    pub fn accept_error(&self, out_of_files: bool) -> &Counter {
        &self.accept_errors[usize::from(!out_of_files)]
    }
}

/// The type of a metric family, for its `# TYPE` line.
#[derive(Debug, Clone, Copy)]
enum Family {
    Counter,
    Gauge,
    Histogram,
}

/// The recorder, its rendering handle and the handles registered on it.
#[derive(Debug)]
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub hub: HubMetrics,
    pub webhooks: WebhookMetrics,
    pub lookups: LookupMetrics,
    pub listener: ListenerMetrics,
    http: DashMap<(String, u16), Histogram>,
    connections: DashMap<crate::domain::AppId, Gauge>,
    rooms: Gauge,
    history_bytes: Gauge,
    subscriptions: Gauge,
    uptime: Gauge,
    full: Gauge,
    events_dropped: Counter,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh recorder with every family described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("roomcast_fanout_duration_seconds".into()), FANOUT_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("roomcast_http_request_duration_seconds".into()),
                    HTTP_BUCKETS,
                )
            })
            .expect("static, non-empty bucket lists")
            .build_recorder();
        let handle = recorder.handle();
        use Family::{Counter as C, Gauge as G, Histogram as H};
        let families = [
            (G, "roomcast_connections", None, "Open WebSocket connections on this node, per app."),
            (C, "roomcast_connections_opened_total", None, "WebSocket connections accepted since start."),
            (G, "roomcast_rooms", None, "Occupied rooms on this node."),
            (G, "roomcast_subscriptions", None, "Connection-room subscriptions on this node."),
            (
                C,
                "roomcast_recoveries_total",
                None,
                "Subscribes with since, by outcome: recovered, epoch_changed, too_old, history_disabled.",
            ),
            (
                G,
                "roomcast_history_bytes",
                Some(Unit::Bytes),
                "Bytes of room history this node keeps in memory (a cluster keeps it in Redis).",
            ),
            (
                C,
                "roomcast_messages_published_total",
                None,
                "Events published, by kind: broadcast (HTTP), client (client events), system (presence).",
            ),
            (C, "roomcast_messages_delivered_total", None, "Event frames placed in subscribers' queues."),
            (
                C,
                "roomcast_messages_dropped_total",
                None,
                "Messages not delivered, by reason: slow_consumer, rate_limit, oversize.",
            ),
            (
                H,
                "roomcast_fanout_duration_seconds",
                Some(Unit::Seconds),
                "Time from a publish to the last subscriber queue holding the frame.",
            ),
            (
                H,
                "roomcast_http_request_duration_seconds",
                Some(Unit::Seconds),
                "HTTP request duration by route template and status.",
            ),
            (C, "roomcast_hub_events_dropped_total", None, "Hub events a full listener queue refused."),
            (
                C,
                "roomcast_webhook_deliveries_total",
                None,
                "Webhook delivery attempts by outcome (succeeded, retried, failed), and matched events \
                 dropped before a delivery was made (dropped).",
            ),
            (
                C,
                "roomcast_store_lookups_total",
                None,
                "Questions about credentials the node's caches did not know, by outcome: found and \
                 missing (the store was read), recent and throttled (it was not), failed.",
            ),
            (
                C,
                "roomcast_connections_refused_total",
                None,
                "Connections refused before being served, by reason: ip_limit (limits.connections_per_ip), \
                 node_full (limits.max_connections or limits.max_memory_mb).",
            ),
            (
                C,
                "roomcast_http_connections_closed_total",
                None,
                "HTTP connections the listener closed, by reason: header_timeout, idle_timeout, request_timeout.",
            ),
            (
                C,
                "roomcast_accept_errors_total",
                None,
                "Failed accepts, by kind: out_of_files (EMFILE/ENFILE; the loop waits and goes on), other.",
            ),
            (
                G,
                "roomcast_full",
                None,
                "1 while this node refuses new WebSocket connections (at its connection or memory bound).",
            ),
            (G, "roomcast_build_info", None, "Always 1; the labels name the build."),
            (G, "roomcast_uptime_seconds", Some(Unit::Seconds), "Seconds since this process started."),
            (
                G,
                "roomcast_redis_up",
                None,
                "Cluster mode: 1 while this node's Redis link is up, 0 while it is down.",
            ),
        ];
        for (family, name, unit, help) in families {
            let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
            match family {
                C => recorder.describe_counter(name, unit, help),
                G => recorder.describe_gauge(name, unit, help),
                H => recorder.describe_histogram(name, unit, help),
            }
        }
        let counter = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::from_static_parts(k, v)).collect();
            recorder.register_counter(&Key::from_parts(name, labels), &META)
        };
        let published = ["broadcast", "client", "system"]
            .map(|k| counter("roomcast_messages_published_total", &[("kind", k)]));
        let dropped = ["slow_consumer", "rate_limit", "oversize"]
            .map(|r| counter("roomcast_messages_dropped_total", &[("reason", r)]));
        let hub = HubMetrics::new(
            counter("roomcast_connections_opened_total", &[]),
            published,
            counter("roomcast_messages_delivered_total", &[]),
            dropped,
            recorder.register_histogram(&Key::from_name("roomcast_fanout_duration_seconds"), &META),
            HubMetrics::RECOVERY_OUTCOMES.map(|o| counter("roomcast_recoveries_total", &[("outcome", o)])),
        );
        let webhooks = WebhookMetrics {
            outcomes: ["succeeded", "retried", "failed", "dropped"]
                .map(|o| counter("roomcast_webhook_deliveries_total", &[("outcome", o)])),
        };
        let lookups = LookupMetrics {
            outcomes: ["found", "missing", "recent", "throttled", "failed"]
                .map(|o| counter("roomcast_store_lookups_total", &[("outcome", o)])),
        };
        let listener = ListenerMetrics {
            refused: ["ip_limit", "node_full"]
                .map(|r| counter("roomcast_connections_refused_total", &[("reason", r)])),
            closed: ["header_timeout", "idle_timeout", "request_timeout"]
                .map(|r| counter("roomcast_http_connections_closed_total", &[("reason", r)])),
            accept_errors: ["out_of_files", "other"]
                .map(|k| counter("roomcast_accept_errors_total", &[("kind", k)])),
        };
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_name(name), &META);
        let build = Key::from_parts(
            "roomcast_build_info",
            vec![Label::from_static_parts("version", env!("CARGO_PKG_VERSION"))],
        );
        recorder.register_gauge(&build, &META).set(1.0);
        Self {
            rooms: gauge("roomcast_rooms"),
            history_bytes: gauge("roomcast_history_bytes"),
            subscriptions: gauge("roomcast_subscriptions"),
            uptime: gauge("roomcast_uptime_seconds"),
            events_dropped: recorder
                .register_counter(&Key::from_name("roomcast_hub_events_dropped_total"), &META),
            hub,
            webhooks,
            lookups,
            listener,
            full: gauge("roomcast_full"),
            http: DashMap::new(),
            connections: DashMap::new(),
            handle,
            recorder,
            started: Instant::now(),
        }
    }

    /// Records one HTTP request.
    pub fn http_request(&self, route: &str, status: u16, took: Duration) {
        let histogram = self
            .http
            .entry((route.to_owned(), status))
            .or_insert_with(|| {
                let labels =
                    vec![Label::new("route", route.to_owned()), Label::new("status", status.to_string())];
                self.recorder.register_histogram(
                    &Key::from_parts("roomcast_http_request_duration_seconds", labels),
                    &META,
                )
            })
            .clone();
        histogram.record(took.as_secs_f64());
    }

    /// Starts the upkeep job: [`Metrics::upkeep`] every 5 s until `shutdown`.
    pub fn start(
        self: &Arc<Self>,
        shutdown: &tokio_util::sync::CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        let metrics = self.clone();
        crate::shutdown::start_every(Duration::from_secs(5), shutdown, tracker, move || metrics.upkeep());
    }

    /// Keeps histogram storage bounded between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The exposition text, with the state gauges read from `hub` first; `full` says whether
    /// the node refuses new connections now, `redis_up` whether its Redis link is up (cluster
    /// mode only: a single node has no `roomcast_redis_up`).
    pub fn render(&self, hub: &crate::hub::Hub, full: bool, redis_up: Option<bool>) -> String {
        if let Some(up) = redis_up {
            let gauge = self.recorder.register_gauge(&Key::from_name("roomcast_redis_up"), &META);
            gauge.set(if up { 1.0 } else { 0.0 });
        }
        self.rooms.set(hub.registry().room_count() as f64);
        self.history_bytes.set(hub.registry().history_bytes() as f64);
        self.subscriptions.set(hub.registry().subscription_count() as f64);
        self.uptime.set(self.started.elapsed().as_secs_f64().floor());
        self.full.set(if full { 1.0 } else { 0.0 });
        self.events_dropped.absolute(hub.events().dropped());
        let counts: std::collections::HashMap<crate::domain::AppId, usize> =
            hub.connections_per_app().into_iter().collect();
        // Apps seen before and now without connections show 0 rather than a stale value.
        for entry in self.connections.iter() {
            entry.value().set(counts.get(entry.key()).copied().unwrap_or(0) as f64);
        }
        for (app, n) in counts {
            if !self.connections.contains_key(&app) {
                let labels = vec![Label::new("app", app.to_string())];
                let gauge =
                    self.recorder.register_gauge(&Key::from_parts("roomcast_connections", labels), &META);
                gauge.set(n as f64);
                self.connections.insert(app, gauge);
            }
        }
        self.handle.render()
    }
}
