//! A cleanup policy's run, from due to done.

use berth_core::{RegistryAccess, Visibility};
use berth_oci::Digest;

use super::TestMeta;
use crate::{CleanupClaim, ExpirationPolicy, NewManifest, NewProject};

/// Project g/p with tags a, b and c in each of `repositories`; returns its id.
pub(crate) async fn project_with_tags(m: &dyn TestMeta, repositories: &[&str]) -> i64 {
    let g = m
        .create_group(
            &crate::NewGroup {
                name: "g".into(),
                path: "g".into(),
                parent_id: None,
                visibility: Visibility::Private,
                description: String::new(),
            },
            1,
        )
        .await
        .unwrap();
    let p = m
        .create_project(
            &NewProject {
                namespace_id: g.id,
                name: "p".into(),
                path: "p".into(),
                description: String::new(),
                visibility: Visibility::Private,
                registry_access: RegistryAccess::Enabled,
                creator_id: None,
            },
            1,
        )
        .await
        .unwrap();
    let layer = Digest::sha256_of(b"l");
    let man = NewManifest {
        digest: Digest::sha256_of(b"m"),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        payload: b"m".to_vec(),
        blobs: vec![layer.clone()],
        children: vec![],
        subject: None,
        config: None,
        artifact_type: None,
        image_created_at: None,
        total_size: 1,
        annotations: None,
    };
    for repository in repositories {
        m.link_blob(repository, &layer, 1, 1).await.unwrap();
        for t in ["a", "b", "c"] {
            m.put_manifest(repository, &man, Some(t), 1).await.unwrap();
        }
    }
    p.id
}

fn due_at_100() -> ExpirationPolicy {
    ExpirationPolicy {
        enabled: true,
        cadence: "1d".into(),
        keep_n: Some(1),
        older_than: None,
        name_regex: Some(".*".into()),
        name_regex_keep: None,
        next_run_at: Some(100),
    }
}

pub(crate) async fn a_policy_run_from_due_to_done(m: &dyn TestMeta) {
    let pid = project_with_tags(m, &["g/p/app"]).await;
    m.set_expiration_policy(pid, &due_at_100(), 1)
        .await
        .unwrap();
    assert!(m.due_policies(99).await.unwrap().is_empty());
    assert_eq!(m.due_policies(100).await.unwrap().len(), 1);
    assert_eq!(m.start_policy_run(pid, 100, 200).await.unwrap(), Some(1));
    // A second node that saw the same due run finds it started already.
    assert_eq!(m.start_policy_run(pid, 100, 201).await.unwrap(), None);
    assert!(m.due_policies(150).await.unwrap().is_empty());
    let queue = m.cleanup_queue(10).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].cleanup_status, "cleanup_scheduled");
    let rid = queue[0].id;
    let first = claim(m, 150, 1_000, 1).await.expect("claimed");
    assert_eq!(first.repository.id, rid);
    assert_eq!(
        id_of(claim(m, 151, 1_001, 5).await),
        None,
        "one worker only"
    );
    let info = m.repository_info(rid).await.unwrap().unwrap();
    assert_eq!(info.cleanup_status, "cleanup_ongoing");
    assert_eq!(info.cleanup_started_at, Some(150));
    let n = m
        .delete_tags_logged(
            rid,
            &["b".into(), "a".into(), "zz".into(), "a".into()],
            "policy",
            None,
            &crate::Actor::system("cleanup_policy"),
            160,
        )
        .await
        .unwrap();
    assert_eq!(n, 2, "unknown and repeated names end nothing more");
    let log = m.cleanup_log(pid, 10).await.unwrap();
    // Newest first: logged in the order the names were given.
    let tags: Vec<&str> = log.iter().map(|e| e.tag.as_str()).collect();
    assert_eq!(tags, vec!["a", "b"]);
    assert_eq!(log[0].repository_path, "g/p/app");
    assert_eq!(log[0].reason, "policy");
    // The policy run the repository was scheduled by deleted them.
    assert!(log[0].run_id.is_some());
    assert_eq!(log[0].run_id, log[1].run_id);
    assert_eq!(log[0].kept_by_rule, None);
    // Tags a protection rule kept are logged too, once per run however many turns
    // the run takes.
    let kept = |tag: &str, rule_id| crate::KeptTag {
        tag: tag.into(),
        digest: "sha256:kept".into(),
        rule_id,
    };
    let added = m
        .log_kept_tags(rid, &[kept("k1", 7), kept("k2", 8)], "policy", None, 161)
        .await
        .unwrap();
    assert_eq!(added, 2);
    let again = m
        .log_kept_tags(rid, &[kept("k1", 7), kept("k3", 7)], "policy", None, 162)
        .await
        .unwrap();
    assert_eq!(again, 1, "k1 was logged by this run already");
    let log = m.cleanup_log(pid, 10).await.unwrap();
    let kept_rows: Vec<(&str, Option<i64>)> = log
        .iter()
        .filter(|e| e.kept_by_rule.is_some())
        .map(|e| (e.tag.as_str(), e.kept_by_rule))
        .collect();
    assert_eq!(
        kept_rows,
        vec![("k3", Some(7)), ("k2", Some(8)), ("k1", Some(7))]
    );
    assert!(log.iter().all(|e| e.run_id == log[0].run_id));
    // A claim is held until its lease lapses, and renewing moves the lease on.
    assert_eq!(m.reset_lapsed_cleanups(1_000).await.unwrap(), (0, 1));
    assert!(m.renew_cleanup(&first, 2_000).await.unwrap());
    assert_eq!(m.reset_lapsed_cleanups(1_999).await.unwrap(), (0, 1));
    assert_eq!(id_of(claim(m, 1_500, 3_000, 5).await), None);
    // A worker that died mid-run leaves it ongoing; once its lease lapsed the turn is
    // unfinished, to be claimed again, and the dead worker can no longer renew it.
    assert_eq!(m.reset_lapsed_cleanups(2_001).await.unwrap(), (1, 0));
    assert!(!m.renew_cleanup(&first, 9_000).await.unwrap());
    assert_eq!(
        m.repository_info(rid)
            .await
            .unwrap()
            .unwrap()
            .cleanup_status,
        "cleanup_unfinished"
    );
    let second = claim(m, 170, 5_000, 1).await.expect("claimed again");
    assert_eq!(second.repository.id, rid);
    let info = m.repository_info(rid).await.unwrap().unwrap();
    assert_eq!(
        info.cleanup_started_at,
        Some(150),
        "a resumed run keeps its start"
    );
    // The first worker, late, can neither renew nor end the second one's turn.
    assert!(!m.renew_cleanup(&first, 9_000).await.unwrap());
    assert!(!m
        .finish_cleanup(&first, "cleanup_unscheduled")
        .await
        .unwrap());
    let info = m.repository_info(rid).await.unwrap().unwrap();
    assert_eq!(info.cleanup_status, "cleanup_ongoing");
    assert!(m.renew_cleanup(&second, 6_000).await.unwrap());
    assert!(m
        .finish_cleanup(&second, "cleanup_unscheduled")
        .await
        .unwrap());
    assert!(m.cleanup_queue(10).await.unwrap().is_empty());
    // An ended claim is ended: a second end changes nothing.
    assert!(!m
        .finish_cleanup(&second, "cleanup_unfinished")
        .await
        .unwrap());
    assert!(m.cleanup_queue(10).await.unwrap().is_empty());
}

