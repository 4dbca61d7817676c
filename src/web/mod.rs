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
mod schema;
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
use crate::limits::{Cidr, ConnLimiter, TokenBucket};
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
    /// Connection caps (per address, per user) and trusted proxies.
    pub conn_limits: ConnLimits,
}

/// Connection caps, shared by the accept loop and the WebSocket upgrade.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// Open HTTP connections per peer address (proxies in `trusted` exempt).
    pub tcp_per_ip: ConnLimiter,
    /// Open WebSocket sessions per client address.
    pub ws_per_ip: ConnLimiter,
    /// Open WebSocket sessions per user.
    pub ws_per_user: ConnLimiter,
    /// Proxies whose forwarding headers name the client.
    pub trusted: Arc<Vec<Cidr>>,
    /// Time a client has to send its request headers.
    pub header_read_timeout: std::time::Duration,
}

impl ConnLimits {
    pub fn new(config: &Config) -> Result<Self, String> {
        let trusted = config
            .trusted_proxies
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("TRUSTED_PROXIES: {e}"))?;
        Ok(Self {
            tcp_per_ip: ConnLimiter::new(config.max_conns_per_ip),
            ws_per_ip: ConnLimiter::new(config.max_conns_per_ip),
            ws_per_user: ConnLimiter::new(config.max_sockets_per_user),
            trusted: Arc::new(trusted),
            header_read_timeout: std::time::Duration::from_millis(
                config.header_read_timeout_ms.max(100),
            ),
        })
    }

    fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the one it forwards (`X-Real-IP`, else the last `X-Forwarded-For` entry,
/// the one the proxy itself appended).
pub(crate) fn client_ip(
    limits: &ConnLimits,
    peer: Option<SocketAddr>,
    headers: &axum::http::HeaderMap,
) -> String {
    let Some(peer) = peer else {
        return "unknown".to_owned();
    };
    if !limits.is_trusted(peer.ip()) {
        return peer.ip().to_string();
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("x-real-ip")
        .map(str::trim)
        .or_else(|| {
            header("x-forwarded-for")
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim)
        })
        .and_then(|s| s.parse::<std::net::IpAddr>().ok())
        .map_or_else(|| peer.ip().to_string(), |ip| ip.to_string())
}

/// Body of the refusal written to a connection over its address's cap,
/// before any HTTP is read.
const TOO_MANY_BODY: &str =
    r#"{"error":{"code":"rate_limited","message":"too many connections from this address"}}"#;

fn too_many_response() -> String {
    format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{TOO_MANY_BODY}",
        TOO_MANY_BODY.len()
    )
}

/// Serve `app` on `listener` until `shutdown` resolves, then let open HTTP
/// requests finish (WebSocket sessions are the hub's to close).
///
/// - Accepted sockets get TCP_NODELAY: small frames (acks, ops fanned out to
///   many clients) must not wait for the peer's delayed ACK (Nagle), which
///   costs ~40 ms per message.
/// - A peer holding `MAX_CONNS_PER_IP` connections gets a 429 and a close.
/// - Request headers must arrive within `HEADER_READ_TIMEOUT_MS` (slow
///   handshakes are cut off).
/// - Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use tower::ServiceExt;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: back off.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = if limits.is_trusted(peer.ip()) {
            None
        } else {
            match limits.tcp_per_ip.acquire(&peer.ip().to_string()) {
                Some(s) => Some(s),
                None => {
                    metrics::counter!("tandem_connections_refused_total", "reason" => "per_ip")
                        .increment(1);
                    let _ = tcp.try_write(too_many_response().as_bytes());
                    continue;
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let svc = app
            .clone()
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
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
