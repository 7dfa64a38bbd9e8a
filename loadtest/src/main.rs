//! `roomcast-loadtest`: see `loadtest/README.md`.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use roomcast_loadtest::target::{Protocol, Target};
use roomcast_loadtest::{Options, Scenario, raise_fd_limit, run};

/// Load generator for roomcast (and Pusher-protocol hubs). Every option can also be given as the
/// environment variable shown, which the k6 scripts read too.
#[derive(Debug, Parser)]
#[command(name = "roomcast-loadtest", version)]
struct Cli {
    /// What to measure.
    #[arg(value_enum, env = "LT_SCENARIO")]
    scenario: Scenario,
    /// Protocol of the hub.
    #[arg(long, value_enum, env = "LT_PROTOCOL", default_value = "roomcast")]
    protocol: Protocol,
    /// The hub's HTTP base URL (loopback only).
    #[arg(long, env = "LT_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Send broadcasts to this node instead (cluster runs: clients on --url, publishers here).
    #[arg(long, env = "LT_PUBLISH_URL")]
    publish_url: Option<String>,
    /// roomcast: an admin key; the run creates its own app with it.
    #[arg(long, env = "LT_ADMIN_KEY")]
    admin_key: Option<String>,
    /// An existing app instead: its id …
    #[arg(long, env = "LT_APP_ID")]
    app_id: Option<String>,
    /// … its secret …
    #[arg(long, env = "LT_APP_SECRET")]
    app_secret: Option<String>,
    /// … and its API key (roomcast) or app key (Pusher).
    #[arg(long, env = "LT_APP_KEY")]
    app_key: Option<String>,
    /// WebSocket subscribers.
    #[arg(long, short = 'n', env = "LT_CONNECTIONS", default_value_t = 1000)]
    connections: usize,
    /// Rooms (idle and rooms scenarios).
    #[arg(long, short = 'm', env = "LT_ROOMS", default_value_t = 1)]
    rooms: usize,
    /// Broadcasts per second over all publishers; 0 = as fast as the hub answers.
    #[arg(long, short = 'r', env = "LT_RATE", default_value_t = 10.0)]
    rate: f64,
    /// Seconds of publishing (or of holding idle connections).
    #[arg(long, short = 'd', env = "LT_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Concurrent HTTP keep-alive publishers.
    #[arg(long, short = 'p', env = "LT_PUBLISHERS", default_value_t = 4)]
    publishers: usize,
    /// Padding bytes in each event.
    #[arg(long, env = "LT_PAYLOAD_BYTES", default_value_t = 64)]
    payload_bytes: usize,
    /// The hub's pid, for RSS and CPU figures.
    #[arg(long, env = "LT_HUB_PID")]
    hub_pid: Option<u32>,
    /// Spread client sockets over 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, env = "LT_SOURCE_IPS", default_value_t = 16)]
    source_ips: u8,
    /// Connections opened at once.
    #[arg(long, env = "LT_CONNECT_CONCURRENCY", default_value_t = 256)]
    connect_concurrency: usize,
    /// Connect/disconnect cycles per second (churn).
    #[arg(long, env = "LT_CHURN_RATE", default_value_t = 100.0)]
    churn_rate: f64,
    /// Churn through presence rooms: every cycle is a member joining and leaving.
    #[arg(long, env = "LT_CHURN_PRESENCE")]
    churn_presence: bool,
    /// Longest wait for in-flight deliveries after publishing stops, in seconds.
    #[arg(long, env = "LT_DRAIN", default_value_t = 10.0)]
    drain: f64,
    /// Extra subscribers in the first room that never read (slow consumers).
    #[arg(long, env = "LT_STALLED", default_value_t = 0)]
    stalled: usize,
    /// roomcast: also register a webhook (a receiver in this process) for the broadcasts and
    /// measure its deliveries; the hub needs `webhooks.allow_private_targets = true`.
    #[arg(long, env = "LT_WEBHOOK")]
    webhook: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, env = "LT_JSON")]
    json: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if !cli.url.starts_with("http://127.") && !cli.url.starts_with("http://localhost") {
        bail!("--url must be a loopback address (127.0.0.0/8 or localhost)");
    }
    if cli.duration > 3600.0 || cli.connections > 200_000 {
        bail!("runs are bounded: at most 3600 s and 200,000 connections");
    }
    let limit = raise_fd_limit()?;
    if (limit as usize) < cli.connections + 1000 {
        eprintln!("warning: open-files limit is {limit}, below {} connections", cli.connections);
    }
    if cli
        .publish_url
        .as_ref()
        .is_some_and(|u| !u.starts_with("http://127.") && !u.starts_with("http://localhost"))
    {
        bail!("--publish-url must be a loopback address (127.0.0.0/8 or localhost)");
    }
    let mut target = match (cli.protocol, &cli.admin_key, &cli.app_id, &cli.app_secret, &cli.app_key) {
        (Protocol::Roomcast, Some(admin), _, _, _) => {
            Target::roomcast_with_new_app(&cli.url, admin, cli.connections).await?
        }
        // roomcast over its Pusher protocol: a fresh app, used through /app/{key} and /apps/{id}.
        (Protocol::Pusher, Some(admin), None, _, _) => {
            Target::roomcast_with_new_app(&cli.url, admin, cli.connections).await?.as_pusher(admin).await?
        }
        (protocol, _, Some(id), Some(secret), Some(key)) => Target::new(protocol, &cli.url, id, secret, key)?,
        _ => bail!("give --admin-key (roomcast) or --app-id, --app-secret and --app-key"),
    };
    if let Some(url) = &cli.publish_url {
        target.publish_base.clone_from(url);
    }
    let report = run(Options {
        scenario: cli.scenario,
        target,
        connections: cli.connections,
        rooms: cli.rooms,
        rate: cli.rate,
        duration: Duration::from_secs_f64(cli.duration),
        publishers: cli.publishers,
        payload_bytes: cli.payload_bytes,
        hub_pid: cli.hub_pid,
        source_ips: cli.source_ips,
        connect_concurrency: cli.connect_concurrency,
        churn_rate: cli.churn_rate,
        churn_presence: cli.churn_presence,
        drain: Duration::from_secs_f64(cli.drain),
        stalled: cli.stalled,
        webhook: cli.webhook,
    })
    .await?;
    print!("{}", report.summary());
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = cli.json {
        std::fs::write(path, json)?;
    }
    Ok(())
}
