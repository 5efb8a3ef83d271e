//! SQLite implementation of [`crate::RepositoryMeta`].
