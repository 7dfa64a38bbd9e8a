//! A short run of the load generator as a regression guard: nothing lost, duplicated or
//! reordered. It checks correctness under load, never timing.

use std::time::Duration;

use roomcast_loadtest::target::Target;
use roomcast_loadtest::{Options, Scenario, run};

use crate::support::spawn_hub_with;

async fn smoke(scenario: Scenario, connections: usize, rooms: usize) {
    smoke_with(scenario, connections, rooms, false).await;
}

async fn smoke_with(scenario: Scenario, connections: usize, rooms: usize, webhook: bool) {
    let hub = spawn_hub_with(|c| c.webhooks.allow_private_targets = true).await;
    let target = Target::roomcast_with_new_app(&hub.url(""), &hub.admin_key, connections).await.unwrap();
    let report = run(Options {
        scenario,
        target,
        connections,
        rooms,
        rate: 300.0,
        duration: Duration::from_secs(2),
        publishers: 3,
        payload_bytes: 32,
        hub_pid: None,
        source_ips: 4,
        connect_concurrency: 32,
        churn_rate: 50.0,
        churn_presence: scenario == Scenario::Churn,
        drain: Duration::from_secs(20),
        stalled: 0,
        webhook,
    })
    .await
    .unwrap();
    let summary = report.summary();
    assert_eq!(report.connect_errors, 0, "{summary}");
    assert_eq!(report.publish_errors, 0, "{summary}");
    assert!(report.published > 100, "{summary}");
    assert_eq!(report.delivered, report.expected_deliveries, "{summary}");
    assert_eq!((report.lost, report.duplicated, report.out_of_order), (0, 0, 0), "{summary}");
    if webhook {
        let w = report.webhook.as_ref().expect("a webhook report");
        assert_eq!((w.received, w.missing, w.duplicated), (report.published, 0, 0), "{summary}");
    }
    if scenario == Scenario::Churn {
        assert!(report.churn_cycles > 20 && report.churn_errors == 0, "{summary}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_smoke_run_loses_nothing() {
    smoke(Scenario::Fanout, 50, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_smoke_run_loses_nothing() {
    smoke(Scenario::Rooms, 60, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_smoke_run_loses_nothing() {
    smoke(Scenario::Churn, 20, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_smoke_run_delivers_every_broadcast_once() {
    smoke_with(Scenario::Fanout, 20, 1, true).await;
}
