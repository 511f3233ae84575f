//! The withdrawal API (`mirrorgate deny` / `allow`), served with the warm API (on
//! `metrics_listen` when that is set, else on `listen`) and to the same operators:
//! - `GET /withdrawn`: `{"withdrawn": {"<digest>": {"reason", "at"}…}}`;
//! - `POST /withdrawn` with `{"digests": [...], "reason": "..."}`: withdraws them (refused from
//!   then on, deleted from the cache); `{"added": [...], "withdrawn": {...}}`;
//! - `POST /withdrawn/allow` with `{"digests": [...]}`: lifts them; `{"lifted": [...],
//!   "withdrawn": {...}}`.
//!
//! A body that does not parse, or a digest that is not one, is 400 and changes nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::Body;
use super::error::{ApiError, ErrorCode};
use super::warm_endpoint::{AdminClient, answer_admin, json, json_body};
use crate::proxy::Proxy;
use crate::reference::Digest;
use crate::warm::Warmer;

/// The path of the list, and the prefix of the API.
pub const PATH: &str = "/withdrawn";
/// Lifting withdrawals.
pub const ALLOW: &str = "/withdrawn/allow";

/// The largest request body read: thousands of digests.
const MAX_BODY: usize = 1 << 20;

/// Whether `path` is the API's.
pub fn is_for(path: &str) -> bool {
    path == PATH || path.starts_with("/withdrawn/")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    digests: Vec<String>,
    #[serde(default)]
    reason: String,
}

/// Answers a `/withdrawn…` request on a listener bound to `local`, for a client at `peer`;
/// `warmer` holds who the admins are.
pub async fn answer(
    proxy: &Proxy,
    warmer: &Arc<Warmer>,
    request: Request<Incoming>,
    local: SocketAddr,
    peer: SocketAddr,
) -> Response<Body> {
    let client = AdminClient { local, peer };
    answer_admin(proxy, warmer, request, client, "withdrawn", |request| {
        route(proxy, request)
    })
    .await
}

async fn route(proxy: &Proxy, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let method = request.method().clone();
    let stored = |e: crate::proxy::WithdrawError| {
        let status = match e {
            crate::proxy::WithdrawError::Shared(_) => StatusCode::BAD_GATEWAY,
            crate::proxy::WithdrawError::Local(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(
            status,
            ErrorCode::Unknown,
            format!("the change could not be kept: {e}"),
        )
    };
    match (method.clone(), path.as_str()) {
        (Method::GET, PATH) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "withdrawn": &*proxy.withdrawn() }),
        )),
        (Method::POST, PATH) => {
            let (digests, reason) = change_of(request).await?;
            let added = texts(proxy.withdraw(&digests, &reason).await.map_err(stored)?);
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "added": added, "withdrawn": &*proxy.withdrawn() }),
            ))
        }
        (Method::POST, ALLOW) => {
            let (digests, _) = change_of(request).await?;
            let lifted = texts(proxy.allow(&digests).await.map_err(stored)?);
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "lifted": lifted, "withdrawn": &*proxy.withdrawn() }),
            ))
        }
        (_, PATH | ALLOW) => Err(ApiError::unsupported(&method)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::Unsupported,
            format!("{path}: not a withdrawal API path (GET {PATH}, POST {PATH}, POST {ALLOW})"),
        )),
    }
}

fn texts(digests: Vec<Digest>) -> Vec<String> {
    digests.iter().map(|d| d.as_str().to_owned()).collect()
}

/// The digests (and reason) of a change's body; every digest must parse, or nothing changes.
async fn change_of(request: Request<Incoming>) -> Result<(Vec<Digest>, String), ApiError> {
    let change: Change = json_body(
        request,
        MAX_BODY,
        "{\"digests\": [\"sha256:…\"], \"reason\": \"…\"}",
    )
    .await?;
    if change.digests.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            "no digests given",
        ));
    }
    let digests = change
        .digests
        .iter()
        .map(|d| {
            d.trim()
                .parse::<Digest>()
                .map_err(|e| ApiError::digest_invalid(format!("\"{d}\" is not a digest: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((digests, change.reason))
}
