//! Listings no mirror rule speaks of, routed by the most faithful reading of the rules: tag lists
//! along the tag route (ITMS mirrors, then the source), referrers along the digest route (IDMS and
//! ICSP mirrors, then the source). A tag list is answered under the name the client asked for,
//! with its pagination link leading back through the proxy.

use http::{HeaderMap, HeaderValue, Method, header};
use serde::Deserialize;
use serde_json::Value;

use super::admission::FetchSlot;
use super::attempt::{AttemptFailure, Failure, exhausted, summary};
use super::error::{Error, Missing};
use super::manifest::read_bounded;
use super::open::Proxy;
use super::repository::Repository;
use super::route::Route;
use super::served::{OCI_FILTERS_APPLIED, Served};
use crate::cache::MAX_MANIFEST_BYTES;
use crate::reference::{Digest, Reference};
use crate::upstream::UpstreamRequest;

/// The largest listing accepted from an upstream.
const MAX_LISTING_BYTES: usize = MAX_MANIFEST_BYTES;

impl Proxy {
    /// `GET /v2/<name>/tags/list[?n=…&last=…]`.
    pub async fn tags_list(
        &self,
        repository: &Repository,
        n: Option<usize>,
        last: Option<&str>,
        head: bool,
    ) -> Result<Served, Error> {
        let logical = &repository.reference;
        let query = page_query(n, last, None);
        let (physical, upstream, _slot) = self
            .first_listing(logical, "tag list", Route::Tags, "tags/list", query, None)
            .await?;
        let has_next = upstream.headers().get(header::LINK).is_some();
        let bytes = read_bounded(upstream, MAX_LISTING_BYTES)
            .await
            .map_err(|e| listing_error(&physical, e))?;
        let tags = tag_list(&bytes).map_err(|e| {
            listing_error(
                &physical,
                AttemptFailure::Body(format!("invalid tag list: {e}")),
            )
        })?;
        let last_tag = tags.as_ref().and_then(|tags| tags.last()).cloned();
        // The upstream names its own (physical) repository; the client asked for the logical one.
        let list = serde_json::json!({"name": repository.client_name, "tags": tags});
        let body = bytes::Bytes::from(list.to_string());
        let mut link = None;
        if has_next && let Some(last_tag) = last_tag {
            let next = page_query(n, Some(&last_tag), repository.ns.as_deref()).unwrap_or_default();
            let next_link = format!(
                "</v2/{}/tags/list?{next}>; rel=\"next\"",
                repository.client_name
            );
            link = HeaderValue::from_str(&next_link).ok();
        }
        Ok(Served::List {
            content_type: "application/json".to_owned(),
            body,
            head,
            link,
            filters: None,
        })
    }

    /// `GET /v2/<name>/referrers/<digest>[?artifactType=…]`, and its next pages. Never cached:
    /// the list changes whenever an artifact naming the subject is pushed.
    pub async fn referrers(
        &self,
        repository: &Repository,
        digest: &Digest,
        artifact_type: Option<&str>,
        page: &[(String, String)],
        head: bool,
    ) -> Result<Served, Error> {
        let logical = repository.with_digest(digest);
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(artifact_type) = artifact_type {
                query.append_pair("artifactType", artifact_type);
            }
            query.extend_pairs(page);
            Some(query.finish()).filter(|q| !q.is_empty())
        };
        let (physical, upstream, _slot) = self
            .first_listing(
                &logical,
                "referrers of",
                Route::Referrers,
                &format!("referrers/{digest}"),
                query,
                Some(HeaderValue::from_static(
                    "application/vnd.oci.image.index.v1+json",
                )),
            )
            .await?;
        let filters = upstream.headers().get(OCI_FILTERS_APPLIED).cloned();
        let next = next_page_query(upstream.headers());
        let content_type = upstream
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/vnd.oci.image.index.v1+json")
            .to_owned();
        let bytes = read_bounded(upstream, MAX_LISTING_BYTES)
            .await
            .map_err(|e| listing_error(&physical, e))?;
        let mut link = None;
        if let Some(next) = next {
            // The upstream's page parameters, under the client's name (and its `ns`).
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.extend_pairs(next.iter().filter(|(k, _)| k != "ns"));
            if let Some(ns) = &repository.ns {
                query.append_pair("ns", ns);
            }
            let query = query.finish();
            let separator = if query.is_empty() { "" } else { "?" };
            let next_link = format!(
                "</v2/{}/referrers/{digest}{separator}{query}>; rel=\"next\"",
                repository.client_name
            );
            link = HeaderValue::from_str(&next_link).ok();
        }
        Ok(Served::List {
            content_type,
            body: bytes,
            head,
            link,
            filters,
        })
    }

    /// Tries the pull sources of `logical` for `/v2/<path>/<endpoint>` and returns the first
    /// answer, with the fetch slot to hold while its body is read.
    async fn first_listing(
        &self,
        logical: &Reference,
        what: &str,
        route: Route,
        endpoint: &str,
        query: Option<String>,
        accept: Option<HeaderValue>,
    ) -> Result<(Reference, reqwest::Response, FetchSlot), Error> {
        let mut resolution = self
            .rules()
            .resolve(logical)
            .map_err(|e| self.refuse(route, e))?;
        self.reachable_only(logical, &mut resolution.sources, |s| {
            (s.reference.domain(), s.role)
        })?;
        let slot = self.sources.fetch_slots.acquire(logical.as_str()).await?;
        let mut failures = Vec::new();
        for source in &resolution.sources {
            self.note_attempt(source.role, &failures, route);
            let physical = &source.reference;
            let mut headers = HeaderMap::new();
            if let Some(accept) = &accept {
                headers.insert(header::ACCEPT, accept.clone());
            }
            let request = UpstreamRequest {
                method: Method::GET,
                registry: physical.domain().to_owned(),
                repository: physical.path().to_owned(),
                path: format!("/v2/{}/{endpoint}", physical.path()),
                query: query.clone(),
                headers,
                follow_redirects: false,
            };
            match self.attempt(request, source.role, route).await {
                Ok(response) => {
                    if !failures.is_empty() {
                        self.metrics.proxy.fallback(route.as_str());
                    }
                    tracing::info!(
                        reference = %logical,
                        served_by = %physical,
                        role = %source.role,
                        failed = %summary(&failures),
                        "{what} served"
                    );
                    return Ok((physical.clone(), response, slot));
                }
                Err(error) => failures.push(Failure {
                    reference: physical.clone(),
                    role: source.role,
                    reason: AttemptFailure::Upstream(error),
                }),
            }
        }
        let missing = if route == Route::Tags {
            Missing::Repository
        } else {
            Missing::Manifest
        };
        Err(exhausted(what, logical.name(), &failures, missing))
    }
}

