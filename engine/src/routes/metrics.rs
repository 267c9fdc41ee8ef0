//! `GET /metrics`: the engine's metrics in the Prometheus text format.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;

use crate::state::AppState;

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// `GET /metrics` (also under `/api/v1/revenue`): runs once per scrape and
/// answers 200 with the read-cache counters (`engine_cache_hits_total`,
/// `engine_cache_misses_total`, `engine_cache_errors_total`), the gauge
/// `engine_cache_hit_ratio`, and with Postgres the read-splitting metrics
/// (`engine_db_reads_total{target}`, `engine_db_replica_fallbacks_total`,
/// `engine_db_replica_state`, `engine_db_replica_lag_seconds`), as
/// `text/plain; version=0.0.4`. Never touches the database or Redis.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
        )],
        state.cache.render_metrics() + &state.db.render_metrics(),
    )
}
