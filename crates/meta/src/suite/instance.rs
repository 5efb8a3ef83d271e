//! What the nodes of one installation share: secrets and the blob lock.

use std::time::Duration;

use super::TestMeta;

pub(crate) async fn first_stored_secret_wins(m: &dyn TestMeta) {
    let first = m.instance_secret("key", "from node 1", 1).await.unwrap();
    assert_eq!(first, "from node 1");
    // A second node starting with its own candidate gets the stored one.
    let second = m.instance_secret("key", "from node 2", 2).await.unwrap();
    assert_eq!(second, "from node 1");
    let other = m.instance_secret("other", "x", 3).await.unwrap();
    assert_eq!(other, "x");
}

pub(crate) async fn blob_lock_shared_excludes_exclusive(m: &dyn TestMeta) {
    let publishing = m.blob_lock(false).await.unwrap();
    // Another publisher is not held up by the first.
    let also_publishing = tokio::time::timeout(Duration::from_secs(10), m.blob_lock(false))
        .await
        .expect("two shared holders at once")
        .unwrap();
    let sweeping = m.blob_lock(true);
    tokio::pin!(sweeping);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut sweeping)
            .await
            .is_err(),
        "the exclusive lock was granted while shared holders held it"
    );
    drop(publishing);
    drop(also_publishing);
    let sweeper = tokio::time::timeout(Duration::from_secs(10), &mut sweeping)
        .await
        .expect("the exclusive lock once the shared holders let go")
        .unwrap();
    // And while it is held, publishing waits.
    let next = m.blob_lock(false);
    tokio::pin!(next);
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut next)
        .await
        .is_err());
    drop(sweeper);
    tokio::time::timeout(Duration::from_secs(10), &mut next)
        .await
        .expect("publishing once the sweep is over")
        .unwrap();
}

pub(crate) async fn login_failures_are_counted_by_key_and_pruned(m: &dyn TestMeta) {
    let keys = ["ip:1.2.3.4".to_string(), "user:bob".to_string()];
    m.record_login_failure(&keys, 100, 40).await.unwrap();
    m.record_login_failure(&keys, 110, 50).await.unwrap();
    m.record_login_failure(&keys[1..], 120, 60).await.unwrap();
    assert_eq!(m.login_failures("ip:1.2.3.4", 40).await.unwrap().len(), 2);
    let mut bob = m.login_failures("user:bob", 40).await.unwrap();
    bob.sort();
    assert_eq!(bob, [100, 110, 120]);
    // `since` is exclusive.
    assert_eq!(m.login_failures("user:bob", 110).await.unwrap(), [120]);
    assert!(m.login_failures("user:carol", 0).await.unwrap().is_empty());
    // Writing prunes everything older than the window, whatever its key.
    m.record_login_failure(&["user:carol".to_string()], 200, 115)
        .await
        .unwrap();
    assert_eq!(m.login_failures("user:bob", 0).await.unwrap(), [120]);
    assert!(m.login_failures("ip:1.2.3.4", 0).await.unwrap().is_empty());
}
