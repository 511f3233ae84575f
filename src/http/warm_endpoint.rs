//! The warm-up admin API, served where `/status` is (on `metrics_listen` when that is set, else
//! on `listen`):
//! - `POST /warm/jobs` with `{"image": "<release>"}`: starts a job (or returns the one running
//!   for that image), `202 Accepted` with its [`Progress`](crate::warm::Progress);
//! - `GET /warm/jobs`: `{"jobs": [Progress…]}`, oldest first;
//! - `GET /warm/jobs/<id>`: one job's [`Progress`](crate::warm::Progress);
//! - `POST /warm/plan` with `{"image": "<release>"}`: `{"plan": "<text>"}`, the dry run.
//!
//! Starting jobs makes the proxy fetch whole releases, so the API is never open to anonymous
//! clients from elsewhere: a client on the same host (a loopback listener, or a loopback peer;
//! not a request a proxy forwarded, see `http::operator`) needs
//! nothing; any other needs the credentials of `clients` of a name listed in `warm.admins`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use super::Body;
use super::error::{ApiError, ErrorCode};
use crate::access::Access;
use crate::proxy::Proxy;
use crate::reference::Reference;
use crate::warm::Warmer;

/// The paths' common prefix.
pub const PREFIX: &str = "/warm/";
/// Jobs.
pub const JOBS: &str = "/warm/jobs";
/// The dry run.
pub const PLAN: &str = "/warm/plan";

/// The largest request body read.
const MAX_BODY: usize = 64 * 1024;

/// A request to start a job or plan one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmRequest {
    image: String,
}

/// Answers a `/warm/…` request on a listener bound to `local`, for a client at `peer`.
pub async fn answer(
    proxy: &Proxy,
    warmer: &Arc<Warmer>,
    request: Request<Incoming>,
    local: SocketAddr,
    peer: SocketAddr,
) -> Response<Body> {
    let client = AdminClient { local, peer };
    answer_admin(proxy, warmer, request, client, "warm", |request| {
        route(warmer, request)
    })
    .await
}

/// Where an admin API request came from: the listener's address and the client's.
#[derive(Debug, Clone, Copy)]
pub(super) struct AdminClient {
    /// The address of the listener it arrived on.
    pub local: SocketAddr,
    /// The client's address.
    pub peer: SocketAddr,
}

/// Answers a request of an admin API (the warm API, withdrawals) with `route`, once [`allowed`]
/// says the client may use it, and counts it under `label`.
pub(super) async fn answer_admin<F, Answer>(
    proxy: &Proxy,
    warmer: &Warmer,
    request: Request<Incoming>,
    client: AdminClient,
    label: &'static str,
    route: F,
) -> Response<Body>
where
    F: FnOnce(Request<Incoming>) -> Answer,
    Answer: std::future::Future<Output = Result<Response<Body>, ApiError>>,
{
    let started = Instant::now();
    let method = request.method().clone();
    let admin = |name: &str| warmer.is_admin(name);
    let allowed = allowed(
        &proxy.access(),
        admin,
        request.headers(),
        client.local,
        client.peer,
    )
    .await;
    let response = match allowed {
        Ok(()) => route(request)
            .await
            .unwrap_or_else(|e| e.into_response(false)),
        Err(refusal) => refusal.into_response(false),
    };
    let method = match method {
        Method::GET => "GET",
        Method::POST => "POST",
        _ => "OTHER",
    };
    proxy
        .metrics()
        .http
        .request(label, method, response.status().as_u16(), started.elapsed());
    response
}

async fn route(
    warmer: &Arc<Warmer>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let method = request.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::POST, JOBS) => {
            let release = release_of(request).await?;
            let job = warmer.start(release, "api");
            Ok(json(StatusCode::ACCEPTED, &job.progress()))
        }
        (Method::GET, JOBS) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "jobs": warmer.jobs() }),
        )),
        (Method::POST, PLAN) => {
            let release = release_of(request).await?;
            match warmer.dry_run(&release).await {
                Ok(plan) => Ok(json(StatusCode::OK, &serde_json::json!({ "plan": plan }))),
                Err(error) => Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::ManifestInvalid,
                    error.to_string(),
                )),
            }
        }
        (Method::GET, path) if path.starts_with("/warm/jobs/") => {
            let id = &path["/warm/jobs/".len()..];
            let job = id.parse::<u64>().ok().and_then(|id| warmer.job(id));
            match job {
                Some(progress) => Ok(json(StatusCode::OK, &progress)),
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NameUnknown,
                    format!("no warm job {id}"),
                )),
            }
        }
        (_, JOBS | PLAN) => Err(ApiError::unsupported(&method)),
        (_, path) if path.starts_with("/warm/jobs/") => Err(ApiError::unsupported(&method)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::Unsupported,
            format!(
                "{path}: not a warm API path (POST {JOBS}, GET {JOBS}, GET {JOBS}/<id>, POST {PLAN})"
            ),
        )),
    }
}

