//! OCI error responses: `{"errors":[{"code":…,"message":…,"detail":…}]}` with the status the
//! distribution specification gives each code.
//!
//! Principal types: [`ApiError`] (status, OCI code, message, detail) and [`ErrorCode`]. This is
//! the one place where errors become HTTP: domain code returns its own errors
//! ([`proxy::Error`](crate::proxy::Error), [`Denied`] and [`Unauthorized`] from
//! [`crate::access`]), and the `From` conversions here give each its status and code.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::{API_VERSION_HEADER, Body, full_body};
use crate::access::{Denied, Unauthorized};
use crate::proxy::{Error, Missing};
use crate::rules::ResolveError;

/// An error code of the OCI distribution specification (plus `UNKNOWN`, as the Distribution
/// registry uses for failures no other code describes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The blob is unknown to every source tried.
    BlobUnknown,
    /// A digest does not parse or uses an unsupported algorithm.
    DigestInvalid,
    /// A manifest is malformed or too large, or a tag is invalid.
    ManifestInvalid,
    /// The manifest is unknown to every source tried.
    ManifestUnknown,
    /// The repository name breaks the grammar.
    NameInvalid,
    /// The repository is unknown.
    NameUnknown,
    /// Access is refused (here: the source is blocked and no mirror applies).
    Denied,
    /// The request carries no valid credentials.
    Unauthorized,
    /// The operation is not supported (every write: the proxy is read-only).
    Unsupported,
    /// Too many requests.
    TooManyRequests,
    /// The service cannot answer yet (its rules are not complete); try again later.
    Unavailable,
    /// Any other failure, e.g. every source failed.
    Unknown,
}

impl ErrorCode {
    /// The code as written in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The OCI error code.
    pub code: ErrorCode,
    /// What happened, for a person.
    pub message: String,
    /// Structured detail (e.g. every source tried and why it failed).
    pub detail: Option<Value>,
    /// Seconds after which the client may try again (`Retry-After`), for a refusal that is
    /// about load rather than the request.
    pub retry_after: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401.
    pub challenge: Option<String>,
}

impl ApiError {
    /// An error with no detail.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            retry_after: None,
            challenge: None,
        }
    }

    /// The same error with structured detail.
    pub fn with_detail(mut self, detail: Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    /// 429 TOOMANYREQUESTS: come back in `retry_after` seconds.
    pub fn too_many_requests(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                message,
            )
        }
    }

    /// 503 UNAVAILABLE: come back in `retry_after` seconds.
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                message,
            )
        }
    }

    /// 400 NAME_INVALID.
    pub fn name_invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::NameInvalid, message)
    }

    /// 400 DIGEST_INVALID.
    pub fn digest_invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid, message)
    }

    /// 405 UNSUPPORTED: the proxy is read-only.
    pub fn unsupported(method: &http::Method) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!("{method} is not supported: mirrorgate is a read-only pull-through proxy"),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let mut error = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(detail) = &self.detail {
            error["detail"] = detail.clone();
        }
        Bytes::from(json!({ "errors": [error] }).to_string())
    }

    /// The whole response. A HEAD response carries the headers but no body.
    pub fn into_response(self, head: bool) -> http::Response<Body> {
        let body = self.body();
        let length = body.len();
        let mut response = http::Response::new(full_body(if head { Bytes::new() } else { body }));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.challenge
            && let Ok(challenge) = HeaderValue::from_str(&challenge)
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
            headers.insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
        }
        response
    }

    /// 508 for a request that carries our own `Via` token (`token`; `chain` is the `Via` it
    /// arrived with): it has been round a loop (this mirrorgate's rules lead, through other
    /// proxies or under a name it does not know as its own, back to itself). Nothing is
    /// contacted, so the loop ends here.
    pub fn loop_detected(token: &str, chain: &str) -> ApiError {
        ApiError::new(
            StatusCode::LOOP_DETECTED,
            ErrorCode::Unknown,
            format!(
                "loop detected: this request already passed through this mirrorgate ({token}; Via: {chain}); a mirror in the rules leads back here: name this mirrorgate's addresses in self_names, or fix the rules of the proxies in the chain"
            ),
        )
        .with_detail(json!({"via": chain, "token": token}))
    }

    /// 401 UNAUTHORIZED with the challenge, so that clients log in as with any registry; 429
    /// TOOMANYREQUESTS with `Retry-After` (and the challenge) after too many failed logins.
    pub fn unauthorized(refusal: Unauthorized) -> ApiError {
        let (status, code, message) = match refusal.retry_after() {
            None => (
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "authentication required",
            ),
            Some(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                "too many failed logins; try again later",
            ),
        };
        ApiError {
            detail: Some(Value::Null),
            challenge: Some(refusal.challenge()),
            retry_after: refusal.retry_after(),
            ..ApiError::new(status, code, message)
        }
    }
}

/// 403 DENIED: the repository is outside the client's scopes.
impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Denied, denied.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let message = error.to_string();
        match error {
            Error::Resolve(ResolveError::Blocked { scope, set_by, .. }) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Denied, message)
                    .with_detail(json!({"scope": scope.to_string(), "blocked_by": set_by}))
            }
            Error::Resolve(ResolveError::RewriteFailed {
                scope, attempted, ..
            }) => ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::Unknown, message)
                .with_detail(json!({"scope": scope.to_string(), "attempted": attempted})),
            Error::NotConfigured { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Denied, message)
            }
            Error::Exhausted {
                missing,
                all_not_found,
                tried,
                ..
            } => {
                let detail = json!({
                    "tried": tried
                        .iter()
                        .map(|t| json!({
                            "reference": t.reference,
                            "role": t.role.as_str(),
                            "error": t.error,
                        }))
                        .collect::<Vec<_>>()
                });
                if all_not_found {
                    ApiError::new(StatusCode::NOT_FOUND, unknown(missing), message)
                } else {
                    ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::Unknown, message)
                }
                .with_detail(detail)
            }
            Error::NotFound { missing, .. } => {
                ApiError::new(StatusCode::NOT_FOUND, unknown(missing), message)
            }
            Error::Upstream(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::Unknown, message)
            }
            Error::Busy { retry_after, .. } => ApiError::too_many_requests(message, retry_after),
            Error::InvalidDigest(_) => ApiError::digest_invalid(message),
            Error::Withdrawn { missing, .. } => {
                ApiError::new(StatusCode::NOT_FOUND, unknown(missing), message)
            }
            // No manifest can have a tag outside the grammar, so it is not there: 404
            // `MANIFEST_UNKNOWN`, as Distribution answers (the spec's `TAG_INVALID` is for a
            // pushed manifest whose tag does not match the URI).
            Error::InvalidTag { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown, message)
            }
        }
    }
}

/// The code for content every source said is not there.
fn unknown(missing: Missing) -> ErrorCode {
    match missing {
        Missing::Manifest => ErrorCode::ManifestUnknown,
        Missing::Blob => ErrorCode::BlobUnknown,
        Missing::Repository => ErrorCode::NameUnknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_response_has_challenge_and_oci_body() {
        let response = ApiError::unauthorized(Unauthorized::BASIC).into_response(false);
        assert_eq!(
            (
                response.status(),
                response.headers().get(header::WWW_AUTHENTICATE).cloned(),
            ),
            (
                StatusCode::UNAUTHORIZED,
                Some(HeaderValue::from_static("Basic realm=\"mirrorgate\""))
            )
        );
    }
}
