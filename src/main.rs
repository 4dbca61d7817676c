//! `tandem`: parse config, set up logging, build the app, serve until
//! SIGTERM/Ctrl-C, then shut down gracefully (close sockets with "going
//! away", flush snapshots and journal).

use std::time::Duration;

use tandem::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut config = Config::load();
    // The instance id names this process in logs, presence and traces.
    let instance = config
        .instance_id
        .clone()
        .unwrap_or_else(|| format!("tandem-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    config.instance_id = Some(instance.clone());
    // Logs go to stderr; stdout carries only the "listening on" line.
    let telemetry = tandem::otel::init(
        &config.rust_log,
        config.log_format == LogFormat::Json,
        &instance,
    );
    // Every connection is a file descriptor: take all the system allows.
    match tandem::web::raise_file_limit() {
        Ok((before, after)) if after > before => {
            info!(before, after, "open-file limit raised to the hard limit");
        }
        Ok((_, after)) => info!(limit = after, "open-file limit"),
        Err(e) => warn!(error = %e, "cannot read or raise the open-file limit"),
    }
    if config.allow_anonymous {
        warn!("ALLOW_ANONYMOUS=true: anyone can open and edit any document. For demos and tests only.");
    }
    let addr = format!("{}:{}", config.host, config.port);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            error!(%addr, error = %e, "cannot listen");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (store, bus) = config.storage_summary();
    let state = match tandem::build(config).await {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    info!(
        instance = %state.hub.instance_id(),
        store = %store,
        bus = %bus.as_deref().unwrap_or("in-process (single node)"),
        "tandem listening on http://{local}; data in {store}{}",
        bus.as_deref().map(|b| format!(", ops through {b}")).unwrap_or_default()
    );
    // Tests and scripts read this line to find the port.
    println!("listening on http://{local}");

    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        signal.cancel();
    });

    let hub = state.hub.clone();
    let sessions = state.sessions.clone();
    let grace_ms = state.config.shutdown_grace_ms;
    let limits = state.conn_limits.clone();
    let server = tandem::serve(
        listener,
        tandem::app(state),
        limits,
        shutdown.clone().cancelled_owned(),
    );
    let grace = Duration::from_millis(grace_ms);
    let drain = async {
        shutdown.cancelled().await;
        // Documents flush and close their sockets (1001: reconnect elsewhere);
        // then sessions finish writing. All within the grace period.
        let durable = match tokio::time::timeout(grace, hub.shutdown()).await {
            Ok(d) => d,
            Err(_) => {
                error!("shutdown grace period exceeded");
                false
            }
        };
        sessions.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), sessions.wait()).await;
        durable
    };
    tokio::pin!(server);
    tokio::pin!(drain);
    let mut server_done = false;
    let durable = tokio::select! {
        served = &mut server => {
            server_done = true;
            if !shutdown.is_cancelled() {
                error!(result = ?served, "server stopped unexpectedly");
                return std::process::ExitCode::FAILURE;
            }
            // Stopped accepting because of the signal: finish draining.
            (&mut drain).await
        }
        durable = &mut drain => durable,
    };
    // Give plain HTTP connections a moment to finish, never more.
    if !server_done {
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), server).await {
            error!(error = %e, "server error");
        }
    }
    telemetry.shutdown();
    if !durable {
        error!("some changes could not be written to the store");
        return std::process::ExitCode::FAILURE;
    }
    info!("stopped cleanly");
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
