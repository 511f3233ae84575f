//! `GET /status`: the proxy's [`Status`](crate::status_report::Status) as JSON, for `mirrorgate
//! status`. Served where `/metrics` is (on `metrics_listen` when that is set, else on `listen`).
//!
//! It tells whoever reads it the rules, the registries and their errors, so it is never open
//! to anonymous clients from elsewhere: a client on the same host (a loopback listener, or a
//! loopback peer such as `kubectl exec … mirrorgate status`) needs nothing; any other needs
//! the credentials of `clients` (and is refused when `clients.mode` is `anonymous`). A request
//! that a proxy forwarded (one on this host reaches mirrorgate from loopback) is from
//! elsewhere, and so is every request with `clients.trust_loopback: false`.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, header};

use super::error::ApiError;
use super::{Body, empty_body, full_body};
use crate::access::Access;
use crate::proxy::Proxy;

/// The path.
pub const PATH: &str = "/status";

/// Answers `/status` on a listener bound to `local`, for a client at `peer`.
pub async fn answer(
    proxy: &Proxy,
    method: &Method,
    headers: &HeaderMap,
    local: SocketAddr,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let head = method == Method::HEAD;
    let response = match allowed(&proxy.access(), method, headers, local, peer).await {
        Ok(()) => {
            let body = serde_json::to_vec_pretty(&proxy.status()).unwrap_or_default();
            json(Bytes::from(body), head)
        }
        Err(refusal) => refusal,
    };
    let method = match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    };
    proxy.metrics().http.request(
        crate::proxy::Route::Status.as_str(),
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Whether the client at `peer`, on the listener bound to `local`, may read `/status`: anyone on
/// this host; from elsewhere, a client with valid credentials of `access` (none in `anonymous`
/// mode). `Err` is the refusal.
async fn allowed(
    access: &Access,
    method: &Method,
    headers: &HeaderMap,
    local: SocketAddr,
    peer: SocketAddr,
) -> Result<(), Response<Body>> {
    let head = method == Method::HEAD;
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(ApiError::unsupported(method).into_response(head));
    }
    super::operator_client::client(
        access,
        PATH,
        headers,
        local,
        peer,
        "/status is served to clients on this host, or with the credentials of `clients` (clients.mode is anonymous)",
    )
    .await
    .map(|_| ())
    .map_err(|refusal| refusal.into_response(head))
}

/// A JSON answer of `body` (its head alone for `HEAD`); also the warm API's.
pub(super) fn json(body: Bytes, head: bool) -> Response<Body> {
    let length = body.len();
    let mut response = Response::new(if head { empty_body() } else { full_body(body) });
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientMode, ClientsConfig};

    const TOKEN: &str = "0123456789abcdef0123";

    fn token_access(dir: &std::path::Path, trust_loopback: bool) -> Access {
        let file = dir.join("tokens.yaml");
        std::fs::write(&file, format!("tokens:\n- name: ops\n  token: {TOKEN}\n")).unwrap();
        Access::load(&ClientsConfig {
            mode: ClientMode::Token,
            htpasswd_file: None,
            tokens_file: Some(file),
            scopes: Default::default(),
            trust_loopback,
        })
        .unwrap()
    }

    async fn status_of(
        access: &Access,
        local: &str,
        peer: &str,
        authorization: Option<String>,
    ) -> u16 {
        let headers = authorization
            .map(|value| ("authorization", value))
            .into_iter()
            .collect::<Vec<_>>();
        status_with(access, local, peer, &headers).await
    }

    async fn status_with(
        access: &Access,
        local: &str,
        peer: &str,
        fields: &[(&'static str, String)],
    ) -> u16 {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.insert(*name, value.parse().unwrap());
        }
        match allowed(
            access,
            &Method::GET,
            &headers,
            local.parse().unwrap(),
            peer.parse().unwrap(),
        )
        .await
        {
            Ok(()) => 200,
            Err(refusal) => refusal.status().as_u16(),
        }
    }

    #[tokio::test]
    async fn clients_on_this_host_need_nothing_and_others_need_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let anonymous = Access::anonymous();
        let tokens = token_access(dir.path(), true);
        let bearer = Some(format!("Bearer {TOKEN}"));
        let answers = [
            // A loopback listener, or a wildcard one reached from this host (`kubectl exec`).
            status_of(&anonymous, "127.0.0.1:5000", "127.0.0.1:40000", None).await,
            status_of(&anonymous, "0.0.0.0:5000", "127.0.0.1:40000", None).await,
            status_of(&anonymous, "[::]:5000", "[::1]:40000", None).await,
            // From elsewhere: never anonymous, even with anonymous pulls.
            status_of(&anonymous, "0.0.0.0:5000", "10.1.2.3:40000", None).await,
            status_of(&tokens, "0.0.0.0:5000", "10.1.2.3:40000", None).await,
            status_of(
                &tokens,
                "0.0.0.0:5000",
                "10.1.2.3:40000",
                Some("Bearer nope-nope-nope-nope".into()),
            )
            .await,
            status_of(&tokens, "0.0.0.0:5000", "10.1.2.3:40000", bearer).await,
        ];
        assert_eq!(answers, [200, 200, 200, 403, 401, 401, 200]);
    }

    #[tokio::test]
    async fn a_request_a_proxy_on_this_host_forwarded_is_not_this_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let anonymous = Access::anonymous();
        let tokens = token_access(dir.path(), true);
        let bearer = ("authorization", format!("Bearer {TOKEN}"));
        let forwarded = |name: &'static str, value: &str| (name, value.to_owned());
        let answers = [
            status_with(
                &anonymous,
                "127.0.0.1:5000",
                "127.0.0.1:40000",
                &[forwarded("x-forwarded-for", "203.0.113.9")],
            )
            .await,
            status_with(
                &anonymous,
                "0.0.0.0:5000",
                "127.0.0.1:40000",
                &[forwarded("forwarded", "for=203.0.113.9")],
            )
            .await,
            status_with(
                &anonymous,
                "127.0.0.1:5000",
                "127.0.0.1:40000",
                &[forwarded("x-real-ip", "203.0.113.9")],
            )
            .await,
            status_with(
                &anonymous,
                "127.0.0.1:5000",
                "127.0.0.1:40000",
                &[forwarded("via", "1.1 front")],
            )
            .await,
            status_with(
                &tokens,
                "127.0.0.1:5000",
                "127.0.0.1:40000",
                &[forwarded("x-forwarded-for", "203.0.113.9")],
            )
            .await,
            // Forwarded with an operator's credentials: served.
            status_with(
                &tokens,
                "127.0.0.1:5000",
                "127.0.0.1:40000",
                &[forwarded("x-forwarded-for", "203.0.113.9"), bearer],
            )
            .await,
        ];
        assert_eq!(answers, [403, 403, 403, 403, 401, 200]);
    }

    #[tokio::test]
    async fn without_trust_in_loopback_a_client_on_this_host_needs_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = token_access(dir.path(), false);
        let answers = [
            status_of(&tokens, "127.0.0.1:5000", "127.0.0.1:40000", None).await,
            status_of(
                &tokens,
                "0.0.0.0:5000",
                "127.0.0.1:40000",
                Some(format!("Bearer {TOKEN}")),
            )
            .await,
        ];
        assert_eq!(answers, [401, 200]);
    }
}
