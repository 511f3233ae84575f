//! Loops refused, never amplified: the `Via` header (RFC 9110 §7.6.3).
//!
//! Every request mirrorgate sends to a registry carries `Via`: the chain the client's request
//! arrived with, then `1.1 <token>`, where [`ViaToken`] names this deployment. A request that
//! arrives with our own token in its chain has been round a loop (mirrorgates whose rules send a
//! repository to each other, or one whose mirror is itself under a name it does not know) and is
//! refused with 508 before anything is contacted, so a loop costs one refused request instead of
//! a storm.
//!
//! The chain received travels with the work it causes through a task-local ([`serving`] around
//! a client request); work handed to another task (a shared fetch, a blob download) takes it
//! along with [`carried`]. [`super::Upstream::send`] is the one place that writes the header.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderValue, header};

tokio::task_local! {
    /// The `Via` chain of the client request being served, if it had one.
    static RECEIVED: Option<Arc<str>>;
}

/// The name of this deployment in `Via` (a token, or `host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaToken(Arc<str>);

impl ViaToken {
    /// The configured token, or this process's default: `mirrorgate-<host name>-<pid>`, unique
    /// per process (replicas do not share it unless the configuration sets one) and stable across
    /// reloads.
    pub fn new(configured: Option<&str>) -> ViaToken {
        match configured {
            Some(token) => ViaToken(token.into()),
            None => ViaToken(process_default().clone()),
        }
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `headers` carry a `Via` chain that names this token: the request is a loop.
    pub fn is_received_in(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::VIA)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|entry| {
                // `received-protocol received-by [comment]`
                let mut parts = entry.split_whitespace();
                let _protocol = parts.next();
                parts
                    .next()
                    .is_some_and(|by| by.eq_ignore_ascii_case(&self.0))
            })
    }

    /// The `Via` value for a request sent now: the chain received by the request being served,
    /// if any, then this hop.
    pub(crate) fn outgoing(&self) -> HeaderValue {
        let hop = format!("1.1 {}", self.0);
        let value = match RECEIVED.try_with(Clone::clone).ok().flatten() {
            Some(chain) => format!("{chain}, {hop}"),
            None => hop,
        };
        // Both parts are header-safe (the chain came in as header values, the token is checked
        // by the configuration); fall back to this hop alone rather than fail a request.
        HeaderValue::try_from(value).unwrap_or_else(|_| {
            HeaderValue::try_from(format!("1.1 {}", self.0))
                .unwrap_or_else(|_| HeaderValue::from_static("1.1 mirrorgate"))
        })
    }
}

/// The `Via` chain a request arrived with: its `Via` header lines joined, or `None`.
pub fn received(headers: &HeaderMap) -> Option<Arc<str>> {
    let values: Vec<&str> = headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    (!values.is_empty()).then(|| values.join(", ").into())
}

/// Runs `work` (the serving of one client request) with the `Via` chain it arrived with, so that
/// the upstream requests it causes extend that chain.
pub async fn serving<F: Future>(chain: Option<Arc<str>>, work: F) -> F::Output {
    RECEIVED.scope(chain, work).await
}

/// `work` with the `Via` chain of the request being served now, for work that runs in another
/// task (spawned fetches) and must extend the same chain.
pub fn carried<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let chain = RECEIVED.try_with(Clone::clone).ok().flatten();
    RECEIVED.scope(chain, work)
}

/// `mirrorgate-<host name>-<pid>`, with anything outside the token characters replaced by `-`.
fn process_default() -> &'static Arc<str> {
    static DEFAULT: OnceLock<Arc<str>> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("mirrorgate-{host}-{}", std::process::id()).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(vias: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for via in vias {
            headers.append(header::VIA, HeaderValue::from_str(via).unwrap());
        }
        headers
    }

    #[test]
    fn our_token_anywhere_in_the_chain_is_a_loop() {
        let token = ViaToken::new(Some("mirrorgate.mirrorgate.svc"));
        assert_eq!(
            (
                token.is_received_in(&headers(&["1.1 mirrorgate.mirrorgate.svc"])),
                token.is_received_in(&headers(&[
                    "1.1 edge (nginx)",
                    "1.1 other, 1.1 Mirrorgate.Mirrorgate.svc"
                ])),
                token.is_received_in(&headers(&["1.1 mirrorgate.mirrorgate.svc.other"])),
                token.is_received_in(&headers(&[])),
            ),
            (true, true, false, false)
        );
    }

    #[tokio::test]
    async fn an_upstream_request_extends_the_chain_received() {
        let token = ViaToken::new(Some("b"));
        let alone = token.outgoing();
        let chain = received(&headers(&["1.0 proxy", "1.1 a"]));
        let extended = serving(chain, async { token.outgoing() }).await;
        assert_eq!(
            (alone.to_str().unwrap(), extended.to_str().unwrap()),
            ("1.1 b", "1.0 proxy, 1.1 a, 1.1 b")
        );
    }

    #[tokio::test]
    async fn a_spawned_fetch_carries_the_chain_of_the_request_that_started_it() {
        let token = ViaToken::new(Some("b"));
        let chain = received(&headers(&["1.1 a"]));
        let spawned = serving(chain, async {
            let token = token.clone();
            tokio::spawn(carried(async move { token.outgoing() }))
                .await
                .unwrap()
        })
        .await;
        assert_eq!(spawned.to_str().unwrap(), "1.1 a, 1.1 b");
    }

    #[test]
    fn the_default_token_names_the_host_and_process() {
        let token = ViaToken::new(None);
        assert_eq!(
            (
                token.as_str().starts_with("mirrorgate-"),
                token
                    .as_str()
                    .ends_with(&format!("-{}", std::process::id())),
                token == ViaToken::new(None),
            ),
            (true, true, true)
        );
    }
}
