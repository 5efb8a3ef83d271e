//! Tag history, restore, and the undo window garbage collection keeps.

use berth_oci::Digest;

use super::TestMeta;
use crate::{
    Actor, GcFreed, ManifestRef, ManifestReview, NewManifest, Restore, RunRestore, Window,
};

fn manifest(payload: &str, layer: &Digest) -> NewManifest {
    super::registry::manifest(payload, vec![layer.clone()], vec![])
}

fn alice() -> Actor {
    Actor::new("personal_access_token", Some(7), Some("alice"))
}

async fn repo_id(m: &dyn TestMeta, path: &str) -> i64 {
    m.repository(path).await.unwrap().unwrap().id
}

pub(crate) async fn every_change_of_a_tag_is_recorded_with_its_actor(m: &dyn TestMeta) {
    let layer = Digest::sha256_of(b"l");
    m.link_blob("g/p", &layer, 1, 1).await.unwrap();
    let (one, two) = (manifest("one", &layer), manifest("two", &layer));
    let bob = Actor::new("user", Some(8), Some("bob"));
    m.put_manifest_by("g/p", &one, Some("v1"), 10, &alice())
        .await
        .unwrap();
    // The same digest again changes nothing.
    m.put_manifest_by("g/p", &one, Some("v1"), 11, &bob)
        .await
        .unwrap();
    m.put_manifest_by("g/p", &two, Some("v1"), 20, &bob)
        .await
        .unwrap();
    assert!(m.delete_tag_by("g/p", "v1", 30, &alice()).await.unwrap());
    let id = repo_id(m, "g/p").await;
    assert_eq!(
        m.restore_tag(id, "v1", None, false, &bob, 40)
            .await
            .unwrap(),
        Restore::Restored(two.digest.to_string())
    );
    let h = m.tag_history(id, "v1", 100).await.unwrap();
    type Seen<'a> = (&'a str, &'a str, Option<&'a str>, i64, Option<&'a str>);
    let seen: Vec<Seen> = h
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.digest.as_str(),
                e.previous_digest.as_deref(),
                e.at,
                e.actor.as_ref().and_then(|a| a.username.as_deref()),
            )
        })
        .collect();
    let (d1, d2) = (one.digest.as_str(), two.digest.as_str());
    assert_eq!(
        seen,
        vec![
            ("restored", d2, None, 40, Some("bob")),
            ("deleted", d2, None, 30, Some("alice")),
            ("pushed", d2, Some(d1), 20, Some("bob")),
            ("pushed", d1, None, 10, Some("alice")),
        ]
    );
    assert_eq!(h[1].actor, Some(alice()));
    assert_eq!(m.tag_history(id, "v1", 2).await.unwrap().len(), 2);
    assert!(m.tag_history(id, "nope", 10).await.unwrap().is_empty());
}

