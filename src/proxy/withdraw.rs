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

use super::{Error, Missing, Proxy, Route};
use crate::cache::shared::SharedError;
use crate::cache::withdrawn::{Withdrawal, WithdrawnError};
use crate::reference::Digest;

/// How often a replica reads the shared record of withdrawals.
pub const REFRESH: Duration = Duration::from_secs(10);

/// Why a withdrawal (or its lifting) was not made.
#[derive(Debug, thiserror::Error)]
pub enum WithdrawError {
    /// The local list could not be written.
    #[error(transparent)]
    Local(#[from] WithdrawnError),
    /// The shared store could not record it; nothing changed.
    #[error("the shared store could not record it, so no replica's list changed: {0}")]
    Shared(#[from] SharedError),
}

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
        if let Some(tier) = &self.shared {
            // A record is whole lines: the seal is the line after them.
            let record =
                serde_json::to_string(&withdrawal).expect("a withdrawal serialises") + "\n";
            for digest in digests {
                tier.store().withdraw(digest, &record).await?;
            }
        }
        let added = self.cache.withdraw(digests, &withdrawal)?;
        for digest in &added {
            tracing::warn!(%digest, reason, "digest withdrawn by an operator: refused and deleted from the cache");
        }
        self.metrics
            .proxy
            .withdrawn_digests(self.cache.withdrawn.len());
        Ok(added)
    }

    /// Lifts the withdrawal of `digests` (in the bucket too); those that were withdrawn here.
    pub async fn allow(&self, digests: &[Digest]) -> Result<Vec<Digest>, WithdrawError> {
        if let Some(tier) = &self.shared {
            for digest in digests {
                tier.store().allow(digest).await?;
            }
        }
        let lifted = self.cache.withdrawn.allow(digests)?;
        for digest in &lifted {
            tracing::warn!(%digest, "withdrawal lifted by an operator: the digest may be served again");
        }
        self.metrics
            .proxy
            .withdrawn_digests(self.cache.withdrawn.len());
        Ok(lifted)
    }

    /// Every withdrawn digest, with why and when.
    pub fn withdrawn(&self) -> Arc<BTreeMap<String, Withdrawal>> {
        self.cache.withdrawn.list()
    }

    /// Takes the shared record of withdrawals as this replica's set, and deletes what it newly
    /// withdraws from the local tiers. Nothing without a shared store and its key; a record that
    /// cannot be read leaves the set as it is (logged).
    pub async fn refresh_withdrawn(&self) {
        let Some(tier) = &self.shared else {
            return;
        };
        let records = match tier.store().withdrawals().await {
            Ok(Some(records)) => records,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot read the shared list of withdrawn digests; the local one stays in force");
                return;
            }
        };
        let mut entries = BTreeMap::new();
        for (digest, content) in records {
            match serde_json::from_str::<Withdrawal>(&content) {
                Ok(withdrawal) => {
                    entries.insert(digest.as_str().to_owned(), withdrawal);
                }
                // Sealed by a replica with the key, so ours: a withdrawal even if its details
                // do not parse (a newer version's format).
                Err(_) => {
                    entries.insert(
                        digest.as_str().to_owned(),
                        Withdrawal {
                            reason: String::new(),
                            at: 0,
                        },
                    );
                }
            }
        }
        match self.cache.withdrawn.replace(entries) {
            Ok(true) => {
                let purged = self.cache.purge_withdrawn();
                tracing::info!(
                    withdrawn = self.cache.withdrawn.len(),
                    purged,
                    "withdrawn digests taken from the shared store"
                );
                self.metrics
                    .proxy
                    .withdrawn_digests(self.cache.withdrawn.len());
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot keep the shared list of withdrawn digests on disk");
            }
        }
    }

    /// Reads the shared record of withdrawals every 10 s (`REFRESH`), for as long as the proxy
    /// lives.
    pub async fn follow_withdrawn(self: Arc<Self>) {
        if self.shared.is_none() {
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
        match self.cache.withdrawn.get(digest) {
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
