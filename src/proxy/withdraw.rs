//! Withdrawn content (`mirrorgate deny`): the proxy refuses a withdrawn digest before any tier or
//! upstream is asked for it, by digest or through a tag that leads to it, and an operator's
//! withdrawal deletes it from the tiers. The set itself is the cache's
//! ([`crate::cache::withdrawn`]).
//!
//! With `cache.shared` and its key, the bucket holds the fleet's record: a withdrawal is written
//! there first (sealed, so a planted record withdraws nothing) and the shared copies are deleted;
//! if that fails nothing changes, so replicas never disagree on what an operator was told is
//! withdrawn. Every replica reads the record every [`REFRESH`] and takes it as its own set.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::error::{Error, Missing};
use super::open::Proxy;
use super::route::Route;
use crate::cache::WithdrawError;
use crate::cache::Withdrawal;
use crate::reference::Digest;

/// How often a replica reads the shared record of withdrawals.
pub const REFRESH: Duration = Duration::from_secs(10);

impl Proxy {
    /// Withdraws `digests` for `reason`, on every replica sharing the bucket's key, and deletes
    /// them from the tiers; the digests newly withdrawn here.
    pub async fn withdraw(
        &self,
        digests: &[Digest],
        reason: &str,
    ) -> Result<Vec<Digest>, WithdrawError> {
        // One withdrawal, the same in the bucket and here.
        let withdrawal = Withdrawal::now(reason);
        let added = self.tiers.withdraw(digests, &withdrawal).await?;
        for digest in &added {
            tracing::warn!(%digest, reason, "digest withdrawn by an operator: refused and deleted from the cache");
        }
        self.metrics
            .proxy
            .withdrawn_digests(self.tiers.withdrawn_len());
        Ok(added)
    }

    /// Lifts the withdrawal of `digests` (in the bucket too); those that were withdrawn here.
    pub async fn allow(&self, digests: &[Digest]) -> Result<Vec<Digest>, WithdrawError> {
        let lifted = self.tiers.allow(digests).await?;
        for digest in &lifted {
            tracing::warn!(%digest, "withdrawal lifted by an operator: the digest may be served again");
        }
        self.metrics
            .proxy
            .withdrawn_digests(self.tiers.withdrawn_len());
        Ok(lifted)
    }

    /// Every withdrawn digest, with why and when.
    pub fn withdrawn(&self) -> Arc<BTreeMap<String, Withdrawal>> {
        self.tiers.withdrawn()
    }

    /// Takes the shared record of withdrawals as this replica's set, and deletes what it newly
    /// withdraws from the local tiers. Nothing without a shared store and its key; a record that
    /// cannot be read leaves the set as it is (logged).
    pub async fn refresh_withdrawn(&self) {
        if let Some(purged) = self.tiers.refresh_withdrawn().await {
            tracing::info!(
                withdrawn = self.tiers.withdrawn_len(),
                purged,
                "withdrawn digests taken from the shared store"
            );
            self.metrics
                .proxy
                .withdrawn_digests(self.tiers.withdrawn_len());
        }
    }

    /// Reads the shared record of withdrawals every 10 s (`REFRESH`), for as long as the proxy
    /// lives.
    pub async fn follow_withdrawn(self: Arc<Self>) {
        if !self.tiers.shares_withdrawals() {
            return;
        }
        let mut ticks = tokio::time::interval(REFRESH);
        loop {
            ticks.tick().await;
            self.refresh_withdrawn().await;
        }
    }

    /// Refuses content an operator withdrew, before any tier or upstream is asked for it.
    pub(super) fn refuse_withdrawn(
        &self,
        digest: &str,
        missing: Missing,
        route: Route,
    ) -> Result<(), Error> {
        match self.tiers.withdrawal(digest) {
            None => Ok(()),
            Some(withdrawal) => {
                self.metrics.proxy.withdrawn_refused(route.as_str());
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
