//! SQLite-only tests: the query plans here are SQLite's (PostgreSQL's are checked by
//! the benchmark, not asserted), as is the bulk insert.

use berth_oci::Digest;
use sqlx::Row;

use crate::org::Window;
use crate::repositories::{RepositoryMeta, TagInfo, TagPage};
use crate::sqlite::repositories::tag_page_sql;
use crate::{NewManifest, RegistryMeta, SqliteMeta};

/// The plan SQLite chooses for `sql`, one detail line per step.
async fn plan(m: &SqliteMeta, sql: &str, binds: &[&str]) -> String {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut q = sqlx::query(&explain);
    for b in binds {
        q = q.bind(*b);
    }
    q.fetch_all(&m.read)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(3))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn hundred_thousand_tags_page_through_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let m = SqliteMeta::open(&dir.path().join("m.db")).await.unwrap();
    let cfg = Digest::sha256_of(b"cfg");
    m.link_blob("big", &cfg, 1, 1).await.unwrap();
    let man = NewManifest {
        digest: Digest::sha256_of(b"m"),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        payload: b"m".to_vec(),
        blobs: vec![cfg.clone()],
        children: vec![],
        subject: None,
        config: Some(cfg),
        artifact_type: None,
        image_created_at: Some(7),
        total_size: 0,
        annotations: None,
    };
    m.put_manifest("big", &man, None, 1).await.unwrap();
    let id = m.repository("big").await.unwrap().unwrap().id;
    let window = |offset, limit| Window { offset, limit };
    let names = |tags: &[TagInfo]| tags.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    // One statement: t000000 .. t099999, each ended once before (history rows).
    let mut tx = m.write_tx().await.unwrap();
    for deleted_at in [Some(1i64), None] {
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99999) \
             INSERT INTO tags (repository_id, name, manifest_digest, created_at, deleted_at) \
             SELECT ?, printf('t%06d', i), ?, 2, ? FROM n",
        )
        .bind(id)
        .bind(man.digest.as_str())
        .bind(deleted_at)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let after = |last: &str, descending| TagPage::After {
        last: Some(last.into()),
        limit: 100,
        descending,
    };
    let (page, total) = m
        .repository_tags(id, after("t054321", false))
        .await
        .unwrap();
    assert_eq!(total, 0);
    let want: Vec<String> = (54322..54422).map(|i| format!("t{i:06}")).collect();
    assert_eq!(names(&page), want);
    assert!(page.iter().all(|t| t.created_at == 7 && t.pushed_at == 2));
    let (page, _) = m.repository_tags(id, after("t054321", true)).await.unwrap();
    let want: Vec<String> = (54221..54321).rev().map(|i| format!("t{i:06}")).collect();
    assert_eq!(names(&page), want);
    let (page, _) = m
        .repository_tags(id, TagPage::Offset(window(99_990, 100)))
        .await
        .unwrap();
    assert_eq!(page.len(), 10);
    assert_eq!(page[0].name, "t099990");
    assert_eq!(
        m.repository_info(id).await.unwrap().unwrap().tags_count,
        100_000
    );

    // Every page walks tags_live in name order: no sort of the tag list.
    let idx = id.to_string();
    let pages = [
        (
            TagPage::Offset(window(0, 100)),
            vec![idx.as_str(), "100", "0"],
        ),
        (after("t1", false), vec![idx.as_str(), "t1", "100"]),
        (after("t1", true), vec![idx.as_str(), "t1", "100"]),
        (
            TagPage::After {
                last: None,
                limit: 100,
                descending: true,
            },
            vec![idx.as_str(), "100"],
        ),
    ];
    for (page, binds) in pages {
        let p = plan(&m, &tag_page_sql(&page), &binds).await;
        assert!(
            p.contains("SEARCH t USING INDEX tags_live"),
            "{page:?}: {p}"
        );
        assert!(!p.contains("TEMP B-TREE"), "{page:?}: {p}");
        assert!(
            p.contains("sqlite_autoindex_manifests_1 (repository_id=? AND digest=?)"),
            "{page:?}: {p}"
        );
    }
    // The total is one row's column, kept by triggers.
    let (_, total) = m
        .repository_tags(
            id,
            TagPage::Offset(Window {
                offset: 0,
                limit: 1,
            }),
        )
        .await
        .unwrap();
    assert_eq!(total, 100_000);
    // Deleting a repository finds its tag history by index (the cascade's lookup).
    let p = plan(&m, "DELETE FROM tags WHERE repository_id = ?", &[&idx]).await;
    assert!(
        p.contains("USING INDEX") || p.contains("USING COVERING INDEX"),
        "{p}"
    );

    // And the whole repository goes in one transaction.
    m.delete_repository(id, 3).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tags WHERE repository_id = ?")
        .bind(id)
        .fetch_one(&m.read)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