/// The query of a tag list page (`n`, `last`, and `ns` for links back to the client).
fn page_query(n: Option<usize>, last: Option<&str>, ns: Option<&str>) -> Option<String> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(n) = n {
        query.append_pair("n", &n.to_string());
    }
    if let Some(last) = last {
        query.append_pair("last", last);
    }
    if let Some(ns) = ns {
        query.append_pair("ns", ns);
    }
    Some(query.finish()).filter(|q| !q.is_empty())
}

/// The query parameters of the `rel="next"` target among an upstream's `Link` headers (RFC 8288:
/// `<URI-reference>; param…`, comma-separated), if it names one.
fn next_page_query(headers: &HeaderMap) -> Option<Vec<(String, String)>> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(link_values)
        .find(|(_, params)| {
            params.split(';').any(|param| {
                param.split_once('=').is_some_and(|(name, value)| {
                    name.trim().eq_ignore_ascii_case("rel")
                        && value
                            .trim()
                            .trim_matches('"')
                            .split_ascii_whitespace()
                            .any(|rel| rel.eq_ignore_ascii_case("next"))
                })
            })
        })
        .map(|(target, _)| {
            let query = target
                .split_once('?')
                .map_or("", |(_, q)| q.split('#').next().unwrap_or(""));
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
}

/// The `(target, parameters)` of each link-value of one `Link` header: a target is in `<…>`, so
/// a comma inside it separates nothing.
fn link_values(header: &str) -> Vec<(&str, &str)> {
    let mut values = Vec::new();
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let Some(end) = rest[start..].find('>') else {
            break;
        };
        let target = &rest[start + 1..start + end];
        let after = &rest[start + end + 1..];
        let params_end = after.find(',').unwrap_or(after.len());
        values.push((target, &after[..params_end]));
        rest = &after[params_end..];
    }
    values
}

/// The tags of an upstream's tag list: an object whose `tags` is a list of strings, or null
/// (what Distribution answers for a repository without tags). Anything else is no tag list.
fn tag_list(bytes: &[u8]) -> Result<Option<Vec<String>>, String> {
    // An object first: a struct would also accept a JSON array of its fields.
    let list: serde_json::Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON object ({e})"))?;
    match list.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(tags) => Vec::<String>::deserialize(tags)
            .map(Some)
            .map_err(|e| format!("tags: {e}")),
    }
}

/// A listing that answered but could not be read.
fn listing_error(physical: &Reference, failure: AttemptFailure) -> Error {
    Error::Upstream(format!("{}: {failure}", physical.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_the_query_of_the_link_whose_rel_is_next() {
        let next = |links: &[&str]| {
            let mut headers = HeaderMap::new();
            for link in links {
                headers.append(header::LINK, HeaderValue::from_str(link).unwrap());
            }
            next_page_query(&headers)
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            [
                next(&[r#"</v2/ns/app/referrers/sha256:1?n=2&last=sha256%3Ab>; rel="next""#]),
                next(&[
                    r#"<https://r.example/v2/a/referrers/x?a=1,2>; rel=prev, </v2/a/referrers/x?c=3>; rel="next""#
                ]),
                next(&[
                    r#"</v2/a/referrers/x?c=1>; rel=prev"#,
                    r#"</v2/a/referrers/x>; rel=next"#
                ]),
                next(&[r#"</v2/a/referrers/x?c=1>; rel="prev""#]),
                next(&[]),
            ],
            [
                Some(vec![pair("n", "2"), pair("last", "sha256:b")]),
                Some(vec![pair("c", "3")]),
                Some(vec![]),
                None,
                None,
            ]
        );
    }

    #[test]
    fn a_tag_list_is_an_object_of_string_tags_or_null_tags() {
        let read = |body: &str| tag_list(body.as_bytes()).map_err(|_| "refused");
        assert_eq!(
            [
                read(r#"{"name":"ns/app","tags":["v1","v2"]}"#),
                read(r#"{"name":"ns/app","tags":null}"#),
                read("[]"),
                read(r#"[["v1"]]"#),
                read(r#""x""#),
                read("42"),
                read(r#"{"tags":42}"#),
                read(r#"{"tags":[1,2]}"#),
            ],
            [
                Ok(Some(vec!["v1".to_owned(), "v2".to_owned()])),
                Ok(None),
                Err("refused"),
                Err("refused"),
                Err("refused"),
                Err("refused"),
                Err("refused"),
                Err("refused"),
            ]
        );
    }
}
