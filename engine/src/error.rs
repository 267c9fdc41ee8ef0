//! [`AppError`]: the single error type of the HTTP layer and the one place where
//! errors become HTTP responses.
//!
//! Every response body for an error has the same shape:
//!
//! ```json
//! {"error": {"code": "invalid_field", "message": "amount must be ...", "field": "amount"}}
//! ```
//!
//! `field` is present only when one request field or query parameter is to blame.
//! Client mistakes map to 4xx; server faults map to 5xx, whose detail is logged but
//! never sent to the client.

use axum::extract::path::ErrorKind as PathErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::db::DbError;

/// Everything that can go wrong while handling a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request as a whole is unusable: malformed JSON, wrong content type, a
    /// body that is not a JSON object, an unparsable query string. HTTP 400.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code, e.g. `malformed_json`.
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// A required field or parameter is absent. HTTP 422.
    #[error("{field}: {message}")]
    MissingField {
        /// Name of the field or query parameter.
        field: String,
        /// Human-readable explanation.
        message: String,
    },
    /// A field or parameter is present but invalid (or unknown). HTTP 422.
    #[error("{field}: {message}")]
    InvalidField {
        /// Name of the field or query parameter.
        field: String,
        /// Human-readable explanation.
        message: String,
    },
    /// No such resource or route. HTTP 404.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what is stored, e.g. an `Idempotency-Key` reused
    /// for a different request (code `idempotency_key_reused`). HTTP 409.
    #[error("{message}")]
    Conflict {
        /// Machine-readable code, e.g. `idempotency_key_reused`.
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// The route exists but not for this method. HTTP 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request body exceeds the configured limit. HTTP 413.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// The request body did not arrive in time (a client that stalls). HTTP 408.
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(std::time::Duration),
    /// A dependency (the database) is not answering. HTTP 503; detail is logged only.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Anything else. HTTP 500; detail is logged only.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// Shorthand for [`AppError::InvalidField`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`AppError::MissingField`] with a standard message.
    pub fn missing(field: impl Into<String>) -> Self {
        let field = field.into();
        Self::MissingField {
            message: format!("{field} is required"),
            field,
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::MissingField { .. } | Self::InvalidField { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `code` of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } | Self::Conflict { code, .. } => code,
            Self::MissingField { .. } => "missing_field",
            Self::InvalidField { .. } => "invalid_field",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout(_) => "request_timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for AppError {
    /// Turns the error into its status and uniform JSON body. 5xx details are logged
    /// here and replaced by a generic message.
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error");
                "internal server error".to_owned()
            }
            Self::Unavailable(detail) => {
                tracing::warn!(detail = detail.as_str(), "service unavailable");
                "service temporarily unavailable".to_owned()
            }
            other => other.to_string_without_field(),
        };
        let field = match &self {
            Self::MissingField { field, .. } | Self::InvalidField { field, .. } => {
                Some(field.as_str())
            }
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
                field,
            },
        };
        (status, Json(body)).into_response()
    }
}

impl AppError {
    /// The client-facing message (without the `field: ` prefix of `Display`).
    fn to_string_without_field(&self) -> String {
        match self {
            Self::MissingField { message, .. } | Self::InvalidField { message, .. } => {
                message.clone()
            }
            other => other.to_string(),
        }
    }
}

impl From<JsonRejection> for AppError {
    /// Maps axum's JSON extractor failures: body too large → 413, everything else
    /// (bad syntax, wrong content type, unreadable body) → 400.
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::PayloadTooLarge;
        }
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::BadRequest {
                code: "invalid_content_type",
                message: "expected a request body with `Content-Type: application/json`".into(),
            },
            JsonRejection::JsonSyntaxError(e) => Self::BadRequest {
                code: "malformed_json",
                message: e.body_text(),
            },
            JsonRejection::JsonDataError(e) => Self::BadRequest {
                code: "malformed_json",
                message: e.body_text(),
            },
            other => Self::BadRequest {
                code: "bad_request",
                message: format!("cannot read the request body: {}", other.body_text()),
            },
        }
    }
}

impl From<QueryRejection> for AppError {
    /// Maps axum's query-string extractor failures to 400.
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest {
            code: "malformed_query",
            message: format!("cannot parse the query string: {}", rejection.body_text()),
        }
    }
}

impl From<PathRejection> for AppError {
    /// Maps axum's path-parameter extractor failures: a parameter that is not valid
    /// UTF-8 once percent-decoded cannot name any resource → 404; one that does not
    /// parse as the expected type → 400; a route/extractor mismatch (a bug) → 500.
    fn from(rejection: PathRejection) -> Self {
        match rejection {
            PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                PathErrorKind::InvalidUtf8InPathParam { key } => Self::NotFound(format!(
                    "no such resource: path parameter `{key}` is not valid UTF-8"
                )),
                PathErrorKind::WrongNumberOfParameters { .. }
                | PathErrorKind::UnsupportedType { .. } => Self::Internal(anyhow::anyhow!(
                    "path extractor does not match the route: {}",
                    e.body_text()
                )),
                _ => Self::BadRequest {
                    code: "malformed_path",
                    message: e.body_text(),
                },
            },
            other => Self::Internal(anyhow::anyhow!(
                "path parameters unavailable: {}",
                other.body_text()
            )),
        }
    }
}

impl From<DbError> for AppError {
    /// Maps database failures: unreachable → 503, anything else → 500.
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(e) => Self::Unavailable(e.to_string()),
            DbError::Other(e) => Self::Internal(anyhow::Error::new(e).context("database error")),
        }
    }
}