async fn claim(
    m: &dyn TestMeta,
    now: i64,
    lease_until: i64,
    capacity: i64,
) -> Option<CleanupClaim> {
    m.claim_next_cleanup(now, lease_until, capacity)
        .await
        .unwrap()
}

fn id_of(claim: Option<CleanupClaim>) -> Option<i64> {
    claim.map(|c| c.repository.id)
}

pub(crate) async fn the_worker_capacity_bounds_all_claims_together(m: &dyn TestMeta) {
    let pid = project_with_tags(m, &["g/p/app", "g/p/web", "g/p/zip"]).await;
    m.set_expiration_policy(pid, &due_at_100(), 1)
        .await
        .unwrap();
    assert_eq!(m.start_policy_run(pid, 100, 200).await.unwrap(), Some(3));
    let queue: Vec<i64> = m
        .cleanup_queue(10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    let [app, web, zip] = queue[..] else {
        panic!("three queued: {queue:?}")
    };
    // Capacity 2: claims go in queue order, and the third waits.
    let app_claim = claim(m, 150, 1_000, 2).await.expect("app");
    assert_eq!(app_claim.repository.id, app);
    assert_eq!(id_of(claim(m, 150, 1_000, 2).await), Some(web));
    assert_eq!(id_of(claim(m, 150, 1_000, 2).await), None);
    // A finished turn frees its slot.
    assert!(m
        .finish_cleanup(&app_claim, "cleanup_unscheduled")
        .await
        .unwrap());
    let zip_claim = claim(m, 160, 1_000, 2).await.expect("zip");
    assert_eq!(zip_claim.repository.id, zip);
    // The queue serves the least recently started first: app's next run (its last
    // started at 150) goes before zip's unfinished one (started at 160).
    assert!(m
        .finish_cleanup(&zip_claim, "cleanup_unfinished")
        .await
        .unwrap());
    assert_eq!(m.start_policy_run(pid, 200, 300).await.unwrap(), Some(1));
    assert_eq!(
        m.cleanup_queue(10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [app, zip]
    );
    // Capacity 1 is taken by web's live claim; once that lapses (even before it is
    // reset) the slot is free again.
    assert_eq!(id_of(claim(m, 999, 2_000, 1).await), None);
    assert_eq!(id_of(claim(m, 1_001, 2_000, 1).await), Some(app));
    assert_eq!(
        m.repository_info(web)
            .await
            .unwrap()
            .unwrap()
            .cleanup_status,
        "cleanup_ongoing"
    );
}
