//! The commit lease and the fence, at script level on a real Redis
//! (`lease.lua`, `commit.lua`'s KEYS[12]/ARGV[12–13]): a lease is granted
//! once, renewed and released only by its token; a commit carrying a token
//! that is not the lease appends nothing; a commit by the holder extends
//! its lease; a token survives no data loss. (The leader that uses them is
//! issue 32, step 5.)

use std::sync::Arc;
use std::time::Duration;

use tandem::bus::redis::{RedisBackend, RedisSettings};
use tandem::bus::{
    CommitBatch, CommitRecord, CommitReply, LeaseAction, LeaseReply, Range, Seed, Sequencer,
};
use tandem::ot::splice;
use tandem_testkit::RedisServer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const TTL: Duration = Duration::from_millis(2_000);

async fn backend(redis: &RedisServer) -> (Arc<RedisBackend>, CancellationToken) {
    let settings = RedisSettings {
        url: redis.url(),
        prefix: format!("lease{}", std::process::id()),
        ..Default::default()
    };
    let cancel = CancellationToken::new();
    let b = RedisBackend::connect(settings, &TaskTracker::new(), cancel.clone())
        .await
        .expect("connect to redis");
    (b, cancel)
}

fn acquire(instance: &str, nonce: &str) -> LeaseAction {
    LeaseAction::Acquire {
        instance: instance.into(),
        nonce: nonce.into(),
    }
}

fn granted(r: LeaseReply) -> String {
    match r {
        LeaseReply::Granted { token } => token,
        other => panic!("not granted: {other:?}"),
    }
}

/// A batch of one insert at `base` (the document holds `base` chars).
fn batch(base: u64, token: &str, seq: u64) -> CommitBatch {
    CommitBatch {
        base,
        records: vec![CommitRecord {
            op: splice(base as usize, base as usize, 0, "x"),
            user: "u".into(),
            client: "c".into(),
            seq,
            time: 0,
            undo: None,
            trace: None,
        }],
        epoch: String::new(),
        token: token.into(),
    }
}

async fn head(b: &RedisBackend, doc: &str) -> usize {
    match b.ops_since(doc, 0, "").await.unwrap() {
        Range::Records(r) => r.len(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_granted_once_and_kept_by_its_token_only() {
    let redis = RedisServer::start();
    let (b, cancel) = backend(&redis).await;
    let doc = "leased";
    let t1 = granted(b.lease(doc, acquire("i1", "n1"), TTL).await.unwrap());
    assert!(t1.ends_with(":i1:n1"), "{t1}");
    match b.lease(doc, acquire("i2", "n2"), TTL).await.unwrap() {
        LeaseReply::Held { token, left } => {
            assert_eq!(token, t1);
            assert!(
                left > Duration::from_millis(1_000) && left <= TTL,
                "{left:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let renew = |token: &str| LeaseAction::Renew {
        token: token.into(),
    };
    assert_eq!(
        b.lease(doc, renew(&t1), TTL).await.unwrap(),
        LeaseReply::Renewed
    );
    assert_eq!(
        b.lease(doc, renew("9:i2:n2"), TTL).await.unwrap(),
        LeaseReply::Lost { holder: t1.clone() }
    );
    let release = |token: &str| LeaseAction::Release {
        token: token.into(),
    };
    assert_eq!(
        b.lease(doc, release("9:i2:n2"), TTL).await.unwrap(),
        LeaseReply::Lost { holder: t1.clone() }
    );
    assert_eq!(
        b.lease(doc, release(&t1), TTL).await.unwrap(),
        LeaseReply::Released
    );
    let t2 = granted(b.lease(doc, acquire("i2", "n2"), TTL).await.unwrap());
    assert_ne!(t2, t1, "a new term");
    // Expiry frees it.
    let short = Duration::from_millis(100);
    let doc2 = "expiring";
    granted(b.lease(doc2, acquire("i1", "a"), short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(250)).await;
    granted(b.lease(doc2, acquire("i2", "b"), TTL).await.unwrap());
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_commits_and_its_commits_extend_the_lease() {
    let redis = RedisServer::start();
    let (b, cancel) = backend(&redis).await;
    let doc = "fenced";
    b.seed(doc, &Seed::default()).await.unwrap();
    // No lease at all: a token is fenced, nothing appended.
    match b.commit_batch(doc, batch(0, "1:i1:n1", 1)).await.unwrap() {
        CommitReply::Fenced { holder, .. } => assert_eq!(holder, ""),
        other => panic!("{other:?}"),
    }
    assert_eq!(head(&b, doc).await, 0);
    // Unchecked without a token (today's callers).
    assert!(matches!(
        b.commit_batch(doc, batch(0, "", 1)).await.unwrap(),
        CommitReply::Committed(_)
    ));
    let short = Duration::from_millis(300);
    let token = granted(b.lease(doc, acquire("i1", "n1"), short).await.unwrap());
    // Another's token: fenced, told who holds it.
    match b.commit_batch(doc, batch(1, "7:i2:zz", 2)).await.unwrap() {
        CommitReply::Fenced { holder, left } => {
            assert_eq!(holder, token);
            assert!(left <= short, "{left:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(head(&b, doc).await, 1);
    // The holder commits, and that extends its lease to the commit TTL
    // (2 s), well past the 300 ms it was granted for.
    assert!(matches!(
        b.commit_batch(doc, batch(1, &token, 2)).await.unwrap(),
        CommitReply::Committed(_)
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    match b.lease(doc, acquire("i2", "n2"), TTL).await.unwrap() {
        LeaseReply::Held { token: t, .. } => assert_eq!(t, token),
        other => panic!("the commit did not extend the lease: {other:?}"),
    }
    // A stale commit by the holder also extends it; past its lease it is
    // fenced (a frozen leader woken too late).
    assert!(matches!(
        b.commit_batch(doc, batch(1, &token, 3)).await.unwrap(),
        CommitReply::Stale { .. }
    ));
    let release = LeaseAction::Release {
        token: token.clone(),
    };
    assert_eq!(
        b.lease(doc, release, TTL).await.unwrap(),
        LeaseReply::Released
    );
    assert!(matches!(
        b.commit_batch(doc, batch(2, &token, 3)).await.unwrap(),
        CommitReply::Fenced { .. }
    ));
    assert_eq!(head(&b, doc).await, 2);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_before_redis_lost_its_data_never_matches() {
    let redis = RedisServer::start();
    let (b, cancel) = backend(&redis).await;
    let doc = "flushed";
    b.seed(doc, &Seed::default()).await.unwrap();
    let old = granted(b.lease(doc, acquire("i1", "n1"), TTL).await.unwrap());
    redis.flushall();
    b.seed(doc, &Seed::default()).await.unwrap();
    // The term starts over; the nonce keeps the token apart.
    let new = granted(b.lease(doc, acquire("i1", "n2"), TTL).await.unwrap());
    assert_eq!(
        old.split(':').next(),
        new.split(':').next(),
        "term restarted"
    );
    assert_ne!(old, new);
    assert!(matches!(
        b.commit_batch(doc, batch(0, &old, 1)).await.unwrap(),
        CommitReply::Fenced { .. }
    ));
    assert_eq!(head(&b, doc).await, 0);
    cancel.cancel();
}
