//! The dependency proxy's cache: settings, manifests by tag and digest, blobs per
//! group, purges and what garbage collection may take.

use berth_oci::Digest;

use super::org::group;
use super::TestMeta;
use crate::{ProxyManifest, ProxySettings};

fn cached(payload: &str, at: i64) -> ProxyManifest {
    ProxyManifest {
        digest: Digest::sha256_of(payload.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        payload: payload.as_bytes().to_vec(),
        checked_at: at,
    }
}

pub(crate) async fn proxy_cache_settings_manifests_blobs_and_purges(m: &dyn TestMeta) {
    let top = group(m, "top", None).await;
    let sub = group(m, "sub", Some(top.id)).await;
    let other = group(m, "other", None).await;

    assert_eq!(
        m.proxy_settings(top.id).await.unwrap(),
        ProxySettings::default()
    );
    let s = ProxySettings {
        enabled: false,
        ttl_policy_enabled: true,
        ttl_days: 7,
    };
    m.set_proxy_settings(top.id, &s).await.unwrap();
    assert_eq!(m.proxy_settings(top.id).await.unwrap(), s);
    assert_eq!(m.proxy_ttl_groups().await.unwrap(), vec![(top.id, 7)]);

    // By tag, then by the digest the tag resolved to; replaced when the tag moves.
    let v1 = cached("one", 10);
    m.put_proxy_manifest(top.id, "library/alpine", "3", &v1, 10)
        .await
        .unwrap();
    let got = m
        .proxy_manifest(top.id, "library/alpine", "3", 11)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, v1);
    let by_digest = m
        .proxy_manifest(top.id, "library/alpine", v1.digest.as_str(), 11)
        .await
        .unwrap();
    assert_eq!(by_digest.unwrap().digest, v1.digest);
    assert!(m
        .proxy_manifest(other.id, "library/alpine", "3", 11)
        .await
        .unwrap()
        .is_none());
    m.proxy_manifest_checked(top.id, "library/alpine", "3", 20)
        .await
        .unwrap();
    let got = m.proxy_manifest(top.id, "library/alpine", "3", 21).await;
    assert_eq!(got.unwrap().unwrap().checked_at, 20);
    let v2 = cached("two", 30);
    m.put_proxy_manifest(top.id, "library/alpine", "3", &v2, 30)
        .await
        .unwrap();
    let got = m.proxy_manifest(top.id, "library/alpine", "3", 31).await;
    assert_eq!(got.unwrap().unwrap().digest, v2.digest);

    // Blobs per group; one shared by two groups and a repository.
    let a = Digest::sha256_of(b"a");
    let b = Digest::sha256_of(b"b");
    let shared = Digest::sha256_of(b"shared");
    m.link_proxy_blob(top.id, &a, 100, 40).await.unwrap();
    m.link_proxy_blob(sub.id, &b, 20, 40).await.unwrap();
    m.link_proxy_blob(top.id, &shared, 5, 40).await.unwrap();
    m.link_proxy_blob(other.id, &shared, 5, 40).await.unwrap();
    assert_eq!(m.proxy_blob(top.id, &a, 50).await.unwrap(), Some(100));
    assert_eq!(m.proxy_blob(other.id, &a, 50).await.unwrap(), None);
    assert_eq!(m.blob(&a).await.unwrap(), Some(100));
    let usage = m.proxy_usage(top.id).await.unwrap();
    assert_eq!(
        (usage.manifests, usage.blobs, usage.blob_bytes),
        (1, 2, 105)
    );
    assert_eq!(m.proxy_usage_below(top.id).await.unwrap(), 125);

    // Garbage collection leaves cached blobs alone.
    assert_eq!(m.review_blob(&a).await.unwrap(), None);
    assert!(m
        .sweep(false, i64::MAX, i64::MAX, true)
        .await
        .unwrap()
        .blobs_deleted
        .is_empty());

    // A TTL purge takes only what was not pulled since; `a` was pulled at 50.
    let purge = m.purge_proxy_cache(top.id, Some(45)).await.unwrap();
    assert_eq!((purge.removed.manifests, purge.removed.blobs), (1, 1));
    assert!(purge.freed.is_empty(), "the other group still holds it");
    assert_eq!(m.blob(&shared).await.unwrap(), Some(5));
    // A full purge: `a` is referenced by nothing else and leaves metadata.
    let purge = m.purge_proxy_cache(top.id, None).await.unwrap();
    assert_eq!((purge.removed.manifests, purge.removed.blobs), (0, 1));
    assert_eq!(purge.freed.len(), 1);
    assert_eq!(purge.freed[0].digest, a);
    assert_eq!(m.blob(&a).await.unwrap(), None);
    assert!(m.blob_deletion_pending(&a).await.unwrap());
    assert_eq!(m.proxy_usage(top.id).await.unwrap().blobs, 0);
    assert_eq!(m.proxy_usage(sub.id).await.unwrap().blobs, 1);
}
