//! Withdrawn content (`mirrorgate deny`): the proxy refuses a withdrawn digest before any tier or
//! upstream is asked for it, by digest or through a tag that leads to it, and an operator's
//! withdrawal deletes it from the tiers. The set itself is the cache's
//! ([`crate::cache::withdrawn`]).

use super::{Error, Missing, Proxy, Route};
use crate::cache::withdrawn::{Withdrawal, WithdrawnError};
use crate::reference::Digest;
use std::collections::BTreeMap;
use std::sync::Arc;

impl Proxy {
    /// Withdraws `digests` for `reason` and deletes them from the local tiers; the digests newly
    /// withdrawn.
    pub fn withdraw(
        &self,
        digests: &[Digest],
        reason: &str,
    ) -> Result<Vec<Digest>, WithdrawnError> {
        let added = self.cache.withdraw(digests, reason)?;
        for digest in &added {
            tracing::warn!(%digest, reason, "digest withdrawn by an operator: refused and deleted from the cache");
        }
        self.metrics.withdrawn_digests(self.cache.withdrawn.len());
        Ok(added)
    }

    /// Lifts the withdrawal of `digests`; those that were withdrawn.
    pub fn allow(&self, digests: &[Digest]) -> Result<Vec<Digest>, WithdrawnError> {
        let lifted = self.cache.withdrawn.allow(digests)?;
        for digest in &lifted {
            tracing::warn!(%digest, "withdrawal lifted by an operator: the digest may be served again");
        }
        self.metrics.withdrawn_digests(self.cache.withdrawn.len());
        Ok(lifted)
    }

    /// Every withdrawn digest, with why and when.
    pub fn withdrawn(&self) -> Arc<BTreeMap<String, Withdrawal>> {
        self.cache.withdrawn.list()
    }

    /// Refuses content an operator withdrew, before any tier or upstream is asked for it.
    pub(super) fn refuse_withdrawn(
        &self,
        digest: &str,
        missing: Missing,
        route: Route,
    ) -> Result<(), Error> {
        match self.cache.withdrawn.get(digest) {
            None => Ok(()),
            Some(withdrawal) => {
                self.metrics.withdrawn_refused(route.as_str());
                tracing::info!(digest, reason = %withdrawal.reason, "withdrawn digest refused");
                Err(Error::Withdrawn {
                    missing,
                    digest: digest.to_owned(),
                    reason: withdrawal.reason,
                })
            }
        }
    }
}
