//! The body of what the proxy serves: whole buffers (manifests, listings) and streamed blobs
//! alike, one type so that every answer has the same shape.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// The response body type. A stream that fails mid-body makes the server abort the
/// connection, so a client never takes a cut body for a whole one.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A body of known bytes.
pub fn full_body(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body (HEAD responses).
pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A response with a known body; HEAD gets the same headers and no body.
pub fn bytes_response(
    status: StatusCode,
    content_type: &str,
    body: Bytes,
    head: bool,
) -> Response<Body> {
    let length = body.len();
    let mut response = Response::new(if head { empty_body() } else { full_body(body) });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}
