//! Who is asking an operator endpoint that is not for anyone (`/status`, the admin APIs):
//! this host, or a client the `clients` section authenticates. Apart from the router
//! (`operator`) so that the endpoints it dispatches to can ask without importing it back.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};

use super::error::{ApiError, ErrorCode};
use crate::access::{Access, Client};

/// The headers by which a proxy says it forwards a request for another client: a front on
/// this host connects from loopback, so without them its clients would be taken for this
/// host's.
const FORWARDING: [&str; 4] = ["forwarded", "x-forwarded-for", "x-real-ip", "via"];

/// Who may use an endpoint for operators (`/status`, the admin APIs) at `path`: anyone on this
/// host (`None`: the listener or the peer is loopback, no proxy forwarded the request and
/// `clients.trust_loopback` holds); from elsewhere, the client `access` authenticates, never an
/// anonymous one (`anonymous_refusal` says what to do instead).
pub(super) async fn client(
    access: &Access,
    path: &str,
    headers: &HeaderMap,
    local: SocketAddr,
    peer: SocketAddr,
    anonymous_refusal: &str,
) -> Result<Option<Arc<Client>>, ApiError> {
    if local.ip().is_loopback() || peer.ip().is_loopback() {
        let forwarded = FORWARDING.iter().find(|name| headers.contains_key(**name));
        match forwarded {
            None if access.trusts_loopback() => return Ok(None),
            None => {
                tracing::debug!(%peer, path, "a client on this host, not trusted by itself (clients.trust_loopback: false)");
            }
            Some(header) => {
                tracing::debug!(%peer, path, header, "a request forwarded by a proxy on this host: not trusted as this host's");
            }
        }
    }
    if access.is_anonymous() {
        tracing::info!(%peer, path, "refused: an operator endpoint to an anonymous client from elsewhere");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            anonymous_refusal,
        ));
    }
    let client = access
        .authenticate(path, headers, Some(peer.ip()))
        .await
        .map_err(ApiError::unauthorized)?;
    Ok(Some(client))
}
