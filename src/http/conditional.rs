//! Content addressed by digest has a natural entity tag: the digest. Every 200 or 206 answer that
//! names its content's digest (`Docker-Content-Digest`, manifests and blobs) carries
//! `ETag: "<digest>"`, as Distribution's do, and a request whose `If-None-Match` names that tag
//! gets 304 Not Modified without the body.
//!
//! The answer is made first and judged after, so a 304 is given only for content the client may
//! read and that is there: the same route, authorisation and confirmation as a 200.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::Body;
use crate::proxy::empty_body;

/// Adds the entity tag to `response`, and turns it into a 304 when `request` already holds it.
pub fn apply(request: &HeaderMap, mut response: Response<Body>) -> Response<Body> {
    if !matches!(
        response.status(),
        StatusCode::OK | StatusCode::PARTIAL_CONTENT
    ) {
        return response;
    }
    let Some(tag) = response
        .headers()
        .get("docker-content-digest")
        .and_then(|digest| digest.to_str().ok())
        .and_then(|digest| HeaderValue::from_str(&format!("\"{digest}\"")).ok())
    else {
        return response;
    };
    let not_modified = response.status() == StatusCode::OK && holds(request, &tag);
    response.headers_mut().insert(header::ETAG, tag);
    if !not_modified {
        return response;
    }
    // Dropping the body ends the client's part of the transfer; a fill of the cache under way
    // goes on without it.
    let (mut parts, _body) = response.into_parts();
    parts.status = StatusCode::NOT_MODIFIED;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, empty_body())
}

/// Whether the request's `If-None-Match` names `tag` (or is `*`). Weak tags compare as strong
/// ones would (RFC 9110 §13.1.2: `If-None-Match` uses the weak comparison).
fn holds(request: &HeaderMap, tag: &HeaderValue) -> bool {
    let tag = tag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|candidate| {
            candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate).as_bytes() == tag
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::full_body;

    const DIGEST: &str = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

    fn answer(status: StatusCode) -> Response<Body> {
        let mut response = Response::new(full_body(bytes::Bytes::from_static(b"{}")));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert("docker-content-digest", HeaderValue::from_static(DIGEST));
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(2));
        response
    }

    fn asking(if_none_match: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn judged(status: StatusCode, if_none_match: Option<&str>) -> (u16, Option<String>, bool) {
        let response = apply(&asking(if_none_match), answer(status));
        (
            response.status().as_u16(),
            response
                .headers()
                .get(header::ETAG)
                .map(|t| t.to_str().unwrap().to_owned()),
            response.headers().contains_key(header::CONTENT_LENGTH),
        )
    }

    #[test]
    fn an_answer_naming_its_digest_carries_it_as_entity_tag_and_a_matching_request_gets_304() {
        let tag = format!("\"{DIGEST}\"");
        assert_eq!(
            [
                judged(StatusCode::OK, None),
                judged(StatusCode::OK, Some(&tag)),
                judged(StatusCode::OK, Some(&format!("\"sha256:00\", W/{tag}"))),
                judged(StatusCode::OK, Some("*")),
                judged(StatusCode::OK, Some("\"sha256:00\"")),
                // A part is never "not modified": the client asked for bytes it lacks.
                judged(StatusCode::PARTIAL_CONTENT, Some(&tag)),
            ],
            [
                (200, Some(tag.clone()), true),
                (304, Some(tag.clone()), false),
                (304, Some(tag.clone()), false),
                (304, Some(tag.clone()), false),
                (200, Some(tag.clone()), true),
                (206, Some(tag.clone()), true),
            ]
        );
    }

    #[test]
    fn errors_and_answers_without_a_digest_are_left_alone() {
        let mut plain = Response::new(empty_body());
        *plain.status_mut() = StatusCode::OK;
        let plain = apply(&asking(Some("*")), plain);
        let missing = apply(&asking(Some("*")), answer(StatusCode::NOT_FOUND));
        assert_eq!(
            (
                plain.status().as_u16(),
                plain.headers().contains_key(header::ETAG),
                missing.status().as_u16(),
                missing.headers().contains_key(header::ETAG),
            ),
            (200, false, 404, false)
        );
    }
}
