//! The store's behaviour, the same on embedded SQLite and on a real PostgreSQL server.

mod support;

use serde_json::json;
use wasmgate_store::{Expect, Kind, Store, StoreError};

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn sqlite() -> Store {
    // Under target/tmp (cargo's scratch space for integration tests), one file per test.
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "store-{}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    let _ = std::fs::remove_file(&file); // left by an earlier run with the same pid
    Store::open(&format!("sqlite://{}", file.display())).await.unwrap()
}

async fn postgres() -> Store {
    let url = tokio::task::spawn_blocking(support::postgres::database).await.unwrap();
    Store::open(&url).await.unwrap()
}

/// Each test runs once per backend.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test] async fn $name() { super::$name(super::sqlite().await).await } )* }
        mod on_postgres { $( #[tokio::test] async fn $name() { super::$name(super::postgres().await).await } )* }
    };
}

on_both!(
    resources_are_created_read_updated_and_deleted,
    writes_check_the_revision_they_expect,
    lists_page_in_id_order,
    every_write_moves_the_generation,
    replace_all_leaves_exactly_what_it_was_given,
    meta_values_are_set_once_and_survive_imports,
    publications_keep_ten_and_roll_back,
    components_are_kept_by_their_hash,
    writes_since_a_generation_are_refused_once_it_moved,
);

async fn writes_since_a_generation_are_refused_once_it_moved(store: Store) {
    let g = store.generation().await.unwrap();
    let checked = store.since(g);
    checked.put(Kind::Group, "a", &json!({"id": "a"}), Expect::Any).await.unwrap();
    // That write moved the generation: a second change checked against `g` is refused, and
    // leaves nothing behind.
    let refused = checked.put(Kind::Group, "b", &json!({"id": "b"}), Expect::Any).await;
    assert!(matches!(refused, Err(StoreError::Moved)), "{refused:?}");
    assert!(matches!(checked.publish("x", "RELEASE", "", &json!({})).await, Err(StoreError::Moved)));
    assert!(matches!(store.get(Kind::Group, "b").await, Err(StoreError::NotFound { .. })));
    assert_eq!(store.generation().await.unwrap(), g + 1);
    // Checked again at the current generation, it goes through.
    let now = store.generation().await.unwrap();
    store.since(now).put(Kind::Group, "b", &json!({"id": "b"}), Expect::Any).await.unwrap();
}

async fn components_are_kept_by_their_hash(store: Store) {
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let hash = store.put_component(&bytes).await.unwrap();
    assert_eq!(hash.len(), 64);
    assert_eq!(store.put_component(&bytes).await.unwrap(), hash, "the same bytes, the same name");
    assert_eq!(store.component(&hash).await.unwrap(), bytes);
    let other = store.put_component(b"other").await.unwrap();
    assert_ne!(other, hash);
    assert_eq!(store.component(&other).await.unwrap(), b"other");
    assert!(matches!(store.component(&"0".repeat(64)).await, Err(StoreError::NotFound { .. })));
}

async fn resources_are_created_read_updated_and_deleted(store: Store) {
    let body = json!({"id": "g1", "domains": ["api.example.com"], "note": "ünïcode"});
    let created = store.put(Kind::Group, "g1", &body, Expect::Absent).await.unwrap();
    assert_eq!(created.revision, 1);
    let read = store.get(Kind::Group, "g1").await.unwrap();
    assert_eq!((read.body, read.revision), (body, 1));
    assert!(matches!(store.get(Kind::Api, "g1").await, Err(StoreError::NotFound { .. })), "kinds are apart");

    let changed = json!({"id": "g1", "domains": []});
    assert_eq!(store.put(Kind::Group, "g1", &changed, Expect::Any).await.unwrap().revision, 2);
    assert_eq!(store.get(Kind::Group, "g1").await.unwrap().body, changed);

    store.delete(Kind::Group, "g1", Expect::Any).await.unwrap();
    assert!(matches!(store.get(Kind::Group, "g1").await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.delete(Kind::Group, "g1", Expect::Any).await, Err(StoreError::NotFound { .. })));
}

async fn writes_check_the_revision_they_expect(store: Store) {
    store.put(Kind::Api, "a", &json!({"v": 1}), Expect::Absent).await.unwrap();
    let again = store.put(Kind::Api, "a", &json!({"v": 0}), Expect::Absent).await;
    assert!(matches!(again, Err(StoreError::Exists { .. })), "{again:?}");
    store.put(Kind::Api, "a", &json!({"v": 2}), Expect::Revision(1)).await.unwrap();
    // A writer that read revision 1 lost the race: refused, nothing changed.
    match store.put(Kind::Api, "a", &json!({"v": 3}), Expect::Revision(1)).await {
        Err(StoreError::Conflict { current: 2, expected: 1, .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get(Kind::Api, "a").await.unwrap().body, json!({"v": 2}));
    let stale_delete = store.delete(Kind::Api, "a", Expect::Revision(1)).await;
    assert!(matches!(stale_delete, Err(StoreError::Conflict { .. })), "{stale_delete:?}");
    let missing = store.put(Kind::Api, "b", &json!({}), Expect::Revision(1)).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    store.delete(Kind::Api, "a", Expect::Revision(2)).await.unwrap();
}

async fn lists_page_in_id_order(store: Store) {
    for id in ["c", "a", "e", "b", "d"] {
        store.put(Kind::Credential, id, &json!({"id": id}), Expect::Absent).await.unwrap();
    }
    store.put(Kind::Policy, "x", &json!({}), Expect::Absent).await.unwrap();
    let ids = |page: Vec<wasmgate_store::Record>| page.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list(Kind::Credential, None, 2).await.unwrap()), ["a", "b"]);
    assert_eq!(ids(store.list(Kind::Credential, Some("b"), 2).await.unwrap()), ["c", "d"]);
    assert_eq!(ids(store.list(Kind::Credential, Some("d"), 2).await.unwrap()), ["e"]);
    assert!(store.list(Kind::Credential, Some("e"), 2).await.unwrap().is_empty());
}

