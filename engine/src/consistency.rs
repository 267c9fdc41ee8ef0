//! Read-your-writes over read replicas: the `Consistency-Token` header.
//!
//! Every stored event (`POST /events`, also an idempotent replay) answers with
//! `Consistency-Token: <LSN>` when the database is Postgres: the primary's write
//! position once the write has committed (see [`crate::db::Db::write_position`]).
//! A read that sends the token back is served only by a server that has replayed
//! that position: a replica that has caught up, or else the primary. Tokens are
//! Postgres' LSN text (`0/16B3748`); any client may send any token, since the worst
//! a bogus one does is send its reads to the primary. SQLite answers no token and
//! ignores a well-formed one (a malformed one is still a 422).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};

use crate::db::Lsn;
use crate::error::AppError;

/// The header carrying the token, in answers to writes and in reads.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("consistency-token");
/// How the header is named in error messages.
pub const TOKEN_FIELD: &str = "Consistency-Token";

/// The optional `Consistency-Token` of a read: `None` without the header, 422
/// naming `Consistency-Token` when it is repeated or not an LSN.
///
/// Extracted once per read request, before the handler runs.
#[derive(Debug, Clone, Copy)]
pub struct ConsistencyToken(pub Option<Lsn>);

impl<S: Send + Sync> FromRequestParts<S> for ConsistencyToken {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(TOKEN_HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(Self(None));
        };
        if values.next().is_some() {
            return Err(AppError::invalid(
                TOKEN_FIELD,
                format!("{TOKEN_FIELD} must be given at most once"),
            ));
        }
        value
            .to_str()
            .ok()
            .and_then(Lsn::parse)
            .map(|lsn| Self(Some(lsn)))
            .ok_or_else(|| {
                AppError::invalid(
                    TOKEN_FIELD,
                    format!(
                        "{TOKEN_FIELD} must be a token from an earlier write's answer, \
                         like 0/16B3748"
                    ),
                )
            })
    }
}

/// The header value of `lsn` (its Postgres text form). Used once per answer to a
/// write; always `Some` (the text is hexadecimal digits and one slash).
pub fn header_value(lsn: Lsn) -> Option<HeaderValue> {
    HeaderValue::from_str(&lsn.to_string()).ok()
}
