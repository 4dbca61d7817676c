//! A TCP proxy in front of an instance (or of Redis), so a test can cut
//! every client connection at once (the network dropping sockets) while the
//! instance itself stays up, and keep new ones from getting through for a
//! while (an outage).
//!
//! Must not import: `tandem_core` (bytes are copied, never parsed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: String,
    cut: watch::Sender<u64>,
    pub cuts: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (cut, rx) = watch::channel(0u64);
        let cuts = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let refuse = down.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if refuse.load(Ordering::Relaxed) {
                    continue; // down: the client sees the socket close
                }
                let _ = client.set_nodelay(true);
                let upstream = upstream.clone();
                let mut rx = rx.clone();
                rx.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return; // instance down: the client sees the socket close
                    };
                    let _ = server.set_nodelay(true);
                    let (mut c, mut s) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut c, &mut s) => {}
                        _ = rx.changed() => {} // cut: drop both sockets
                    }
                });
            }
        });
        Proxy {
            addr,
            cut,
            cuts,
            down,
            task,
        }
    }

    /// While down, new connections are closed at once (with `cut_all`: an
    /// outage of the upstream as its clients see it).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// Drop every connection through this proxy.
    pub fn cut_all(&self) {
        self.cuts.fetch_add(1, Ordering::Relaxed);
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
