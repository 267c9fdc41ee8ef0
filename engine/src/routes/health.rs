//! Liveness and readiness probes.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::AppError;
use crate::state::AppState;

/// `GET /healthz`: 200 `{"status":"ok"}` whenever the process is serving; never
/// touches the database.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 `{"status":"ready"}` when `SELECT 1` answers within the
/// configured timeout, otherwise 503 with the JSON error body (code `unavailable`).
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    match tokio::time::timeout(state.ready_timeout, state.db.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(e)) => Err(AppError::Unavailable(format!(
            "readiness check failed: {e}"
        ))),
        Err(_) => Err(AppError::Unavailable(format!(
            "readiness check timed out after {:?}",
            state.ready_timeout
        ))),
    }
}
