//! Credentials: server-side API keys and client JWTs, and [`Auth`], the service that keeps
//! the key cache and the tickets.

pub mod api_key;
pub mod ticket;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::domain::{is_base62, random_base62};
use crate::store::Store;

/// How often key `last_used_at` times are written to the store.
const KEY_USE_FLUSH: Duration = Duration::from_secs(10);
/// How often used and expired tickets are swept from memory.
const TICKET_SWEEP: Duration = Duration::from_secs(1);

/// The API keys this node knows ([`api_key::KeyRing`]) and the one-time tickets it issued;
/// owns writing key use times to the store and sweeping tickets.
#[derive(Debug)]
pub struct Auth {
    pub keys: api_key::KeyRing,
    pub tickets: ticket::TicketBook,
    store: Arc<dyn Store>,
}

impl Auth {
    /// Keys and tickets over `store`.
    pub fn new(keys: api_key::KeyRing, tickets: ticket::TicketBook, store: Arc<dyn Store>) -> Self {
        Self { keys, tickets, store }
    }

    /// Starts the jobs: key use times to the store every 10 s (and once more at shutdown, by
    /// [`Auth::flush_key_uses`]), tickets swept every second.
    pub fn start(self: &Arc<Self>, shutdown: &CancellationToken, tracker: &TaskTracker) {
        let auth = self.clone();
        tracker.spawn(crate::shutdown::every(KEY_USE_FLUSH, shutdown.clone(), move || {
            let auth = auth.clone();
            async move { auth.flush_key_uses().await }
        }));
        let auth = self.clone();
        crate::shutdown::start_every(TICKET_SWEEP, shutdown, tracker, move || {
            auth.tickets.sweep(crate::clock::now_ms())
        });
    }

    /// Persists key `last_used_at` times in one batch, off the request path.
    pub async fn flush_key_uses(&self) {
        let used = self.keys.unflushed_uses();
        if !used.is_empty()
            && let Err(e) = self.store.touch_keys(&used).await
        {
            tracing::warn!(error = %e, "cannot record key use times");
        }
    }
}
