//! Repositories, tag pages, deletion, leases, policies, moves.

use berth_core::{RegistryAccess, Visibility};
use berth_oci::Digest;

use super::TestMeta;
use crate::org::{Namespace, NewGroup, NewProject, Project, Window};
use crate::repositories::{ExpirationPolicy, TagInfo, TagOrder, TagPage, TagQuery};
use crate::{ManifestRef, MetaError, NewManifest, Result, Upload};

fn window(offset: i64, limit: i64) -> Window {
    Window { offset, limit }
}

pub(super) async fn group(m: &dyn TestMeta, path: &str, parent_id: Option<i64>) -> Namespace {
    m.create_group(
        &NewGroup {
            name: path.to_uppercase(),
            path: path.into(),
            parent_id,
            visibility: Visibility::Private,
            description: String::new(),
        },
        1,
    )
    .await
    .unwrap()
}

pub(super) async fn project(m: &dyn TestMeta, namespace_id: i64, path: &str) -> Project {
    m.create_project(
        &NewProject {
            namespace_id,
            name: path.to_uppercase(),
            path: path.into(),
            description: String::new(),
            visibility: Visibility::Private,
            registry_access: RegistryAccess::Enabled,
            creator_id: None,
        },
        1,
    )
    .await
    .unwrap()
}

fn blob(name: &str) -> Digest {
    Digest::sha256_of(name.as_bytes())
}

/// A manifest over `layers` (linked into `repo` with their sizes) and an optional
/// config, pushed with `tag` at `now`.
pub(super) async fn push(
    m: &dyn TestMeta,
    repo: &str,
    payload: &str,
    layers: &[(&str, u64)],
    image_created_at: Option<i64>,
    tag: Option<&str>,
    now: i64,
) -> NewManifest {
    let mut blobs = Vec::new();
    for (name, size) in layers {
        let d = blob(name);
        m.link_blob(repo, &d, *size, now).await.unwrap();
        blobs.push(d);
    }
    let man = NewManifest {
        digest: Digest::sha256_of(payload.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        payload: payload.as_bytes().to_vec(),
        config: blobs.first().cloned(),
        blobs,
        children: vec![],
        subject: None,
        artifact_type: None,
        image_created_at,
        total_size: layers.iter().skip(1).map(|(_, s)| *s as i64).sum(),
        annotations: None,
    };
    m.put_manifest(repo, &man, tag, now).await.unwrap();
    man
}

async fn tag(m: &dyn TestMeta, repo: &str, man: &NewManifest, name: &str, now: i64) {
    m.put_manifest(repo, man, Some(name), now).await.unwrap();
}

async fn repo_id(m: &dyn TestMeta, path: &str) -> i64 {
    m.repository(path).await.unwrap().unwrap().id
}

fn names(tags: &[TagInfo]) -> Vec<&str> {
    tags.iter().map(|t| t.name.as_str()).collect()
}

fn conflict<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Err(MetaError::Conflict(msg)) => msg,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

fn not_found<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Err(MetaError::NotFound(msg)) => msg,
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn ns(m: &dyn TestMeta, id: i64) -> String {
    m.namespace(id).await.unwrap().unwrap().full_path
}

async fn full(m: &dyn TestMeta, id: i64) -> String {
    m.project(id).await.unwrap().unwrap().full_path
}

async fn count(m: &dyn TestMeta, sql: &str, id: i64) -> i64 {
    m.sql_i64(sql, id).await
}

pub(crate) async fn repositories_under_walk_a_group_by_path(m: &dyn TestMeta) {
    let g = group(m, "g", None).await;
    let sub = group(m, "sub", Some(g.id)).await;
    // Neighbours whose paths sort right before and after `g/…`: never listed.
    let before = group(m, "g-a", None).await;
    let after = group(m, "g0", None).await;
    let p1 = project(m, g.id, "p1").await;
    let p2 = project(m, sub.id, "p2").await;
    let p3 = project(m, g.id, "p3").await;
    let pb = project(m, before.id, "p").await;
    project(m, after.id, "p").await;
    for (path, digest) in [
        ("g/p1", "a"),
        ("g/p1/x", "b"),
        ("g/sub/p2/y", "c"),
        ("g/p3", "d"),
        ("g/p3/z", "e"),
        ("g-a/p/w", "f"),
        ("g0/p/v", "g"),
    ] {
        push(m, path, digest, &[("cfg", 1)], None, Some("t"), 10).await;
    }
    let ids = |page: &[crate::repositories::RepositoryInfo]| -> Vec<String> {
        page.iter().map(|r| r.path.clone()).collect()
    };

    let (all, total) = m
        .repositories_under("g", &[], window(0, 10), 100)
        .await
        .unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        ids(&all),
        ["g/p1", "g/p1/x", "g/p3", "g/p3/z", "g/sub/p2/y"]
    );
    assert_eq!(all[1].project_id, Some(p1.id));
    assert_eq!(all[1].tags_count, 1);
    // The same rows as the listing by project ids.
    let (by_ids, _) = m
        .repositories_of(&[p1.id, p2.id, p3.id], window(0, 10))
        .await
        .unwrap();
    assert_eq!(all, by_ids);

    // Pages of the walk, and a hidden project left out of rows and count.
    let (page, total) = m
        .repositories_under("g", &[], window(2, 2), 100)
        .await
        .unwrap();
    assert_eq!(
        (ids(&page), total),
        (vec!["g/p3".into(), "g/p3/z".into()], 5)
    );
    let (page, total) = m
        .repositories_under("g", &[p3.id, pb.id], window(0, 10), 100)
        .await
        .unwrap();
    assert_eq!(
        (ids(&page), total),
        (vec!["g/p1".into(), "g/p1/x".into(), "g/sub/p2/y".into()], 3)
    );
    // A subgroup alone.
    let (page, total) = m
        .repositories_under("g/sub", &[], window(0, 10), 100)
        .await
        .unwrap();
    assert_eq!((ids(&page), total), (vec!["g/sub/p2/y".into()], 1));
    // Counted up to the limit and one more, no further.
    let (page, total) = m
        .repositories_under("g", &[], window(0, 1), 2)
        .await
        .unwrap();
    assert_eq!((page.len(), total), (1, 3));
    let (page, total) = m
        .repositories_under("g", &[], window(9, 1), 3)
        .await
        .unwrap();
    assert_eq!((page.len(), total), (0, 4));

    // A repository queued for deletion is gone from the walk.
    m.schedule_repository_delete(all[0].id).await.unwrap();
    let (page, total) = m
        .repositories_under("g", &[], window(0, 10), 100)
        .await
        .unwrap();
    assert_eq!((page.len(), total), (4, 4));
    assert_eq!(page[0].path, "g/p1/x");
}

