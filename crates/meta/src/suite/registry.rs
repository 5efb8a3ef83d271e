//! Registry content: manifests, tags, referrers, uploads.

use berth_oci::Digest;

use super::TestMeta;
use crate::{Actor, ManifestRef, MetaError, NewManifest, TagExpect, Upload};

pub(crate) fn manifest(payload: &str, blobs: Vec<Digest>, children: Vec<Digest>) -> NewManifest {
    NewManifest {
        digest: Digest::sha256_of(payload.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        payload: payload.as_bytes().to_vec(),
        blobs,
        children,
        subject: None,
        config: None,
        artifact_type: None,
        image_created_at: None,
        total_size: 0,
        annotations: None,
    }
}

pub(crate) async fn manifest_needs_reachable_blobs_and_tags_move(m: &dyn TestMeta) {
    let layer = Digest::sha256_of(b"layer");
    let man = manifest("m1", vec![layer.clone()], vec![]);
    assert!(matches!(
        m.put_manifest("a/b", &man, Some("v1"), 1).await,
        Err(MetaError::BlobUnknown(_))
    ));
    // Linked in another repository does not count.
    m.link_blob("other", &layer, 5, 1).await.unwrap();
    assert!(m.put_manifest("a/b", &man, Some("v1"), 1).await.is_err());
    m.link_blob("a/b", &layer, 5, 2).await.unwrap();
    m.put_manifest("a/b", &man, Some("v1"), 3).await.unwrap();
    m.put_manifest("a/b", &man, Some("v2"), 3).await.unwrap();
    assert_eq!(m.tags("a/b", None, 10).await.unwrap(), vec!["v1", "v2"]);
    assert_eq!(m.tags("a/b", Some("v1"), 10).await.unwrap(), vec!["v2"]);
    let got = m
        .manifest("a/b", ManifestRef::Tag("v1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, man.digest);

    // Move v1 to another manifest; v2 stays.
    let man2 = manifest("m2", vec![layer.clone()], vec![]);
    m.put_manifest("a/b", &man2, Some("v1"), 4).await.unwrap();
    let got = m
        .manifest("a/b", ManifestRef::Tag("v1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, man2.digest);
    // Deleting a tag leaves the manifest and the other tag.
    assert!(m.delete_tag("a/b", "v2", 5).await.unwrap());
    assert!(!m.delete_tag("a/b", "v2", 5).await.unwrap());
    assert!(m
        .manifest("a/b", ManifestRef::Digest(&man.digest))
        .await
        .unwrap()
        .is_some());
    // Deleting a manifest removes its tags.
    assert!(m.delete_manifest("a/b", &man2.digest, 6).await.unwrap());
    assert!(m.tags("a/b", None, 10).await.unwrap().is_empty());
    assert_eq!(m.catalog(None, 10).await.unwrap(), vec!["a/b", "other"]);
    assert_eq!(m.catalog(Some("a/b"), 10).await.unwrap(), vec!["other"]);
}

/// A tag write conditional on the tag's state (what a protection check saw) is
/// judged inside its transaction: when the tag is not as expected nothing is
/// written, and of many pushes racing to create one tag exactly one does.
pub(crate) async fn conditional_tag_writes_hold_inside_the_transaction(m: &dyn TestMeta) {
    let layer = Digest::sha256_of(b"layer");
    m.link_blob("c/r", &layer, 5, 1).await.unwrap();
    let one = manifest("one", vec![layer.clone()], vec![]);
    let two = manifest("two", vec![layer.clone()], vec![]);
    let actor = Actor::default();
    let put = |man: &NewManifest, tag: &'static str, expect: TagExpect, now: i64| {
        let man = man.clone();
        let actor = actor.clone();
        async move {
            m.put_manifest_if("c/r", &man, Some(tag), Some(&expect), now, &actor)
                .await
                .unwrap()
        }
    };
    let tag_of = |tag: &'static str| async move {
        m.manifest("c/r", ManifestRef::Tag(tag))
            .await
            .unwrap()
            .map(|x| x.digest)
    };

    // Absent: created once, then refused; the refused manifest is not stored either.
    assert!(put(&one, "v1", TagExpect::Absent, 2).await);
    assert!(!put(&two, "v1", TagExpect::Absent, 3).await);
    assert_eq!(tag_of("v1").await, Some(one.digest.clone()));
    assert!(m
        .manifest("c/r", ManifestRef::Digest(&two.digest))
        .await
        .unwrap()
        .is_none());
    // At: moves only from the digest it names.
    assert!(!put(&two, "v1", TagExpect::At(two.digest.clone()), 4).await);
    assert!(put(&two, "v1", TagExpect::At(one.digest.clone()), 5).await);
    assert_eq!(tag_of("v1").await, Some(two.digest.clone()));
    assert!(!put(&one, "v1", TagExpect::At(one.digest.clone()), 6).await);
    // A deleted tag is absent again.
    assert!(m.delete_tag("c/r", "v1", 7).await.unwrap());
    assert!(!put(&one, "v1", TagExpect::At(two.digest.clone()), 8).await);
    assert!(put(&one, "v1", TagExpect::Absent, 9).await);
    // Unconditional writes are unchanged.
    m.put_manifest("c/r", &two, Some("v1"), 10).await.unwrap();
    assert_eq!(tag_of("v1").await, Some(two.digest.clone()));

    // A manifest delete conditional on the tags it carries.
    m.put_manifest("c/r", &one, Some("d1"), 11).await.unwrap();
    m.put_manifest("c/r", &one, Some("d2"), 11).await.unwrap();
    let checked = vec!["d2".to_string()];
    let done = m
        .delete_manifest_if("c/r", &one.digest, Some(&checked), 12, &actor)
        .await
        .unwrap();
    assert_eq!(done, None, "d1 was not among the checked tags");
    assert_eq!(tag_of("d1").await, Some(one.digest.clone()));
    let checked = vec!["d2".to_string(), "d1".to_string()];
    let done = m
        .delete_manifest_if("c/r", &one.digest, Some(&checked), 13, &actor)
        .await
        .unwrap();
    assert_eq!(done, Some(true));
    assert_eq!(tag_of("d1").await, None);
    let done = m
        .delete_manifest_if("c/r", &one.digest, Some(&[]), 14, &actor)
        .await
        .unwrap();
    assert_eq!(done, Some(false), "gone already");

    // Many writers racing to create one tag, each with a manifest of its own: one wins.
    for round in 0..3 {
        let tag: &'static str = ["race0", "race1", "race2"][round];
        let manifests: Vec<NewManifest> = (0..8)
            .map(|i| manifest(&format!("race {round} {i}"), vec![layer.clone()], vec![]))
            .collect();
        let won = futures::future::join_all(
            manifests
                .iter()
                .map(|man| put(man, tag, TagExpect::Absent, 20 + round as i64)),
        )
        .await;
        let winners: Vec<usize> = (0..won.len()).filter(|i| won[*i]).collect();
        assert_eq!(winners.len(), 1, "round {round}: {won:?}");
        assert_eq!(
            tag_of(tag).await,
            Some(manifests[winners[0]].digest.clone()),
            "round {round}"
        );
        let live = m
            .sql_i64(
                "SELECT COUNT(*) FROM tags WHERE name = 'race' || CAST($1 AS TEXT)",
                round as i64,
            )
            .await;
        assert_eq!(live, 1, "round {round}: the tag was written once");
    }
}

pub(crate) async fn index_children_and_referrers(m: &dyn TestMeta) {
    let layer = Digest::sha256_of(b"layer");
    m.link_blob("r", &layer, 5, 1).await.unwrap();
    let child = manifest("child", vec![layer.clone()], vec![]);
    let index = manifest("index", vec![], vec![child.digest.clone()]);
    assert!(matches!(
        m.put_manifest("r", &index, Some("multi"), 2).await,
        Err(MetaError::ManifestUnknown(_))
    ));
    m.put_manifest("r", &child, None, 2).await.unwrap();
    m.put_manifest("r", &index, Some("multi"), 3).await.unwrap();
    // A child stays while an index lists it; once the index is gone it may go.
    assert!(matches!(
        m.delete_manifest("r", &child.digest, 3).await,
        Err(MetaError::ManifestReferenced(d)) if d == index.digest
    ));

    let mut sig = manifest("sig", vec![layer.clone()], vec![]);
    sig.subject = Some(child.digest.clone());
    sig.artifact_type = Some("application/x.sig".into());
    m.put_manifest("r", &sig, None, 4).await.unwrap();
    let all = m.referrers("r", &child.digest, None).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].digest, sig.digest);
    assert!(m
        .referrers("r", &child.digest, Some("other"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        m.referrers("r", &child.digest, Some("application/x.sig"))
            .await
            .unwrap()
            .len(),
        1
    );
}

pub(crate) async fn uploads_expire(m: &dyn TestMeta) {
    let u = Upload {
        id: "u".into(),
        repository_path: "r".into(),
        created_at: 1,
        updated_at: 1,
        created_by: Some("personal_access_token:4:9".into()),
    };
    m.create_upload(&u).await.unwrap();
    assert_eq!(m.upload("u").await.unwrap(), Some(u.clone()));
    assert_eq!(m.stale_uploads(2).await.unwrap().len(), 1);
    m.touch_upload("u", 5).await.unwrap();
    assert!(m.stale_uploads(2).await.unwrap().is_empty());
    m.delete_upload("u").await.unwrap();
    assert_eq!(m.upload("u").await.unwrap(), None);
}

pub(crate) async fn publishing_an_upload_links_its_blob_and_ends_it(m: &dyn TestMeta) {
    let u = Upload {
        id: "up".into(),
        repository_path: "g/p/app".into(),
        created_at: 7,
        updated_at: 8,
        created_by: None,
    };
    m.create_upload(&u).await.unwrap();
    let layer = Digest::sha256_of(b"published layer");
    let created = m
        .publish_upload("up", "g/p/app", &layer, 15, 9)
        .await
        .unwrap();
    assert_eq!(created, Some(7), "the session's creation time");
    assert_eq!(m.upload("up").await.unwrap(), None, "the session ended");
    assert_eq!(
        m.repository_blob("g/p/app", &layer).await.unwrap(),
        Some(15)
    );
    // A session already gone (expired meanwhile): the blob is linked all the same.
    let other = Digest::sha256_of(b"published after expiry");
    assert_eq!(
        m.publish_upload("up", "g/p/app", &other, 3, 10)
            .await
            .unwrap(),
        None
    );
    assert_eq!(m.repository_blob("g/p/app", &other).await.unwrap(), Some(3));
}

/// Manifest lookups are cached; every kind of write is seen by the next lookup,
/// including writes through paths that know nothing of the cache (raw SQL on the
/// writer, a repository deletion).
pub(crate) async fn manifest_lookups_follow_every_write(m: &dyn TestMeta) {
    let layer = Digest::sha256_of(b"cached layer");
    m.link_blob("c/r", &layer, 5, 1).await.unwrap();
    let one = manifest("cached one", vec![layer.clone()], vec![]);
    let two = manifest("cached two", vec![layer.clone()], vec![]);
    m.put_manifest("c/r", &one, Some("t"), 2).await.unwrap();
    let digest_of_tag = || async {
        m.manifest("c/r", ManifestRef::Tag("t"))
            .await
            .unwrap()
            .map(|x| x.digest)
    };
    // Twice: the second may come from the cache.
    assert_eq!(digest_of_tag().await, Some(one.digest.clone()));
    assert_eq!(digest_of_tag().await, Some(one.digest.clone()));
    m.put_manifest("c/r", &two, Some("t"), 3).await.unwrap();
    assert_eq!(digest_of_tag().await, Some(two.digest.clone()));
    assert!(m.delete_tag("c/r", "t", 4).await.unwrap());
    assert_eq!(digest_of_tag().await, None);

    m.put_manifest("c/r", &one, Some("t"), 5).await.unwrap();
    assert_eq!(digest_of_tag().await, Some(one.digest.clone()));
    m.sql_exec(
        "UPDATE tags SET deleted_at = $1 WHERE name = 't' AND deleted_at IS NULL",
        6,
    )
    .await;
    assert_eq!(
        digest_of_tag().await,
        None,
        "a raw write through the writer"
    );

    m.put_manifest("c/r", &one, Some("t"), 7).await.unwrap();
    let by_digest = || async {
        m.manifest("c/r", ManifestRef::Digest(&one.digest))
            .await
            .unwrap()
            .is_some()
    };
    assert!(by_digest().await);
    assert_eq!(digest_of_tag().await, Some(one.digest.clone()));
    let repo = m.repository("c/r").await.unwrap().unwrap();
    m.delete_repository(repo.id, 8).await.unwrap();
    assert_eq!(digest_of_tag().await, None, "repository deleted");
    assert!(!by_digest().await, "repository deleted");
}

/// This process's own pushes into one repository (upload sessions, blob links, a
/// manifest under a moved tag, a tag deleted) leave its cached lookups of other
/// repositories in place, while the pushed repository's next lookup sees the push.
pub(crate) async fn own_pushes_leave_other_repositories_cached(m: &dyn TestMeta) {
    let layer = Digest::sha256_of(b"own pushes");
    m.link_blob("c/quiet", &layer, 5, 1).await.unwrap();
    let one = manifest("own one", vec![layer.clone()], vec![]);
    m.put_manifest("c/quiet", &one, Some("t"), 1).await.unwrap();
    m.cache_ready().await;
    let tag = |repository: &'static str| async move {
        m.manifest(repository, ManifestRef::Tag("t"))
            .await
            .unwrap()
            .map(|x| x.digest)
    };
    // An entry expires MANIFEST_CACHE_MAX_AGE after it was read: a round that took
    // longer (a machine busy with other work) proves nothing and is run again.
    for round in 0..4_i64 {
        let started = std::time::Instant::now();
        assert_eq!(tag("c/quiet").await, Some(one.digest.clone()));
        let hits = m.cache_hits();
        assert_eq!(tag("c/quiet").await, Some(one.digest.clone()));
        let expired = || started.elapsed() >= crate::MANIFEST_CACHE_MAX_AGE;
        if m.cache_hits() != hits + 1 {
            assert!(expired(), "the second lookup did not come from the cache");
            continue;
        }

        // A push into c/busy, as a client makes it, and a tag deleted there.
        let id = format!("u{round}");
        let upload = Upload {
            id: id.clone(),
            repository_path: "c/busy".into(),
            created_at: 2,
            updated_at: 2,
            created_by: None,
        };
        m.create_upload(&upload).await.unwrap();
        m.touch_upload(&id, 3).await.unwrap();
        let blob = Digest::sha256_of(format!("busy layer {round}").as_bytes());
        m.link_blob("c/busy", &blob, 5, 3).await.unwrap();
        m.delete_upload(&id).await.unwrap();
        let pushed = manifest(&format!("busy {round}"), vec![blob], vec![]);
        m.put_manifest("c/busy", &pushed, Some("old"), 4)
            .await
            .unwrap();
        m.put_manifest("c/busy", &pushed, Some("t"), 4)
            .await
            .unwrap();
        assert!(m.delete_tag("c/busy", "old", 5).await.unwrap());
        // Seen at once where it was pushed.
        assert_eq!(tag("c/busy").await, Some(pushed.digest.clone()));

        let hits = m.cache_hits();
        assert_eq!(tag("c/quiet").await, Some(one.digest.clone()));
        if m.cache_hits() == hits + 1 {
            return;
        }
        assert!(
            expired(),
            "a push into c/busy dropped c/quiet from the cache"
        );
    }
    panic!("every round outlasted the cache's age limit");
}

pub(crate) async fn offline_sweep_and_pending_deletions_in_batches(m: &dyn TestMeta) {
    let kept = Digest::sha256_of(b"kept");
    m.link_blob("a/b", &kept, 1, 1).await.unwrap();
    m.put_manifest(
        "a/b",
        &manifest("m", vec![kept.clone()], vec![]),
        Some("v1"),
        2,
    )
    .await
    .unwrap();
    // More unreferenced blobs than one page of the batch statements holds.
    let loose: Vec<Digest> = (0..620)
        .map(|i| Digest::sha256_of(format!("loose {i}").as_bytes()))
        .collect();
    for (i, d) in loose.iter().enumerate() {
        let repo = if i % 2 == 0 { "a/b" } else { "a/c" };
        m.link_blob(repo, d, i as u64, 3).await.unwrap();
    }
    // A dry run changes nothing.
    let dry = m.sweep(false, 10, 10, true).await.unwrap();
    assert_eq!(dry.blobs_deleted.len(), loose.len());
    assert_eq!(m.blob(&loose[0]).await.unwrap(), Some(0));

    let report = m.sweep(false, 10, 10, false).await.unwrap();
    let mut want: Vec<Digest> = loose.clone();
    want.sort();
    let got: Vec<Digest> = report
        .blobs_deleted
        .iter()
        .map(|b| b.digest.clone())
        .collect();
    assert_eq!(got, want);
    let sizes: i64 = report.blobs_deleted.iter().map(|b| b.size).sum();
    assert_eq!(sizes, (0..620).sum::<i64>());
    assert_eq!(m.blob(&loose[7]).await.unwrap(), None);
    assert_eq!(m.blob(&kept).await.unwrap(), Some(1));
    assert_eq!(m.repository_blob("a/c", &loose[1]).await.unwrap(), None);
    // Their reviews are dropped (the unlinks queued them), the kept one's stays.
    assert_eq!(m.review_queue_lengths().await.unwrap().1, 1);

    let mut asked = loose.clone();
    asked.push(kept.clone());
    let pending = m.blob_deletions_pending(&asked).await.unwrap();
    assert_eq!(pending.len(), loose.len());
    assert!(!pending.contains(&kept));
    let known = m.blobs_known(&asked).await.unwrap();
    assert_eq!(known.into_iter().collect::<Vec<_>>(), vec![kept.clone()]);
    assert_eq!(m.pending_blob_deletions(1000).await.unwrap().len(), 620);

    m.clear_blob_deletions(&loose[..600]).await.unwrap();
    assert_eq!(m.blob_deletions_pending(&asked).await.unwrap().len(), 20);
    assert!(m.blob_deletion_pending(&loose[610]).await.unwrap());
    assert!(!m.blob_deletion_pending(&loose[10]).await.unwrap());
    m.clear_blob_deletions(&[]).await.unwrap();
}
