//! The [`Accounts`] SQL on a temporary SQLite file. (The [`Documents`] and
//! [`Store`] contract runs on both backends in `tests/it/postgres/contract.rs`.)

use super::sqlite::SqliteStore;
use super::{Accounts, Documents};
use crate::protocol::Role;
use crate::store::accounts::{Created, Shared, UserRow};

fn user(id: &str, username: &str) -> UserRow {
    UserRow {
        id: id.into(),
        username: username.into(),
        name: format!("Name {id}"),
        password_hash: format!("hash {id}"),
    }
}

/// What every backend's accounts must do.
async fn accounts_contract(s: &dyn Accounts) {
    // Users: usernames are unique.
    assert!(s.create_user(&user("u1", "ann"), 1).await.unwrap());
    assert!(s.create_user(&user("u2", "bob"), 2).await.unwrap());
    assert!(!s.create_user(&user("u3", "ann"), 3).await.unwrap());
    let ann = s.user_by_username("ann").await.unwrap().unwrap();
    assert_eq!(
        (
            ann.id.as_str(),
            ann.name.as_str(),
            ann.password_hash.as_str()
        ),
        ("u1", "Name u1", "hash u1")
    );
    assert!(s.user_by_username("nobody").await.unwrap().is_none());
    assert_eq!(s.user_name("u2").await.unwrap().as_deref(), Some("Name u2"));
    assert_eq!(s.user_name("u3").await.unwrap(), None);

    // Documents: ids are unique; the row carries the owner's username.
    assert_eq!(
        s.create_document("d1", "One", "u1", 10, 9).await.unwrap(),
        Created::Created
    );
    assert_eq!(
        s.create_document("d1", "Again", "u2", 11, 9).await.unwrap(),
        Created::Exists
    );
    assert_eq!(
        s.create_document("d2", "Two", "u2", 20, 9).await.unwrap(),
        Created::Created
    );
    // The owner quota: u1 owns one document; with a quota of one, no more.
    assert_eq!(
        s.create_document("dq", "Q", "u1", 30, 1).await.unwrap(),
        Created::OverQuota
    );
    assert!(s.document_row("dq").await.unwrap().is_none());
    let d1 = s.document_row("d1").await.unwrap().unwrap();
    assert_eq!(
        (d1.id.as_str(), d1.title.as_str(), d1.owner.as_deref()),
        ("d1", "One", Some("u1"))
    );
    assert_eq!(d1.owner_username.as_deref(), Some("ann"));
    assert_eq!((d1.created_at, d1.updated_at), (10, 10));
    assert!(s.document_row("nope").await.unwrap().is_none());

    // Roles: owner, member role (upserted), none.
    assert_eq!(s.role_of("d1", "u1").await.unwrap(), Some(Role::Owner));
    assert_eq!(s.role_of("d1", "u2").await.unwrap(), None);
    assert_eq!(s.role_of("nope", "u1").await.unwrap(), None);
    assert_eq!(
        s.set_member("d1", "u2", Role::Viewer, 9).await.unwrap(),
        Shared::Done
    );
    assert_eq!(s.role_of("d1", "u2").await.unwrap(), Some(Role::Viewer));
    // At the cap a member's role still changes; nobody new joins.
    assert_eq!(
        s.set_member("d1", "u2", Role::Editor, 1).await.unwrap(),
        Shared::Done
    );
    assert_eq!(s.role_of("d1", "u2").await.unwrap(), Some(Role::Editor));
    assert!(s.create_user(&user("u4", "cy"), 4).await.unwrap());
    assert!(s.create_user(&user("u5", "al"), 5).await.unwrap());
    assert_eq!(
        s.set_member("d1", "u4", Role::Viewer, 1).await.unwrap(),
        Shared::Full
    );
    assert_eq!(s.role_of("d1", "u4").await.unwrap(), None);
    s.set_member("d1", "u4", Role::Viewer, 9).await.unwrap();
    s.set_member("d1", "u5", Role::Viewer, 9).await.unwrap();
    assert_eq!(s.member_count("d1").await.unwrap(), 3);
    // Pages: the owner first, then members by username after the cursor.
    let names = |rows: Vec<crate::store::accounts::MemberRow>| {
        rows.into_iter().map(|m| m.username).collect::<Vec<_>>()
    };
    let first = names(s.members("d1", None, 2).await.unwrap());
    assert_eq!(first, ["ann", "al", "bob"]);
    let rest = names(s.members("d1", Some("bob"), 2).await.unwrap());
    assert_eq!(rest, ["cy"]);
    assert!(s.members("d1", Some("cy"), 2).await.unwrap().is_empty());
    assert!(s.remove_member("d1", "u4").await.unwrap());
    assert!(s.remove_member("d1", "u5").await.unwrap());

    // Lists: owned and shared, newest first, paged.
    let list = s.list_documents("u2", 10, 0).await.unwrap();
    let got: Vec<_> = list.iter().map(|d| (d.id.as_str(), d.role)).collect();
    assert_eq!(got, [("d2", Role::Owner), ("d1", Role::Editor)]);
    assert_eq!((list[1].title.as_str(), list[1].version), ("One", 0));
    let page: Vec<_> = s.list_documents("u2", 1, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "d1");
    assert_eq!(s.list_documents("u1", 10, 0).await.unwrap().len(), 1);

    // Metadata: one state per instance, the merged title on the row; a
    // document gone meanwhile is skipped.
    assert!(s.meta_states("d1").await.unwrap().is_empty());
    s.put_meta("d1", "i1", "{\"a\":1}", "Renamed", "")
        .await
        .unwrap();
    s.put_meta("d1", "i2", "{\"b\":2}", "Renamed", "")
        .await
        .unwrap();
    s.put_meta("d1", "i1", "{\"a\":3}", "Renamed", "rust")
        .await
        .unwrap();
    let mut states = s.meta_states("d1").await.unwrap();
    states.sort();
    assert_eq!(states, ["{\"a\":3}", "{\"b\":2}"]);
    let d1 = s.document_row("d1").await.unwrap().unwrap();
    assert_eq!(d1.title, "Renamed");
    let listed = s.list_documents("u1", 10, 0).await.unwrap();
    assert_eq!(listed[0].language, "rust");
    s.put_meta("gone", "i1", "{}", "Gone", "").await.unwrap();
    assert!(s.meta_states("gone").await.unwrap().is_empty());

    // Members leave; documents go with their members and metadata.
    assert!(s.remove_member("d1", "u2").await.unwrap());
    assert!(!s.remove_member("d1", "u2").await.unwrap());
    assert_eq!(s.role_of("d1", "u2").await.unwrap(), None);
    s.set_member("d1", "u2", Role::Viewer, 9).await.unwrap();
    assert!(s.delete_document("d1").await.unwrap());
    assert!(!s.delete_document("d1").await.unwrap());
    assert!(s.document_row("d1").await.unwrap().is_none());
    assert!(s.meta_states("d1").await.unwrap().is_empty());
    assert_eq!(s.list_documents("u2", 10, 0).await.unwrap().len(), 1);
}