pub(crate) async fn restore_puts_a_tag_back_or_says_why_not(m: &dyn TestMeta) {
    let layer = Digest::sha256_of(b"l");
    m.link_blob("g/p", &layer, 1, 1).await.unwrap();
    let (one, two) = (manifest("one", &layer), manifest("two", &layer));
    m.put_manifest("g/p", &one, Some("a"), 10).await.unwrap();
    m.put_manifest("g/p", &one, Some("b"), 10).await.unwrap();
    m.put_manifest("g/p", &two, Some("c"), 10).await.unwrap();
    let id = repo_id(m, "g/p").await;
    assert_eq!(
        m.restore_tag(id, "a", None, false, &alice(), 11)
            .await
            .unwrap(),
        Restore::Unknown,
        "never deleted: nothing to restore"
    );
    assert!(m.delete_tag("g/p", "a", 12).await.unwrap());
    assert!(m.delete_tag("g/p", "b", 12).await.unwrap());
    let (deleted, total) = m
        .deleted_tags(
            id,
            Window {
                offset: 0,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(deleted[0].name, "a");
    assert_eq!(deleted[0].digest, one.digest.as_str());
    assert_eq!(deleted[0].deleted_at, 12);
    // Pushed again on another digest: a conflict, unless forced.
    m.put_manifest("g/p", &two, Some("a"), 13).await.unwrap();
    assert_eq!(
        m.restore_tag(id, "a", Some(one.digest.as_str()), false, &alice(), 14)
            .await
            .unwrap(),
        Restore::Conflict {
            current: two.digest.to_string()
        }
    );
    assert_eq!(
        m.restore_tag(id, "a", Some(one.digest.as_str()), true, &alice(), 14)
            .await
            .unwrap(),
        Restore::Restored(one.digest.to_string())
    );
    let got = m.manifest("g/p", ManifestRef::Tag("a")).await.unwrap();
    assert_eq!(got.unwrap().digest, one.digest);
    assert_eq!(
        m.restore_tag(id, "a", Some(one.digest.as_str()), false, &alice(), 15)
            .await
            .unwrap(),
        Restore::Unchanged(one.digest.to_string())
    );
    // A digest the tag never had is not a restore.
    assert_eq!(
        m.restore_tag(id, "b", Some(two.digest.as_str()), false, &alice(), 15)
            .await
            .unwrap(),
        Restore::Unknown
    );
    // The manifest deleted by digest: gone.
    assert!(m.delete_tag("g/p", "c", 16).await.unwrap());
    assert!(m.delete_tag("g/p", "a", 16).await.unwrap());
    assert!(m.delete_manifest("g/p", &two.digest, 17).await.unwrap());
    assert_eq!(
        m.restore_tag(id, "c", None, false, &alice(), 18)
            .await
            .unwrap(),
        Restore::Gone(two.digest.to_string())
    );
    let (deleted, total) = m
        .deleted_tags(
            id,
            Window {
                offset: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    let names: Vec<&str> = deleted.iter().map(|d| d.name.as_str()).collect();
    assert_eq!((names, total), (vec!["a", "b"], 2), "c's manifest is gone");
}

pub(crate) async fn gc_keeps_a_manifest_a_tag_left_within_the_window(m: &dyn TestMeta) {
    let layer = Digest::sha256_of(b"l");
    m.link_blob("g/p", &layer, 1, 1).await.unwrap();
    let one = manifest("one", &layer);
    m.put_manifest("g/p", &one, Some("a"), 1).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(m.delete_tag("g/p", "a", now).await.unwrap());
    let queued = m.due_manifest_reviews(i64::MAX, 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    // Reviewed early (a queue entry from before, another node's clock): within the
    // window, kept, and queued again for the window's end.
    assert_eq!(
        m.review_manifest(queued[0], true, now - 1000)
            .await
            .unwrap(),
        ManifestReview::Kept
    );
    assert!(m
        .due_manifest_reviews(now - 1, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        m.due_manifest_reviews(now, 10).await.unwrap(),
        vec![queued[0]]
    );
    let id = repo_id(m, "g/p").await;
    assert_eq!(
        m.deleted_tags(
            id,
            Window {
                offset: 0,
                limit: 10
            }
        )
        .await
        .unwrap()
        .1,
        1
    );
    // Due again at the window's end, and deleted then (not kept and queued at the same
    // time again, which would make one GC round review it forever); then the tag
    // cannot come back.
    assert_eq!(
        m.review_manifest(queued[0], true, now).await.unwrap(),
        ManifestReview::Deleted
    );
    assert_eq!(
        m.restore_tag(id, "a", None, false, &alice(), now + 2)
            .await
            .unwrap(),
        Restore::Gone(one.digest.to_string())
    );
    assert_eq!(
        m.deleted_tags(
            id,
            Window {
                offset: 0,
                limit: 10
            }
        )
        .await
        .unwrap()
        .1,
        0
    );
    // The offline sweep keeps the window too.
    m.put_manifest("g/p", &one, Some("b"), 1).await.unwrap();
    assert!(m.delete_tag("g/p", "b", 50).await.unwrap());
    let r = m.sweep(true, 40, 40, true).await.unwrap();
    assert_eq!(r.manifests_deleted, 0);
    let r = m.sweep(true, now + 10, now + 10, true).await.unwrap();
    assert_eq!(r.manifests_deleted, 1);
}

/// Manifests reviewed in one batch are reviewed as one by one: a child kept because
/// its index still lists it, then that index deleted, leaves the child queued again
/// (the index's deletion queued it after the child's review), and it goes next time.
pub(crate) async fn a_batch_review_requeues_a_child_its_index_left(m: &dyn TestMeta) {
    let layer = Digest::sha256_of(b"l");
    m.link_blob("g/p", &layer, 1, 1).await.unwrap();
    let child = manifest("child", &layer);
    m.put_manifest("g/p", &child, None, 1).await.unwrap();
    let index = super::registry::manifest("index", vec![], vec![child.digest.clone()]);
    m.put_manifest("g/p", &index, Some("i"), 2).await.unwrap();
    assert!(m.delete_tag("g/p", "i", 3).await.unwrap());
    let repo = repo_id(m, "g/p").await;
    let first = |sql: &'static str| async move { m.sql_i64(sql, repo).await };
    let child_id = first("SELECT MIN(id) FROM manifests WHERE repository_id = $1").await;
    let index_id = first("SELECT MAX(id) FROM manifests WHERE repository_id = $1").await;
    assert_ne!(child_id, index_id);
    let reviews = m
        .review_manifests(&[child_id, index_id], true, i64::MAX)
        .await
        .unwrap();
    assert_eq!(reviews, [ManifestReview::Kept, ManifestReview::Deleted]);
    assert_eq!(
        m.due_manifest_reviews(i64::MAX, 10).await.unwrap(),
        [child_id]
    );
    assert_eq!(
        m.review_manifests(&[child_id], true, i64::MAX)
            .await
            .unwrap(),
        [ManifestReview::Deleted]
    );
    assert_eq!(m.review_queue_lengths().await.unwrap().0, 0);
}

pub(crate) async fn a_cleanup_run_is_undone_with_counts(m: &dyn TestMeta) {
    let pid = super::cleanup::project_with_tags(m, &["g/p/app", "g/p/web"]).await;
    let app = repo_id(m, "g/p/app").await;
    let web = repo_id(m, "g/p/web").await;
    let run = m
        .start_cleanup_run(pid, "bulk_delete", &alice(), 5)
        .await
        .unwrap();
    let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    for repo in [app, web] {
        let n = m
            .delete_tags_logged(repo, &names, "bulk_delete", Some(run), &alice(), 6)
            .await
            .unwrap();
        assert_eq!(n, 3);
    }
    let r = m.cleanup_run(run).await.unwrap().unwrap();
    assert_eq!((r.project_id, r.reason.as_str()), (pid, "bulk_delete"));
    assert_eq!(r.actor, Some(alice()));
    assert!(m.cleanup_log(pid, 10).await.unwrap()[0].run_id == Some(run));
    let h = m.tag_history(app, "a", 10).await.unwrap();
    assert_eq!(h[0].action, "deleted");
    assert_eq!(h[0].cleanup_run_id, Some(run));
    // Since the run: `a` of app pushed again, `b` of app restored by hand.
    // The manifest every tag of `project_with_tags` points at.
    let again = manifest("m", &Digest::sha256_of(b"l"));
    m.put_manifest("g/p/app", &again, Some("a"), 7)
        .await
        .unwrap();
    m.restore_tag(app, "b", None, false, &alice(), 7)
        .await
        .unwrap();
    let undone = m.restore_cleanup_run(run, &alice(), 8).await.unwrap();
    assert_eq!(
        undone,
        RunRestore {
            restored: 4,
            gone: 0,
            skipped: 2
        }
    );
    for repo in ["g/p/app", "g/p/web"] {
        assert_eq!(m.tags(repo, None, 10).await.unwrap(), vec!["a", "b", "c"]);
    }
    // Undoing it again restores nothing more.
    let again = m.restore_cleanup_run(run, &alice(), 9).await.unwrap();
    assert_eq!(again.restored, 0);
    assert_eq!(again.skipped, 6);
}

pub(crate) async fn history_is_pruned_after_the_retention(m: &dyn TestMeta) {
    let layer = Digest::sha256_of(b"l");
    m.link_blob("g/p", &layer, 1, 1).await.unwrap();
    let (one, two) = (manifest("one", &layer), manifest("two", &layer));
    m.put_manifest("g/p", &one, Some("a"), 10).await.unwrap();
    m.put_manifest("g/p", &two, Some("a"), 20).await.unwrap();
    m.put_manifest("g/p", &one, Some("b"), 10).await.unwrap();
    assert!(m.delete_tag("g/p", "b", 30).await.unwrap());
    let id = repo_id(m, "g/p").await;
    assert_eq!(m.prune_tag_history(20).await.unwrap(), 0);
    assert_eq!(m.prune_tag_history(21).await.unwrap(), 1);
    assert_eq!(m.tag_history(id, "a", 10).await.unwrap().len(), 1);
    assert_eq!(m.tag_history(id, "b", 10).await.unwrap().len(), 2);
    assert_eq!(m.prune_tag_history(31).await.unwrap(), 1);
    // Live tags are never pruned.
    assert_eq!(m.tags("g/p", None, 10).await.unwrap(), vec!["a"]);
}

pub(crate) async fn admin_sees_recent_runs_and_what_gc_freed(m: &dyn TestMeta) {
    let pid = super::cleanup::project_with_tags(m, &["g/p/app"]).await;
    let app = repo_id(m, "g/p/app").await;
    assert_eq!(m.recent_cleanup_runs(10).await.unwrap(), vec![]);
    let first = m
        .start_cleanup_run(pid, "bulk_delete", &alice(), 5)
        .await
        .unwrap();
    let names: Vec<String> = ["a", "b"].map(String::from).to_vec();
    m.delete_tags_logged(app, &names, "bulk_delete", Some(first), &alice(), 6)
        .await
        .unwrap();
    let second = m
        .start_cleanup_run(pid, "command", &alice(), 7)
        .await
        .unwrap();
    let runs = m.recent_cleanup_runs(10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [second, first],
        "newest first"
    );
    assert_eq!(runs[1].project_path, "g/p");
    assert_eq!(runs[1].reason, "bulk_delete");
    assert_eq!(runs[1].started_at, 5);
    assert_eq!(runs[1].tags_deleted, 2);
    assert_eq!(runs[1].repositories_waiting, 0);
    assert_eq!(runs[0].tags_deleted, 0);
    assert_eq!(m.recent_cleanup_runs(1).await.unwrap().len(), 1);

    // What GC freed, by the hour: rounds add up, older hours drop out of "recent".
    let hour = 3_600_000;
    let day0 = 1_000 * hour;
    assert_eq!(m.gc_freed_since(0).await.unwrap(), GcFreed::default());
    let round = |n: i64| GcFreed {
        manifests: n,
        blobs: 2 * n,
        bytes: 1000 * n,
    };
    m.record_gc_freed(&round(1), day0 + 10).await.unwrap();
    m.record_gc_freed(&round(2), day0 + 20).await.unwrap();
    m.record_gc_freed(&GcFreed::default(), day0 + 30)
        .await
        .unwrap();
    m.record_gc_freed(&round(4), day0 + 30 * hour)
        .await
        .unwrap();
    assert_eq!(m.gc_freed_since(0).await.unwrap(), round(7));
    assert_eq!(
        m.gc_freed_since(day0 + 30 * hour + 5).await.unwrap(),
        round(4),
        "from the start of the hour given"
    );
    assert_eq!(
        m.gc_freed_since(day0 + 31 * hour).await.unwrap(),
        GcFreed::default()
    );
}