pub(crate) async fn search_repositories_filters_sorts_and_pages(m: &dyn TestMeta) {
    use crate::repositories::{RepoOrder, RepoQuery, RepoScope};
    let g = group(m, "g", None).await;
    let sub = group(m, "sub", Some(g.id)).await;
    let p1 = project(m, g.id, "p1").await;
    project(m, sub.id, "p2").await;
    // (path, payload, tag, pushed at): `g/p1/zeta` pushed again last.
    for (path, payload, tag, at) in [
        ("g/p1", "root", Some("t"), 5),
        ("g/p1/zeta", "zeta", Some("t"), 10),
        ("g/sub/p2/beta", "beta", Some("t"), 20),
        ("g/p1/alpha", "alpha", Some("t"), 30),
        ("g/sub/p2/mid", "mid", None, 35),
        ("g/p1/zeta", "zeta 2", Some("u"), 40),
    ] {
        push(m, path, payload, &[("cfg", 1)], None, tag, at).await;
    }
    let search = |scope: RepoScope<'static>, q: RepoQuery| async move {
        let (page, total) = m.search_repositories(scope, &q).await.unwrap();
        let paths: Vec<String> = page.into_iter().map(|r| r.path).collect();
        (paths, total)
    };
    let under = RepoScope::Under {
        group_path: "g",
        except: &[],
    };
    let query = |order: RepoOrder, descending: bool| RepoQuery {
        order,
        descending,
        ..RepoQuery::by_path(window(0, 10), 100)
    };
    // By the name shown: the path below the project's, or the whole path for the
    // project's root repository.
    assert_eq!(
        search(under, query(RepoOrder::Name, false)).await,
        (
            vec![
                "g/p1/alpha".into(),
                "g/sub/p2/beta".into(),
                "g/p1".into(),
                "g/sub/p2/mid".into(),
                "g/p1/zeta".into()
            ],
            5
        )
    );
    let (desc, _) = search(under, query(RepoOrder::Name, true)).await;
    assert_eq!(desc.first().map(String::as_str), Some("g/p1/zeta"));
    assert_eq!(desc.last().map(String::as_str), Some("g/p1/alpha"));
    assert_eq!(
        search(under, query(RepoOrder::Created, false)).await.0,
        [
            "g/p1",
            "g/p1/zeta",
            "g/sub/p2/beta",
            "g/p1/alpha",
            "g/sub/p2/mid"
        ]
    );
    assert_eq!(
        search(under, query(RepoOrder::Updated, true)).await.0,
        [
            "g/p1/zeta",
            "g/sub/p2/mid",
            "g/p1/alpha",
            "g/sub/p2/beta",
            "g/p1"
        ]
    );
    // Tagged or not.
    let tagged = |t: bool| RepoQuery {
        tagged: Some(t),
        ..query(RepoOrder::Path, false)
    };
    assert_eq!(
        search(under, tagged(false)).await,
        (vec!["g/sub/p2/mid".into()], 1)
    );
    assert_eq!(search(under, tagged(true)).await.1, 4);
    // A substring of the path, in any case; `%` and `_` match only themselves.
    let containing = |text: &str| RepoQuery {
        path_contains: Some(text.into()),
        ..query(RepoOrder::Name, false)
    };
    assert_eq!(
        search(under, containing("TA")).await,
        (vec!["g/sub/p2/beta".into(), "g/p1/zeta".into()], 2)
    );
    assert_eq!(search(under, containing("%")).await, (vec![], 0));
    assert_eq!(search(under, containing("p_")).await, (vec![], 0));
    // A page in the middle is counted; a project's repositories alone.
    let middle = RepoQuery {
        window: window(1, 2),
        ..query(RepoOrder::Name, false)
    };
    assert_eq!(
        search(under, middle).await,
        (vec!["g/sub/p2/beta".into(), "g/p1".into()], 5)
    );
    let (page, _) = m
        .search_repositories(
            RepoScope::Projects(&[p1.id]),
            &query(RepoOrder::Name, false),
        )
        .await
        .unwrap();
    let paths: Vec<&str> = page.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["g/p1/alpha", "g/p1", "g/p1/zeta"]);
    // Counted up to the cap and one more.
    let capped = RepoQuery {
        window: window(0, 1),
        count_up_to: 2,
        ..query(RepoOrder::Updated, false)
    };
    assert_eq!(search(under, capped).await, (vec!["g/p1".into()], 3));
}

/// The name a list sorts by moves with a project's root image, and the totals (the
/// projects' kept counts of live repositories) follow creation, scheduled and done
/// deletions and moves, as a count of the rows would.
pub(crate) async fn repository_names_and_counts_follow_moves_and_deletions(m: &dyn TestMeta) {
    use crate::repositories::{RepoOrder, RepoQuery, RepoScope};
    let g = group(m, "g", None).await;
    let h = group(m, "h", None).await;
    let p = project(m, g.id, "p1").await;
    let q = project(m, g.id, "q").await;
    for path in ["g/p1", "g/p1/gz", "g/p1/a", "g/q/b"] {
        push(m, path, path, &[("cfg", 1)], None, Some("t"), 1).await;
    }
    let by_name = |first: i64, n: i64| RepoQuery {
        order: RepoOrder::Name,
        ..RepoQuery::by_path(window(first, n), 100)
    };
    let list = |scope: RepoScope<'static>, q: RepoQuery| async move {
        let (page, total) = m.search_repositories(scope, &q).await.unwrap();
        let paths: Vec<String> = page.into_iter().map(|r| r.path).collect();
        (paths, total)
    };
    let under = |g: &'static str| RepoScope::Under {
        group_path: g,
        except: &[],
    };
    assert_eq!(
        list(under("g"), by_name(0, 10)).await.0,
        ["g/p1/a", "g/q/b", "g/p1", "g/p1/gz"]
    );
    // Totals of pages that do not end the list come from the kept counts.
    assert_eq!(list(under("g"), by_name(0, 1)).await.1, 4);
    let ids = Box::leak(Box::new([p.id]));
    assert_eq!(list(RepoScope::Projects(ids), by_name(0, 1)).await.1, 3);
    // The root image shows its whole path, which moves with the project.
    m.move_project(p.id, h.id, "p1", "p1").await.unwrap();
    assert_eq!(
        list(under("h"), by_name(0, 10)).await,
        (vec!["h/p1/a".into(), "h/p1/gz".into(), "h/p1".into()], 3)
    );
    assert_eq!(list(under("h"), by_name(0, 1)).await.1, 3);
    assert_eq!(
        list(under("g"), by_name(0, 1)).await,
        (vec!["g/q/b".into()], 1)
    );
    // A repository scheduled for deletion leaves the count at once, and stays out
    // when it is deleted.
    let gz = repo_id(m, "h/p1/gz").await;
    assert!(m.schedule_repository_delete(gz).await.unwrap());
    assert_eq!(list(under("h"), by_name(0, 1)).await.1, 2);
    m.delete_repository(gz, 2).await.unwrap();
    let a = repo_id(m, "h/p1/a").await;
    m.delete_repository(a, 2).await.unwrap();
    assert_eq!(list(under("h"), by_name(0, 0)).await.1, 1);
    // Deleting a project takes its repositories out of its group's total.
    push(m, "g/q/c", "c", &[("cfg", 1)], None, Some("t"), 3).await;
    assert_eq!(list(under("g"), by_name(0, 1)).await.1, 2);
    assert!(m.delete_project(q.id, 4).await.unwrap());
    assert_eq!(list(under("g"), by_name(0, 0)).await.1, 0);
    // A scope of a thousand repositories and more, which SQLite walks by name: the
    // same pages as a sort, either way round.
    let big = group(m, "big", None).await;
    project(m, big.id, "p").await;
    let mut names: Vec<String> = vec!["big/p".into()];
    m.link_blob("big/p", &blob("x"), 1, 5).await.unwrap();
    for i in (0..1000).rev() {
        let name = format!("r{:04}", i * 7 % 1000);
        m.link_blob(&format!("big/p/{name}"), &blob("x"), 1, 5)
            .await
            .unwrap();
        names.push(name);
    }
    names.sort();
    let shown = |paths: Vec<String>| -> Vec<String> {
        paths
            .into_iter()
            .map(|p| p.strip_prefix("big/p/").map_or(p.clone(), str::to_string))
            .collect()
    };
    // Pages past the middle are read from the end (the total is known): the same.
    // Only a page that ends the list knows its length past the count's cap.
    let reversed: Vec<String> = names.iter().rev().cloned().collect();
    for descending in [false, true] {
        let expected = if descending { &reversed } else { &names };
        for (first, n) in [
            (0, 20),
            (480, 20),
            (501, 20),
            (990, 20),
            (1000, 5),
            (1001, 5),
        ] {
            let q = RepoQuery {
                descending,
                ..by_name(first, n)
            };
            let (page, total) = list(under("big"), q).await;
            let end = (first + n).min(1001) as usize;
            let at = format!("page at {first}, descending: {descending}");
            assert_eq!(shown(page), expected[first.min(1001) as usize..end], "{at}");
            let ends = first < 1001 && end == 1001;
            assert_eq!(total, if ends { 1001 } else { 101 }, "total of {at}");
        }
    }
    let (page, _) = list(
        under("big"),
        RepoQuery {
            descending: true,
            ..by_name(0, 3)
        },
    )
    .await;
    assert_eq!(shown(page), ["r0999", "r0998", "r0997"]);
}

