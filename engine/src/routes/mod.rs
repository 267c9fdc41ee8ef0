//! HTTP routes and the router.
//!
//! | method | path | handler |
//! | --- | --- | --- |
//! | GET | `/healthz`, `/api/v1/revenue/healthz` | [`health::healthz`] |
//! | GET | `/readyz`, `/api/v1/revenue/readyz` | [`health::readyz`] |
//! | POST | `/api/v1/revenue/events` | [`events::create_event`] |
//! | GET | `/api/v1/revenue/events` | [`events::list_events`] |
//! | GET | `/api/v1/revenue/events/{id}` | [`events::get_event`] |
//! | GET | `/api/v1/revenue/summary` | [`summary::get_summary`] |
//! | GET | `/api/v1/revenue/customers/{id}` | [`customers::get_customer`] |
//! | GET | `/metrics` | [`metrics::metrics`] |
//!
//! `/metrics` is served at the root only: everything under the API prefix is
//! reachable by the gateway's consumers, and the engine's internals (cache
//! ratios, replica states) are for operators. The data routes (not the probes)
//! answer `Vary: Consistency-Token` on reads.
//!
//! Unknown paths answer 404 and known paths with the wrong method 405 (with an
//! `Allow` header listing the route's methods), both with the JSON error body of
//! [`AppError`]; so do all extractor failures (see [`JsonBody`], [`QueryPairs`],
//! [`PathParam`], [`IdempotencyKeyHeader`]). Request bodies are limited to
//! [`BODY_LIMIT`].

pub mod customers;
pub mod events;
pub mod health;
pub mod metrics;
pub mod summary;

use std::time::Instant;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::AppError;
use crate::idempotency::IdempotencyKey;
use crate::state::AppState;

/// Path prefix of the revenue API.
pub const API_PREFIX: &str = "/api/v1/revenue";
/// Largest accepted request body, in bytes (64 KiB); larger bodies get 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Builds the router with every route, the JSON 404/405 fallbacks, the body limit
/// and request logging. Called once by [`crate::app`].
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/events",
            get(events::list_events).post(events::create_event),
        )
        .route("/events/{id}", get(events::get_event))
        .route("/summary", get(summary::get_summary))
        .route("/customers/{id}", get(customers::get_customer))
        .route_layer(middleware::from_fn(vary_on_consistency_token))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            request_deadline,
        ))
        .merge(probe_routes());

    Router::new()
        .merge(probe_routes())
        .route("/metrics", get(metrics::metrics))
        .nest(API_PREFIX, api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// The liveness and readiness probes, served at the root and under the API prefix.
fn probe_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
}

async fn not_found() -> AppError {
    AppError::NotFound("no such route".into())
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// Logs one line per request (method, path, status, latency); health probes at
/// debug level, everything else at info.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let micros = started.elapsed().as_micros();
    if path.ends_with("/healthz") || path.ends_with("/readyz") {
        tracing::debug!(%method, path, status, micros, "request");
    } else {
        tracing::info!(%method, path, status, micros, "request");
    }
    response
}

/// Answers 503 when an API request takes longer than
/// [`AppState::request_timeout`] (a database that hangs instead of failing);
/// the request's queries are dropped with it. Runs once per API request.
async fn request_deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            AppError::Unavailable(format!("the request took longer than {limit:?}")).into_response()
        }
    }
}

/// Adds `Vary: Consistency-Token` to every `GET`/`HEAD` answer of a data route: a read with a
/// write's token may be answered differently (fresher) than one without, so a
/// shared cache in front (the gateway's proxy-cache) must either key on the
/// header or not store the answer. Runs once per request.
async fn vary_on_consistency_token(req: Request, next: Next) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let mut response = next.run(req).await;
    if read {
        response.headers_mut().append(
            header::VARY,
            HeaderValue::from_static(crate::consistency::TOKEN_FIELD),
        );
    }
    response
}

/// A JSON request body whose extraction errors become [`AppError`]s (400 for bad
/// syntax or content type, 413 when too large, 408 when it does not arrive within
/// [`AppState::body_read_timeout`]) instead of axum's plain-text ones.
///
/// The body is kept as its exact text (checked to be well-formed JSON), so that
/// validation sees numbers as sent, before any rounding to `f64`.
#[derive(Debug)]
pub struct JsonBody(pub Box<RawValue>);

impl FromRequest<AppState> for JsonBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.body_read_timeout;
        let read = Json::<Box<RawValue>>::from_request(req, state);
        let Json(raw) = tokio::time::timeout(limit, read)
            .await
            .map_err(|_| AppError::RequestTimeout(limit))?
            .map_err(|e: JsonRejection| AppError::from(e))?;
        Ok(JsonBody(raw))
    }
}

/// Path parameters (like axum's `Path`) whose extraction errors become
/// [`AppError`]s: a parameter that is not valid UTF-8 once percent-decoded names
/// no resource (404), one that does not parse is a bad request (400).
#[derive(Debug)]
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e: PathRejection| AppError::from(e))?;
        Ok(PathParam(value))
    }
}

/// The decoded query string as name/value pairs (in order, repeats kept), with
/// extraction errors mapped to [`AppError`].
#[derive(Debug)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|e: QueryRejection| AppError::from(e))?;
        Ok(QueryPairs(pairs))
    }
}

/// The optional `Idempotency-Key` request header, checked before the body is read:
/// `None` without the header, 422 naming `Idempotency-Key` for an invalid value or
/// a repeated header (see [`IdempotencyKey::from_headers`]).
#[derive(Debug)]
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        IdempotencyKey::from_headers(&parts.headers).map(IdempotencyKeyHeader)
    }
}
