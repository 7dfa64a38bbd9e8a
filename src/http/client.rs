//! `GET /client/roomcast.js`: the JavaScript client (`clients/js`, package `roomcast-client`)
//! served by the hub itself, so a page can load it from the hub it talks to, with no CDN and no
//! build step (an air-gapped host included).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

/// The client's source: one dependency-free ES module.
const CLIENT: &str = include_str!("../../clients/js/src/roomcast.js");

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new().route("/client/roomcast.js", axum::routing::get(client))
}

async fn client() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            // A module script from another origin (a page on the app's own host) needs CORS.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CLIENT,
    )
}