pub(crate) async fn repositories_of_pages_by_path_with_tag_counts(m: &dyn TestMeta) {
    let g = group(m, "g", None).await;
    let p1 = project(m, g.id, "p1").await;
    let p2 = project(m, g.id, "p2").await;
    let p3 = project(m, g.id, "p3").await;
    let a = push(m, "g/p1/b", "a", &[("cfg", 1)], None, Some("v1"), 10).await;
    tag(m, "g/p1/b", &a, "v2", 11).await;
    tag(m, "g/p1/b", &a, "gone", 11).await;
    m.delete_tag("g/p1/b", "gone", 12).await.unwrap();
    push(m, "g/p1", "b", &[("cfg", 1)], None, Some("latest"), 13).await;
    push(m, "g/p1/a", "c", &[("cfg", 1)], None, None, 14).await;
    push(m, "g/p2/z", "d", &[("cfg", 1)], None, Some("x"), 15).await;
    push(m, "g/p3/y", "e", &[("cfg", 1)], None, Some("x"), 16).await;

    let (all, total) = m
        .repositories_of(&[p1.id, p2.id], window(0, 10))
        .await
        .unwrap();
    assert_eq!(total, 4);
    let paths: Vec<_> = all.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["g/p1", "g/p1/a", "g/p1/b", "g/p2/z"]);
    let counts: Vec<_> = all.iter().map(|r| r.tags_count).collect();
    assert_eq!(counts, [1, 0, 2, 1]);
    let first = &all[0];
    assert_eq!(first.project_id, Some(p1.id));
    assert_eq!(first.created_at, 13);
    assert_eq!(first.status, None);
    assert_eq!(first.cleanup_status, "cleanup_unscheduled");
    assert_eq!(first.cleanup_started_at, None);

    let (page, total) = m
        .repositories_of(&[p1.id, p2.id], window(1, 2))
        .await
        .unwrap();
    assert_eq!(total, 4);
    assert_eq!(page, all[1..3].to_vec());
    let (page, total) = m
        .repositories_of(&[p1.id, p2.id], window(4, 2))
        .await
        .unwrap();
    assert!(page.is_empty());
    assert_eq!(total, 4);

    let (page, total) = m.repositories_of(&[p3.id], window(0, 10)).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(page[0].path, "g/p3/y");
    assert_eq!(
        m.repositories_of(&[], window(0, 10)).await.unwrap(),
        (vec![], 0)
    );
    assert_eq!(
        m.repositories_of(&[999], window(0, 10)).await.unwrap(),
        (vec![], 0)
    );

    assert_eq!(
        m.repository_info(all[2].id).await.unwrap(),
        Some(all[2].clone())
    );
    assert_eq!(m.repository_info(999).await.unwrap(), None);
    assert_eq!(m.project_tags_count(p1.id).await.unwrap(), 3);
    assert_eq!(m.project_tags_count(p3.id).await.unwrap(), 1);
    assert_eq!(m.project_tags_count(999).await.unwrap(), 0);
}

pub(crate) async fn scheduled_deletion_hides_repository(m: &dyn TestMeta) {
    let g = group(m, "g", None).await;
    let p = project(m, g.id, "p").await;
    push(m, "g/p/a", "a", &[("cfg", 1)], None, Some("v1"), 1).await;
    push(m, "g/p/b", "b", &[("cfg", 1)], None, Some("v1"), 1).await;
    let a = repo_id(m, "g/p/a").await;
    assert!(m.scheduled_repository_deletes().await.unwrap().is_empty());

    assert!(m.schedule_repository_delete(a).await.unwrap());
    assert!(!m.schedule_repository_delete(a).await.unwrap());
    assert!(!m.schedule_repository_delete(999).await.unwrap());
    assert_eq!(m.scheduled_repository_deletes().await.unwrap(), [a]);

    let (list, total) = m.repositories_of(&[p.id], window(0, 10)).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(list[0].path, "g/p/b");
    let info = m.repository_info(a).await.unwrap().unwrap();
    assert_eq!(info.status.as_deref(), Some("delete_scheduled"));
    assert_eq!(info.tags_count, 1);

    // A deletion the worker gave up on may be asked for again.
    m.sql_exec(
        "UPDATE repositories SET status = 'delete_failed' WHERE id = $1",
        a,
    )
    .await;
    assert!(m.scheduled_repository_deletes().await.unwrap().is_empty());
    assert!(m.schedule_repository_delete(a).await.unwrap());
    assert_eq!(m.scheduled_repository_deletes().await.unwrap(), [a]);
}

pub(crate) async fn tag_pages_offset_and_keyset(m: &dyn TestMeta) {
    let man = push(m, "r", "m", &[("cfg", 1)], None, None, 1).await;
    // Byte order: upper case before lower case, "v1.10" before "v1.2".
    for name in ["b", "a", "v1.2", "v1.10", "Z", "e"] {
        tag(m, "r", &man, name, 2).await;
    }
    tag(m, "r", &man, "deleted", 2).await;
    m.delete_tag("r", "deleted", 3).await.unwrap();
    let id = repo_id(m, "r").await;
    let sorted = ["Z", "a", "b", "e", "v1.10", "v1.2"];

    let (all, total) = m
        .repository_tags(id, TagPage::Offset(window(0, 100)))
        .await
        .unwrap();
    assert_eq!(total, 6);
    assert_eq!(names(&all), sorted);
    let (page, total) = m
        .repository_tags(id, TagPage::Offset(window(2, 3)))
        .await
        .unwrap();
    assert_eq!((names(&page), total), (vec!["b", "e", "v1.10"], 6));
    let (page, _) = m
        .repository_tags(id, TagPage::Offset(window(6, 3)))
        .await
        .unwrap();
    assert!(page.is_empty());

    let after = |last: Option<&str>, limit, descending| TagPage::After {
        last: last.map(str::to_string),
        limit,
        descending,
    };
    let (page, total) = m.repository_tags(id, after(None, 2, false)).await.unwrap();
    // Keyset pages are not counted (GitLab sends no totals with them).
    assert_eq!((names(&page), total), (vec!["Z", "a"], 0));
    let (page, _) = m
        .repository_tags(id, after(Some("a"), 2, false))
        .await
        .unwrap();
    assert_eq!(names(&page), ["b", "e"]);
    // `last` need not be a tag that exists.
    let (page, _) = m
        .repository_tags(id, after(Some("c"), 10, false))
        .await
        .unwrap();
    assert_eq!(names(&page), ["e", "v1.10", "v1.2"]);
    let (page, _) = m
        .repository_tags(id, after(Some("v1.2"), 10, false))
        .await
        .unwrap();
    assert!(page.is_empty());
    let (page, total) = m.repository_tags(id, after(None, 2, true)).await.unwrap();
    assert_eq!((names(&page), total), (vec!["v1.2", "v1.10"], 0));
    let (page, _) = m
        .repository_tags(id, after(Some("v1.10"), 3, true))
        .await
        .unwrap();
    assert_eq!(names(&page), ["e", "b", "a"]);
    let (page, _) = m
        .repository_tags(id, after(Some("Z"), 3, true))
        .await
        .unwrap();
    assert!(page.is_empty());

    assert_eq!(names(&m.all_tags(id).await.unwrap()), sorted);
    assert_eq!(
        m.repository_tags(999, TagPage::Offset(window(0, 10)))
            .await
            .unwrap(),
        (vec![], 0)
    );
}

