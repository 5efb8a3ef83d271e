//! PostgreSQL with several nodes: each `PgMeta` here is one node's pool on the same
//! database. (SQLite serves one node; these have no SQLite counterpart.)

use std::collections::BTreeSet;

use berth_oci::Digest;

use crate::testing::TestDatabase;
use crate::{CleanupMeta, GcMeta, HistoryMeta, InstanceMeta, NewManifest, PgMeta, RegistryMeta};

/// Until a node listens for changes its lookups are not cached: wait for its
/// listener, so that the lookups that follow are served from its cache.
async fn wait_listening(node: &PgMeta) {
    super::TestMeta::cache_ready(node).await;
}

async fn nodes(test: &str, n: usize) -> Option<(TestDatabase, Vec<PgMeta>)> {
    let db = TestDatabase::create(test).await?;
    let mut metas = Vec::new();
    for _ in 0..n {
        metas.push(PgMeta::connect(db.url(), 4).await.unwrap());
    }
    Some((db, metas))
}

fn manifest(payload: &str, blobs: Vec<Digest>) -> NewManifest {
    NewManifest {
        digest: Digest::sha256_of(payload.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        payload: payload.as_bytes().to_vec(),
        blobs,
        children: vec![],
        subject: None,
        config: None,
        artifact_type: None,
        image_created_at: None,
        total_size: 0,
        annotations: None,
    }
}

/// A request dropped at any point while it begins a transaction, as hyper
/// drops the handler of a client that went away, leaves its connection out
/// of any transaction. (sqlx's own `begin` does not when the cut falls while
/// `BEGIN` is in flight: the connection goes back to the pool inside a
/// transaction, and its next user's statements run, and stay, in it.)
#[tokio::test]
async fn a_cancelled_begin_leaves_no_connection_in_a_transaction() {
    let Some(db) = TestDatabase::create("cancelled begin").await else {
        return;
    };
    // One connection, handed out without a test query, so the first poll of
    // a `begin` already sends `BEGIN`.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect(db.url())
        .await
        .unwrap();
    let observer = sqlx::PgPool::connect(db.url()).await.unwrap();
    for steps in 1..6 {
        {
            let mut request = std::pin::pin!(crate::common::begin(&pool));
            for _ in 0..steps {
                if futures::poll!(request.as_mut()).is_ready() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        // The connection is back in the pool once it can be taken again.
        drop(pool.acquire().await.unwrap());
        let stuck: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND state = 'idle in transaction'",
        )
        .fetch_one(&observer)
        .await
        .unwrap();
        assert_eq!(
            stuck, 0,
            "cut after {steps} steps: left inside a transaction"
        );
    }
}

#[tokio::test]
async fn an_upload_is_claimed_by_one_node_at_a_time() {
    let Some((_db, metas)) = nodes("upload claims", 2).await else {
        return;
    };
    let (a, b) = (&metas[0], &metas[1]);
    let held = a.claim_upload("u1").await.unwrap().expect("a free upload");
    assert!(
        b.claim_upload("u1").await.unwrap().is_none(),
        "held by the other node"
    );
    let other = b.claim_upload("u2").await.unwrap();
    assert!(other.is_some(), "another upload is free");
    drop(held);
    // Released by a task of its own, at once.
    let mut again = None;
    for _ in 0..500 {
        again = b.claim_upload("u1").await.unwrap();
        if again.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(again.is_some(), "a dropped claim is released");
    assert!(a.claim_upload("u1").await.unwrap().is_none());
    assert!(a.claim_upload("u2").await.unwrap().is_none());
}

/// A blob queued again (a manifest that referenced it deleted, in another
/// transaction) while its review runs is either deleted by that review or
/// left queued for the next one, and due for it (the review's claim given up):
/// never unreferenced and forgotten, nor held back for a claim's lifetime.
#[tokio::test]
async fn a_blob_queued_again_during_its_review_is_not_forgotten() {
    let Some((_db, metas)) = nodes("requeued during review", 1).await else {
        return;
    };
    let m = &metas[0];
    let layer = Digest::sha256_of(b"requeued layer");
    m.link_blob("g/p/app", &layer, 5, 1).await.unwrap();
    m.put_manifest("g/p/app", &manifest("m", vec![layer.clone()]), Some("t"), 1)
        .await
        .unwrap();
    // Listed for review, as a GC round does (on PostgreSQL this claims it).
    let due = m.due_blob_reviews(i64::MAX, 10).await.unwrap();
    assert!(due.contains(&layer), "not due: {due:?}");
    // The manifest's reference goes, in a transaction still open.
    let mut deleting = m.pool.begin().await.unwrap();
    sqlx::query("DELETE FROM manifest_blobs WHERE digest = $1")
        .bind(layer.as_str())
        .execute(&mut *deleting)
        .await
        .unwrap();
    let review = tokio::spawn({
        let (m, d) = (m.clone(), layer.clone());
        async move { m.review_blob(&d).await.unwrap() }
    });
    // The review either skips the blob the deletion holds (it stays queued) or
    // waits for the deletion's locks …
    for _ in 0..1000 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&m.pool)
        .await
        .unwrap();
        if waiting > 0 || review.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // … and the deletion then commits.
    deleting.commit().await.unwrap();
    let removed = review.await.unwrap();
    let queued: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM gc_blob_review_queue WHERE digest = $1")
            .bind(layer.as_str())
            .fetch_one(&m.pool)
            .await
            .unwrap();
    assert!(
        removed.is_some() || queued == 1,
        "the blob was neither deleted ({removed:?}) nor left queued ({queued})"
    );
    if removed.is_none() {
        let due = m.due_blob_reviews(i64::MAX, 10).await.unwrap();
        assert!(due.contains(&layer), "left queued but claimed: {due:?}");
        let removed = m.review_blobs(&due).await.unwrap();
        assert_eq!(removed.len(), 1, "the next review keeps it: {removed:?}");
    }
}

#[tokio::test]
async fn concurrent_pushes_of_one_tag_and_blob_all_succeed() {
    let Some((_db, metas)) = nodes("concurrent pushes", 3).await else {
        return;
    };
    let layer = Digest::sha256_of(b"shared layer");
    let mut tasks = Vec::new();
    for (i, m) in metas.into_iter().enumerate() {
        let layer = layer.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..20 {
                // The same new repository, blob and tag from every node at once.
                m.link_blob("g/p/app", &layer, 5, round).await.unwrap();
                let man = manifest(&format!("{i}-{round}"), vec![layer.clone()]);
                m.put_manifest("g/p/app", &man, Some("latest"), round)
                    .await
                    .unwrap();
            }
            m
        }));
    }
    let mut metas = Vec::new();
    for t in tasks {
        metas.push(t.await.unwrap());
    }
    // One live row for the tag, whatever the interleaving.
    assert_eq!(
        metas[0].tags("g/p/app", None, 10).await.unwrap(),
        ["latest"]
    );
    let live: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tags WHERE name = 'latest' AND deleted_at IS NULL",
    )
    .fetch_one(&metas[1].pool)
    .await
    .unwrap();
    assert_eq!(live, 1);
    assert_eq!(metas[2].catalog(None, 10).await.unwrap(), ["g/p/app"]);
}

