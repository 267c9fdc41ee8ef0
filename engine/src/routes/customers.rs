//! `GET /customers/{id}`: one customer's lifetime totals per currency.

use axum::extract::State;
use axum::response::Response;

use super::PathParam;
use crate::cache::CacheKey;
use crate::consistency::ConsistencyToken;
use crate::error::AppError;
use crate::model::CustomerSummary;
use crate::state::AppState;
use crate::validation;

/// `GET /api/v1/revenue/customers/{id}`: the customer's lifetime value per
/// currency.
///
/// Runs once per request. Answers 200 with `{"customer_id", "data": [{currency,
/// lifetime_value, gross, refunds, count, first_occurred_at, last_occurred_at}]}`
/// (one entry per currency, ordered by currency; `lifetime_value` is `gross -
/// refunds`, exact), or 404 when the customer has no events (also for an id that
/// no event can have, e.g. longer than 128 characters).
///
/// The 200 body goes through the read cache (see [`crate::cache`]), invalidated
/// by this customer's writes only; the answer carries `X-Engine-Cache:
/// hit|miss|bypass`. A 404 is never cached. With a `Consistency-Token` (see
/// [`crate::consistency`]) the totals include that write.
pub async fn get_customer(
    State(state): State<AppState>,
    ConsistencyToken(token): ConsistencyToken,
    PathParam(id): PathParam<String>,
) -> Result<Response, AppError> {
    let not_found = |id: &str| AppError::NotFound(format!("no events for customer {id:?}"));
    if !validation::is_valid_text(&id) {
        return Err(not_found(&id));
    }
    let key = CacheKey::customer(&id);
    let db = &state.db;
    state
        .cache
        .get_or_compute(&key, token, |after| async move {
            let data = db.customer_totals(&id, after).await?;
            if data.is_empty() {
                return Err(not_found(&id));
            }
            let body = CustomerSummary {
                customer_id: id,
                data,
            };
            serde_json::to_vec(&body)
                .map_err(|e| AppError::Internal(anyhow::Error::new(e).context("customer to JSON")))
        })
        .await
}
