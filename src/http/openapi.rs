//! The OpenAPI 3.1 document (`/api/openapi.json`), Swagger UI embedded in the binary
//! (`/api/docs`) and a reading view of the document (`/api/redoc`), a page of our own embedded
//! in the binary too: neither loads anything from another host.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::AppState;

/// The API description, collected from each handler's `#[utoipa::path]`.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "roomcast", description = "Realtime WebSocket broadcast hub: HTTP API."),
    paths(
        super::health::health,
        super::keys::test_key,
        super::keys::list_keys,
        super::keys::create_key,
        super::keys::revoke_key,
        super::apps::create_app,
        super::apps::list_apps,
        super::apps::get_app,
        super::apps::update_app,
        super::apps::delete_app,
        super::apps::restore_app,
        super::apps::regenerate_api_key,
        super::apps::regenerate_secret,
        super::token::create_token,
        super::tickets::create_ticket,
        super::broadcast::broadcast,
        super::broadcast::broadcast_batch,
        super::rooms::list_rooms,
        super::rooms::get_room,
        super::rooms::presence,
        super::rooms::history,
        super::analytics::analytics,
        super::webhooks::create_webhook,
        super::webhooks::list_webhooks,
        super::webhooks::get_webhook,
        super::webhooks::update_webhook,
        super::webhooks::delete_webhook,
        super::webhooks::list_deliveries,
        super::webhooks::test_webhook,
        super::webhooks::retry_delivery,
    ),
    modifiers(&ApiKeyAuth),
    tags(
        (name = "applications", description = "Tenants, their keys and secrets"),
        (name = "broadcast", description = "Publishing events into rooms"),
        (name = "tokens", description = "Client JWTs"),
        (name = "rooms", description = "Occupied rooms, presence members and room history"),
        (name = "analytics", description = "Per-app usage counters"),
        (name = "webhooks", description = "Signed HTTP callbacks for room events, and their delivery log"),
        (name = "keys", description = "API key introspection"),
        (name = "operations", description = "Health"),
    )
)]
pub struct ApiDoc;

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // Every keyed route is rate limited: document its 429 once, here.
        let too_many = utoipa::openapi::ResponseBuilder::new()
            .description("rate_limited: the key's bucket is empty; see Retry-After")
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch]
                .into_iter()
                .flatten()
            {
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    op.responses.responses.entry("429".into()).or_insert_with(|| too_many.clone().into());
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An rc_app_… or rc_admin_… key. Also accepted as X-APP-API-KEY, X-ADMIN-API-KEY, \
                 Authorization: Bearer, ?api_key= or a body field api_key.",
            ))),
        );
    }
}

/// Routes of this area.
pub fn router() -> Router<AppState> {
    let doc = ApiDoc::openapi();
    Router::new()
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", doc))
        .route("/api/redoc", axum::routing::get(reference))
}

/// The reading view: one page with its style and script inline; it renders `openapi.json`.
const REFERENCE_PAGE: &str = include_str!("reference.html");

async fn reference() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page needs is on this host; say so to the browser as well.
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            ),
        ],
        REFERENCE_PAGE,
    )
}
