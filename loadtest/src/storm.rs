//! The `storm` scenario: every client connected in the connect phase drops its socket at once
//! and reconnects at once, as after a node's SIGTERM or a network blip. Each client retries
//! (after 100–300 ms, up to 30 s) until it is connected and subscribed again. Reports how long
//! the whole storm took, the reconnect rate, each client's time to be back, and how many
//! attempts were refused.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;

use crate::Latency;
use crate::target::{Socket, Target};

/// How the reconnect storm went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StormReport {
    pub clients: usize,
    /// From the drop of every socket to the last client back.
    pub seconds: f64,
    pub reconnects_per_second: f64,
    /// Each client's time from the drop to being subscribed again.
    pub back_after: Latency,
    /// Attempts refused or failed (then retried).
    pub refused_attempts: u64,
    /// Clients not back within 30 s.
    pub failed: u64,
}

/// Longest a client keeps trying.
const GIVE_UP: Duration = Duration::from_secs(30);

/// Drops `sockets` (client `i` in room `rooms[i]`) together and reconnects them all at once.
pub async fn run(
    target: Arc<Target>,
    sockets: Vec<(usize, Socket)>,
    room_name: fn(usize) -> String,
    source: fn(usize, u8) -> Ipv4Addr,
    spread: u8,
) -> Result<StormReport> {
    let rooms: Vec<usize> = sockets.iter().map(|(room, _)| *room).collect();
    let clients = rooms.len();
    let started = Instant::now();
    drop(sockets);
    let mut tasks = Vec::with_capacity(clients);
    for (i, room) in rooms.into_iter().enumerate() {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = 0u64;
            loop {
                match target.connect(source(i, spread), &room_name(room), i as u64).await {
                    Ok(ws) => return (Some((started.elapsed(), ws)), refused),
                    Err(_) if started.elapsed() < GIVE_UP => {
                        refused += 1;
                        let pause = rand::rng().random_range(100..300);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                    Err(_) => return (None, refused),
                }
            }
        }));
    }
    let mut report = StormReport { clients, ..StormReport::default() };
    let mut back = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
    let mut held = Vec::with_capacity(clients);
    for task in tasks {
        let (done, refused) = task.await?;
        report.refused_attempts += refused;
        match done {
            Some((after, ws)) => {
                back.record(after.as_micros().max(1) as u64).ok();
                held.push(ws);
            }
            None => report.failed += 1,
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.reconnects_per_second = held.len() as f64 / report.seconds.max(1e-9);
    report.back_after = Latency::of(&back);
    drop(held);
    Ok(report)
}
