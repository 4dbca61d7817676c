//! The [`Accounts`] SQL on a temporary SQLite file. (The [`Documents`] and
//! [`Store`] contract runs on both backends in `tests/it/postgres.rs`.)

use super::sqlite::SqliteStore;
use super::{Accounts, Documents};
use crate::protocol::Role;
use crate::store::accounts::{Created, UserRow};

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
    s.set_member("d1", "u2", Role::Viewer).await.unwrap();
    assert_eq!(s.role_of("d1", "u2").await.unwrap(), Some(Role::Viewer));
    s.set_member("d1", "u2", Role::Editor).await.unwrap();
    assert_eq!(s.role_of("d1", "u2").await.unwrap(), Some(Role::Editor));

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
    s.set_member("d1", "u2", Role::Viewer).await.unwrap();
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
