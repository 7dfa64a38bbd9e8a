//! The listener: accepts TCP connections and serves HTTP/1 (with WebSocket upgrades) on them,
//! with the protections a hub facing the internet needs before any request is read:
//!
//! - **per-IP caps at accept**: a direct client holds at most `limits.connections_per_ip`
//!   connections; one more is closed as soon as it is accepted ([`Admission`]). Trusted proxies
//!   are not capped here; the clients behind them are capped at the upgrade, by the hub's count
//!   of their connections.
//! - **timeouts before the upgrade**: a request's headers must arrive within
//!   `server.header_timeout_s` of their first byte (of the accept, for a new connection), a
//!   keep-alive connection may idle `server.http_idle_timeout_s` between requests, and a request
//!   must be answered within `server.request_timeout_s`. Slow-headers clients and silent sockets
//!   are closed; an upgraded WebSocket leaves these rules for the heartbeat's.
//! - **accept errors never stop the loop**: running out of file descriptors is logged once per
//!   episode and counted, and the loop waits briefly and goes on.
//! - **the node's capacity** ([`Capacity`]): past `limits.max_connections` WebSockets or
//!   `limits.max_memory_mb` of resident memory, upgrades are refused with 503 and `/health`
//!   reports the node full, while the clients it has keep being served.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use dashmap::DashMap;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::metrics::{ClosedReason, ListenerMetrics, RefusedReason};

/// Open connections per client IP, with the cap and the proxies that are exempt from it.
#[derive(Debug)]
pub struct Admission {
    per_ip: DashMap<IpAddr, u32>,
    cap: u32,
    trusted: Vec<ipnet::IpNet>,
}

/// One connection counted against its IP; dropping it gives the place back.
#[derive(Debug)]
pub struct IpSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(mut n) = self.admission.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
        }
        self.admission.per_ip.remove_if(&self.ip, |_, n| *n == 0);
    }
}

impl Admission {
    /// At most `cap` connections per IP; `trusted` proxies are not capped.
    pub fn new(cap: u32, trusted: Vec<ipnet::IpNet>) -> Self {
        Self { per_ip: DashMap::new(), cap, trusted }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// A place for one more connection of `ip`, or `None` when it holds the cap already.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut n = self.per_ip.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(IpSlot { admission: self.clone(), ip })
    }

    /// Connections `ip` holds now.
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> u32 {
        self.per_ip.get(&ip).map_or(0, |n| *n)
    }
}

/// Why the node takes no new WebSocket connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `limits.max_connections` WebSockets are open.
    Connections,
    /// Resident memory is over `limits.max_memory_mb`.
    Memory,
}

impl Full {
    /// The word `/health` and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Full::Connections => "connections",
            Full::Memory => "memory",
        }
    }
}

/// The node's bounds on WebSocket connections and memory.
#[derive(Debug)]
pub struct Capacity {
    /// WebSockets served at once.
    pub max_connections: usize,
    max_memory_bytes: Option<u64>,
    memory_over: AtomicBool,
}

/// Open files kept for everything but WebSockets: the store, Redis, webhooks, HTTP calls.
const FILES_KEPT: u64 = 512;

impl Capacity {
    /// From `limits.max_connections` (default: the open-files limit less the 512 files kept for the rest) and
    /// `limits.max_memory_mb`.
    pub fn new(limits: &crate::config::LimitsConfig) -> Self {
        let max_connections = match limits.max_connections {
            Some(n) => n as usize,
            None => {
                let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
                soft.saturating_sub(FILES_KEPT).max(soft / 2).max(1) as usize
            }
        };
        Self {
            max_connections,
            max_memory_bytes: limits.max_memory_mb.map(|mb| mb * 1024 * 1024),
            memory_over: AtomicBool::new(false),
        }
    }

    /// Whether the node is full with `connections` WebSockets open.
    pub fn full(&self, connections: usize) -> Option<Full> {
        if connections >= self.max_connections {
            Some(Full::Connections)
        } else if self.memory_over.load(Ordering::Relaxed) {
            Some(Full::Memory)
        } else {
            None
        }
    }