pub(crate) async fn tag_details(m: &dyn TestMeta) {
    let built = push(
        m,
        "r",
        "built",
        &[("cfg", 10), ("l1", 100), ("l2", 200)],
        Some(500),
        Some("built"),
        1000,
    )
    .await;
    // No creation time in the config: the push time stands in.
    let bare = push(m, "r", "bare", &[("l1", 100)], None, Some("bare"), 2000).await;
    let id = repo_id(m, "r").await;

    let t = m.repository_tag(id, "built").await.unwrap().unwrap();
    assert_eq!(
        t,
        TagInfo {
            name: "built".into(),
            digest: built.digest.to_string(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            config_digest: Some(blob("cfg").to_string()),
            created_at: 500,
            pushed_at: 1000,
            total_size: 300,
        }
    );
    let t = m.repository_tag(id, "bare").await.unwrap().unwrap();
    assert_eq!(t.created_at, 2000);
    assert_eq!(t.pushed_at, 2000);
    assert_eq!(t.digest, bare.digest.to_string());

    // Moving a tag restarts its push time; the image's creation time stays the image's.
    tag(m, "r", &built, "bare", 3000).await;
    let t = m.repository_tag(id, "bare").await.unwrap().unwrap();
    assert_eq!((t.created_at, t.pushed_at), (500, 3000));
    assert_eq!(t.digest, built.digest.to_string());
    // Re-pushing the same manifest under the same tag is not a move.
    tag(m, "r", &built, "bare", 4000).await;
    let t = m.repository_tag(id, "bare").await.unwrap().unwrap();
    assert_eq!(t.pushed_at, 3000);

    assert_eq!(m.repository_tag(id, "nope").await.unwrap(), None);
    assert_eq!(m.repository_tag(999, "built").await.unwrap(), None);
    let (page, _) = m
        .repository_tags(id, TagPage::Offset(window(0, 10)))
        .await
        .unwrap();
    assert_eq!(page, m.all_tags(id).await.unwrap());
    assert_eq!(
        page[0],
        m.repository_tag(id, "bare").await.unwrap().unwrap()
    );
}

pub(crate) async fn tag_search_filters_sorts_and_pages_in_the_database(m: &dyn TestMeta) {
    let g = group(m, "g", None).await;
    project(m, g.id, "p").await;
    // Image creation times run against name order, so the two orders differ.
    let tag_names = ["v1", "v2", "V3_x", "main", "v10"];
    for (i, n) in tag_names.iter().enumerate() {
        let man = push(
            m,
            "g/p",
            &format!("m{i}"),
            &[(&format!("cfg{i}"), 1)],
            Some(100 - i as i64),
            None,
            10,
        )
        .await;
        tag(m, "g/p", &man, n, 10).await;
    }
    m.delete_tag("g/p", "main", 11).await.unwrap();
    let id = repo_id(m, "g/p").await;
    let q = |text: Option<&str>, order, descending, offset, limit| TagQuery {
        name_contains: text.map(String::from),
        order,
        descending,
        window: window(offset, limit),
    };
    let (page, total) = m
        .search_tags(id, &q(None, TagOrder::Name, false, 0, 10))
        .await
        .unwrap();
    assert_eq!((names(&page), total), (vec!["V3_x", "v1", "v10", "v2"], 4));
    let (page, total) = m
        .search_tags(id, &q(Some("v1"), TagOrder::Name, true, 0, 10))
        .await
        .unwrap();
    assert_eq!((names(&page), total), (vec!["v10", "v1"], 2));
    // LIKE's wildcards are taken literally, and case does not matter.
    let (page, total) = m
        .search_tags(id, &q(Some("3_"), TagOrder::Name, false, 0, 10))
        .await
        .unwrap();
    assert_eq!((names(&page), total), (vec!["V3_x"], 1));
    let (page, _) = m
        .search_tags(id, &q(Some("_"), TagOrder::Name, false, 0, 10))
        .await
        .unwrap();
    assert_eq!(names(&page), ["V3_x"]);
    let (page, total) = m
        .search_tags(id, &q(None, TagOrder::Created, false, 1, 2))
        .await
        .unwrap();
    assert_eq!((names(&page), total), (vec!["V3_x", "v2"], 4));
    let (page, _) = m
        .search_tags(id, &q(Some("V"), TagOrder::Created, true, 0, 10))
        .await
        .unwrap();
    assert_eq!(names(&page), ["v1", "v2", "V3_x", "v10"]);
    let info = m.repository_info(id).await.unwrap().unwrap();
    assert_eq!(info.updated_at, 10);
}

pub(crate) async fn repository_size_counts_shared_blobs_once(m: &dyn TestMeta) {
    let one = push(
        m,
        "r",
        "one",
        &[("cfg", 10), ("base", 1000), ("l1", 100)],
        None,
        Some("one"),
        1,
    )
    .await;
    let two = push(
        m,
        "r",
        "two",
        &[("cfg", 10), ("base", 1000), ("l2", 200)],
        None,
        Some("two"),
        1,
    )
    .await;
    // Untagged: not part of the size.
    push(
        m,
        "r",
        "untagged",
        &[("cfg", 10), ("l9", 700)],
        None,
        None,
        1,
    )
    .await;
    // Linked but referenced by no manifest: not part of the size.
    m.link_blob("r", &blob("stray"), 5000, 1).await.unwrap();
    // Another repository with the same blobs and more.
    let three = push(
        m,
        "other",
        "three",
        &[("base", 1000), ("big", 9000)],
        None,
        None,
        1,
    )
    .await;
    let id = repo_id(m, "r").await;
    // GitLab's size: unique layers (not configs) of tagged manifests.
    assert_eq!(m.repository_size(id).await.unwrap(), 1000 + 100 + 200);
    // Untagging `two` drops its own layer from the size.
    m.delete_tag("r", "two", 2).await.unwrap();
    assert_eq!(m.repository_size(id).await.unwrap(), 1000 + 100);
    let _ = (one, two);
    assert_eq!(m.repository_size(999).await.unwrap(), 0);
    // A page's sizes in one call, each repository on its own: `other` counts `base`
    // (its config here) not at all, though `r` counts it as a layer.
    let other = repo_id(m, "other").await;
    let sizes = m.repository_sizes(&[id, other, 999]).await.unwrap();
    assert_eq!(sizes, [(id, 1100), (other, 0), (999, 0)].into());
    tag(m, "other", &three, "t", 3).await;
    let sizes = m.repository_sizes(&[other, id]).await.unwrap();
    assert_eq!(sizes, [(id, 1100), (other, 9000)].into());
}

pub(crate) async fn project_registry_sizes_count_each_projects_layers_once(m: &dyn TestMeta) {
    let g = group(m, "g", None).await;
    let p1 = project(m, g.id, "p1").await;
    let p2 = project(m, g.id, "p2").await;
    let empty = project(m, g.id, "empty").await;
    // p1: `base` in two repositories and two manifests counts once; its config not.
    push(
        m,
        "g/p1",
        "a",
        &[("cfg", 10), ("base", 1000), ("l1", 100)],
        None,
        Some("a"),
        1,
    )
    .await;
    push(
        m,
        "g/p1/x",
        "b",
        &[("cfg", 10), ("base", 1000), ("l2", 200)],
        None,
        Some("b"),
        1,
    )
    .await;
    // Untagged: not counted.
    push(m, "g/p1/x", "c", &[("cfg", 10), ("l9", 700)], None, None, 1).await;
    // p2 shares `base` with p1: each project counts it.
    push(
        m,
        "g/p2/y",
        "d",
        &[("cfg", 10), ("base", 1000), ("l3", 50)],
        None,
        Some("d"),
        1,
    )
    .await;
    let sizes = m
        .project_registry_sizes(&[p1.id, p2.id, empty.id, 999])
        .await
        .unwrap();
    assert_eq!(
        sizes,
        [(p1.id, 1300), (p2.id, 1050), (empty.id, 0), (999, 0)].into()
    );
    // The same, one project at a time.
    for (id, size) in [(p1.id, 1300), (p2.id, 1050), (empty.id, 0)] {
        assert_eq!(m.project_registry_size(id).await.unwrap(), size);
    }
    assert!(m.project_registry_sizes(&[]).await.unwrap().is_empty());
}

pub(crate) async fn delete_tags_keeps_manifests(m: &dyn TestMeta) {
    let man = push(m, "r", "m", &[("cfg", 1)], None, Some("a"), 1).await;
    for name in ["b", "c", "d"] {
        tag(m, "r", &man, name, 1).await;
    }
    let other = push(m, "o", "m", &[("cfg", 1)], None, Some("a"), 1).await;
    let id = repo_id(m, "r").await;
    let names_to_end = ["a", "c", "missing", "a"].map(String::from);
    assert_eq!(m.delete_tags(id, &names_to_end, 5).await.unwrap(), 2);
    assert_eq!(names(&m.all_tags(id).await.unwrap()), ["b", "d"]);
    assert_eq!(m.delete_tags(id, &names_to_end, 6).await.unwrap(), 0);
    assert_eq!(m.delete_tags(id, &[], 6).await.unwrap(), 0);
    assert!(m
        .manifest("r", ManifestRef::Digest(&man.digest))
        .await
        .unwrap()
        .is_some());
    // The same names in another repository are untouched.
    assert!(m
        .manifest("o", ManifestRef::Tag("a"))
        .await
        .unwrap()
        .is_some_and(|s| s.digest == other.digest));
    // The ended rows stay as history.
    let ended = count(
        m,
        "SELECT COUNT(*) FROM tags WHERE repository_id = $1 AND deleted_at = 5",
        id,
    )
    .await;
    assert_eq!(ended, 2);
}

pub(crate) async fn delete_repository_removes_everything(m: &dyn TestMeta) {
    let g = group(m, "g", None).await;
    let p = project(m, g.id, "p").await;
    let child = push(
        m,
        "g/p/a",
        "child",
        &[("cfg", 1), ("shared", 10)],
        None,
        Some("c"),
        1,
    )
    .await;
    let index = NewManifest {
        digest: Digest::sha256_of(b"index"),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        payload: b"index".to_vec(),
        blobs: vec![],
        children: vec![child.digest.clone()],
        subject: None,
        config: None,
        artifact_type: None,
        image_created_at: None,
        total_size: 0,
        annotations: None,
    };
    m.put_manifest("g/p/a", &index, Some("multi"), 2)
        .await
        .unwrap();
    m.delete_tag("g/p/a", "c", 3).await.unwrap();
    let kept = push(
        m,
        "g/p/b",
        "kept",
        &[("cfg", 1), ("shared", 10)],
        None,
        Some("v"),
        1,
    )
    .await;
    let upload = |id: &str, path: &str| Upload {
        id: id.into(),
        repository_path: path.into(),
        created_at: 1,
        updated_at: 1,
        created_by: None,
    };
    m.create_upload(&upload("ua", "g/p/a")).await.unwrap();
    m.create_upload(&upload("ub", "g/p/b")).await.unwrap();
    let a = repo_id(m, "g/p/a").await;
    assert!(m.schedule_repository_delete(a).await.unwrap());

    m.delete_repository(a, 10).await.unwrap();
    assert_eq!(m.repository("g/p/a").await.unwrap(), None);
    assert_eq!(m.repository_info(a).await.unwrap(), None);
    assert!(m.scheduled_repository_deletes().await.unwrap().is_empty());
    for table in ["manifests", "repository_blobs", "tags"] {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE repository_id = $1");
        assert_eq!(count(m, &sql, a).await, 0, "{table}");
    }
    assert_eq!(
        count(
            m,
            "SELECT COUNT(*) FROM manifest_references WHERE $1 > 0",
            1
        )
        .await,
        0
    );
    assert_eq!(
        count(
            m,
            "SELECT COUNT(*) FROM manifest_blobs mb \
             WHERE NOT EXISTS (SELECT 1 FROM manifests WHERE id = mb.manifest_id) AND $1 > 0",
            1
        )
        .await,
        0
    );
    assert_eq!(m.upload("ua").await.unwrap(), None);
    assert!(m.upload("ub").await.unwrap().is_some());

    // The neighbour sharing blobs is untouched, and blobs stay for GC.
    let b = repo_id(m, "g/p/b").await;
    assert_eq!(names(&m.all_tags(b).await.unwrap()), ["v"]);
    assert!(m
        .manifest("g/p/b", ManifestRef::Digest(&kept.digest))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        m.repository_blob("g/p/b", &blob("shared")).await.unwrap(),
        Some(10)
    );
    assert_eq!(m.blob(&blob("shared")).await.unwrap(), Some(10));
    let (list, total) = m.repositories_of(&[p.id], window(0, 10)).await.unwrap();
    assert_eq!((list.len(), total), (1, 1));

    // Deleting again (a retried job) is harmless; the path can be pushed anew.
    m.delete_repository(a, 11).await.unwrap();
    push(m, "g/p/a", "child", &[("cfg", 1)], None, Some("c"), 12).await;
    let again = repo_id(m, "g/p/a").await;
    assert_eq!(names(&m.all_tags(again).await.unwrap()), ["c"]);
    assert_eq!(
        m.repository_info(again).await.unwrap().unwrap().project_id,
        Some(p.id)
    );
}

pub(crate) async fn leases(m: &dyn TestMeta) {
    assert!(m.try_lease("k", 100, 0).await.unwrap());
    assert!(!m.try_lease("k", 200, 50).await.unwrap());
    assert!(!m.try_lease("k", 200, 99).await.unwrap());
    // Another key is independent.
    assert!(m.try_lease("other", 100, 50).await.unwrap());
    // Expired (at its expiry time): taken over, with the new expiry.
    assert!(m.try_lease("k", 300, 100).await.unwrap());
    assert!(!m.try_lease("k", 400, 299).await.unwrap());
    m.release_lease("k").await.unwrap();
    assert!(m.try_lease("k", 400, 150).await.unwrap());
    assert!(!m.try_lease("k", 500, 160).await.unwrap());
    m.release_lease("never").await.unwrap();
}

pub(crate) async fn expiration_policy_upsert(m: &dyn TestMeta) {
    let g = group(m, "g", None).await;
    let p = project(m, g.id, "p").await;
    let q = project(m, g.id, "q").await;
    assert_eq!(m.expiration_policy(p.id).await.unwrap(), None);
    let policy = ExpirationPolicy {
        enabled: true,
        cadence: "7d".into(),
        keep_n: Some(10),
        older_than: Some("90d".into()),
        name_regex: Some(".*".into()),
        name_regex_keep: None,
        next_run_at: Some(5000),
    };
    m.set_expiration_policy(p.id, &policy, 100).await.unwrap();
    assert_eq!(
        m.expiration_policy(p.id).await.unwrap(),
        Some(policy.clone())
    );
    let changed = ExpirationPolicy {
        enabled: false,
        cadence: "1month".into(),
        keep_n: None,
        older_than: None,
        name_regex: Some("v.*".into()),
        name_regex_keep: Some("keep".into()),
        next_run_at: None,
    };
    m.set_expiration_policy(p.id, &changed, 200).await.unwrap();
    assert_eq!(m.expiration_policy(p.id).await.unwrap(), Some(changed));
    let created = count(
        m,
        "SELECT created_at FROM expiration_policies WHERE project_id = $1",
        p.id,
    )
    .await;
    let updated = count(
        m,
        "SELECT updated_at FROM expiration_policies WHERE project_id = $1",
        p.id,
    )
    .await;
    assert_eq!((created, updated), (100, 200));
    assert_eq!(m.expiration_policy(q.id).await.unwrap(), None);
    assert_eq!(
        not_found(m.set_expiration_policy(999, &policy, 1).await),
        "Project not found"
    );
}

pub(crate) async fn move_project_moves_its_repositories(m: &dyn TestMeta) {
    let g = group(m, "G", None).await;
    let h = group(m, "h", None).await;
    let p = project(m, g.id, "App").await;
    let neighbour = project(m, g.id, "app2").await;
    push(m, "g/app", "root", &[("cfg", 1)], None, Some("v1"), 1).await;
    let img = push(m, "g/app/img", "img", &[("cfg", 1)], None, Some("v1"), 1).await;
    push(m, "g/app/x/y", "deep", &[("cfg", 1)], None, Some("v1"), 1).await;
    push(m, "g/app2/img", "n", &[("cfg", 1)], None, Some("v1"), 1).await;
    let img_id = repo_id(m, "g/app/img").await;

    let moved = m
        .move_project(p.id, h.id, "Renamed", "New name")
        .await
        .unwrap();
    assert_eq!(moved.full_path, "h/Renamed");
    assert_eq!(
        (moved.path.as_str(), moved.name.as_str()),
        ("Renamed", "New name")
    );
    assert_eq!(moved.namespace_id, h.id);
    assert_eq!(moved.created_at, p.created_at);
    assert_eq!(m.project(p.id).await.unwrap(), Some(moved.clone()));
    let (repos, _) = m.repositories_of(&[p.id], window(0, 10)).await.unwrap();
    let paths: Vec<_> = repos.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["h/renamed", "h/renamed/img", "h/renamed/x/y"]);
    assert_eq!(repo_id(m, "h/renamed/img").await, img_id);
    assert_eq!(m.repository("g/app/img").await.unwrap(), None);
    assert_eq!(m.repository("g/app").await.unwrap(), None);
    assert!(m
        .manifest("h/renamed/img", ManifestRef::Tag("v1"))
        .await
        .unwrap()
        .is_some_and(|s| s.digest == img.digest));
    // The neighbour whose path starts the same is untouched.
    assert!(m.repository("g/app2/img").await.unwrap().is_some());
    assert_eq!(
        m.repositories_of(&[neighbour.id], window(0, 10))
            .await
            .unwrap()
            .1,
        1
    );
    // The old path is free again.
    project(m, g.id, "app").await;

    // A case-only rename keeps the registry paths.
    let moved = m.move_project(p.id, h.id, "renamed", "n").await.unwrap();
    assert_eq!(moved.full_path, "h/renamed");
    assert!(m.repository("h/renamed/img").await.unwrap().is_some());

    // Taken by a project (in any case) or a group.
    assert_eq!(
        conflict(m.move_project(p.id, g.id, "APP2", "n").await),
        "Path has already been taken"
    );
    group(m, "sub", Some(h.id)).await;
    assert_eq!(
        conflict(m.move_project(p.id, h.id, "sub", "n").await),
        "Path has already been taken"
    );
    // A repository without a project already at one of the new paths.
    let x = group(m, "x", None).await;
    m.link_blob("x/free/img", &blob("cfg"), 1, 1).await.unwrap();
    let orphan = m.repository("x/free/img").await.unwrap().unwrap();
    assert_eq!(orphan.project_id, None);
    let msg = conflict(m.move_project(p.id, x.id, "free", "n").await);
    assert!(msg.contains("x/free/img"), "{msg}");
    // Nothing moved.
    assert_eq!(
        m.project(p.id).await.unwrap().unwrap().full_path,
        "h/renamed"
    );
    assert!(m.repository("h/renamed/img").await.unwrap().is_some());
    assert!(m.repository("x/free").await.unwrap().is_none());

    assert_eq!(
        not_found(m.move_project(999, h.id, "p", "p").await),
        "Project not found"
    );
    assert_eq!(
        not_found(m.move_project(p.id, 999, "p", "p").await),
        "Namespace not found"
    );
}

