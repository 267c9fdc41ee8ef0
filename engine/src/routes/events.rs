//! `POST /events` (record a charge or refund), `GET /events` (list with filters
//! and keyset pagination) and `GET /events/{id}`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{JsonBody, PathParam, QueryPairs, API_PREFIX};
use crate::error::AppError;
use crate::model::{is_event_id, Event, EventPage};
use crate::state::AppState;
use crate::validation;

/// `POST /api/v1/revenue/events`: validates the body, stores the event and answers
/// 201 with the stored event and a `Location` header. 400 for unusable bodies, 422
/// naming the field for invalid ones.
pub async fn create_event(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let new = validation::new_event(&body)?;
    let event = state.db.insert_event(Event::from_new(new)).await?;
    tracing::debug!(id = event.id, "event recorded");
    let location = format!("{API_PREFIX}/events/{}", event.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(event),
    )
        .into_response())
}

/// `GET /api/v1/revenue/events`: one page of events, newest first, as
/// `{"data": [...], "next_cursor": "..." | null}`. 422 naming the parameter for a
/// bad filter, limit or cursor.
pub async fn list_events(
    State(state): State<AppState>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Json<EventPage>, AppError> {
    let filter = validation::event_filter(pairs)?;
    Ok(Json(state.db.list_events(&filter).await?))
}

/// `GET /api/v1/revenue/events/{id}`: the stored event, or 404 (also for an id
/// that cannot be one, e.g. not valid UTF-8 once percent-decoded).
pub async fn get_event(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Event>, AppError> {
    let not_found = || AppError::NotFound(format!("no event with id {id:?}"));
    if !is_event_id(&id) {
        return Err(not_found());
    }
    state
        .db
        .get_event(&id)
        .await?
        .map(Json)
        .ok_or_else(not_found)
}