    /// Starts the memory job: [`Capacity::refresh_memory`] every second, until `shutdown`.
    pub fn start(
        self: &Arc<Self>,
        shutdown: &tokio_util::sync::CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        let capacity = self.clone();
        crate::shutdown::start_every(std::time::Duration::from_secs(1), shutdown, tracker, move || {
            capacity.refresh_memory()
        });
    }

    /// Reads the process's resident memory (its job does, every second); logs when the
    /// node crosses its memory bound, either way.
    pub fn refresh_memory(&self) {
        let Some(max) = self.max_memory_bytes else { return };
        let Some(rss) = resident_bytes() else { return };
        let over = rss > max;
        if self.memory_over.swap(over, Ordering::Relaxed) != over {
            if over {
                tracing::warn!(
                    rss_mb = rss >> 20,
                    max_mb = max >> 20,
                    "memory over limits.max_memory_mb; new WebSocket connections are refused"
                );
            } else {
                tracing::info!(
                    rss_mb = rss >> 20,
                    "memory back under limits.max_memory_mb; taking new connections"
                );
            }
        }
    }
}

/// The process's resident set size, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The listener's timeouts (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    pub request: Duration,
}

impl Timeouts {
    /// From the `[server]` settings.
    pub fn new(server: &crate::config::ServerConfig) -> Self {
        Self {
            header: Duration::from_secs(server.header_timeout_s),
            idle: Duration::from_secs(server.http_idle_timeout_s),
            request: Duration::from_secs(server.request_timeout_s),
        }
    }
}

/// Waiting for a request's headers (since the accept, or since their first byte).
const HEAD: u8 = 0;
/// A keep-alive connection between requests.
const IDLE: u8 = 1;
/// A request is being answered.
const BUSY: u8 = 2;
/// Upgraded to a WebSocket: none of these timeouts apply.
const UPGRADED: u8 = 3;

/// What one connection is doing and since when, for its timeouts; shared by its socket (which
/// sees bytes arrive), its service (which sees requests and answers) and its watchdog.
#[derive(Debug)]
struct Watch {
    phase: AtomicU8,
    /// Milliseconds from `origin` to the start of the phase.
    since_ms: AtomicU64,
    origin: Instant,
}

impl Watch {
    fn upgraded(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == UPGRADED
    }

    fn enter(&self, phase: u8) {
        self.since_ms.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }

    /// Bytes arrived: an idle connection starts a request's headers.
    fn on_read(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.enter(HEAD);
        }
    }

    /// When the current phase runs out, and why it would close then.
    fn deadline(&self, t: &Timeouts) -> Option<(Instant, ClosedReason)> {
        let since = self.origin + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        match self.phase.load(Ordering::Acquire) {
            HEAD => Some((since + t.header, ClosedReason::HeaderTimeout)),
            IDLE => Some((since + t.idle, ClosedReason::IdleTimeout)),
            BUSY => Some((since + t.request, ClosedReason::RequestTimeout)),
            _ => None,
        }
    }
}

/// A socket that tells its [`Watch`] when bytes arrive, until it is upgraded: then it lets the
/// watch go (an idle WebSocket should cost no more than it must). It holds the connection's
/// place in its IP's count until it closes, a WebSocket's too.
struct Watched {
    inner: TcpStream,
    watch: Option<Arc<Watch>>,
    _slot: Option<IpSlot>,
}

