//! Serving each request from the pull sources the rules give.
//!
//! Principal types: [`Proxy`] (built from [`ProxySettings`]), [`Served`] (what a request is
//! answered with; `http` renders it), [`Error`] (why a request was not served; `http::error` maps
//! it to HTTP), [`Route`], [`Repository`] and [`Body`].
//!
//! The rooms, by concern: what a reload swaps (`in_force`: rules, reachability, access, the
//! upstream client); where content comes from (`sources`: fetch slots, back-off, `health`, the
//! sources remembered per repository and blob; `attempt`: one upstream attempt and its failure);
//! whether cached content may be served for a repository (`cached`); the request handlers
//! (`manifest`, `blob`, `listing`, `ensure`, `withdraw`), which answer with domain values
//! (`served`: [`Served`], which `http` renders); and what `/status` reports (`report`,
//! `reloads`). The proxy (`open`) holds them with the cache tiers (`crate::cache::Tiers`).
//!
//! Every request names a *logical* image (what the client asked for). The rule set turns it into
//! ordered pull sources (`RuleSet::resolve`), and the proxy tries them in order until one
//! answers: a manifest by digest along the digest route, by tag along the tag route (`manifest`);
//! a blob from the source that recently served this repository's manifest, then the digest route,
//! then the tag route's mirrors, since content addressing makes each of them safe (`blob`); tag
//! lists along the tag route and referrers along the digest route (`listing`). A blocked source is
//! never contacted. Everything fetched by digest is verified (`verify`).

mod accept;
mod admission;
mod attempt;
mod backoff;
mod blob;
mod body;
mod cached;
mod ensure;
mod error;
mod health;
mod in_force;
mod listing;
mod manifest;
mod open;
mod reach;
mod reloads;
mod report;
mod repository;
mod route;
mod served;
mod sources;
mod withdraw;
/// Content verification lives with the stores that only ever take verified bytes.
pub use crate::cache::verify;

pub use crate::cache::WithdrawError;
pub use admission::Admission;
pub use body::{Body, bytes_response, empty_body, full_body};
pub use cached::serving_client;
pub use error::{Error, Missing, Tried};
pub use in_force::RULES_INCOMPLETE;
pub use open::{OpenError, Proxy, ProxySettings};
pub use reach::Reachable;
pub use repository::Repository;
pub use route::Route;
pub use served::{BlobRange, BlobStream, OCI_FILTERS_APPLIED, Served, ServedBlob};