/// The release of a `{"image": …}` body.
async fn release_of(request: Request<Incoming>) -> Result<Reference, ApiError> {
    let asked: WarmRequest =
        json_body(request, MAX_BODY, "{\"image\": \"<release image>\"}").await?;
    Reference::parse_normalized(asked.image.trim())
        .map_err(|e| ApiError::name_invalid(format!("invalid image \"{}\": {e}", asked.image)))
}

/// The JSON body of an admin API request, at most `max` bytes, of the shape `shape` describes
/// (for the 400 that says what was expected).
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
    max: usize,
    shape: &str,
) -> Result<T, ApiError> {
    let bad =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, message);
    let body = Limited::new(request.into_body(), max)
        .collect()
        .await
        .map_err(|e| {
            bad(format!(
                "cannot read the request body (at most {max} bytes): {e}"
            ))
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| bad(format!("the body must be {shape}: {e}")))
}

/// Whether the client at `peer`, on the listener bound to `local`, may use an admin API (the
/// warm API, withdrawals): anyone on this host; from elsewhere, a client with valid credentials
/// of `clients` whose name is in `warm.admins`.
pub(super) async fn allowed(
    access: &Access,
    is_admin: impl Fn(&str) -> bool,
    headers: &HeaderMap,
    local: SocketAddr,
    peer: SocketAddr,
) -> Result<(), ApiError> {
    let Some(client) = super::operator_client::client(
        access,
        JOBS,
        headers,
        local,
        peer,
        "the warm API is served to clients on this host, or to clients named in warm.admins (clients.mode is anonymous)",
    )
    .await?
    else {
        return Ok(());
    };
    match client.name() {
        Some(name) if is_admin(name) => Ok(()),
        name => {
            let who = name.unwrap_or("anonymous");
            tracing::info!(%peer, client = who, "refused: the warm API to a client not in warm.admins");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                format!("{who} may not use the warm API: it is not listed in warm.admins"),
            ))
        }
    }
}

/// `value` as a JSON answer with `status`.
pub(super) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = Bytes::from(serde_json::to_vec_pretty(value).unwrap_or_default());
    let mut response = super::status_endpoint::json(body, false);
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientMode, ClientsConfig};

    const OPS: &str = "0123456789abcdef0123";
    const PULLER: &str = "fedcba9876543210fedc";

    fn token_access(dir: &std::path::Path) -> Access {
        let file = dir.join("tokens.yaml");
        std::fs::write(
            &file,
            format!("tokens:\n- name: ops\n  token: {OPS}\n- name: puller\n  token: {PULLER}\n"),
        )
        .unwrap();
        Access::load(&ClientsConfig {
            mode: ClientMode::Token,
            htpasswd_file: None,
            tokens_file: Some(file),
            scopes: Default::default(),
            trust_loopback: true,
        })
        .unwrap()
    }

    async fn status_of(access: &Access, local: &str, peer: &str, token: Option<&str>) -> u16 {
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        let admins = |name: &str| name == "ops";
        match allowed(
            access,
            admins,
            &headers,
            local.parse().unwrap(),
            peer.parse().unwrap(),
        )
        .await
        {
            Ok(()) => 200,
            Err(refusal) => refusal.into_response(false).status().as_u16(),
        }
    }

    #[tokio::test]
    async fn only_this_host_and_named_admins_may_start_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let anonymous = Access::anonymous();
        let tokens = token_access(dir.path());
        let answers = [
            // This host: a loopback listener, or a loopback peer of a wildcard listener.
            status_of(&anonymous, "127.0.0.1:9090", "127.0.0.1:40000", None).await,
            status_of(&anonymous, "0.0.0.0:9090", "127.0.0.1:40000", None).await,
            // From elsewhere: never anonymous, not any client, only a named admin.
            status_of(&anonymous, "0.0.0.0:9090", "10.1.2.3:40000", None).await,
            status_of(&tokens, "0.0.0.0:9090", "10.1.2.3:40000", None).await,
            status_of(&tokens, "0.0.0.0:9090", "10.1.2.3:40000", Some(PULLER)).await,
            status_of(&tokens, "0.0.0.0:9090", "10.1.2.3:40000", Some(OPS)).await,
        ];
        assert_eq!(answers, [200, 200, 403, 401, 403, 200]);
    }
}