async fn every_write_moves_the_generation(store: Store) {
    let g0 = store.generation().await.unwrap();
    store.put(Kind::Environment, "TEST", &json!({}), Expect::Absent).await.unwrap();
    let g1 = store.generation().await.unwrap();
    assert!(g1 > g0);
    store.delete(Kind::Environment, "TEST", Expect::Any).await.unwrap();
    assert!(store.generation().await.unwrap() > g1);
    // Reads do not.
    let g2 = store.generation().await.unwrap();
    store.list(Kind::Environment, None, 10).await.unwrap();
    assert_eq!(store.generation().await.unwrap(), g2);
}

async fn replace_all_leaves_exactly_what_it_was_given(store: Store) {
    store.put(Kind::Group, "old", &json!({}), Expect::Absent).await.unwrap();
    let wanted = vec![
        (Kind::Group, "g".to_string(), json!({"id": "g"})),
        (Kind::Api, "a".to_string(), json!({"id": "a", "group": "g"})),
    ];
    store.replace_all(&wanted, &[], "t").await.unwrap();
    assert!(store.list(Kind::Group, None, 10).await.unwrap().iter().all(|r| r.id != "old"));
    assert_eq!(store.get(Kind::Api, "a").await.unwrap().body, json!({"id": "a", "group": "g"}));
    // A failing import changes nothing: the duplicate refuses the whole transaction.
    let broken =
        vec![(Kind::Group, "new".to_string(), json!({})), (Kind::Group, "new".to_string(), json!({}))];
    assert!(matches!(store.replace_all(&broken, &[], "t").await, Err(StoreError::Exists { .. })));
    assert_eq!(store.get(Kind::Api, "a").await.unwrap().revision, 1);
    assert!(store.get(Kind::Group, "new").await.is_err());
}

async fn meta_values_are_set_once_and_survive_imports(store: Store) {
    assert_eq!(store.meta("k").await.unwrap(), None);
    assert!(store.meta_init("k", "first").await.unwrap());
    assert!(!store.meta_init("k", "second").await.unwrap());
    store.replace_all(&[], &[], "t").await.unwrap();
    assert_eq!(store.meta("k").await.unwrap().as_deref(), Some("first"));
}

async fn publications_keep_ten_and_roll_back(store: Store) {
    for v in 1..=11 {
        let p = store.publish("a", "RELEASE", &format!("v{v}"), &json!({"v": v})).await.unwrap();
        assert_eq!((p.version, p.current), (v, true));
    }
    store.publish("a", "TEST", "t1", &json!({"v": "t"})).await.unwrap();
    let history = store.history("a", Some("RELEASE")).await.unwrap();
    let versions: Vec<i64> = history.iter().map(|p| p.version).collect();
    assert_eq!(versions, (2..=11).rev().collect::<Vec<_>>(), "the last ten, newest first");
    assert!(history[0].current && history.iter().skip(1).all(|p| !p.current));
    assert_eq!(store.history("a", None).await.unwrap().len(), 11, "both environments");

    store.rollback("a", "RELEASE", 3).await.unwrap();
    let served = store.served().await.unwrap();
    let release = served.iter().find(|p| p.environment == "RELEASE").unwrap();
    assert_eq!((release.version, &release.body, &release.description[..]), (3, &json!({"v": 3}), "v3"));
    assert!(matches!(store.rollback("a", "RELEASE", 1).await, Err(StoreError::NotFound { .. })), "pruned");
    // Publishing on goes on from the newest version; the one served is never pruned.
    for _ in 0..12 {
        store.rollback("a", "RELEASE", 3).await.unwrap();
        let p = store.publish("b", "RELEASE", "other", &json!({})).await.unwrap();
        assert!(p.version >= 1);
    }
    assert!(store.history("a", Some("RELEASE")).await.unwrap().iter().any(|p| p.version == 3 && p.current));

    store.unpublish("a", "RELEASE").await.unwrap();
    let served = store.served().await.unwrap();
    assert!(served.iter().all(|p| !(p.api_id == "a" && p.environment == "RELEASE")));
    assert!(served.iter().any(|p| p.api_id == "a" && p.environment == "TEST"));
    assert!(matches!(store.unpublish("a", "RELEASE").await, Err(StoreError::NotFound { .. })));
}
