//! One committer per document (`COMMIT_LEADER=true`): several instances on
//! one real Redis, clients split over them. The instance holding a
//! document's commit lease commits its rounds; the others forward. Random
//! editing converges with no round lost to a race; the leader killed
//! (SIGKILL) or frozen past its lease (SIGSTOP, then SIGCONT) loses no
//! acknowledged edit, and a frozen leader's late rounds are fenced.

use std::time::{Duration, Instant};

use tandem_testkit::server::metric;
use tandem_testkit::typist::{check_exactly_once, run_typists};
use tandem_testkit::{cluster, RedisServer, TestServer, TIMEOUT};

use crate::TANDEM;

const LEADER: (&str, &str) = ("COMMIT_LEADER", "true");

/// The instance (index) holding `doc`'s commit lease, if any.
fn leader(redis: &RedisServer, doc: &str) -> Option<usize> {
    let token = redis.cli(&["GET", &format!("tandem:{{doc:{doc}}}:lease")]);
    let instance = token.trim().split(':').nth(1)?;
    instance.strip_prefix("inst")?.parse().ok()
}

async fn total(servers: &[TestServer], name: &str) -> f64 {
    let mut sum = 0.0;
    for s in servers {
        sum += metric(&s.metrics().await, name);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_editing_with_a_commit_leader_converges_without_racing() {
    let redis = RedisServer::start();
    let doc = "led";
    let (_dir, servers) = crate::cluster::random_editing_converges(&redis, &[LEADER], doc).await;
    assert!(leader(&redis, doc).is_some(), "no lease in Redis");
    let forwarded = total(&servers, "tandem_forwarded_edits_total").await;
    let retries = total(&servers, "tandem_commit_retries_total").await;
    println!("forwarded {forwarded} edits; {retries} rounds retried");
    assert!(forwarded > 0.0, "nothing was forwarded");
    assert_eq!(retries, 0.0, "rounds were lost to a race");
}

/// The leader is stopped mid-typing (`kill`: SIGKILL, else SIGTERM);
/// another instance takes the lease and every acknowledged token is in the
/// document exactly once. Returns how long commits stopped (the failover
/// wait).
async fn leader_stopped_mid_typing(doc: &str, kill: bool) -> Duration {
    let redis = RedisServer::start();
    let (_dir, mut servers) = cluster(TANDEM, &redis, 3, &[LEADER]);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let mut stopped = None;
    let mut wait = None;
    let watch_redis = &redis;
    let servers_ref = &mut servers;
    let mut typists = run_typists(addrs, doc, 6, Duration::from_millis(4000), async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let l = leader(watch_redis, doc).expect("a leader after a second of typing");
        let survivor = (l + 1) % 3;
        let before = servers_ref[survivor].document(doc).await.1;
        let at = Instant::now();
        if kill {
            servers_ref[l].kill(); // SIGKILL
        } else {
            servers_ref[l].sigterm(); // waits for the exit
        }
        stopped = Some(l);
        // Commits resume once another instance holds the lease.
        loop {
            let v = servers_ref[survivor].document(doc).await.1;
            if v > before + 3 || at.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        wait = Some(at.elapsed());
    })
    .await;
    let l = stopped.unwrap();
    let wait = wait.unwrap();
    let how = if kill { "killed" } else { "stopped (SIGTERM)" };
    println!("the leader (inst{l}) was {how}; commits resumed after {wait:?}");
    let alive = (l + 1) % 3;
    check_exactly_once(&servers[alive], doc, &mut typists).await;
    let acked: usize = typists.iter().map(|t| t.acked.len()).sum();
    assert!(acked > 50, "only {acked} acknowledged");
    wait
}

/// SIGKILL: the lease lapses (2 s) before another instance takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkilled_mid_typing_loses_no_acknowledged_edit() {
    let wait = leader_stopped_mid_typing("leaderkill", true).await;
    assert!(
        wait < Duration::from_millis(3_500),
        "failover took {wait:?}"
    );
}

/// SIGTERM: the stopping leader releases its lease, and the release is
/// announced, so another instance takes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_hands_the_lease_over_at_once() {
    let wait = leader_stopped_mid_typing("leaderterm", false).await;
    assert!(
        wait < Duration::from_millis(1_500),
        "hand-over took {wait:?}"
    );
}

/// The leader is frozen (SIGSTOP) past its lease while clients type on the
/// others, then woken: another instance led meanwhile, whatever the woken
/// one sends is fenced, and nothing acknowledged is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_frozen_past_its_lease_is_fenced_when_woken() {
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(TANDEM, &redis, 3, &[LEADER]);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let doc = "leaderfrozen";
    let mut frozen = None;
    let watch = &redis;
    let servers_ref = &servers;
    let mut typists = run_typists(addrs, doc, 6, Duration::from_millis(6000), async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let l = leader(watch, doc).expect("a leader after a second of typing");
        servers_ref[l].signal("-STOP");
        frozen = Some(l);
        tokio::time::sleep(Duration::from_millis(4000)).await;
        servers_ref[l].signal("-CONT");
    })
    .await;
    let l = frozen.unwrap();
    let now_leader = leader(&redis, doc);
    println!("inst{l} was frozen; the lease is now {now_leader:?}");
    let other = (l + 1) % 3;
    check_exactly_once(&servers[other], doc, &mut typists).await;
    // Every instance ends on one history.
    let (content, version) = servers[other].document(doc).await;
    for s in &servers {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while s.document(doc).await.1 < version {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.document(doc).await.0, content);
    }
    let grants = total(&servers, "tandem_leader_grants_total").await;
    assert!(grants >= 2.0, "nobody took over: {grants} grants");
}
