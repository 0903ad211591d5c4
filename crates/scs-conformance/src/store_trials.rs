//! The store tier: every behaviour of the store traits, called directly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use scs_core::time::OffsetDateTime;
use scs_core::{Context, CtxStore, token};

use crate::{Needs, TrialCtx, TrialDef};

macro_rules! trials {
    ($($name:ident: $needs:ident,)*) => {
        /// Every store-tier trial, in order.
        pub(crate) fn all() -> Vec<TrialDef> {
            vec![$(TrialDef::new(stringify!($name), Needs::$needs, |t| Box::pin($name(t))),)*]
        }
    };
}

trials! {
    find_missing: Nothing,
    commit_then_find: Nothing,
    commit_replaces_data: Nothing,
    commit_extends_expiry: Nothing,
    commit_shortens_expiry: Nothing,
    delete_removes: Nothing,
    delete_missing_is_ok: Nothing,
    delete_leaves_other_keys: Nothing,
    expired_is_not_found: Nothing,
    past_expiry_leaves_nothing_live: Nothing,
    expiry_millisecond_scale: Nothing,
    expired_entry_can_be_recommitted: Nothing,
    binary_values: Nothing,
    empty_value: Nothing,
    value_of_one_mebibyte: Nothing,
    many_concurrent_commits: Nothing,
    concurrent_commits_same_key: Nothing,
    namespaces_are_isolated: Nothing,
    raw_token_shaped_keys: Nothing,
    capabilities_are_consistent: Nothing,
    all_is_empty_when_none: Iterate,
    all_returns_live_entries_with_data: Iterate,
    all_skips_expired: Iterate,
    all_skips_deleted: Iterate,
    all_is_isolated_by_namespace: Iterate,
    touch_extends_expiry: Touch,
    touch_keeps_data: Touch,
    touch_missing_is_false: Touch,
    touch_expired_is_false: Touch,
    native_ttl_removes_entries: NativeTtl,
    cleanup_removes_expired_entries: RawLenAndCleanup,
    cleanup_keeps_live_entries: RawLenAndCleanup,
    cleanup_stops_twice_without_blocking: StopCleanup,
    raw_len_counts_committed: RawLen,
    record_has_data_expiry_and_version: Versioned,
    record_of_missing_or_expired_is_none: Versioned,
    every_commit_changes_the_version: Versioned,
    commit_if_current_version_writes: Versioned,
    commit_if_stale_version_conflicts: Versioned,
    commit_if_none_creates_only_when_absent: Versioned,
    commit_if_none_overwrites_an_expired_entry: Versioned,
    concurrent_commit_if_exactly_one_wins: Versioned,
    touch_keeps_the_version: VersionedTouch,
    now_paths_answer_as_awaited: Versioned,
}

// ---------------------------------------------------------------------------------------
// Helpers

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn in_(d: Duration) -> OffsetDateTime {
    now() + d
}

const HOUR: Duration = Duration::from_secs(3600);

/// A key shaped like the ones the manager makes (hashed token).
fn key() -> String {
    token::store_key(&token::generate(), true)
}

/// Short calls on a context-free store.
struct S<'a>(&'a Arc<dyn CtxStore>);

