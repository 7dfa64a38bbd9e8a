//! roomcast: a self-hosted, multi-tenant realtime WebSocket broadcast hub.
//!
//! # Layers
//!
//! A module uses the ones in its layer or below, never one above, so the top-level modules
//! have no import cycle (`docs/ARCHITECTURE.md` walks a broadcast and a subscribe through
//! them). From the bottom:
//!
//! 1. **Domain and wire**: [`domain`] (room and event names, [`domain::AppId`],
//!    [`domain::ConnectionId`], [`domain::RoomKey`], [`domain::Member`]: parsed once where bytes
//!    enter), [`protocol`] (client and server frames, error and close codes), [`pusher`] (the
//!    same for Pusher's protocol 7, and its channel signatures), [`clock`],
//!    [`config`], [`shutdown`] (signals, and the loop every background job runs in).
//! 2. **Storage**: [`store`] (apps, keys, webhooks, deliveries, analytics: [`store::sqlite`]
//!    embedded, [`store::redis`] shared) and [`redis_conn`] (Redis connections, and
//!    [`redis_conn::Link`], the state of a node's subscription connection).
//! 3. **Hub**: [`hub`] joins, leaves and broadcasts. Its [`hub::registry::Registry`] maps each
//!    room to its subscribers; its [`hub::Fanout`] encodes a publication once and hands each
//!    subscriber queue a clone; [`hub::stream`] is a room's stream (epoch, retained history,
//!    recovery). The hub defines its ports in [`hub::ports`]: a
//!    [`hub::Broker`] (publish, subscribe, unsubscribe), a [`hub::ClusterState`] (counts,
//!    presence, room lists) and the [`hub::Inbox`] every broker delivers through;
//!    [`hub::local`] implements them for one node. [`hub::events`] tells listeners what
//!    happened without letting them slow the fan-out.
//! 4. **Cluster**: [`cluster`] implements the ports on Redis, one job per file (pub/sub
//!    transport, counts, presence, room lists, node liveness).
//! 5. **Services**, each owning its writes and its background jobs: [`apps`] (apps and keys:
//!    store, caches, lifecycle, reload and purge), [`auth`] (key cache, tickets, key-use flush),
//!    [`analytics`] ([`analytics::Stats`], whatever the store), [`webhooks`] (intake, durable
//!    dispatch), [`metrics`] (Prometheus), [`lookups`] (bounded store reads for credentials the
//!    caches do not know yet), [`limits`] (rate limits), [`idempotency`] (broadcasts published
//!    once per key).
//! 6. **Edges**: [`accept`] (the listener: per-IP caps, timeouts, the node's bounds), [`http`]
//!    (the JSON API; [`http::AppState`] holds the hub and the services) and [`session`] (`/ws`:
//!    one task per connection).
//! 7. **[`server`]** wires it all from a [`config::Config`] and starts each owner's jobs.

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
pub mod idempotency;
pub mod limits;
pub mod lookups;
pub mod metrics;
#[cfg(test)]
mod props;
pub mod protocol;
pub mod pusher;
pub mod redis_conn;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod webhooks;
