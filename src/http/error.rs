//! OCI error responses: `{"errors":[{"code":…,"message":…,"detail":…}]}` with the status the
//! distribution specification gives each code.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::{Body, full_body};

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
    /// The operation is not supported (every write: the proxy is read-only).
    Unsupported,
    /// Too many requests.
    TooManyRequests,
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
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
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
        response
    }
}