pub(crate) async fn move_group_moves_everything_below(m: &dyn TestMeta) {
    let top = group(m, "top", None).await;
    let a = group(m, "a", Some(top.id)).await;
    let b = group(m, "b", Some(a.id)).await;
    let c = group(m, "c", Some(b.id)).await;
    let other = group(m, "other", None).await;
    let pa = project(m, a.id, "pa").await;
    let pc = project(m, c.id, "pc").await;
    let pt = project(m, top.id, "pt").await;
    push(m, "top/a/pa", "1", &[("cfg", 1)], None, Some("v"), 1).await;
    push(m, "top/a/pa/img", "2", &[("cfg", 1)], None, Some("v"), 1).await;
    push(
        m,
        "top/a/b/c/pc/img",
        "3",
        &[("cfg", 1)],
        None,
        Some("v"),
        1,
    )
    .await;
    push(m, "top/pt/img", "4", &[("cfg", 1)], None, Some("v"), 1).await;

    // Under another parent, renamed.
    let moved = m
        .move_group(a.id, Some(Some(other.id)), "A2")
        .await
        .unwrap();
    assert_eq!(moved.full_path, "other/A2");
    assert_eq!(moved.path, "A2");
    assert_eq!(moved.parent_id, Some(other.id));
    assert_eq!(moved.name, a.name);
    assert_eq!(ns(m, b.id).await, "other/A2/b");
    assert_eq!(ns(m, c.id).await, "other/A2/b/c");
    assert_eq!(ns(m, top.id).await, "top");
    assert_eq!(full(m, pa.id).await, "other/A2/pa");
    assert_eq!(full(m, pc.id).await, "other/A2/b/c/pc");
    assert_eq!(full(m, pt.id).await, "top/pt");
    let mut catalog = m.catalog(None, 100).await.unwrap();
    catalog.sort();
    assert_eq!(
        catalog,
        [
            "other/a2/b/c/pc/img",
            "other/a2/pa",
            "other/a2/pa/img",
            "top/pt/img"
        ]
    );
    assert!(m
        .manifest("other/a2/b/c/pc/img", ManifestRef::Tag("v"))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        m.descendant_groups(top.id).await.unwrap(),
        vec![],
        "top has nothing below it now"
    );
    // The old paths are free.
    group(m, "a", Some(top.id)).await;

    // Keep the parent, rename only.
    let moved = m.move_group(b.id, None, "bee").await.unwrap();
    assert_eq!(
        (moved.full_path.as_str(), moved.parent_id),
        ("other/A2/bee", Some(a.id))
    );
    assert_eq!(full(m, pc.id).await, "other/A2/bee/c/pc");
    assert!(m
        .repository("other/a2/bee/c/pc/img")
        .await
        .unwrap()
        .is_some());

    // To the top level.
    let moved = m.move_group(b.id, Some(None), "bee").await.unwrap();
    assert_eq!((moved.full_path.as_str(), moved.parent_id), ("bee", None));
    assert_eq!(ns(m, c.id).await, "bee/c");
    assert_eq!(full(m, pc.id).await, "bee/c/pc");
    assert!(m.repository("bee/c/pc/img").await.unwrap().is_some());
    assert_eq!(m.projects_in(b.id, true).await.unwrap()[0].id, pc.id);

    // Cycles are refused.
    let msg = conflict(m.move_group(b.id, Some(Some(c.id)), "bee").await);
    assert!(msg.contains("subgroups"), "{msg}");
    let msg = conflict(m.move_group(b.id, Some(Some(b.id)), "bee").await);
    assert!(msg.contains("itself"), "{msg}");
    let d = group(m, "d", Some(c.id)).await;
    let msg = conflict(m.move_group(b.id, Some(Some(d.id)), "x").await);
    assert!(msg.contains("subgroups"), "{msg}");
    // Taken paths, by a group or a project.
    assert_eq!(
        conflict(m.move_group(b.id, Some(None), "TOP").await),
        "Path has already been taken"
    );
    assert_eq!(
        conflict(m.move_group(b.id, Some(Some(top.id)), "pt").await),
        "Path has already been taken"
    );
    // Nothing moved by the refusals.
    assert_eq!(ns(m, c.id).await, "bee/c");
    // A case-only rename.
    let moved = m.move_group(b.id, None, "BEE").await.unwrap();
    assert_eq!(moved.full_path, "BEE");
    assert_eq!(full(m, pc.id).await, "BEE/c/pc");
    assert!(m.repository("bee/c/pc/img").await.unwrap().is_some());

    assert_eq!(
        not_found(m.move_group(999, None, "x").await),
        "Group not found"
    );
    assert_eq!(
        not_found(m.move_group(b.id, Some(Some(999)), "x").await),
        "Parent group not found"
    );
    let u = m
        .create_user(
            &crate::org::NewUser {
                username: "alice".into(),
                name: "Alice".into(),
                email: None,
                password_hash: None,
                admin: false,
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        not_found(m.move_group(u.namespace_id, Some(None), "x").await),
        "Group not found"
    );
    assert_eq!(
        not_found(m.move_group(b.id, Some(Some(u.namespace_id)), "x").await),
        "Parent group not found"
    );
}

pub(crate) async fn move_group_keeps_the_nesting_limit_and_repository_paths(m: &dyn TestMeta) {
    // A chain of 20 groups: the last has 19 ancestors.
    let mut chain = vec![group(m, "g0", None).await];
    for i in 1..20 {
        let parent = chain.last().unwrap().id;
        chain.push(group(m, &format!("g{i}"), Some(parent)).await);
    }
    let deepest = chain.last().unwrap().id;
    let x = group(m, "x", None).await;
    let y = group(m, "y", Some(x.id)).await;
    // x alone may go below the deepest (20 ancestors); with y below it, y would
    // have 21.
    let msg = conflict(m.move_group(x.id, Some(Some(deepest)), "x").await);
    assert!(msg.contains("at most 20 ancestors"), "{msg}");
    let moved = m.move_group(y.id, Some(Some(deepest)), "y").await.unwrap();
    assert_eq!(moved.full_path.split('/').count(), 21);

    // A repository without a project already at a path the move would produce.
    let p = project(m, x.id, "p").await;
    push(m, "x/p/img", "1", &[("cfg", 1)], None, Some("v"), 1).await;
    let z = group(m, "z", None).await;
    m.link_blob("z/x/p/img", &blob("cfg"), 1, 1).await.unwrap();
    let msg = conflict(m.move_group(x.id, Some(Some(z.id)), "x").await);
    assert!(msg.contains("z/x/p/img"), "{msg}");
    assert_eq!(m.project(p.id).await.unwrap().unwrap().full_path, "x/p");
    assert!(m.repository("x/p/img").await.unwrap().is_some());
    assert_eq!(m.namespace(x.id).await.unwrap().unwrap().parent_id, None);
}

/// Seed a project with what a delete must take along: a membership, a deploy token,
/// a cleanup policy, a protection rule and an image at `repo` on blob `layer`.
async fn furnish(m: &dyn TestMeta, p: &Project, user: i64, repo: &str, layer: &str, now: i64) {
    use crate::org::{NewDeployToken, Source};
    if m.repository(repo).await.unwrap().is_some()
        || !m.members(Source::Project(p.id)).await.unwrap().is_empty()
    {
        // The project is furnished already: only the image is new.
        push(
            m,
            repo,
            &format!("manifest of {repo}"),
            &[("cfg", 1), (layer, 10)],
            None,
            Some("v1"),
            now,
        )
        .await;
        return;
    }
    m.set_member(
        Source::Project(p.id),
        user,
        berth_core::AccessLevel::Developer,
        None,
        now,
    )
    .await
    .unwrap();
    m.create_deploy_token(
        &NewDeployToken {
            source: Source::Project(p.id),
            name: "dt".into(),
            username: None,
            scopes: vec!["read_registry".into()],
            expires_at: None,
            digest: format!("digest-{}", p.id),
        },
        now,
    )
    .await
    .unwrap();
    m.sql_exec(
        "INSERT INTO expiration_policies (project_id, created_at, updated_at) VALUES ($1, 1, 1)",
        p.id,
    )
    .await;
    m.sql_exec(
        "INSERT INTO registry_protection_rules (project_id, kind, pattern, created_at) \
         VALUES ($1, 'tag', 'v.*', 1)",
        p.id,
    )
    .await;
    push(
        m,
        repo,
        &format!("manifest of {repo}"),
        &[("cfg", 1), (layer, 10)],
        None,
        Some("v1"),
        now,
    )
    .await;
}

/// Rows of each table `furnish` fills that still belong to project `id`.
async fn leftovers(m: &dyn TestMeta, id: i64) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for (table, sql) in [
        ("projects", "SELECT COUNT(*) FROM projects WHERE id = $1"),
        (
            "repositories",
            "SELECT COUNT(*) FROM repositories WHERE project_id = $1",
        ),
        (
            "members",
            "SELECT COUNT(*) FROM members WHERE source_kind = 'project' AND source_id = $1",
        ),
        (
            "deploy_tokens",
            "SELECT COUNT(*) FROM deploy_tokens WHERE source_kind = 'project' AND source_id = $1",
        ),
        (
            "expiration_policies",
            "SELECT COUNT(*) FROM expiration_policies WHERE project_id = $1",
        ),
        (
            "registry_protection_rules",
            "SELECT COUNT(*) FROM registry_protection_rules WHERE project_id = $1",
        ),
    ] {
        out.push((table, count(m, sql, id).await));
    }
    out
}