impl S<'_> {
    async fn find(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.0
            .find_ctx(&Context::new(), key)
            .await
            .with_context(|| format!("find({key})"))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> anyhow::Result<()> {
        self.0
            .commit_ctx(&Context::new(), key, data, expiry)
            .await
            .with_context(|| format!("commit({key}, {} bytes)", data.len()))
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.0
            .delete_ctx(&Context::new(), key)
            .await
            .with_context(|| format!("delete({key})"))
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> anyhow::Result<bool> {
        self.0
            .touch_ctx(&Context::new(), key, expiry)
            .await
            .with_context(|| format!("touch({key})"))
    }

    async fn record(&self, key: &str) -> anyhow::Result<Option<scs_core::Record>> {
        self.0
            .find_record_ctx(&Context::new(), key)
            .await
            .with_context(|| format!("find_record({key})"))
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> anyhow::Result<Option<u64>> {
        self.0
            .commit_if_ctx(&Context::new(), key, data, expiry, expected)
            .await
            .with_context(|| format!("commit_if({key}, expected {expected:?})"))
    }

    async fn all(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let it = self
            .0
            .as_iterable_ctx()
            .context("the store declares iteration but as_iterable_ctx() is None")?;
        it.all_ctx(&Context::new()).await.context("all()")
    }
}

async fn expect_found(s: &S<'_>, key: &str, want: &[u8]) -> anyhow::Result<()> {
    match s.find(key).await? {
        Some(got) => {
            ensure!(
                got == want,
                "find({key}) returned {} bytes, not the {} committed",
                got.len(),
                want.len()
            );
            Ok(())
        }
        None => bail!("find({key}) returned None for a live entry"),
    }
}

async fn expect_missing(s: &S<'_>, key: &str, why: &str) -> anyhow::Result<()> {
    if let Some(got) = s.find(key).await? {
        bail!(
            "find({key}) returned {} bytes; expected None ({why})",
            got.len()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Find, commit, delete

async fn find_missing(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    expect_missing(&S(&o.store), &key(), "never committed").await
}

async fn commit_then_find(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    s.commit(&k, b"hello", in_(HOUR)).await?;
    expect_found(&s, &k, b"hello").await
}

async fn commit_replaces_data(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    s.commit(&k, b"first version, longer", in_(HOUR)).await?;
    s.commit(&k, b"second", in_(HOUR)).await?;
    expect_found(&s, &k, b"second").await
}

async fn commit_extends_expiry(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    let ttl = t.short_ttl();
    s.commit(&k, b"a", in_(ttl)).await?;
    s.commit(&k, b"b", in_(HOUR)).await?;
    tokio::time::sleep(t.after(ttl)).await;
    expect_found(&s, &k, b"b").await
}

async fn commit_shortens_expiry(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    let ttl = t.short_ttl();
    s.commit(&k, b"a", in_(HOUR)).await?;
    s.commit(&k, b"b", in_(ttl)).await?;
    expect_found(&s, &k, b"b").await?;
    tokio::time::sleep(t.after(ttl)).await;
    expect_missing(&s, &k, "the second commit set a short expiry").await
}

async fn delete_removes(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    s.commit(&k, b"x", in_(HOUR)).await?;
    s.delete(&k).await?;
    expect_missing(&s, &k, "deleted").await
}

async fn delete_missing_is_ok(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    s.delete(&k).await?;
    s.delete(&k).await?;
    Ok(())
}

async fn delete_leaves_other_keys(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let (a, b) = (key(), key());
    s.commit(&a, b"a", in_(HOUR)).await?;
    s.commit(&b, b"b", in_(HOUR)).await?;
    s.delete(&a).await?;
    expect_missing(&s, &a, "deleted").await?;
    expect_found(&s, &b, b"b").await
}

// ---------------------------------------------------------------------------------------
// Expiry

async fn expired_is_not_found(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    let ttl = t.short_ttl();
    s.commit(&k, b"x", in_(ttl)).await?;
    expect_found(&s, &k, b"x").await?;
    tokio::time::sleep(t.after(ttl)).await;
    expect_missing(&s, &k, "expired, with no cleanup run").await
}

async fn past_expiry_leaves_nothing_live(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let (fresh, existing) = (key(), key());
    s.commit(&fresh, b"x", now() - Duration::from_secs(10))
        .await?;
    expect_missing(&s, &fresh, "committed with a past expiry").await?;
    s.commit(&existing, b"x", in_(HOUR)).await?;
    s.commit(&existing, b"y", now() - Duration::from_secs(10))
        .await?;
    expect_missing(&s, &existing, "recommitted with a past expiry").await?;
    if t.caps().iterate {
        let all = s.all().await?;
        ensure!(
            all.is_empty(),
            "all() returned {} entries committed with a past expiry",
            all.len()
        );
    }
    Ok(())
}

async fn expiry_millisecond_scale(t: &TrialCtx) -> anyhow::Result<()> {
    let res = t.caps().expiry_resolution;
    let o = t.open().await?;
    let s = S(&o.store);
    // Two entries whose expiries differ by a few resolution steps plus a little room for
    // a loaded machine: the early one must be gone while the late one is still there.
    let (early, late) = (key(), key());
    let gap = res * 3 + Duration::from_millis(400);
    let base = now() + gap;
    s.commit(&early, b"e", base).await?;
    s.commit(&late, b"l", base + gap).await?;
    let wait = (base - now()).unsigned_abs() + res + Duration::from_millis(50);
    tokio::time::sleep(wait).await;
    expect_missing(&s, &early, "expired").await?;
    expect_found(&s, &late, b"l")
        .await
        .context("an entry expiring a little later was already gone: expiry is not kept precisely")
}

async fn expired_entry_can_be_recommitted(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    let ttl = t.short_ttl();
    s.commit(&k, b"old", in_(ttl)).await?;
    tokio::time::sleep(t.after(ttl)).await;
    s.commit(&k, b"new", in_(HOUR)).await?;
    expect_found(&s, &k, b"new").await
}

// ---------------------------------------------------------------------------------------
// Values

async fn binary_values(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let mut data: Vec<u8> = (0..=255u8).collect();
    data.extend_from_slice(b"\0\0\xff\xfe not utf-8 \xc3\x28 '; DROP TABLE x; --");
    data.extend((0..=255u8).rev());
    let k = key();
    s.commit(&k, &data, in_(HOUR)).await?;
    expect_found(&s, &k, &data).await
}

async fn empty_value(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    s.commit(&k, b"", in_(HOUR)).await?;
    expect_found(&s, &k, b"").await
}

async fn value_of_one_mebibyte(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let data: Vec<u8> = (0..1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let k = key();
    s.commit(&k, &data, in_(HOUR)).await?;
    expect_found(&s, &k, &data).await
}

// ---------------------------------------------------------------------------------------
// Concurrency and isolation

async fn many_concurrent_commits(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let keys: Vec<String> = (0..100).map(|_| key()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, k) in keys.iter().enumerate() {
        let store = o.store.clone();
        let k = k.clone();
        tasks.spawn(async move {
            store
                .commit_ctx(
                    &Context::new(),
                    &k,
                    format!("value {i}").as_bytes(),
                    in_(HOUR),
                )
                .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a commit task panicked")?
            .context("concurrent commit")?;
    }
    let s = S(&o.store);
    for (i, k) in keys.iter().enumerate() {
        expect_found(&s, k, format!("value {i}").as_bytes()).await?;
    }
    Ok(())
}

async fn concurrent_commits_same_key(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let k = key();
    let values: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for v in values.clone() {
        let store = o.store.clone();
        let k = k.clone();
        tasks.spawn(async move { store.commit_ctx(&Context::new(), &k, &v, in_(HOUR)).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a commit task panicked")?
            .context("concurrent commit")?;
    }
    let got = S(&o.store)
        .find(&k)
        .await?
        .context("nothing stored after 50 commits")?;
    ensure!(
        values.contains(&got),
        "the stored value ({} bytes) is none of the committed ones: a torn write",
        got.len()
    );
    Ok(())
}

async fn namespaces_are_isolated(t: &TrialCtx) -> anyhow::Result<()> {
    let a = t.open().await?;
    let b = t.open().await?;
    let k = key();
    S(&a.store).commit(&k, b"in a", in_(HOUR)).await?;
    expect_missing(&S(&b.store), &k, "committed in another namespace").await?;
    S(&b.store).commit(&k, b"in b", in_(HOUR)).await?;
    expect_found(&S(&a.store), &k, b"in a").await?;
    S(&b.store).delete(&k).await?;
    expect_found(&S(&a.store), &k, b"in a").await
}

async fn raw_token_shaped_keys(t: &TrialCtx) -> anyhow::Result<()> {
    // With hashing off the key is the raw token: any of the 64 base64url characters.
    let o = t.open().await?;
    let s = S(&o.store);
    let keys = [
        "-".repeat(43),
        "_".repeat(43),
        format!("{}A", "-_".repeat(21)),
        token::generate(),
    ];
    for (i, k) in keys.iter().enumerate() {
        s.commit(k, &[i as u8], in_(HOUR)).await?;
    }
    for (i, k) in keys.iter().enumerate() {
        expect_found(&s, k, &[i as u8]).await?;
    }
    Ok(())
}

async fn capabilities_are_consistent(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let caps = o.store.capabilities();
    ensure!(
        caps.iterate == o.store.as_iterable_ctx().is_some(),
        "capabilities say iterate = {} but as_iterable_ctx() is {}",
        caps.iterate,
        if o.store.as_iterable_ctx().is_some() {
            "Some"
        } else {
            "None"
        }
    );
    ensure!(!o.store.backend().is_empty(), "backend() is empty");
    ensure!(
        !caps.expiry_resolution.is_zero() && caps.expiry_resolution <= Duration::from_secs(1),
        "expiry resolution {:?} is outside 1 ns ..= 1 s",
        caps.expiry_resolution
    );
    if !caps.touch {
        let err = o
            .store
            .touch_ctx(&Context::new(), &key(), in_(HOUR))
            .await
            .err()
            .context("touch succeeded on a store that does not declare it")?;
        ensure!(
            err.kind() == scs_core::ErrorKind::Unsupported,
            "touch on a store without it should be Unsupported, was {:?}",
            err.kind()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Iteration

async fn all_is_empty_when_none(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let all = S(&o.store).all().await?;
    ensure!(
        all.is_empty(),
        "a fresh namespace listed {} entries",
        all.len()
    );
    Ok(())
}

async fn all_returns_live_entries_with_data(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let mut want = std::collections::BTreeMap::new();
    for i in 0..25u8 {
        let k = key();
        let v = vec![i; usize::from(i) + 1];
        s.commit(&k, &v, in_(HOUR)).await?;
        want.insert(k, v);
    }
    let got: std::collections::BTreeMap<_, _> = s.all().await?.into_iter().collect();
    ensure!(
        got.len() == want.len(),
        "all() gave {} entries, committed {}",
        got.len(),
        want.len()
    );
    ensure!(got == want, "all() gave other keys or data than committed");
    // The keys all() hands back address the same entries (no double hashing).
    let (k, v) = want.iter().next().context("no entries")?;
    expect_found(&s, k, v).await?;
    s.delete(k).await?;
    expect_missing(&s, k, "deleted by a key from all()").await
}

async fn all_skips_expired(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let ttl = t.short_ttl();
    let live = key();
    s.commit(&live, b"live", in_(HOUR)).await?;
    for _ in 0..5 {
        s.commit(&key(), b"short", in_(ttl)).await?;
    }
    ensure!(
        s.all().await?.len() == 6,
        "all() before expiry should list 6"
    );
    tokio::time::sleep(t.after(ttl)).await;
    let all = s.all().await?;
    ensure!(
        all.len() == 1 && all[0].0 == live,
        "all() after expiry listed {} entries; expected only the live one",
        all.len()
    );
    Ok(())
}

async fn all_skips_deleted(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let (a, b) = (key(), key());
    s.commit(&a, b"a", in_(HOUR)).await?;
    s.commit(&b, b"b", in_(HOUR)).await?;
    s.delete(&a).await?;
    let keys: Vec<String> = s.all().await?.into_iter().map(|(k, _)| k).collect();
    ensure!(
        keys == [b.clone()],
        "all() after delete listed {keys:?}, expected [{b}]"
    );
    Ok(())
}

async fn all_is_isolated_by_namespace(t: &TrialCtx) -> anyhow::Result<()> {
    let a = t.open().await?;
    let b = t.open().await?;
    S(&a.store).commit(&key(), b"a", in_(HOUR)).await?;
    S(&a.store).commit(&key(), b"a", in_(HOUR)).await?;
    let kb = key();
    S(&b.store).commit(&kb, b"b", in_(HOUR)).await?;
    let in_b: HashSet<String> = S(&b.store)
        .all()
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    ensure!(
        in_b.len() == 1 && in_b.contains(&kb),
        "all() in namespace b listed {} entries, expected only its own",
        in_b.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Touch

async fn touch_extends_expiry(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    let ttl = t.short_ttl();
    s.commit(&k, b"x", in_(ttl)).await?;
    ensure!(
        s.touch(&k, in_(HOUR)).await?,
        "touch of a live entry returned false"
    );
    tokio::time::sleep(t.after(ttl)).await;
    expect_found(&s, &k, b"x")
        .await
        .context("touch did not extend the expiry")?;
    // And it can shorten it.
    ensure!(s.touch(&k, in_(ttl)).await?, "second touch returned false");
    tokio::time::sleep(t.after(ttl)).await;
    expect_missing(&s, &k, "touched to a short expiry").await
}

async fn touch_keeps_data(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    let data: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    s.commit(&k, &data, in_(HOUR)).await?;
    ensure!(
        s.touch(&k, in_(HOUR * 2)).await?,
        "touch of a live entry returned false"
    );
    expect_found(&s, &k, &data).await
}

async fn touch_missing_is_false(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    ensure!(
        !s.touch(&k, in_(HOUR)).await?,
        "touch of a missing key returned true"
    );
    expect_missing(&s, &k, "touch must not create entries").await
}

async fn touch_expired_is_false(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    let ttl = t.short_ttl();
    s.commit(&k, b"x", in_(ttl)).await?;
    tokio::time::sleep(t.after(ttl)).await;
    ensure!(
        !s.touch(&k, in_(HOUR)).await?,
        "touch revived an expired entry"
    );
    expect_missing(&s, &k, "expired before the touch").await
}

// ---------------------------------------------------------------------------------------
// Physical removal

async fn raw_len(o: &crate::Opened) -> anyhow::Result<usize> {
    let f = o.raw_len.as_ref().context("no raw_len hook")?;
    f().await.context("raw_len hook")
}

async fn raw_len_counts_committed(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    ensure!(raw_len(&o).await? == 0, "a fresh namespace is not empty");
    s.commit(&key(), b"a", in_(HOUR)).await?;
    s.commit(&key(), b"b", in_(HOUR)).await?;
    let n = raw_len(&o).await?;
    ensure!(n == 2, "raw_len after two commits is {n}");
    Ok(())
}

async fn native_ttl_removes_entries(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let ttl = t.short_ttl();
    s.commit(&key(), b"a", in_(ttl)).await?;
    s.commit(&key(), b"b", in_(HOUR)).await?;
    // Native expiry may lag its nominal time; allow a few seconds.
    let deadline = tokio::time::Instant::now() + t.after(ttl) + Duration::from_secs(5);
    loop {
        let n = raw_len(&o).await?;
        if n == 1 {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{n} entries held long after expiry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cleanup_removes_expired_entries(t: &TrialCtx) -> anyhow::Result<()> {
    let interval = Duration::from_millis(200);
    let o = t.open_with(Some(interval)).await?;
    let s = S(&o.store);
    let ttl = t.short_ttl();
    for _ in 0..10 {
        s.commit(&key(), b"x", in_(ttl)).await?;
    }
    ensure!(
        raw_len(&o).await? == 10,
        "10 entries should be held before expiry"
    );
    let deadline = tokio::time::Instant::now() + t.after(ttl) + interval * 10;
    loop {
        let n = raw_len(&o).await?;
        if n == 0 {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{n} expired entries still held after ten cleanup intervals"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cleanup_keeps_live_entries(t: &TrialCtx) -> anyhow::Result<()> {
    let interval = Duration::from_millis(100);
    let o = t.open_with(Some(interval)).await?;
    let s = S(&o.store);
    let k = key();
    s.commit(&k, b"live", in_(HOUR)).await?;
    s.commit(&key(), b"dead", in_(t.short_ttl())).await?;
    tokio::time::sleep(t.after(t.short_ttl()) + interval * 5).await;
    ensure!(
        raw_len(&o).await? == 1,
        "cleanup should leave exactly the live entry"
    );
    expect_found(&s, &k, b"live").await
}

async fn cleanup_stops_twice_without_blocking(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open_with(Some(Duration::from_millis(50))).await?;
    let stop = o.stop_cleanup.clone().context("no stop hook")?;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let started = std::time::Instant::now();
    stop();
    stop();
    let took = started.elapsed();
    ensure!(
        took < Duration::from_millis(50),
        "stopping cleanup blocked for {took:?}"
    );
    // The store still works after its cleanup stopped.
    let s = S(&o.store);
    let k = key();
    s.commit(&k, b"x", in_(HOUR)).await?;
    expect_found(&s, &k, b"x").await
}

// ---------------------------------------------------------------------------------------
// Versioned reads and compare-and-set commits

async fn record_has_data_expiry_and_version(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    let expiry = in_(HOUR);
    s.commit(&k, b"data", expiry).await?;
    let r = s.record(&k).await?.context("no record for a live entry")?;
    ensure!(
        r.data == b"data",
        "record data differs from what was committed"
    );
    let off = (r.expiry - expiry).unsigned_abs();
    ensure!(
        off <= t.caps().expiry_resolution + Duration::from_millis(1),
        "record expiry {} is {off:?} away from the committed {expiry}",
        r.expiry
    );
    Ok(())
}

async fn record_of_missing_or_expired_is_none(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    ensure!(
        s.record(&key()).await?.is_none(),
        "a record for a missing key"
    );
    let k = key();
    let ttl = t.short_ttl();
    s.commit(&k, b"x", in_(ttl)).await?;
    tokio::time::sleep(t.after(ttl)).await;
    ensure!(
        s.record(&k).await?.is_none(),
        "a record for an expired entry"
    );
    Ok(())
}

async fn every_commit_changes_the_version(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    let mut seen = HashSet::new();
    for i in 0..5u8 {
        s.commit(&k, &[i], in_(HOUR)).await?;
        let v = s.record(&k).await?.context("no record")?.version;
        ensure!(seen.insert(v), "version {v} came back after commit {i}");
    }
    // Deleted and written again: still a version never seen for this key.
    s.delete(&k).await?;
    s.commit(&k, b"again", in_(HOUR)).await?;
    let v = s.record(&k).await?.context("no record")?.version;
    ensure!(
        seen.insert(v),
        "a key written again after delete reused version {v}"
    );
    Ok(())
}

/// A store that answers on the spot (`find_record_now`, `commit_if_now`: in-process
/// stores) answers as its awaited calls do. A store without those paths passes: the
/// manager then always awaits.
async fn now_paths_answer_as_awaited(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let ctx = Context::new();
    let find_now = |k: &str| o.store.find_record_now_ctx(&ctx, k).transpose();
    let commit_if_now = |k: &str, data: &[u8], expected| {
        o.store
            .commit_if_now_ctx(&ctx, k, data, in_(HOUR), expected)
            .transpose()
    };
    let k = key();
    let Some(missing) = find_now(&k)? else {
        // No on-the-spot finds: then no on-the-spot commits either (the manager would mix
        // the two paths), and nothing else to compare.
        ensure!(
            commit_if_now(&key(), b"x", None)?.is_none(),
            "the store answers compare-and-set commits on the spot but not finds"
        );
        return Ok(());
    };
    ensure!(missing.is_none(), "find_record_now found a missing key");
    s.commit(&k, b"one", in_(HOUR)).await?;
    let now = find_now(&k)?
        .flatten()
        .context("find_record_now missed a live entry")?;
    let awaited = s.record(&k).await?.context("no record")?;
    ensure!(
        (now.data.as_slice(), now.version, now.expiry)
            == (awaited.data.as_slice(), awaited.version, awaited.expiry),
        "find_record_now and find_record disagree"
    );
    s.commit(&k, b"two", in_(HOUR)).await?;
    let stale = commit_if_now(&k, b"three", Some(awaited.version))?
        .context("the store answers finds on the spot but not compare-and-set commits")?;
    ensure!(stale.is_none(), "commit_if_now with a stale version wrote");
    expect_found(&s, &k, b"two").await?;
    let current = s.record(&k).await?.context("no record")?.version;
    let written = commit_if_now(&k, b"four", Some(current))?.flatten();
    let r = s.record(&k).await?.context("no record")?;
    ensure!(
        written == Some(r.version) && r.data == b"four",
        "commit_if_now with the current version did not store its data and version"
    );
    let fresh = key();
    ensure!(
        commit_if_now(&fresh, b"new", None)?.flatten().is_some(),
        "commit_if_now(None) on a missing key conflicted"
    );
    expect_found(&s, &fresh, b"new").await?;
    let ttl = t.short_ttl();
    s.commit(&fresh, b"x", in_(ttl)).await?;
    tokio::time::sleep(t.after(ttl)).await;
    ensure!(
        find_now(&fresh)?.flatten().is_none(),
        "find_record_now found an expired entry"
    );
    Ok(())
}

async fn commit_if_current_version_writes(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    s.commit(&k, b"one", in_(HOUR)).await?;
    let v1 = s.record(&k).await?.context("no record")?.version;
    let v2 = s
        .commit_if(&k, b"two", in_(HOUR), Some(v1))
        .await?
        .context("commit_if with the current version conflicted")?;
    ensure!(v2 != v1, "commit_if kept the version");
    let r = s.record(&k).await?.context("no record")?;
    ensure!(
        r.data == b"two" && r.version == v2,
        "commit_if did not store its data and version"
    );
    Ok(())
}

async fn commit_if_stale_version_conflicts(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    s.commit(&k, b"one", in_(HOUR)).await?;
    let stale = s.record(&k).await?.context("no record")?.version;
    s.commit(&k, b"two", in_(HOUR)).await?;
    let r = s.commit_if(&k, b"three", in_(HOUR), Some(stale)).await?;
    ensure!(r.is_none(), "commit_if with a stale version wrote");
    expect_found(&s, &k, b"two").await
}

async fn commit_if_none_creates_only_when_absent(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    let v = s.commit_if(&k, b"new", in_(HOUR), None).await?;
    ensure!(v.is_some(), "commit_if(None) on a missing key conflicted");
    expect_found(&s, &k, b"new").await?;
    let again = s.commit_if(&k, b"other", in_(HOUR), None).await?;
    ensure!(again.is_none(), "commit_if(None) overwrote a live entry");
    expect_found(&s, &k, b"new").await
}

async fn commit_if_none_overwrites_an_expired_entry(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    let ttl = t.short_ttl();
    s.commit(&k, b"old", in_(ttl)).await?;
    tokio::time::sleep(t.after(ttl)).await;
    let v = s.commit_if(&k, b"new", in_(HOUR), None).await?;
    ensure!(
        v.is_some(),
        "commit_if(None) on an expired entry conflicted"
    );
    expect_found(&s, &k, b"new").await
}

async fn concurrent_commit_if_exactly_one_wins(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let k = key();
    S(&o.store).commit(&k, b"base", in_(HOUR)).await?;
    let v = S(&o.store).record(&k).await?.context("no record")?.version;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20u8 {
        let store = o.store.clone();
        let k = k.clone();
        tasks.spawn(async move {
            store
                .commit_if_ctx(&Context::new(), &k, &[i; 64], in_(HOUR), Some(v))
                .await
                .map(|r| r.map(|_| i))
        });
    }
    let mut winners = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(i) = r.context("a task panicked")?.context("commit_if")? {
            winners.push(i);
        }
    }
    ensure!(
        winners.len() == 1,
        "{} concurrent commit_if calls with one version won",
        winners.len()
    );
    expect_found(&S(&o.store), &k, &[winners[0]; 64]).await
}

async fn touch_keeps_the_version(t: &TrialCtx) -> anyhow::Result<()> {
    let o = t.open().await?;
    let s = S(&o.store);
    let k = key();
    s.commit(&k, b"x", in_(HOUR)).await?;
    let before = s.record(&k).await?.context("no record")?;
    let later = in_(HOUR * 2);
    ensure!(s.touch(&k, later).await?, "touch returned false");
    let after = s.record(&k).await?.context("no record after touch")?;
    ensure!(after.version == before.version, "touch changed the version");
    let off = (after.expiry - later).unsigned_abs();
    ensure!(
        off <= t.caps().expiry_resolution + Duration::from_millis(1),
        "the record does not show the touched expiry"
    );
    Ok(())
}
