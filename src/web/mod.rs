//! The web layer: HTTP routes, WebSocket sessions, identity, and error
//! mapping. Only this module touches axum.
//!
//! Owns: [`AppState`], [`app`] (the router, built the same way by `main` and
//! tests), [`serve`], token revocation checks and the sessions they close
//! (`tokens`), and the embedded browser client (`assets`). Must not import: sqlx, redis (it reaches storage
//! through the `Store` trait and documents through the hub).

pub mod abuse;
mod api;
mod assets;
mod bodies;
pub mod error;
mod identity;
mod protocol_page;
mod schema;
pub mod tokens;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::{get, post, put};
use axum::Router;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

use crate::auth::Keys;
use crate::config::Config;
use crate::hub::Hub;
use crate::limits::{Cidr, ConnLimiter};
use crate::store::Store;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub keys: Arc<Keys>,
    /// Token revocation: checks, and the live sessions to close.
    pub tokens: Arc<tokens::Tokens>,
    /// WebSocket sessions (axum's graceful shutdown does not wait for them).
    pub sessions: TaskTracker,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Rate limits on logins, registrations and REST edits; the password
    /// hash pool.
    pub abuse: abuse::Abuse,
    /// Connection caps (per address, per user) and trusted proxies.
    pub conn_limits: ConnLimits,
    /// Single-use WebSocket tickets (shared by every instance when clustered).
    pub tickets: Arc<dyn crate::bus::Tickets>,
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
    /// Open connections in all: one permit each.
    pub total: Arc<tokio::sync::Semaphore>,
    /// The number of permits `total` started with.
    pub max_total: usize,
}

/// The most one connection reads ahead of its handler, headers included.
const READ_BUFFER_BYTES: usize = 32 * 1024;

/// File descriptors kept back from MAX_CONNECTIONS' default for the store,
/// Redis, logs and the listener.
const FD_RESERVE: u64 = 256;

/// MAX_CONNECTIONS, or by default the soft open-file limit less a reserve.
fn max_connections(config: &Config) -> usize {
    if config.max_connections > 0 {
        return config.max_connections;
    }
    let soft = rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _)| soft);
    usize::try_from(soft.saturating_sub(FD_RESERVE).clamp(64, 1 << 20)).unwrap_or(1 << 20)
}

