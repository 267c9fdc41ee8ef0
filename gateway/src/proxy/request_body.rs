//! Reading a request body before the upstream is chosen, for plugins that look inside
//! it (key-auth's `key_in_body`).
//!
//! The body is read through Pingora's retry buffer, which is what the proxy sends
//! upstream once the access phase is over, so nothing read here is lost. A plugin may
//! replace the buffered body (`hide_credentials`); the replacement is swapped in by the
//! proxy's `request_body_filter` and its length by `upstream_request_filter`.
//!
//! Bodies are inspected up to [`MAX_INSPECTED_BODY`] bytes, the size of Pingora's
//! retry buffer. A body that declares a larger `Content-Length` is not inspected at
//! all and streams upstream untouched (a plugin then sees no body, as Kong's plugins
//! see none when nginx spools a large body to a file). A chunked body that turns out
//! to be larger has been partly consumed and cannot be sent on, so it is refused with
//! 413.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;

use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;

/// The largest body the gateway reads before proxying (Pingora's retry buffer).
pub const MAX_INSPECTED_BODY: usize = 64 * 1024;

/// How long a client may take to send the whole inspected body (nginx's
/// `client_body_timeout` default).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the gateway knows about the request body.
#[derive(Debug, Clone, Default)]
pub enum BodyState {
    /// Nobody asked for it yet: it will stream upstream as it arrives.
    #[default]
    Unread,
    /// Read whole; this is also what goes upstream unless replaced.
    Buffered(Bytes),
    /// Too large to inspect; it streams upstream untouched.
    Uninspected,
}

/// Returns the whole request body, reading it on first use; runs in the access phase
/// of a plugin that needs the body.
///
/// Returns `Ok(None)` when the body declares more than [`MAX_INSPECTED_BODY`] bytes,
/// 413 when a chunked body turns out larger, 408 when the client stalls, 400 when
/// the body is malformed.
pub async fn read(
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Option<Bytes>, GatewayError> {
    match &ctx.request_body {
        BodyState::Buffered(b) => return Ok(Some(b.clone())),
        BodyState::Uninspected => return Ok(None),
        BodyState::Unread => {}
    }
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_INSPECTED_BODY as u64) {
        ctx.request_body = BodyState::Uninspected;
        return Ok(None);
    }
    let expects_continue = session.req_header().version == http::Version::HTTP_11
        && session
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let downstream = session.as_mut();
    if downstream.is_body_empty() {
        ctx.request_body = BodyState::Buffered(Bytes::new());
        return Ok(Some(Bytes::new()));
    }
    downstream.enable_retry_buffering();
    if expects_continue {
        // The client waits for this before sending the body we are about to read.
        downstream
            .write_continue_response()
            .await
            .map_err(|_| GatewayError::BadRequest)?;
    }
    let mut body = BytesMut::new();
    let reading = async {
        while let Some(chunk) =
            downstream
                .read_request_body()
                .await
                .map_err(|e| match e.etype() {
                    pingora_error::ErrorType::ReadTimedout => GatewayError::RequestTimeout,
                    _ => GatewayError::BadRequest,
                })?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_INSPECTED_BODY {
                return Err(GatewayError::PayloadTooLarge);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, reading).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(GatewayError::RequestTimeout),
    }
    let body = body.freeze();
    ctx.request_body = BodyState::Buffered(body.clone());
    Ok(Some(body))
}