/// Pruning tag history (rows already ended) takes no lock on repositories, so it
/// finishes while another transaction holds that table as offline GC's sweep does
/// (repositories first, then the tables after it, tags last). It used to wait there
/// holding tags, and the sweep, reaching tags, deadlocked with it.
#[tokio::test]
async fn pruning_tag_history_does_not_wait_for_a_sweep() {
    let Some((_db, metas)) = nodes("prune beside sweep", 1).await else {
        return;
    };
    let m = &metas[0];
    let layer = Digest::sha256_of(b"pruned layer");
    m.link_blob("g/p/app", &layer, 5, 1).await.unwrap();
    for (i, payload) in ["one", "two", "three"].into_iter().enumerate() {
        let man = manifest(payload, vec![layer.clone()]);
        m.put_manifest("g/p/app", &man, Some("latest"), 10 * (i as i64 + 1))
            .await
            .unwrap();
    }
    let mut sweep = m.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE repositories IN EXCLUSIVE MODE")
        .execute(&mut *sweep)
        .await
        .unwrap();
    let pruned = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        m.prune_tag_history(1_000),
    )
    .await
    .expect("pruning waited for the lock on repositories")
    .unwrap();
    assert_eq!(pruned, 2, "the two versions `latest` left");
    // The sweep goes on to tags, which the prune no longer holds.
    sqlx::query("LOCK TABLE tags IN EXCLUSIVE MODE")
        .execute(&mut *sweep)
        .await
        .unwrap();
    sweep.commit().await.unwrap();
    assert_eq!(m.tags("g/p/app", None, 10).await.unwrap(), ["latest"]);
}

