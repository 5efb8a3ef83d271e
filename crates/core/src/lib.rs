//! The domain rules of Berth, with no I/O: roles and visibility, who may do what to a
//! project's registry with which credential, and which project owns an image path.
//!
//! Handlers gather facts (the caller's credential and role, the project's settings)
//! and ask this crate for a decision, so the permission matrix lives in one place and
//! is tested as a table.
#![forbid(unsafe_code)]

pub mod access;
pub mod cleanup;
pub mod paths;
pub mod protection;
pub mod re2;

pub use access::{
    allowed_actions, dependency_proxy_may_pull, AccessLevel, Action, ActionSet, Credential,
    ProjectFacts, RegistryAccess, Scope, Visibility,
};
