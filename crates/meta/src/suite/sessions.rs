//! Web sessions of the UI.

use super::TestMeta;
use crate::{NewUser, WebSession};

async fn user(m: &dyn TestMeta, username: &str) -> i64 {
    let new = NewUser {
        username: username.into(),
        name: username.into(),
        email: None,
        password_hash: None,
        admin: false,
    };
    m.create_user(&new, 1).await.unwrap().id
}

fn session(user_id: i64, expires_at: i64) -> WebSession {
    WebSession {
        user_id,
        csrf_token: "csrf".into(),
        created_at: 10,
        expires_at,
    }
}

pub(crate) async fn sessions_expire_and_end(m: &dyn TestMeta) {
    let s = session(user(m, "alice").await, 100);
    m.create_web_session("d1", &s).await.unwrap();
    assert_eq!(m.web_session("d1", 50).await.unwrap(), Some(s.clone()));
    assert_eq!(m.web_session("d1", 100).await.unwrap(), None);
    assert_eq!(m.web_session("other", 50).await.unwrap(), None);
    m.create_web_session(
        "d2",
        &WebSession {
            expires_at: 1000,
            ..s
        },
    )
    .await
    .unwrap();
    assert_eq!(m.delete_expired_web_sessions(100).await.unwrap(), 1);
    assert!(m.delete_web_session("d2").await.unwrap());
    assert!(!m.delete_web_session("d2").await.unwrap());
    assert_eq!(m.web_session("d2", 50).await.unwrap(), None);
}

pub(crate) async fn a_users_sessions_end_together_but_the_kept_one(m: &dyn TestMeta) {
    let (alice, bob) = (user(m, "alice").await, user(m, "bob").await);
    for (digest, user) in [("a1", alice), ("a2", alice), ("a3", alice), ("b1", bob)] {
        m.create_web_session(digest, &session(user, 1000))
            .await
            .unwrap();
    }
    // The session that made the change stays; the user's others end.
    assert_eq!(
        m.delete_user_web_sessions(alice, Some("a2")).await.unwrap(),
        2
    );
    assert_eq!(m.web_session("a1", 50).await.unwrap(), None);
    assert_eq!(m.web_session("a3", 50).await.unwrap(), None);
    assert!(m.web_session("a2", 50).await.unwrap().is_some());
    assert!(
        m.web_session("b1", 50).await.unwrap().is_some(),
        "another user's"
    );
    // Keeping a session of someone else's keeps none of this user's.
    assert_eq!(
        m.delete_user_web_sessions(alice, Some("b1")).await.unwrap(),
        1
    );
    assert_eq!(m.delete_user_web_sessions(bob, None).await.unwrap(), 1);
    assert_eq!(m.delete_user_web_sessions(bob, None).await.unwrap(), 0);
    assert_eq!(m.web_session("b1", 50).await.unwrap(), None);
}

pub(crate) async fn refresh_tokens_are_found_by_digest_until_they_expire(m: &dyn TestMeta) {
    let alice = user(m, "refresher").await;
    let t = crate::RefreshToken {
        id: 0,
        kind: "password".into(),
        user_id: Some(alice),
        credential_id: None,
        fingerprint: Some("fp".into()),
        client_id: "docker".into(),
        created_at: 10,
        expires_at: 100,
    };
    let id = m.create_refresh_token("r1", &t).await.unwrap();
    let stored = crate::RefreshToken { id, ..t.clone() };
    assert_eq!(m.refresh_token("r1", 50).await.unwrap(), Some(stored));
    assert_eq!(m.refresh_token("r1", 100).await.unwrap(), None, "expired");
    assert_eq!(m.refresh_token("r2", 50).await.unwrap(), None, "unknown");
    let deploy = crate::RefreshToken {
        kind: "deploy_token".into(),
        user_id: None,
        credential_id: Some(7),
        fingerprint: None,
        expires_at: 1000,
        ..t
    };
    let id2 = m.create_refresh_token("r2", &deploy).await.unwrap();
    assert_ne!(id, id2);
    assert_eq!(m.delete_expired_refresh_tokens(500).await.unwrap(), 1);
    assert!(m.refresh_token("r2", 50).await.unwrap().is_some());
    assert_eq!(m.refresh_token("r1", 50).await.unwrap(), None, "pruned");
}