#[tokio::test]
async fn each_review_and_cleanup_claim_goes_to_one_node() {
    let Some((_db, metas)) = nodes("review claims", 2).await else {
        return;
    };
    // 60 untagged manifests and 60 unreferenced blobs waiting for review.
    for i in 0..60 {
        let d = Digest::sha256_of(format!("blob {i}").as_bytes());
        metas[0].link_blob("g/p/app", &d, 1, 1).await.unwrap();
        let man = manifest(&format!("m{i}"), vec![]);
        metas[0]
            .put_manifest("g/p/app", &man, None, 1)
            .await
            .unwrap();
    }
    let (a, b) = (&metas[0], &metas[1]);
    let far = i64::MAX;
    let (mut ma, mut mb) = (Vec::new(), Vec::new());
    // Both nodes list in small batches at the same time, as their workers do.
    loop {
        let (x, y) = tokio::join!(
            a.due_manifest_reviews(far, 7),
            b.due_manifest_reviews(far, 7)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        if x.is_empty() && y.is_empty() {
            break;
        }
        ma.extend(x);
        mb.extend(y);
    }
    let sa: BTreeSet<_> = ma.iter().collect();
    let sb: BTreeSet<_> = mb.iter().collect();
    assert!(sa.is_disjoint(&sb), "a manifest was claimed twice");
    assert_eq!(sa.len() + sb.len(), 60);
    assert_eq!(sa.len(), ma.len());
    assert!(!ma.is_empty() && !mb.is_empty(), "one node got everything");
    // Each node reviews what it claimed: every manifest is deleted once.
    let mut deleted = 0;
    for (node, ids) in [(a, &ma), (b, &mb)] {
        for id in ids {
            if node.review_manifest(*id, true, i64::MAX).await.unwrap()
                == crate::ManifestReview::Deleted
            {
                deleted += 1;
            }
        }
    }
    assert_eq!(deleted, 60);

    let (x, y) = tokio::join!(a.due_blob_reviews(far, 100), b.due_blob_reviews(far, 100));
    let (x, y) = (x.unwrap(), y.unwrap());
    let sx: BTreeSet<_> = x.iter().collect();
    assert!(
        y.iter().all(|d| !sx.contains(d)),
        "a blob was claimed twice"
    );
    assert_eq!(x.len() + y.len(), 60);
    let (mut freed_a, mut freed_b) = (0, 0);
    for d in &x {
        freed_a += a.review_blob(d).await.unwrap().is_some() as usize;
    }
    for d in &y {
        freed_b += b.review_blob(d).await.unwrap().is_some() as usize;
    }
    assert_eq!(freed_a + freed_b, 60);
    assert_eq!(a.review_queue_lengths().await.unwrap(), (0, 0));

    // A queued cleanup run is claimed by exactly one of two racing nodes, even
    // with room for two workers; and with room for one, two nodes racing over
    // two queued repositories get one claim between them.
    let mut repos = Vec::new();
    for path in ["g/p/app", "g/p/web"] {
        let d = Digest::sha256_of(path.as_bytes());
        a.link_blob(path, &d, 1, 1).await.unwrap();
        repos.push(a.repository(path).await.unwrap().unwrap().id);
    }
    for round in 0..20 {
        let (queued, capacity) = if round % 2 == 0 {
            (&repos[..1], 2)
        } else {
            (&repos[..], 1)
        };
        sqlx::query(
            "UPDATE repositories SET cleanup_status = CASE WHEN id = ANY($1) \
               THEN 'cleanup_scheduled' ELSE 'cleanup_unscheduled' END, \
             cleanup_lease_until = NULL",
        )
        .bind(queued)
        .execute(&a.pool)
        .await
        .unwrap();
        let (x, y) = tokio::join!(
            a.claim_next_cleanup(5, 100, capacity),
            b.claim_next_cleanup(5, 100, capacity)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(
            x.is_some() ^ y.is_some(),
            "round {round}: {x:?} and {y:?} with capacity {capacity}"
        );
    }
}

/// A tag moved or deleted on one node is seen by another that had it cached within
/// the documented bound (the `NOTIFY` delivery; `MANIFEST_CACHE_MAX_AGE` at worst),
/// polled here with that deadline.
#[tokio::test]
async fn a_tag_moved_on_one_node_is_seen_on_another_within_the_bound() {
    use crate::ManifestRef;
    let Some((_db, nodes)) = nodes("manifest cache across nodes", 2).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let (one, two) = (manifest("node one", vec![]), manifest("node two", vec![]));
    b.put_manifest("p/r", &one, Some("t"), 1).await.unwrap();
    async fn tag(m: &PgMeta) -> Option<Digest> {
        m.manifest("p/r", ManifestRef::Tag("t"))
            .await
            .unwrap()
            .map(|x| x.digest)
    }
    wait_listening(a).await;
    assert_eq!(tag(a).await, Some(one.digest.clone()));
    assert_eq!(tag(a).await, Some(one.digest.clone()));

    let seen_within_bound = |want: Option<Digest>| async move {
        let deadline = std::time::Instant::now() + crate::MANIFEST_CACHE_MAX_AGE;
        loop {
            if tag(a).await == want {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    b.put_manifest("p/r", &two, Some("t"), 2).await.unwrap();
    assert!(seen_within_bound(Some(two.digest.clone())).await, "moved");
    assert!(b.delete_tag("p/r", "t", 3).await.unwrap());
    assert!(seen_within_bound(None).await, "deleted");

    // A change by something that is no Berth at all (raw SQL on the database)
    // reaches the cache the same way: the triggers notify.
    b.put_manifest("p/r", &one, Some("t"), 4).await.unwrap();
    assert!(seen_within_bound(Some(one.digest.clone())).await);
    let raw = sqlx::PgPool::connect(_db.url()).await.unwrap();
    sqlx::query("UPDATE tags SET deleted_at = 5 WHERE deleted_at IS NULL")
        .execute(&raw)
        .await
        .unwrap();
    assert!(seen_within_bound(None).await, "raw SQL");

    // A repository renamed (its project moved or renamed) answers nothing under the
    // old path any more: path changes notify like content changes.
    b.put_manifest("p/r", &two, Some("t"), 6).await.unwrap();
    assert!(seen_within_bound(Some(two.digest.clone())).await);
    sqlx::query("UPDATE repositories SET path = 'p/moved' WHERE path = 'p/r'")
        .execute(&raw)
        .await
        .unwrap();
    assert!(seen_within_bound(None).await, "renamed");
}

/// A change on one node to one repository reaches another node's cached lookups of
/// that repository and leaves its lookups of other repositories cached: the
/// notification names the repositories it touched.
#[tokio::test]
async fn a_change_to_one_repository_leaves_the_others_cached_on_other_nodes() {
    use crate::ManifestRef;
    use std::time::{Duration, Instant};
    let Some((_db, nodes)) = nodes("per-repository invalidation", 2).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let (one, two) = (manifest("one", vec![]), manifest("two", vec![]));
    b.put_manifest("p/busy", &one, Some("t"), 1).await.unwrap();
    b.put_manifest("p/quiet", &one, Some("t"), 1).await.unwrap();
    async fn tag(m: &PgMeta, repository: &str) -> Option<Digest> {
        m.manifest(repository, ManifestRef::Tag("t"))
            .await
            .unwrap()
            .map(|x| x.digest)
    }
    wait_listening(a).await;
    // Entries expire MANIFEST_CACHE_MAX_AGE after they were read; a round that took
    // longer than that (a machine busy with other work) proves nothing and is run
    // again.
    for (round, pushed) in [&two, &one, &two, &one].into_iter().enumerate() {
        let started = Instant::now();
        assert!(tag(a, "p/busy").await.is_some());
        assert!(tag(a, "p/quiet").await.is_some());
        let hits = a.cache.hits();
        let before = tag(a, "p/busy").await;
        assert_eq!(tag(a, "p/quiet").await, Some(one.digest.clone()));
        if a.cache.hits() != hits + 2 {
            assert!(
                started.elapsed() >= crate::MANIFEST_CACHE_MAX_AGE,
                "node A did not serve its second lookups from its cache"
            );
            continue;
        }

        b.put_manifest("p/busy", pushed, Some("t"), round as i64 + 2)
            .await
            .unwrap();
        assert_ne!(before, Some(pushed.digest.clone()));
        // Node A sees the move once the notification has reached it.
        while tag(a, "p/busy").await != Some(pushed.digest.clone()) {
            assert!(
                started.elapsed() < crate::MANIFEST_CACHE_MAX_AGE,
                "node A still serves the old p/busy:t"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let hits = a.cache.hits();
        assert_eq!(tag(a, "p/quiet").await, Some(one.digest.clone()));
        if a.cache.hits() == hits + 1 {
            return;
        }
        assert!(
            started.elapsed() >= crate::MANIFEST_CACHE_MAX_AGE,
            "a change to p/busy dropped p/quiet from node A's cache"
        );
    }
    panic!("every round outlasted the cache's age limit");
}

/// The writes that declare a narrow [`crate::cache::Scope`] (so that the node they
/// run on keeps the rest of its manifest cache) change no more than they declare,
/// judged by the notifications the triggers send to every other node: nothing for
/// `Scope::Nothing`, exactly the one repository for `Scope::Repository`. (The
/// declarations are in the `ops` modules; this is their check.)
#[tokio::test]
async fn each_scoped_write_notifies_what_it_declares() {
    use crate::{OrgMeta, RepositoryMeta, SessionMeta, Upload};
    use std::time::Duration;
    let Some((db, nodes)) = nodes("scoped writes", 1).await else {
        return;
    };
    let m = &nodes[0];
    let mut listener = sqlx::postgres::PgListener::connect(db.url()).await.unwrap();
    listener.listen("berth_content").await.unwrap();
    let raw = sqlx::PgPool::connect(db.url()).await.unwrap();
    // What the triggers sent for the writes since the last call: a marker sent after
    // them arrives after their notifications (delivery is in commit order).
    let mut marker = 0;
    let mut sent = async || {
        marker += 1;
        let mark = format!("marker {marker}");
        sqlx::query("SELECT pg_notify('berth_content', $1)")
            .bind(&mark)
            .execute(&raw)
            .await
            .unwrap();
        let mut got = Vec::new();
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
                .await
                .expect("the marker arrives")
                .unwrap();
            if n.payload() == mark {
                return got;
            }
            got.push(n.payload().to_owned());
        }
    };
    let nothing: Vec<String> = vec![];
    let only = |path: &str| vec![path.to_owned()];

    // A push: upload session, blob links (the first creates the repository).
    let upload = Upload {
        id: "u1".into(),
        repository_path: "p/r".into(),
        created_at: 1,
        updated_at: 1,
        created_by: None,
    };
    m.create_upload(&upload).await.unwrap();
    m.touch_upload("u1", 2).await.unwrap();
    let layer = Digest::sha256_of(b"scoped layer");
    m.link_blob("p/r", &layer, 5, 3).await.unwrap();
    m.link_blob("p/r", &layer, 5, 4).await.unwrap();
    m.link_blob("p/other", &layer, 5, 4).await.unwrap();
    m.delete_upload("u1").await.unwrap();
    assert!(m.unlink_blob("p/other", &layer).await.unwrap());
    assert_eq!(sent().await, nothing, "upload sessions and blob links");

    // Manifests and tags of one repository.
    let one = manifest("scoped one", vec![layer.clone()]);
    let two = manifest("scoped two", vec![layer.clone()]);
    m.put_manifest("p/r", &one, Some("t"), 5).await.unwrap();
    assert_eq!(sent().await, only("p/r"), "a push");
    m.put_manifest("p/r", &two, Some("t"), 6).await.unwrap();
    assert_eq!(sent().await, only("p/r"), "a tag moved");
    assert!(m.delete_tag("p/r", "t", 7).await.unwrap());
    assert_eq!(sent().await, only("p/r"), "a tag deleted");
    assert!(m.delete_manifest("p/r", &one.digest, 8).await.unwrap());
    assert_eq!(sent().await, only("p/r"), "a manifest deleted");

    // Sign-in bookkeeping.
    let user = m
        .create_user(
            &crate::NewUser {
                username: "alice".into(),
                name: "alice".into(),
                email: None,
                password_hash: None,
                admin: false,
            },
            1,
        )
        .await
        .unwrap();
    let pat = m
        .create_personal_token(
            &crate::NewPersonalToken {
                user_id: user.id,
                name: "t".into(),
                description: String::new(),
                scopes: vec!["read_registry".into()],
                expires_at: None,
                digest: "d".into(),
            },
            1,
        )
        .await
        .unwrap();
    sent().await;
    m.touch_personal_token(pat.id, 9).await.unwrap();
    let session = crate::WebSession {
        user_id: user.id,
        csrf_token: "csrf".into(),
        created_at: 10,
        expires_at: 100,
    };
    m.create_web_session("s1", &session).await.unwrap();
    assert!(m.delete_web_session("s1").await.unwrap());
    m.create_web_session("s2", &session).await.unwrap();
    m.delete_user_web_sessions(user.id, None).await.unwrap();
    m.delete_expired_web_sessions(1000).await.unwrap();
    m.delete_expired_refresh_tokens(1000).await.unwrap();
    m.record_login_failure(&["user:alice".into()], 11, 1)
        .await
        .unwrap();
    assert_eq!(sent().await, nothing, "sign-in bookkeeping");

    // The check can fail: a repository deleted is told (its path).
    let repo = m.repository("p/other").await.unwrap().unwrap();
    m.delete_repository(repo.id, 12).await.unwrap();
    assert!(!sent().await.is_empty(), "a repository deleted");
}
