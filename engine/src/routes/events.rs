//! `POST /events` (record a charge or refund, optionally idempotently), `GET
//! /events` (list with filters and keyset pagination) and `GET /events/{id}`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{IdempotencyKeyHeader, JsonBody, PathParam, QueryPairs, API_PREFIX};
use crate::consistency::{self, ConsistencyToken};
use crate::db::{IdempotentInsert, Lsn};
use crate::error::AppError;
use crate::idempotency;
use crate::model::{is_event_id, Event, EventPage, NewEvent};
use crate::state::AppState;
use crate::validation;

/// `POST /api/v1/revenue/events`: validates the body, stores the event and answers
/// 201 with the stored event and a `Location` header. 400 for unusable bodies, 422
/// naming the field for invalid ones.
///
/// With an `Idempotency-Key` header (see [`crate::idempotency`]) the event is
/// stored at most once per key: a retry with the same key and the same request
/// (compared by [`idempotency::request_hash`]) answers 201 with the event stored the
/// first time and `Idempotent-Replayed: true`; the same key with a different
/// request answers 409 `idempotency_key_reused`. An invalid key is a 422 naming
/// `Idempotency-Key`, checked before the body.
///
/// Every stored event, and every replay (its first answer, and perhaps its
/// invalidation, may have been lost), bumps the read cache's versions (see
/// [`crate::cache::Cache::invalidate_event`]) before the answer is sent. The
/// write and its invalidation run in a task of their own, which goes on when
/// the request is dropped (the request timeout, a client gone), so a committed
/// write never skips its invalidation; a write that fails in a way that may
/// have committed invalidates anyway (see [`crate::cache::Cache::write_guard`]).
/// With Postgres every 201 (a replay too) carries a `Consistency-Token` (see
/// [`crate::consistency`]): reads that send it back see this event.
pub async fn create_event(
    State(state): State<AppState>,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let new = validation::new_event(&body)?;
    tokio::spawn(record(state, key, new))
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("the write task failed: {e}")))?
}

/// The part of [`create_event`] after validation: stores `new` (under `key`),
/// invalidates the cache and builds the answer. Runs in its own task, to the
/// end, once per valid `POST /events`.
async fn record(
    state: AppState,
    key: Option<idempotency::IdempotencyKey>,
    new: NewEvent,
) -> Result<Response, AppError> {
    // Dropped unsettled (a failure that may have committed), it invalidates the
    // cache anyway.
    let guard = state.cache.write_guard(&new.customer_id);
    let Some(key) = key else {
        let event = state.db.insert_event(Event::from_new(new)).await?;
        tracing::debug!(id = event.id, "event recorded");
        let position = stored(&state, &event.customer_id).await;
        guard.done();
        return Ok(created(event, false, position));
    };
    let hash = idempotency::request_hash(&new);
    match state
        .db
        .insert_event_idempotent(
            Event::from_new(new),
            &key,
            &hash,
            state.idempotency_cutoff(),
        )
        .await?
    {
        IdempotentInsert::Inserted(event) => {
            tracing::debug!(id = event.id, "event recorded under an idempotency key");
            let position = stored(&state, &event.customer_id).await;
            guard.done();
            Ok(created(event, false, position))
        }
        IdempotentInsert::Replayed(event) => {
            tracing::debug!(
                id = event.id,
                "idempotent retry: answering with the stored event"
            );
            // A retry usually means the first answer was lost, and with it
            // perhaps the first attempt's invalidation (a crash, a timeout):
            // invalidate again.
            let position = stored(&state, &event.customer_id).await;
            guard.done();
            Ok(created(event, true, position))
        }
        IdempotentInsert::KeyReused => {
            guard.done();
            Err(AppError::Conflict {
                code: "idempotency_key_reused",
                message: format!(
                    "this {} was already used for a different request; \
                     use a new key for a new event",
                    idempotency::KEY_FIELD
                ),
            })
        }
    }
}

/// After an event of `customer_id` was stored (or replayed): the primary's
/// write position, past the write (`None` for SQLite), with the read cache
/// invalidated at it. When the position cannot be read on Postgres, the
/// invalidation waits for one (see
/// [`crate::cache::Cache::invalidate_event_at_unknown_position`]): never a
/// guessed version that a lagging replica could satisfy.
async fn stored(state: &AppState, customer_id: &str) -> Option<Lsn> {
    match state.db.write_position().await {
        Ok(position) => {
            state.cache.invalidate_event(customer_id, position).await;
            position
        }
        Err(e) => {
            tracing::warn!("cannot read the write position after a write ({e}); answering without a consistency token");
            state
                .cache
                .invalidate_event_at_unknown_position(customer_id);
            None
        }
    }
}

/// The 201 answer for a stored event: `Location` header, the event as JSON,
/// `Idempotent-Replayed: true` when it was stored by an earlier request, and the
/// `Consistency-Token` of `position` when there is one.
fn created(event: Event, replayed: bool, position: Option<Lsn>) -> Response {
    let location = format!("{API_PREFIX}/events/{}", event.id);
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(event),
    )
        .into_response();
    if replayed {
        response.headers_mut().insert(
            idempotency::REPLAYED_HEADER,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(value) = position.and_then(consistency::header_value) {
        response
            .headers_mut()
            .insert(consistency::TOKEN_HEADER, value);
    }
    response
}

/// `GET /api/v1/revenue/events`: one page of events, newest first, as
/// `{"data": [...], "next_cursor": "..." | null}`. 422 naming the parameter for a
/// bad filter, limit or cursor. With a `Consistency-Token` the page includes that
/// write.
pub async fn list_events(
    State(state): State<AppState>,
    ConsistencyToken(token): ConsistencyToken,
    QueryPairs(pairs): QueryPairs,
) -> Result<Json<EventPage>, AppError> {
    let filter = validation::event_filter(pairs)?;
    Ok(Json(state.db.list_events(&filter, token).await?))
}

/// `GET /api/v1/revenue/events/{id}`: the stored event, or 404 (also for an id
/// that cannot be one, e.g. not valid UTF-8 once percent-decoded). With a
/// `Consistency-Token` an event stored by that write is found.
pub async fn get_event(
    State(state): State<AppState>,
    ConsistencyToken(token): ConsistencyToken,
    PathParam(id): PathParam<String>,
) -> Result<Json<Event>, AppError> {
    let not_found = || AppError::NotFound(format!("no event with id {id:?}"));
    if !is_event_id(&id) {
        return Err(not_found());
    }
    state
        .db
        .get_event(&id, token)
        .await?
        .map(Json)
        .ok_or_else(not_found)
}
