//! roomcast: a self-hosted, multi-tenant realtime WebSocket broadcast hub.
//!
//! # Layout
//!
//! A broadcast flows from left to right:
//!
//! - [`http`] serves the JSON API. Each area (`apps`, `broadcast`, `token`, …) owns its routes;
//!   API keys are checked by the [`http::extract::Principal`] extractor against in-memory caches
//!   ([`apps::AppCache`], [`auth::api_key::KeyRing`]), never against the store.
//! - [`session`] upgrades `/ws` after checking the client JWT ([`auth::token`]) and Origin, then
//!   runs one task per connection that reads frames, drains its bounded outbound queue in
//!   batches and pings.
//! - [`hub`] is the handle both sides call: join, leave, broadcast. Its
//!   [`hub::registry::Registry`] maps each room (namespaced by app) to its subscribers. A
//!   publication is encoded once, under the room's lock that assigns its offset, and each
//!   subscriber queue gets a cheap clone; a full queue closes that client with 4008.
//! - [`broker`] is the seam between hub and nodes: [`broker::local`] hands publications straight
//!   to the registry; a Redis broker will carry them between nodes.
//! - [`hub::events`] tells listeners (presence, analytics, metrics, webhooks) what happened,
//!   without letting them slow the fan-out.
//! - [`store`] keeps apps and keys durable ([`store::sqlite`]); writers update it and then the
//!   caches.
//!
//! Around them: [`accept`] is the listener (per-IP caps at accept, header and idle timeouts,
//! the node's connection and memory bounds) that hands connections to [`http`]; [`lookups`]
//! bounds the store reads a node makes for credentials its caches do not know yet (read your
//! writes in a cluster); [`analytics`] counts per app, distinct users by HyperLogLog.
//!
//! [`config`] is the typed configuration, [`clock`] the wall clock, [`protocol`] the wire
//! (validated names, frames, close codes), [`server`] wires it all and [`shutdown`] waits for
//! signals.

pub mod accept;
pub mod analytics;
pub mod apps;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod http;
pub mod hub;
pub mod limits;
pub mod lookups;
pub mod metrics;
#[cfg(test)]
mod props;
pub mod protocol;
pub mod redis_conn;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod webhooks;
