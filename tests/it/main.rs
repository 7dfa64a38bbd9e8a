//! The one integration test binary: the real server on port 0, a temporary SQLite file, and real
//! HTTP and WebSocket clients. `TEST_LOG=1` shows the server's logs.

#![allow(unreachable_pub)]

mod analytics;
mod api;
mod binary;
mod broadcast;
mod browser;
mod cluster;
mod fanout;
mod hostile;
mod keys;
mod lifecycle;
mod limits;
mod metrics;
mod presence;
mod smoke;
mod stores;
mod support;
mod tickets;
mod webhooks;
mod ws;