#[tokio::test]
async fn accounts_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    accounts_contract(&store).await;
    store.ping().await.unwrap();
    store.close().await;
}

/// A database whose disk fills up refuses writes with an error, never a
/// silent success, and once room is made takes them again by itself;
/// every write it acknowledged is in the file, as a fresh pool reads it
/// (issue 30: a failed transaction left its pooled connection inside a
/// transaction SQLite had already rolled back, later "commits" only nested
/// in it, held the write lock, and were lost at close). Four writers at
/// once, as the pool has four connections. As root, a real full
/// filesystem (a 1 MB tmpfs, room made by removing a file beside the
/// database: the failing case); elsewhere `SQLITE_MAX_BYTES` gives the same
/// `SQLITE_FULL` (room made by deleting a document).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_loses_none_it_took() {
    // Before the fix it hung on SQLite's write lock: fail instead.
    tokio::time::timeout(std::time::Duration::from_secs(60), full_disk())
        .await
        .expect("the store hung on a full disk");
}

async fn full_disk() {
    use std::sync::Arc;

    use super::sqlite::SqliteSettings;
    use crate::doc::Record;

    let tmpfs = tandem_testkit::Tmpfs::mount(1 << 20);
    let dir = match &tmpfs {
        Some(t) => tempfile::tempdir_in(t.path()).unwrap(),
        None => {
            eprintln!("no tmpfs (not root?): the disk fills through SQLITE_MAX_BYTES instead");
            tempfile::tempdir().unwrap()
        }
    };
    let filler = dir.path().join("filler");
    let settings = SqliteSettings {
        strict: false,
        max_bytes: if tmpfs.is_some() { 0 } else { 512 * 1024 },
    };
    let store = Arc::new(SqliteStore::open_with(dir.path(), &settings).await.unwrap());
    if tmpfs.is_some() {
        std::fs::write(&filler, vec![7u8; 256 * 1024]).unwrap();
    }
    let text = "x".repeat(1500);
    // Each writer appends `count` records to its own document and returns
    // the versions the store acknowledged and how many it refused.
    async fn write(
        store: Arc<SqliteStore>,
        doc: String,
        text: String,
        first: u64,
        count: u64,
    ) -> (Vec<u64>, u32) {
        let (mut acked, mut refused) = (Vec::new(), 0);
        let mut version = first;
        for _ in 0..count {
            let mut op = crate::ot::Operation::new();
            op.insert(&text);
            let rec = Arc::new(Record {
                version,
                op,
                user: "u".into(),
                client: "c".into(),
                seq: version,
                time: 1,
                trace: None,
            });
            let recs = [rec];
            match super::Store::journal_append(&*store, &[(doc.as_str(), &recs[..])]).await {
                Ok(()) => {
                    acked.push(version);
                    version += 1;
                }
                Err(_) => refused += 1,
            }
        }
        (acked, refused)
    }
    let docs: Vec<String> = (0..4).map(|i| format!("w{i}")).collect();
    for d in &docs {
        store.ensure_document(d, 1).await.unwrap();
    }
    let mut acked: Vec<Vec<u64>> = vec![Vec::new(); docs.len()];
    let round = |acked: &Vec<Vec<u64>>, count: u64, writers: usize| {
        docs.iter()
            .take(writers)
            .enumerate()
            .map(|(i, d)| {
                let first = acked[i].last().map_or(1, |v| v + 1);
                tokio::spawn(write(store.clone(), d.clone(), text.clone(), first, count))
            })
            .collect::<Vec<_>>()
    };
    // Fill: 4 × 150 records of 1.5 KB fit in neither bound.
    let mut refused = 0;
    for (i, h) in round(&acked, 150, 4).into_iter().enumerate() {
        let (a, r) = h.await.unwrap();
        acked[i].extend(a);
        refused += r;
    }
    assert!(refused > 0, "the disk never filled");
    // Full, a write is refused every time, not taken.
    for h in round(&acked, 5, 4) {
        let (a, r) = h.await.unwrap();
        assert_eq!((a, r), (vec![], 5), "a write to a full disk");
    }
    // Room is made; writes are taken again, by the same pool.
    let writers = if tmpfs.is_some() {
        std::fs::remove_file(&filler).unwrap();
        4
    } else {
        store.delete_document("w3").await.unwrap();
        acked.truncate(3);
        3
    };
    for (i, h) in round(&acked, 3, writers).into_iter().enumerate() {
        let (a, r) = h.await.unwrap();
        assert_eq!((a.len(), r), (3, 0), "writes after room was made");
        acked[i].extend(a);
    }
    let expected: Vec<(String, Vec<u64>)> = docs.iter().cloned().zip(acked).collect();
    store.close().await;
    drop(store);
    let store = SqliteStore::open(dir.path()).await.unwrap();
    for (doc, versions) in expected {
        let got: Vec<u64> = store
            .journal_after(&doc, 0, 10_000, usize::MAX)
            .await
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(
            got, versions,
            "{doc}: the journal against what was acknowledged"
        );
    }
    store.close().await;
    drop(dir);
}