/// Raise the soft open-file limit to the hard one; `(before, after)`.
pub fn raise_file_limit() -> std::io::Result<(u64, u64)> {
    let (before, _) = rlimit::Resource::NOFILE.get()?;
    let after = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok((before, after))
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
            total: Arc::new(tokio::sync::Semaphore::new(max_connections(config))),
            max_total: max_connections(config),
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

/// A connection's place under MAX_CONNECTIONS. A WebSocket upgrade takes
/// it over from its HTTP connection, which ends when the socket starts.
#[derive(Clone, Debug)]
pub(crate) struct ConnPermit(Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>);

impl ConnPermit {
    /// Whether the connection still holds its permit.
    pub(crate) fn held(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The permit, for the caller to hold from now on.
    pub(crate) fn take(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Why a connection is refused at accept, before any HTTP is read.
#[derive(Clone, Copy)]
enum Refusal {
    /// MAX_CONNECTIONS are open.
    Full,
    /// The address holds MAX_CONNS_PER_IP.
    PerAddress,
}

/// Count the refusal and write its response (best effort: the socket is
/// closed when dropped).
fn refuse(tcp: &tokio::net::TcpStream, why: Refusal) {
    let (reason, status, code, message) = match why {
        Refusal::Full => (
            "total",
            "503 Service Unavailable",
            "unavailable",
            "server full; try again",
        ),
        Refusal::PerAddress => (
            "per_ip",
            "429 Too Many Requests",
            "rate_limited",
            "too many connections from this address",
        ),
    };
    metrics::counter!("tandem_connections_refused_total", "reason" => reason).increment(1);
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.try_write(response.as_bytes());
}

/// Serve `app` on `listener` until `shutdown` resolves, then let open HTTP
/// requests finish (WebSocket sessions are the hub's to close).
///
/// - Accepted sockets get TCP_NODELAY: small frames (acks, ops fanned out to
///   many clients) must not wait for the peer's delayed ACK (Nagle), which
///   costs ~40 ms per message.
/// - Past `MAX_CONNECTIONS` open connections in all, a new one gets a 503
///   and a close; a peer holding `MAX_CONNS_PER_IP` gets a 429 and a close.
/// - A connection that sends nothing within `HEADER_READ_TIMEOUT_MS` of
///   being accepted is closed, and its request headers must be complete
///   within as long again (silent sockets, slowloris).
/// - Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper::server::conn::http1::Builder;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    // HTTP/1.1 only: browsers speak HTTP/2 only over TLS, which the proxy
    // in front ends, and nginx speaks HTTP/1.1 to its upstreams; HTTP/2
    // cleartext served no client, and its streams multiplied what one
    // connection could hold.
    let mut builder = Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // What one connection reads ahead of its handler (request headers
        // included, so at most 32 KiB of them, as nginx's default): the
        // bytes of a body not yet counted against BODY_BUDGET_BYTES stay
        // this small per connection.
        .max_buf_size(READ_BUFFER_BYTES);
    // Connections finish their requests when `stopping` is cancelled; the
    // tracker waits for them.
    let stopping = tokio_util::sync::CancellationToken::new();
    let connections = TaskTracker::new();
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
        let Ok(permit) = limits.total.clone().try_acquire_owned() else {
            refuse(&tcp, Refusal::Full);
            continue;
        };
        let slot = if limits.is_trusted(peer.ip()) {
            None
        } else {
            // IPv6 by its /64: one host usually holds a whole /64.
            let key = abuse::address_key(&peer.ip().to_string());
            let Some(slot) = limits.tcp_per_ip.acquire(&key) else {
                refuse(&tcp, Refusal::PerAddress);
                continue;
            };
            Some(slot)
        };
        let _ = tcp.set_nodelay(true);
        let permit = ConnPermit(Arc::new(std::sync::Mutex::new(Some(permit))));
        let held = permit.clone();
        let svc = app
            .clone()
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(held.clone());
                req.map(axum::body::Body::new)
            });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let (builder, stop) = (builder.clone(), stopping.clone());
        let first_byte = limits.header_read_timeout;
        connections.spawn(async move {
            // Nothing is allocated for a connection until it speaks.
            let mut byte = [0u8; 1];
            let spoke = tokio::select! {
                r = tokio::time::timeout(first_byte, tcp.peek(&mut byte)) => matches!(r, Ok(Ok(1..))),
                () = stop.cancelled() => return,
            };
            if !spoke {
                metrics::counter!("tandem_connections_refused_total", "reason" => "silent")
                    .increment(1);
                return;
            }
            let conn = builder
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop((slot, permit));
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let docs = Router::new()
        .route("/api/auth/register", post(api::register))
        .route("/api/auth/login", post(api::login))
        .route("/api/auth/logout", post(api::logout))
        .route("/api/auth/password", post(api::change_password))
        .route("/api/auth/ws-ticket", post(api::ws_ticket))
        .route(
            "/api/auth/account",
            axum::routing::delete(api::delete_account),
        )
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
        .route("/api/documents/import", post(api::import_document))
        .route("/api/documents/{id}/export", get(api::export_document))
        .route("/api/documents/{id}/ops", post(api::post_ops))
        .route("/api/documents/{id}/users", get(api::get_users))
        .route("/api/documents/{id}/members", get(api::get_members))
        .route("/api/documents/{id}/history", get(api::get_history))
        .route(
            "/api/documents/{id}/history/sessions",
            get(api::get_sessions),
        )
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
        .route("/api/languages", get(api::list_languages))
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
        .route("/docs", get(assets::docs_page))
        .route("/docs/protocol", get(protocol_page::page))
        .route("/assets/{*path}", get(assets::asset))
        .merge(docs)
        // Bodies are read under a deadline and a budget before any handler.
        .layer(axum::middleware::from_fn_with_state(
            bodies::BodyGuard::new(&state.config, state.conn_limits.clone()),
            bodies::guard,
        ))
        // Spans name the path only: query strings may carry tokens.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path(),
                trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
            // A caller's W3C trace context: this request joins its trace.
            if crate::otel::exporting() {
                let tp = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
                crate::otel::follow(&span, tp);
                crate::otel::note_ids(&span);
            }
            span
        }))
        .with_state(state)
}
