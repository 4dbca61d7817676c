//! The web layer: HTTP routes, WebSocket sessions, and error mapping. Only
//! this module touches axum.
//!
//! Owns: [`AppState`], [`app`] (the router, built the same way by `main` and
//! tests), identity until auth lands. Must not import: sqlx, redis.

mod api;
pub mod error;
mod ws;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hub::Hub;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub config: Arc<Config>,
    /// WebSocket sessions (axum's graceful shutdown does not wait for them).
    pub sessions: TaskTracker,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
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
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/ws/{id}", get(ws::upgrade))
        .route("/api/documents/{id}", get(api::get_document))
        .route("/api/documents/{id}/users", get(api::get_users))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