pub(crate) async fn delete_project_takes_everything_but_blobs(m: &dyn TestMeta) {
    let u = m
        .create_user(
            &crate::org::NewUser {
                username: "dev".into(),
                name: "Dev".into(),
                email: None,
                password_hash: None,
                admin: false,
            },
            1,
        )
        .await
        .unwrap();
    let g = group(m, "g", None).await;
    let p = project(m, g.id, "p").await;
    let q = project(m, g.id, "q").await;
    furnish(m, &p, u.id, "g/p", "only-p", 2).await;
    furnish(m, &p, u.id, "g/p/sub/img", "shared", 2).await;
    furnish(m, &q, u.id, "g/q", "shared", 2).await;
    let r = repo_id(m, "g/p").await;
    let before = count(m, "SELECT COUNT(*) FROM tags WHERE $1 > 0", 1).await;

    assert!(m.delete_project(p.id, 5).await.unwrap());
    assert_eq!(m.project(p.id).await.unwrap(), None);
    assert!(m.project_by_path("g/p").await.unwrap().is_none());
    assert_eq!(m.repository("g/p").await.unwrap(), None);
    assert_eq!(m.repository("g/p/sub/img").await.unwrap(), None);
    assert!(leftovers(m, p.id).await.iter().all(|(_, n)| *n == 0));
    // The tag history went with the repositories: nothing is left pointing at them.
    assert_eq!(
        count(m, "SELECT COUNT(*) FROM tags WHERE repository_id = $1", r).await,
        0
    );
    assert_eq!(
        count(m, "SELECT COUNT(*) FROM tags WHERE $1 > 0", 1).await,
        before - 2
    );
    // Blobs stay, for GC: the deleted project's own layer now waits for review.
    assert_eq!(m.blob(&blob("only-p")).await.unwrap(), Some(10));
    let queued: i64 = m
        .sql_i64(
            &format!(
                "SELECT COUNT(*) FROM gc_blob_review_queue \
                 WHERE digest = '{}' AND event = 'blob_unlink' AND $1 > 0",
                blob("only-p")
            ),
            1,
        )
        .await;
    assert_eq!(queued, 1);

    // The neighbour is untouched, and still reaches the shared blob.
    assert!(leftovers(m, q.id).await.iter().all(|(_, n)| *n == 1));
    let qr = repo_id(m, "g/q").await;
    assert_eq!(names(&m.all_tags(qr).await.unwrap()), ["v1"]);
    assert_eq!(
        m.repository_blob("g/q", &blob("shared")).await.unwrap(),
        Some(10)
    );
    assert_eq!(
        m.members(crate::org::Source::Project(q.id))
            .await
            .unwrap()
            .len(),
        1
    );

    // Gone is gone; the path is free for a new project, which starts empty.
    assert!(!m.delete_project(p.id, 6).await.unwrap());
    let again = project(m, g.id, "p").await;
    assert!(leftovers(m, again.id)
        .await
        .iter()
        .all(|(t, n)| *n == i64::from(*t == "projects")));
    assert!(m
        .members(crate::org::Source::Project(again.id))
        .await
        .unwrap()
        .is_empty());
}

