//! The web layer: HTTP routes, WebSocket sessions, identity, and error
//! mapping. Only this module touches axum.
//!
//! Owns: [`AppState`], [`app`] (the router, built the same way by `main` and
//! tests), [`serve`], and the embedded browser client (`assets`). Must not import: sqlx, redis (it reaches storage
//! through the `Store` trait and documents through the hub).

mod api;
mod assets;
pub mod error;
mod identity;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::{get, post, put};
use axum::Router;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

use crate::auth::Keys;
use crate::config::Config;
use crate::hub::Hub;
use crate::limits::TokenBucket;
use crate::store::Store;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub keys: Arc<Keys>,
    /// WebSocket sessions (axum's graceful shutdown does not wait for them).
    pub sessions: TaskTracker,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Login attempts per username and per IP.
    pub login_limits: Arc<Mutex<HashMap<String, TokenBucket>>>,
}

/// Serve `app` on `listener` until `shutdown` resolves. Accepted sockets get
/// TCP_NODELAY: small frames (acks, ops fanned out to many clients) must not
/// wait for the peer's delayed ACK (Nagle), which costs ~40 ms per message.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let docs = Router::new()
        .route("/api/auth/register", post(api::register))
        .route("/api/auth/login", post(api::login))
        .route(
            "/api/documents",
            post(api::create_document).get(api::list_documents),
        )
        .route(
            "/api/documents/{id}",
            get(api::get_document)
                .put(api::update_document)
                .delete(api::delete_document),
        )
        .route("/api/documents/{id}/ops", post(api::post_ops))
        .route("/api/documents/{id}/users", get(api::get_users))
        .route("/api/documents/{id}/history", get(api::get_history))
        .route("/api/documents/{id}/tags", post(api::add_tag))
        .route(
            "/api/documents/{id}/tags/{tag}",
            axum::routing::delete(api::remove_tag),
        )
        .route("/api/documents/{id}/versions/{n}", get(api::get_version))
        .route(
            "/api/documents/{id}/versions/{n}/restore",
            post(api::restore_version),
        )
        .route(
            "/api/documents/{id}/members/{username}",
            put(api::put_member).delete(api::delete_member),
        )
        .route("/api/openapi.json", get(api::openapi))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes));
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/ws/{id}", get(ws::upgrade))
        .route("/", get(assets::page))
        .route("/login", get(assets::page))
        .route("/d/{id}", get(assets::page))
        .route("/assets/{*path}", get(assets::asset))
        .merge(docs)
        // Spans name the path only: query strings may carry tokens.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
        }))
        .with_state(state)
}
