//! criterion micro-benchmarks of the hot path: registry joins under contention, fan-out enqueue,
//! frame encoding, and the credential checks every request or connection pays.
//! Run with `cargo bench --bench hub` (add `-- <filter>` for one group).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roomcast::auth::api_key::{CachedKey, PresentedKey};
use roomcast::auth::token;
use roomcast::hub::metrics::HubMetrics;
use roomcast::hub::registry::{Registry, RoomKey};
use roomcast::hub::{ConnHandle, Fanout, Hub, Inbox, OutboxLimits, Publication};
use roomcast::protocol::{EventName, RoomGrants, RoomName, RoomPattern, ServerFrame};
use roomcast::store::{KeyKind, KeyRecord};
use serde_json::value::RawValue;

fn hub() -> (Arc<Registry>, Hub) {
    let hub = Hub::single_node(OutboxLimits { messages: 1 << 20, bytes: 1 << 30 }, HubMetrics::default());
    (hub.registry_handle(), hub)
}

fn key(room: &str) -> RoomKey {
    RoomKey { app_id: roomcast::domain::AppId::known("bench-app"), room: RoomName::parse(room).unwrap() }
}

/// Join then leave, from 1 and 4 threads at once, into one shared room or one room per thread.
fn registry(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry");
    for (threads, shared) in [(1, true), (4, true), (4, false)] {
        let label = format!("{threads}threads-{}", if shared { "same-room" } else { "own-room" });
        group.bench_function(BenchmarkId::new("join_leave", label), |b| {
            b.iter_custom(|iters| {
                let (registry, hub) = hub();
                let conns: Vec<Arc<ConnHandle>> =
                    (0..threads).map(|_| hub.connect("bench-app", None)).collect();
                // A steady population, so joins are not always first-joins.
                let crowd: Vec<Arc<ConnHandle>> = (0..1000).map(|_| hub.connect("bench-app", None)).collect();
                for (i, c) in crowd.iter().enumerate() {
                    registry.join(&key(&format!("r{}", i % threads)), c, None, 0, false);
                    registry.join(&key("shared"), c, None, 0, false);
                }
                let start = Instant::now();
                std::thread::scope(|s| {
                    for (t, conn) in conns.iter().enumerate() {
                        let registry = &registry;
                        s.spawn(move || {
                            let room = if shared { key("shared") } else { key(&format!("r{t}")) };
                            for _ in 0..iters {
                                registry.join(&room, conn, None, 0, false);
                                black_box(registry.leave(&room, conn));
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// One publication handed to 1, 100 and 10,000 subscribers' outboxes (encode once, enqueue).
fn fanout_enqueue(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    let data = RawValue::from_string(r#"{"text":"hello","n":42}"#.into()).unwrap();
    for n in [1usize, 100, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("enqueue", n), |b| {
            let (registry, hub) = hub();
            let fanout = Fanout::new(registry.clone(), HubMetrics::default());
            let room = key("fan");
            let conns: Vec<Arc<ConnHandle>> = (0..n).map(|_| hub.connect("bench-app", None)).collect();
            for c in &conns {
                registry.join(&room, c, None, 0, false);
            }
            let publication = Publication {
                key: room.clone(),
                event: EventName::parse("msg").unwrap(),
                data: &data,
                exclude: None,
                sender: None,
                timestamp: 1_764_000_000_000,
                keep: Default::default(),
            };
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    black_box(fanout.deliver(&publication, None));
                    spent += start.elapsed();
                    // Empty the outboxes outside the measurement, as writers would.
                    for c in &conns {
                        c.next_frame();
                    }
                }
                spent
            })
        });
    }
    group.finish();
}

fn frame_encoding(c: &mut Criterion) {
    let room = RoomName::parse("chat-room-42").unwrap();
    let event = EventName::parse("new-message").unwrap();
    let data = RawValue::from_string(format!(r#"{{"text":"{}","user":"u1","n":[1,2,3]}}"#, "x".repeat(200)))
        .unwrap();
    c.bench_function("frame/event_encode", |b| {
        b.iter(|| black_box(ServerFrame::event(&room, &event, &data, black_box(123_456), 1_764_000_000_000)))
    });
}

fn credentials(c: &mut Criterion) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let payload =
        serde_json::json!({"user_id": "u1", "rooms": ["chat-*", "private-u1"], "user_info": {"name": "Ann"}});
    let jwt = token::mint(
        "bench-app",
        "a-secret-of-reasonable-length-0123456789",
        payload.as_object().unwrap(),
        now,
        3600,
    );
    c.bench_function("auth/jwt_verify", |b| {
        b.iter(|| {
            let app = token::peek_app_id(black_box(&jwt)).unwrap();
            black_box((app, token::verify(&jwt, "a-secret-of-reasonable-length-0123456789", 30).unwrap()))
        })
    });

    let presented = PresentedKey::generate(KeyKind::App);
    let text = presented.plaintext();
    let cached = CachedKey::new(KeyRecord {
        key_id: presented.key_id.clone(),
        kind: KeyKind::App,
        app_id: Some("bench-app".into()),
        name: "primary".into(),
        scopes: vec!["broadcast:write".into()],
        secret_hash: presented.secret_hash(),
        primary: true,
        created_at: 0,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    })
    .unwrap();
    c.bench_function("auth/api_key_verify", |b| {
        b.iter(|| {
            let parsed = PresentedKey::parse(black_box(&text)).unwrap();
            black_box(cached.secret_matches(&parsed))
        })
    });
}

fn room_patterns(c: &mut Criterion) {
    let grants = RoomGrants::new(Some(
        ["team-a-*", "team-b-*", "lobby", "private-u1", "private-team-*", "news-*", "alerts", "dm-u1-*"]
            .iter()
            .map(|p| RoomPattern::parse(p).unwrap())
            .collect(),
    ));
    let rooms: Vec<RoomName> = ["dm-u1-u2", "private-u2", "team-b-general", "unlisted-room"]
        .iter()
        .map(|r| RoomName::parse(r).unwrap())
        .collect();
    c.bench_function("rooms/pattern_match_8_patterns", |b| {
        b.iter(|| rooms.iter().filter(|r| grants.allows(black_box(r))).count())
    });
}

criterion_group!(benches, registry, fanout_enqueue, frame_encoding, credentials, room_patterns);
criterion_main!(benches);
