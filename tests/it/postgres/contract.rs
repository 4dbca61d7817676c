//! The store contract, run against a fresh throwaway PostgreSQL and against
//! SQLite: snapshots, journal, client seqs, documents, members, metadata
//! states, token revocation and account deletion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::bus::ClientSeq;
use tandem::doc::Record;
use tandem::ot::splice;
use tandem::protocol::Role;
use tandem::store::accounts::{Created, Revoked, Shared, TokenState, UserRow};
use tandem::store::postgres::{PgSettings, PgStore};
use tandem::store::sqlite::SqliteStore;
use tandem::store::{DocPersist, Documents, Store};
use tandem_testkit::PgServer;

fn rec(version: u64, op: tandem::ot::Operation, client: &str, seq: u64) -> Arc<Record> {
    Arc::new(Record {
        version,
        op,
        user: "u".into(),
        client: client.into(),
        seq,
        time: 1000 + version as i64,
        trace: None,
    })
}

/// What every store must do.
async fn store_contract(store: &dyn Store) {
    assert!(store.load("nope").await.unwrap().is_none());
    store.ensure_document("d", 1).await.unwrap();
    store.ensure_document("d", 2).await.unwrap(); // idempotent
    let s = store.load("d").await.unwrap().unwrap();
    assert_eq!((s.version, s.content.as_str(), s.clients.len()), (0, "", 0));
    // A fresh history identity, minted once at creation.
    let epoch = s.epoch;
    assert!(epoch.len() == 16 && epoch.bytes().all(|b| b.is_ascii_hexdigit()));

    let journal = vec![
        rec(1, splice(0, 0, 0, "a😀"), "c1", 1),
        rec(2, splice(2, 2, 0, "b"), "c2", 1),
        rec(3, splice(3, 3, 0, "c"), "c1", 2),
    ];
    let job = DocPersist {
        max_clients: 10_000,
        doc: "d".into(),
        version: 3,
        content: "a😀bc".into(),
        journal: journal.clone(),
        clients: vec![
            ClientSeq {
                client: "c1".into(),
                seq: 2,
                version: 3,
            },
            ClientSeq {
                client: "c2".into(),
                seq: 1,
                version: 2,
            },
        ],
    };
    store.persist(std::slice::from_ref(&job), 10).await.unwrap();
    let s = store.load("d").await.unwrap().unwrap();
    assert_eq!((s.version, s.content.as_str()), (3, "a😀bc"));
    assert_eq!(s.epoch, epoch, "snapshots keep the epoch");
    let mut clients = s.clients.clone();
    clients.sort_by(|a, b| a.client.cmp(&b.client));
    assert_eq!(clients, job.clients);
    let back = store.journal_after("d", 0, 100, usize::MAX).await.unwrap();
    assert_eq!(
        back.iter().map(|r| Arc::new(r.clone())).collect::<Vec<_>>(),
        journal
    );
    let page = store.journal_after("d", 1, 1, usize::MAX).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].version, 2);

    // An older snapshot (another instance, late) never replaces a newer one;
    // journal rows are idempotent; a lower client seq does not win.
    let stale = DocPersist {
        max_clients: 10_000,
        doc: "d".into(),
        version: 2,
        content: "a😀b".into(),
        journal: journal[..2].to_vec(),
        clients: vec![ClientSeq {
            client: "c1".into(),
            seq: 1,
            version: 1,
        }],
    };
    store.persist(&[stale], 20).await.unwrap();
    let s = store.load("d").await.unwrap().unwrap();
    assert_eq!((s.version, s.content.as_str()), (3, "a😀bc"));
    assert!(s.clients.iter().any(|c| c.client == "c1" && c.seq == 2));
    assert_eq!(
        store
            .journal_after("d", 0, 100, usize::MAX)
            .await
            .unwrap()
            .len(),
        3
    );

    // A page also ends at a byte budget of the ops' stored JSON (bytes, not
    // characters: the emoji counts 4), with at least one record.
    let sizes: Vec<usize> = journal.iter().map(|r| r.op.to_string().len()).collect();
    for (budget, n) in [
        (0, 1),
        (sizes[0] + sizes[1] - 1, 1),
        (sizes[0] + sizes[1], 2),
        (sizes.iter().sum(), 3),
    ] {
        let page = store.journal_after("d", 0, 100, budget).await.unwrap();
        assert_eq!(page.len(), n, "budget {budget} of {sizes:?}");
    }

    // Any text the OT model takes round-trips byte-exact, U+0000 and other
    // controls included, in snapshots and journal rows; and a batch with
    // such a document beside a plain one writes both (issue 30: one NUL
    // used to make PostgreSQL refuse every save of the instance).
    let odd = "nul\u{0}tab\tdel\u{7f}bidi\u{202e}end\u{ffff}😀";
    store.ensure_document("nul", 1).await.unwrap();
    store.ensure_document("plain", 1).await.unwrap();
    let nul_journal = vec![rec(1, splice(0, 0, 0, odd), "cn", 1)];
    let batch = [
        DocPersist {
            max_clients: 10,
            doc: "nul".into(),
            version: 1,
            content: odd.into(),
            journal: nul_journal.clone(),
            clients: Vec::new(),
        },
        DocPersist {
            max_clients: 10,
            doc: "plain".into(),
            version: 1,
            content: "plain".into(),
            journal: vec![rec(1, splice(0, 0, 0, "plain"), "cp", 1)],
            clients: Vec::new(),
        },
    ];
    store.persist(&batch, 21).await.unwrap();
    let s = store.load("nul").await.unwrap().unwrap();
    assert_eq!((s.version, s.content.as_bytes()), (1, odd.as_bytes()));
    let back = store.journal_after("nul", 0, 10, usize::MAX).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].op, nul_journal[0].op);
    assert_eq!(store.load("plain").await.unwrap().unwrap().content, "plain");
    // The readiness probe's write.
    store.probe_write("instance-a", 5).await.unwrap();

    // Client rows are bounded: beyond `max_clients`, the oldest go.
    let more = DocPersist {
        max_clients: 2,
        doc: "d".into(),
        version: 3,
        content: "a😀bc".into(),
        journal: Vec::new(),
        clients: vec![ClientSeq {
            client: "c3".into(),
            seq: 1,
            version: 4,
        }],
    };
    store.persist(&[more], 25).await.unwrap();
    let mut kept: Vec<String> = store
        .load("d")
        .await
        .unwrap()
        .unwrap()
        .clients
        .into_iter()
        .map(|c| c.client)
        .collect();
    kept.sort();
    assert_eq!(kept, ["c1", "c3"]);

    // Documents per owner: the quota is checked in the insert.
    let owner = UserRow {
        id: "quser".into(),
        username: "quser".into(),
        name: "Q".into(),
        password_hash: "h".into(),
    };
    assert!(store.create_user(&owner, 1).await.unwrap());
    assert_eq!(
        store
            .create_document("q1", "1", "quser", 1, 2)
            .await
            .unwrap(),
        Created::Created
    );
    assert_eq!(
        store
            .create_document("q1", "1", "quser", 1, 2)
            .await
            .unwrap(),
        Created::Exists
    );
    assert_eq!(
        store
            .create_document("q2", "2", "quser", 1, 2)
            .await
            .unwrap(),
        Created::Created
    );
    assert_eq!(
        store
            .create_document("q3", "3", "quser", 1, 2)
            .await
            .unwrap(),
        Created::OverQuota
    );
    assert!(store.document_row("q3").await.unwrap().is_none());

    // A large batch in one round.
    let docs: Vec<String> = (0..500).map(|i| format!("bulk{i}")).collect();
    for d in &docs {
        store.ensure_document(d, 1).await.unwrap();
    }
    let batch: Vec<DocPersist> = docs
        .iter()
        .map(|d| {
            let mut text = String::new();
            let journal = (1..=10u64)
                .map(|v| {
                    let op = splice(text.chars().count(), 0, 0, "x");
                    text.insert(0, 'x');
                    rec(v, op, "w", v)
                })
                .collect();
            DocPersist {
                max_clients: 10_000,
                doc: d.clone(),
                version: 10,
                content: text,
                journal,
                clients: vec![ClientSeq {
                    client: "w".into(),
                    seq: 10,
                    version: 10,
                }],
            }
        })
        .collect();
    let t = Instant::now();
    store.persist(&batch, 30).await.unwrap();
    eprintln!(
        "persisted 500 snapshots + 5000 journal rows in {:?}",
        t.elapsed()
    );
    for d in &docs[..5] {
        let s = store.load(d).await.unwrap().unwrap();
        assert_eq!((s.version, s.content.as_str()), (10, "xxxxxxxxxx"));
        assert_eq!(
            store
                .journal_after(d, 0, 100, usize::MAX)
                .await
                .unwrap()
                .len(),
            10
        );
    }
}

