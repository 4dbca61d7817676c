//! REST handlers (the subset that exists before auth: health, live document
//! reads, presence).

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::protocol::{valid_id, Presence};

pub async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> String {
    metrics::gauge!("tandem_open_documents").set(state.hub.open_documents() as f64);
    state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default()
}

/// Until auth lands, documents are readable only in anonymous mode.
fn check_access(state: &AppState, id: &str) -> Result<(), ApiError> {
    if !valid_id(id) {
        return Err(ApiError::BadRequest(
            "document ids are 1-64 characters of [A-Za-z0-9_.:@-]".into(),
        ));
    }
    if !state.config.allow_anonymous {
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}

pub async fn get_document(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_access(&state, &id)?;
    let view = state.hub.view(&id).await?;
    Ok(Json(
        json!({ "id": id, "content": view.content, "version": view.version }),
    ))
}

pub async fn get_users(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Presence>>, ApiError> {
    check_access(&state, &id)?;
    Ok(Json(state.hub.users(&id).await?))
}
