//! The one integration test binary: the real server on port 0, a temporary SQLite file, and real
//! HTTP and WebSocket clients. `TEST_LOG=1` shows the server's logs.

#![allow(unreachable_pub)]
// The tests are not the server: they run tasks of their own (clippy.toml bans bare spawns in src/).
#![allow(clippy::disallowed_methods)]

mod analytics;
mod api;
mod binary;
mod broadcast;
mod browser;
mod cluster;
mod consistency;
mod fanout;
mod hostile;
mod hub_paths;
mod keys;
mod lifecycle;
mod limits;
mod metrics;
mod overload;
mod presence;
mod recovery;
mod smoke;
mod stores;
mod support;
mod tickets;
mod webhooks;
mod ws;
