//! `GET /summary`: revenue totals per time bucket and currency.

use axum::extract::State;
use axum::response::Response;

use super::QueryPairs;
use crate::cache::CacheKey;
use crate::consistency::ConsistencyToken;
use crate::error::AppError;
use crate::model::Summary;
use crate::state::AppState;
use crate::validation;

/// `GET /api/v1/revenue/summary?from=&to=&interval=day|month&currency=&group_by=product`.
///
/// `from`/`to` are optional RFC 3339 bounds (half-open `[from, to)`; absent means
/// unbounded), `interval` defaults to `day`, `currency` is optional (absent: one
/// row per bucket and currency; currencies are never added together). Buckets are
/// UTC calendar days (`YYYY-MM-DD`) or months (`YYYY-MM`); a bucket that `from` or
/// `to` cuts only counts the events inside the range. `group_by=product` (the only
/// value) also groups by product: one row per bucket, currency and product, each
/// with a `"product"`. Answers 200 with `{"interval", "from", "to", "currency",
/// "group_by", "data": [{bucket, currency, [product,] gross, refunds, net,
/// count}]}`, or 422 naming a bad parameter.
///
/// The 200 body goes through the read cache (see [`crate::cache`]): the answer
/// carries `X-Engine-Cache: hit|miss|bypass`.
///
/// With a `Consistency-Token` (see [`crate::consistency`]) the totals include
/// that write.
pub async fn get_summary(
    State(state): State<AppState>,
    ConsistencyToken(token): ConsistencyToken,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, AppError> {
    let query = validation::summary_query(pairs)?;
    let key = CacheKey::summary(&query);
    let db = &state.db;
    state
        .cache
        .get_or_compute(&key, token, |after| async move {
            let data = db.summary(&query, after).await?;
            let summary = Summary {
                interval: query.interval,
                from: query.from,
                to: query.to,
                currency: query.currency,
                group_by: query.group_by,
                data,
            };
            serde_json::to_vec(&summary)
                .map_err(|e| AppError::Internal(anyhow::Error::new(e).context("summary to JSON")))
        })
        .await
}
