//! The session API without HTTP: typed reads, status rules, iterate, merge.

use scs::{ErrorKind, SessionManager, Status};
use scs_memstore::MemoryStore;

fn manager() -> SessionManager {
    SessionManager::new(
        MemoryStore::builder()
            .cleanup_interval(None)
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn typed_getters_on_another_type_return_none() {
    let m = manager();
    let s = m.load(None).await.unwrap();
    s.put("text", "hello").unwrap();
    s.put("n", &42_i64).unwrap();
    s.put("f", &1.5_f64).unwrap();
    s.put_bytes("bytes", &[0, 1, 255]).unwrap();
    let now = scs::time::OffsetDateTime::now_utc();
    s.put("when", &now).unwrap();
    assert_eq!(s.get_i64("text"), None);
    assert_eq!(s.get_bool("n"), None);
    assert_eq!(s.get_string("n"), None);
    assert_eq!(s.get_time("text"), None);
    assert_eq!(s.get_bytes("text"), None);
    assert_eq!(s.get::<Vec<String>>("f"), None);
    assert_eq!(
        s.try_get::<i64>("text").unwrap_err().kind(),
        ErrorKind::Codec
    );
    assert_eq!(s.try_get::<i64>("missing").unwrap(), None);
    // And the right types round-trip through a real commit and load.
    let (token, _) = s.commit().await.unwrap();
    let s = m.load(Some(&token)).await.unwrap();
    assert_eq!(s.get_string("text").as_deref(), Some("hello"));
    assert_eq!(s.get_i64("n"), Some(42));
    assert_eq!(s.get_f64("f"), Some(1.5));
    assert_eq!(s.get_f64("n"), Some(42.0));
    assert_eq!(s.get_bytes("bytes"), Some(vec![0, 1, 255]));
    assert_eq!(s.get_time("when"), Some(now));
}

#[tokio::test]
async fn status_rules() {
    let m = manager();
    let s = m.load(None).await.unwrap();
    assert_eq!(s.status(), Status::Unmodified);
    assert_eq!(s.pop_string("missing"), None);
    s.remove("missing");
    s.clear();
    let _ = s.get_string("missing");
    let _ = s.exists("missing");
    assert_eq!(
        s.status(),
        Status::Unmodified,
        "nothing was there to change"
    );
    s.put("flash", "saved!").unwrap();
    assert_eq!(s.status(), Status::Modified);
    let (token, _) = s.commit().await.unwrap();
    let s = m.load(Some(&token)).await.unwrap();
    assert_eq!(s.status(), Status::Unmodified);
    assert_eq!(s.pop_string("flash").as_deref(), Some("saved!"));
    assert_eq!(s.status(), Status::Modified);
    assert_eq!(s.pop_string("flash"), None, "a flash is shown once");
    // A pop of another type still removes the key.
    s.put("n", &1).unwrap();
    assert_eq!(s.pop_string("n"), None);
    assert!(!s.exists("n"));
}

#[tokio::test]
async fn keys_are_sorted_and_hide_internal_keys() {
    let m = manager();
    let s = m.load(None).await.unwrap();
    s.put("zeta", &1).unwrap();
    s.put("alpha", &2).unwrap();
    s.remember_me(true);
    assert_eq!(s.keys(), ["alpha", "zeta"]);
}

#[tokio::test]
async fn token_is_empty_before_first_commit() {
    let m = manager();
    let s = m.load(None).await.unwrap();
    assert_eq!(s.token(), "");
    s.put("a", &1).unwrap();
    let (token, _) = s.commit().await.unwrap();
    assert_eq!(s.token(), token);
}

#[tokio::test]
async fn iterate_sees_every_session_and_returns_the_callbacks_error() {
    let m = manager();
    for i in 0..5 {
        let s = m.load(None).await.unwrap();
        s.put("i", &i).unwrap();
        s.commit().await.unwrap();
    }
    let mut seen = Vec::new();
    m.iterate(|s| {
        seen.push(s.get::<i32>("i").unwrap());
        async { Ok(()) }
    })
    .await
    .unwrap();
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3, 4]);

    let mut calls = 0;
    let err = m
        .iterate(|_| {
            calls += 1;
            async { Err(scs::Error::new(ErrorKind::InvalidInput, "stop here")) }
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "stop here");
    assert_eq!(calls, 1, "the first error stops the iteration");

    // Sessions from iterate can be destroyed and committed by their store key
    // (no second hashing).
    m.iterate(|s| async move {
        if s.get::<i32>("i") == Some(0) {
            s.destroy().await
        } else {
            s.put("seen", &true)?;
            s.commit().await.map(|_| ())
        }
    })
    .await
    .unwrap();
    let mut left = Vec::new();
    m.iterate(|s| {
        left.push((s.get::<i32>("i").unwrap(), s.get_bool("seen")));
        async { Ok(()) }
    })
    .await
    .unwrap();
    left.sort();
    assert_eq!(
        left,
        [
            (1, Some(true)),
            (2, Some(true)),
            (3, Some(true)),
            (4, Some(true))
        ]
    );
}

#[tokio::test]
async fn merge_session() {
    let m = manager();
    let other = m.load(None).await.unwrap();
    other.put("cart", "3 apples").unwrap();
    other.put("shared", "other wins").unwrap();
    other.set_deadline(
        scs::time::OffsetDateTime::now_utc() + std::time::Duration::from_secs(48 * 3600),
    );
    let (other_token, _) = other.commit().await.unwrap();

    let s = m.load(None).await.unwrap();
    s.put("user", "ada").unwrap();
    s.put("shared", "mine").unwrap();
    let (token, _) = s.commit().await.unwrap();
    let s = m.load(Some(&token)).await.unwrap();
    s.merge_session(&other_token).await.unwrap();
    assert_eq!(s.status(), Status::Modified);
    assert_eq!(s.get_string("cart").as_deref(), Some("3 apples"));
    assert_eq!(s.get_string("user").as_deref(), Some("ada"));
    assert_eq!(s.get_string("shared").as_deref(), Some("other wins"));
    assert_eq!(s.deadline(), other.deadline(), "the later deadline wins");
    assert!(
        m.load(Some(&other_token)).await.unwrap().keys().is_empty(),
        "the other session is deleted"
    );

    // Merging with ourselves does nothing.
    let me = m.load(Some(&token)).await.unwrap();
    me.merge_session(&token).await.unwrap();
    assert_eq!(me.status(), Status::Unmodified);
}

#[tokio::test]
async fn oversized_session_is_refused_and_nothing_is_stored() {
    let store = MemoryStore::builder()
        .cleanup_interval(None)
        .build()
        .unwrap();
    let m = SessionManager::builder(store.clone())
        .max_session_bytes(1000)
        .build()
        .unwrap();
    let s = m.load(None).await.unwrap();
    s.put("big", &"x".repeat(2000)).unwrap();
    let err = s.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(store.is_empty());
}

#[tokio::test]
async fn config_errors_are_clear() {
    let err = SessionManager::builder(MemoryStore::new())
        .cookie_name("bad name")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("cookie name"), "{err}");
}

#[tokio::test]
async fn iterate_skips_entries_that_do_not_decode() {
    use scs::Store;
    let store = MemoryStore::builder()
        .cleanup_interval(None)
        .build()
        .unwrap();
    let m = SessionManager::new(store.clone());
    let s = m.load(None).await.unwrap();
    s.put("i", &1).unwrap();
    s.commit().await.unwrap();
    let far = scs::time::OffsetDateTime::now_utc() + std::time::Duration::from_secs(60);
    store
        .commit("garbage-key", b"\xc1 not a session", far)
        .await
        .unwrap();
    let mut seen = 0;
    m.iterate(|_| {
        seen += 1;
        async { Ok(()) }
    })
    .await
    .unwrap();
    assert_eq!(seen, 1, "the good session is seen, the garbage skipped");
}
