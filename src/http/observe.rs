//! The outermost middleware: a request id (taken from `X-Request-Id` when sane, else made up and
//! echoed back), one access log line per API request, and the request duration histogram.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// Where authentication leaves the caller's app for the log line.
#[derive(Debug, Clone, Default)]
pub struct CallerApp(Arc<Mutex<Option<String>>>);

impl CallerApp {
    /// Notes the app the request acts for.
    pub fn set(&self, app_id: &str) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(app_id.to_owned());
        }
    }

    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// A client-supplied request id is kept when it is 1–64 visible ASCII characters.
fn sane_request_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic())).then_some(s)
}

/// Middleware: request id, access log, duration histogram.
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(sane_request_id)
        .map_or_else(|| format!("r_{}", crate::auth::random_base62(16)), str::to_owned);
    let caller = CallerApp::default();
    req.extensions_mut().insert(caller.clone());
    let method = req.method().clone();
    let started = Instant::now();
    let mut res = next.run(req).await;
    let took = started.elapsed();
    let status = res.status().as_u16();
    state.metrics.http_request(&route, status, took);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    // Scrapes and health probes would drown the log; they are counted in the histogram.
    if route != "/metrics" && route != "/health" {
        tracing::info!(
            target: "roomcast::access",
            request_id,
            method = %method,
            route,
            status,
            app_id = caller.get().as_deref().unwrap_or("-"),
            latency_ms = took.as_secs_f64() * 1000.0,
            "request"
        );
    }
    res
}