impl Watched {
    /// The watch, while the connection speaks HTTP.
    fn watch(&mut self) -> Option<&Watch> {
        if self.watch.as_ref().is_some_and(|w| w.upgraded()) {
            self.watch = None;
        }
        self.watch.as_deref()
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let arrived = buf.filled().len() > before;
        if let Some(watch) = this.watch()
            && arrived
        {
            watch.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.watch();
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The accept loop, until `shutdown`: every connection is served on a task of `tracker`.
#[derive(Debug)]
pub struct Listener {
    pub admission: Arc<Admission>,
    pub timeouts: Timeouts,
    pub metrics: ListenerMetrics,
}

/// How long the loop waits before accepting again when the process is out of file descriptors.
const OUT_OF_FILES_PAUSE: Duration = Duration::from_millis(50);

impl Listener {
    /// Accepts until `shutdown` fires; then asks every HTTP connection to finish its request and
    /// close (WebSockets are closed by the hub).
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        router: Router,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let mut starved = false;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) if is_out_of_files(&e) => {
                    self.metrics.accept_error(true).increment(1);
                    if !starved {
                        starved = true;
                        tracing::warn!(error = %e, "out of file descriptors: new connections wait in the backlog until some close");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(OUT_OF_FILES_PAUSE) => continue,
                    }
                }
                Err(e) => {
                    // A connection that failed between the SYN and the accept; the next one is fine.
                    self.metrics.accept_error(false).increment(1);
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            };
            if starved {
                starved = false;
                tracing::info!("file descriptors available again; accepting");
            }
            let slot = if self.admission.is_trusted(peer.ip()) {
                None
            } else {
                match self.admission.enter(peer.ip()) {
                    Some(slot) => Some(slot),
                    None => {
                        self.metrics.refused(RefusedReason::IpLimit).increment(1);
                        drop(stream);
                        continue;
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            tracker.spawn(self.clone().serve(stream, peer, slot, router.clone(), shutdown.clone()));
        }
    }

    /// Serves one connection until it closes, is upgraded, or runs out of time.
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        slot: Option<IpSlot>,
        router: Router,
        shutdown: CancellationToken,
    ) {
        let watch = Arc::new(Watch {
            phase: AtomicU8::new(HEAD),
            since_ms: AtomicU64::new(0),
            origin: Instant::now(),
        });
        let seen = watch.clone();
        let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            seen.enter(BUSY);
            let (router, seen) = (router.clone(), seen.clone());
            async move {
                let response = router.oneshot(req).await;
                if response.as_ref().is_ok_and(|r| r.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS)
                {
                    seen.enter(UPGRADED);
                } else {
                    seen.enter(IDLE);
                }
                response
            }
        });
        let io = TokioIo::new(Watched { inner: stream, watch: Some(watch.clone()), _slot: slot });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, hyper_util::service::TowerToHyperService::new(service))
            .with_upgrades();
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            let deadline = watch.deadline(&self.timeouts);
            // While idle, a request may begin at any moment and bring its header deadline
            // forward: look again at least every second.
            let wake = deadline.map(|(at, reason)| match reason {
                ClosedReason::IdleTimeout => at.min(Instant::now() + Duration::from_secs(1)),
                _ => at,
            });
            tokio::select! {
                done = connection.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
                    }
                    return;
                }
                _ = sleep_until(wake) => {
                    if let Some((at, reason)) = watch.deadline(&self.timeouts)
                        && at <= Instant::now()
                    {
                        self.metrics.closed(reason).increment(1);
                        tracing::debug!(%peer, reason = reason.as_str(), "HTTP connection closed");
                        return;
                    }
                }
                _ = shutdown.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// EMFILE or ENFILE: the process or the system has no file descriptor left.
fn is_out_of_files(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_per_ip_and_give_their_place_back() {
        let admission = Arc::new(Admission::new(2, vec!["10.0.0.0/8".parse().unwrap()]));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = admission.enter(a).unwrap();
        let _second = admission.enter(a).unwrap();
        assert!(admission.enter(a).is_none(), "over the cap");
        let _other = admission.enter(b).unwrap();
        drop(first);
        assert_eq!(admission.count(a), 1);
        assert!(admission.enter(a).is_some());
        assert!(admission.is_trusted("10.1.2.3".parse().unwrap()));
        drop(_other);
        assert!(!admission.per_ip.contains_key(&b), "an IP without connections is forgotten");
    }

    #[test]
    fn a_node_is_full_at_its_connection_bound() {
        let limits = crate::config::LimitsConfig { max_connections: Some(3), ..Default::default() };
        let capacity = Capacity::new(&limits);
        assert_eq!(capacity.full(2), None);
        assert_eq!(capacity.full(3), Some(Full::Connections));
        let derived = Capacity::new(&crate::config::LimitsConfig::default());
        assert!(derived.max_connections >= 1);
    }
}
