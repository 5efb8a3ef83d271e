//! Protection rules: saved per project and kind, found from a repository path, kept
//! when the project moves.

use berth_core::protection::{ProtectionLevel as L, RuleKind};

use super::repositories::{group, project, push};
use super::TestMeta;
use crate::protection::RuleFields;
use crate::MetaError;

fn fields(pattern: &str, push: Option<L>, delete: Option<L>) -> RuleFields {
    RuleFields {
        pattern: pattern.into(),
        push,
        delete,
        immutable: false,
    }
}

pub(crate) async fn rules_are_saved_limited_and_found_by_repository(m: &dyn TestMeta) {
    let g = group(m, "g", None).await;
    let p = project(m, g.id, "App").await;
    let other = project(m, g.id, "other").await;
    push(m, "g/app/img", "m1", &[("c", 1)], None, Some("v1"), 1).await;
    push(m, "g/other", "m2", &[("c", 1)], None, Some("v1"), 1).await;

    let repo = m
        .create_protection_rule(
            p.id,
            RuleKind::Repository,
            &fields("/img*", Some(L::Owner), None),
            None,
            5,
        )
        .await
        .unwrap();
    // Shown with the project's path (lower case, as registry paths).
    assert_eq!(repo.pattern, "g/app/img*");
    assert_eq!((repo.push, repo.delete), (Some(L::Owner), None));
    let dup = m
        .create_protection_rule(
            p.id,
            RuleKind::Repository,
            &fields("/img*", Some(L::Maintainer), None),
            None,
            5,
        )
        .await;
    assert!(matches!(dup, Err(MetaError::Conflict(_))), "{dup:?}");

    for i in 0..5 {
        let t = m
            .create_protection_rule(
                p.id,
                RuleKind::Tag,
                &RuleFields {
                    immutable: i == 0,
                    ..fields(&format!("v{i}.*"), None, None)
                },
                Some(5),
                6 + i,
            )
            .await
            .unwrap();
        assert_eq!(t.immutable, i == 0);
    }
    let sixth = m
        .create_protection_rule(
            p.id,
            RuleKind::Tag,
            &fields("x", Some(L::Maintainer), Some(L::Maintainer)),
            Some(5),
            20,
        )
        .await;
    assert!(matches!(sixth, Err(MetaError::Conflict(_))), "{sixth:?}");
    // Another project has its own count.
    m.create_protection_rule(
        other.id,
        RuleKind::Tag,
        &fields("x", Some(L::Maintainer), Some(L::Maintainer)),
        Some(5),
        20,
    )
    .await
    .unwrap();

    let tags = m.protection_rules(p.id, RuleKind::Tag).await.unwrap();
    assert_eq!(tags.len(), 5);
    assert!(tags.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(
        m.protection_rules(p.id, RuleKind::Repository)
            .await
            .unwrap(),
        vec![repo.clone()]
    );
    let of_repo = m.protection_rules_of_repository("g/app/img").await.unwrap();
    assert_eq!(of_repo.len(), 6);
    assert!(m
        .protection_rules_of_repository("g/nothing")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        m.protection_rules_of_repository("g/other")
            .await
            .unwrap()
            .len(),
        1
    );

    let changed = m
        .update_protection_rule(
            p.id,
            RuleKind::Repository,
            repo.id,
            &fields("/img", None, Some(L::Admin)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.pattern, "g/app/img");
    assert_eq!((changed.push, changed.delete), (None, Some(L::Admin)));
    // Not through another project or kind.
    assert_eq!(
        m.update_protection_rule(
            other.id,
            RuleKind::Repository,
            repo.id,
            &fields("/x", None, Some(L::Admin))
        )
        .await
        .unwrap(),
        None
    );
    assert!(!m
        .delete_protection_rule(p.id, RuleKind::Tag, repo.id)
        .await
        .unwrap());

    // A move keeps the rules on the same repositories, under the new path.
    let h = group(m, "h", None).await;
    m.move_project(p.id, h.id, "moved", "Moved").await.unwrap();
    let moved = m
        .protection_rules(p.id, RuleKind::Repository)
        .await
        .unwrap();
    assert_eq!(moved[0].pattern, "h/moved/img");
    assert_eq!(
        m.protection_rules_of_repository("h/moved/img")
            .await
            .unwrap()
            .len(),
        6
    );

    assert!(m
        .delete_protection_rule(p.id, RuleKind::Repository, repo.id)
        .await
        .unwrap());
    assert!(m
        .protection_rules(p.id, RuleKind::Repository)
        .await
        .unwrap()
        .is_empty());
}
