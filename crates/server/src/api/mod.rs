//! The GitLab-compatible REST API under `/api/v4`.

use axum::Router;

use crate::state::Shared;

pub fn router() -> Router<Shared> {
    Router::new()
}