fn user(id: &str) -> UserRow {
    UserRow {
        id: id.into(),
        username: format!("name-{id}"),
        name: id.to_uppercase(),
        password_hash: "h1".into(),
    }
}

/// Token revocation state (logout rows swept once expired and capped per
/// user; the password change's bound never moving back) and account
/// deletion (owned documents and memberships go, nothing else).
async fn revocation_contract(store: &dyn Store) {
    let state = |after, revoked| {
        Some(TokenState {
            valid_after_ms: after,
            revoked,
        })
    };
    assert!(store.create_user(&user("ru1"), 1).await.unwrap());
    assert!(store.create_user(&user("ru2"), 1).await.unwrap());
    assert_eq!(
        store.token_state("ru1", Some("j1")).await.unwrap(),
        state(0, false)
    );
    assert_eq!(
        store.token_state("ru1", None).await.unwrap(),
        state(0, false)
    );
    assert_eq!(store.token_state("nobody", None).await.unwrap(), None);
    // A logout revokes that token only (twice is harmless), of that user only.
    for _ in 0..2 {
        let r = store
            .revoke_token("ru1", "j1", 10_000, 1_000, 3)
            .await
            .unwrap();
        assert_eq!(r, Revoked::Token);
    }
    assert_eq!(
        store.token_state("ru1", Some("j1")).await.unwrap(),
        state(0, true)
    );
    assert_eq!(
        store.token_state("ru1", Some("j2")).await.unwrap(),
        state(0, false)
    );
    assert_eq!(
        store.token_state("ru2", Some("j1")).await.unwrap(),
        state(0, false)
    );
    // Rows past their token's expiry are swept by the next revocation.
    let r = store
        .revoke_token("ru1", "j2", 50_000, 20_000, 3)
        .await
        .unwrap();
    assert_eq!(r, Revoked::Token);
    assert_eq!(
        store.token_state("ru1", Some("j1")).await.unwrap(),
        state(0, false)
    );
    // Past the cap a logout revokes every token issued until then.
    for j in ["j3", "j4"] {
        let r = store
            .revoke_token("ru1", j, 50_000, 20_000, 3)
            .await
            .unwrap();
        assert_eq!(r, Revoked::Token);
    }
    let r = store
        .revoke_token("ru1", "j5", 50_000, 20_000, 3)
        .await
        .unwrap();
    assert_eq!(r, Revoked::AllBefore { before_ms: 20_000 });
    assert_eq!(
        store.token_state("ru1", Some("j2")).await.unwrap(),
        state(20_000, false)
    );
    // The bound never moves back; a password change moves it on.
    assert!(store.revoke_tokens_before("ru1", 5).await.unwrap());
    assert_eq!(
        store.token_state("ru1", None).await.unwrap(),
        state(20_000, false)
    );
    assert!(store.set_password("ru1", "h2", 30_000).await.unwrap());
    assert_eq!(
        store.token_state("ru1", None).await.unwrap(),
        state(30_000, false)
    );
    assert_eq!(
        store
            .user_by_id("ru1")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "h2"
    );
    assert_eq!(
        store.token_state("ru2", None).await.unwrap(),
        state(0, false)
    );
    // Nobody to revoke for.
    assert!(!store.set_password("nobody", "h", 1).await.unwrap());
    assert!(!store.revoke_tokens_before("nobody", 1).await.unwrap());
    let r = store
        .revoke_token("nobody", "jx", 50_000, 20_000, 3)
        .await
        .unwrap();
    assert_eq!(r, Revoked::NoUser);

    // Deleting ru1: its documents (shared or not) and memberships go;
    // ru2's document and ru2 stay.
    assert_eq!(
        store
            .create_document("rd1", "solo", "ru1", 1, 10)
            .await
            .unwrap(),
        Created::Created
    );
    assert_eq!(
        store
            .create_document("rd2", "shared", "ru1", 1, 10)
            .await
            .unwrap(),
        Created::Created
    );
    assert_eq!(
        store
            .create_document("rd3", "theirs", "ru2", 1, 10)
            .await
            .unwrap(),
        Created::Created
    );
    store
        .set_member("rd2", "ru2", Role::Editor, 9)
        .await
        .unwrap();
    store
        .set_member("rd3", "ru1", Role::Viewer, 9)
        .await
        .unwrap();
    // Members: at the cap a member's role still changes and nobody joins;
    // pages run owner first, then by username after the cursor.
    for u in ["rm1", "rm2", "rm3"] {
        assert!(store.create_user(&user(u), 1).await.unwrap());
    }
    let share = |u: &'static str, role, max| store.set_member("rd2", u, role, max);
    assert_eq!(share("rm2", Role::Viewer, 2).await.unwrap(), Shared::Done);
    assert_eq!(share("rm3", Role::Viewer, 2).await.unwrap(), Shared::Full);
    assert_eq!(share("rm2", Role::Editor, 2).await.unwrap(), Shared::Done);
    assert_eq!(share("rm1", Role::Viewer, 9).await.unwrap(), Shared::Done);
    assert_eq!(store.member_count("rd2").await.unwrap(), 3);
    let names = |rows: Vec<tandem::store::accounts::MemberRow>| {
        rows.into_iter()
            .map(|m| (m.username, m.role))
            .collect::<Vec<_>>()
    };
    let n = |s: &str| s.to_owned();
    assert_eq!(
        names(store.members("rd2", None, 2).await.unwrap()),
        [
            (n("name-ru1"), Role::Owner),
            (n("name-rm1"), Role::Viewer),
            (n("name-rm2"), Role::Editor)
        ]
    );
    assert_eq!(
        names(store.members("rd2", Some("name-rm2"), 2).await.unwrap()),
        [(n("name-ru2"), Role::Editor)]
    );
    store
        .revoke_token("ru1", "j9", 90_000, 40_000, 3)
        .await
        .unwrap();
    let mut gone = store.delete_user("ru1").await.unwrap().unwrap();
    gone.sort();
    assert_eq!(gone, ["rd1", "rd2"]);
    for d in ["rd1", "rd2"] {
        assert!(store.document_row(d).await.unwrap().is_none());
    }
    assert_eq!(store.role_of("rd3", "ru1").await.unwrap(), None);
    assert_eq!(
        store.role_of("rd3", "ru2").await.unwrap(),
        Some(Role::Owner)
    );
    assert!(store.user_by_id("ru1").await.unwrap().is_none());
    assert_eq!(store.token_state("ru1", Some("j9")).await.unwrap(), None);
    assert_eq!(store.delete_user("ru1").await.unwrap(), None);
    assert!(store.user_by_id("ru2").await.unwrap().is_some());
    // The name is free again.
    assert!(store.create_user(&user("ru1"), 2).await.unwrap());
    assert_eq!(
        store.token_state("ru1", Some("j9")).await.unwrap(),
        state(0, false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_on_postgres() {
    let pg = PgServer::start();
    let settings = PgSettings {
        url: pg.url(),
        pool_size: 4,
        statement_timeout: Duration::from_secs(5),
    };
    let store = PgStore::connect(&settings).await.unwrap();
    store_contract(&store).await;
    revocation_contract(&store).await;
    // Migrations are idempotent across restarts of the app.
    drop(store);
    let store = PgStore::connect(&settings).await.unwrap();
    assert_eq!(store.load("d").await.unwrap().unwrap().version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    store_contract(&store).await;
    revocation_contract(&store).await;
}