pub(crate) async fn delete_group_takes_subgroups_projects_and_proxy_cache(m: &dyn TestMeta) {
    use crate::org::{NewDeployToken, Source};
    let u = m
        .create_user(
            &crate::org::NewUser {
                username: "dev".into(),
                name: "Dev".into(),
                email: None,
                password_hash: None,
                admin: false,
            },
            1,
        )
        .await
        .unwrap();
    let top = group(m, "top", None).await;
    let sub = group(m, "sub", Some(top.id)).await;
    let deep = group(m, "deep", Some(sub.id)).await;
    let other = group(m, "other", None).await;
    let p1 = project(m, top.id, "p1").await;
    let p2 = project(m, deep.id, "p2").await;
    let kept = project(m, other.id, "k").await;
    furnish(m, &p1, u.id, "top/p1", "l1", 2).await;
    furnish(m, &p2, u.id, "top/sub/deep/p2/img", "l2", 2).await;
    furnish(m, &kept, u.id, "other/k", "l3", 2).await;
    for g in [&top, &sub, &other] {
        m.set_member(
            Source::Namespace(g.id),
            u.id,
            berth_core::AccessLevel::Maintainer,
            None,
            2,
        )
        .await
        .unwrap();
        m.create_deploy_token(
            &NewDeployToken {
                source: Source::Namespace(g.id),
                name: "gdt".into(),
                username: None,
                scopes: vec!["read_registry".into()],
                expires_at: None,
                digest: format!("group-digest-{}", g.id),
            },
            2,
        )
        .await
        .unwrap();
        m.link_proxy_blob(g.id, &blob(&format!("proxied-{}", g.id)), 7, 2)
            .await
            .unwrap();
    }
    // A user namespace is not a group, and an unknown id is nothing to delete.
    assert!(!m.delete_group(999, 3).await.unwrap());
    assert!(!m.delete_group(u.namespace_id, 3).await.unwrap());

    assert!(m.delete_group(sub.id, 3).await.unwrap());
    for g in [&sub, &deep] {
        assert_eq!(m.namespace(g.id).await.unwrap(), None);
    }
    assert!(leftovers(m, p2.id).await.iter().all(|(_, n)| *n == 0));
    assert_eq!(m.repository("top/sub/deep/p2/img").await.unwrap(), None);
    assert!(m
        .members(Source::Namespace(sub.id))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        count(
            m,
            "SELECT COUNT(*) FROM dependency_proxy_blobs WHERE namespace_id = $1",
            sub.id
        )
        .await,
        0
    );
    // The parent keeps its own project and everything else.
    assert!(leftovers(m, p1.id).await.iter().all(|(_, n)| *n == 1));
    assert_eq!(m.subgroups(top.id).await.unwrap(), vec![]);

    assert!(m.delete_group(top.id, 4).await.unwrap());
    assert_eq!(m.namespace(top.id).await.unwrap(), None);
    assert!(leftovers(m, p1.id).await.iter().all(|(_, n)| *n == 0));
    for g in [&top, &sub] {
        for (sql, what) in [
            (
                "SELECT COUNT(*) FROM members WHERE source_kind = 'namespace' AND source_id = $1",
                "members",
            ),
            (
                "SELECT COUNT(*) FROM deploy_tokens WHERE source_kind = 'namespace' AND source_id = $1",
                "deploy tokens",
            ),
            (
                "SELECT COUNT(*) FROM dependency_proxy_blobs WHERE namespace_id = $1",
                "proxy blobs",
            ),
        ] {
            assert_eq!(count(m, sql, g.id).await, 0, "{what}");
        }
    }
    // Cached bytes are GC's: the blob row stays, queued for review.
    let proxied = blob(&format!("proxied-{}", top.id));
    assert_eq!(m.blob(&proxied).await.unwrap(), Some(7));
    assert_eq!(
        m.sql_i64(
            &format!(
                "SELECT COUNT(*) FROM gc_blob_review_queue \
                 WHERE digest = '{proxied}' AND event = 'proxy_blob_delete' AND $1 > 0"
            ),
            1
        )
        .await,
        1
    );
    // Another group is untouched.
    assert!(leftovers(m, kept.id).await.iter().all(|(_, n)| *n == 1));
    assert_eq!(
        m.members(Source::Namespace(other.id)).await.unwrap().len(),
        1
    );
    assert_eq!(
        count(
            m,
            "SELECT COUNT(*) FROM dependency_proxy_blobs WHERE namespace_id = $1",
            other.id
        )
        .await,
        1
    );
}
