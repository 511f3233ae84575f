//! Release warm-up: fetching a whole OpenShift release payload into the cache before a cluster
//! needs it, inside the server, through the proxy's in-process fetch API (so warm jobs share the
//! cache and the one-fetch-per-key coalescing with client pulls, obey the rules, verify every
//! byte, and run in the background admission class: a warm job never makes a client wait for an
//! upstream slot).
//!
//! Principal types:
//! - [`WarmConfig`]: the `warm` section (releases warmed at start and on change, HostedClusters,
//!   architectures, concurrency, admin grants);
//! - [`Warmer`]: the job registry: starts jobs ([`Warmer::start`]), plans without fetching
//!   ([`Warmer::dry_run`]), lists them and answers their [`Progress`];
//! - [`Job`], [`Progress`], [`State`]: one job as it runs and as the admin API reports it;
//! - `hosted` (feature `kubernetes`): HostedClusters watched for `spec.release.image`.
//!
//! A job walks the release ([`crate::release::plan_release`]) through a fetcher on the proxy,
//! which caches the release image, its payloads and every component manifest as it reads them;
//! then it fetches the plan's unique blobs, `concurrency` at once over all jobs, each through one
//! repository that references it.

mod config;
mod fetcher;
#[cfg(feature = "kubernetes")]
pub mod hosted;
mod job;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use tokio::sync::Semaphore;

use crate::proxy::Proxy;
use crate::reference::Reference;
use crate::release::{Manifest, ReleaseError, WalkOptions, plan_release};

pub use config::WarmConfig;
pub use job::{ByteCounts, Count, FailureReport, Job, Progress, State};

use fetcher::ProxyFetcher;

/// How many finished jobs are kept for the admin API.
const FINISHED_KEPT: usize = 100;

/// The warm-up jobs of one server.
pub struct Warmer {
    proxy: Arc<Proxy>,
    settings: Mutex<Settings>,
    jobs: Mutex<VecDeque<Arc<Job>>>,
    next_id: AtomicU64,
}

struct Settings {
    config: WarmConfig,
    /// Blob fetches of all jobs at once; replaced (for new jobs) when the setting changes.
    slots: Arc<Semaphore>,
}

impl Warmer {
    /// A job registry warming through `proxy` with `config`. Starts nothing: see
    /// [`Warmer::apply`].
    pub fn new(proxy: Arc<Proxy>, config: &WarmConfig) -> Arc<Warmer> {
        Arc::new(Warmer {
            proxy,
            settings: Mutex::new(Settings {
                config: config.clone(),
                slots: Arc::new(Semaphore::new(config.concurrency)),
            }),
            jobs: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
        })
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The settings in force.
    pub fn config(&self) -> WarmConfig {
        self.settings().config.clone()
    }

    /// Starts the jobs of `warm.releases` (all of them the first time, the new entries after),
    /// and takes the other settings for the jobs started from now on.
    pub fn apply(self: &Arc<Self>, config: &WarmConfig, first: bool) {
        let new_releases: Vec<Reference> = {
            let mut settings = self.settings();
            let before: HashSet<Reference> = if first {
                HashSet::new()
            } else {
                settings.config.release_references().into_iter().collect()
            };
            if settings.config.concurrency != config.concurrency {
                settings.slots = Arc::new(Semaphore::new(config.concurrency));
            }
            settings.config = config.clone();
            config
                .release_references()
                .into_iter()
                .filter(|r| !before.contains(r))
                .collect()
        };
        for release in new_releases {
            self.start(release, "config");
        }
    }

    /// Whether `name` (a `clients` user or token name) may use the admin API from elsewhere.
    pub fn is_admin(&self, name: &str) -> bool {
        self.settings().config.admins.iter().any(|a| a == name)
    }

    /// Starts a job warming `release`, or returns the one already running for it.
    pub fn start(self: &Arc<Self>, release: Reference, trigger: &str) -> Arc<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = jobs
            .iter()
            .find(|j| j.image() == release.as_str() && !j.is_finished())
        {
            return running.clone();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job::new(
            id,
            release.to_string(),
            trigger.to_owned(),
            self.proxy.metrics().warm.clone(),
        ));
        jobs.push_back(job.clone());
        while jobs.len() > FINISHED_KEPT {
            match jobs.iter().position(|j| j.is_finished()) {
                Some(oldest) => {
                    jobs.remove(oldest);
                }
                None => break,
            }
        }
        drop(jobs);
        tracing::info!(job = id, release = %release, trigger, "warm job started");
        let this = self.clone();
        let running = job.clone();
        tokio::spawn(async move {
            this.run(&running, &release).await;
            running.finish();
            let progress = running.progress();
            tracing::info!(
                job = progress.id,
                release = %progress.image,
                state = ?progress.state,
                images = progress.images.done,
                blobs = progress.blobs.done,
                bytes_fetched = progress.bytes.fetched,
                bytes_cached = progress.bytes.cached,
                failures = progress.failures.len(),
                seconds = progress.elapsed_seconds,
                "warm job finished"
            );
        });
        job
    }

    /// Every job kept, oldest first.
    pub fn jobs(&self) -> Vec<Progress> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.iter().map(|j| j.progress()).collect()
    }

    /// Job `id`'s progress.
    pub fn job(&self, id: u64) -> Option<Progress> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.iter().find(|j| j.id() == id).map(|j| j.progress())
    }

    /// The `--dry-run` text of `release`: its version, each component with the pull sources
    /// the rules give it, the unique blob count and size. Reads the release image and the
    /// component manifests (caching them), fetches no component blob.
    pub async fn dry_run(&self, release: &Reference) -> Result<String, ReleaseError> {
        self.wait_for_complete_rules(release).await;
        let fetcher = ProxyFetcher::new(self.proxy.clone(), None);
        let plan = plan_release(&fetcher, release, &self.walk_options()).await?;
        Ok(plan.render_dry_run(&self.proxy.rules()))
    }

    fn walk_options(&self) -> WalkOptions {
        let settings = self.settings();
        WalkOptions {
            platforms: settings.config.architectures.clone(),
            concurrency: settings.config.concurrency,
            ..WalkOptions::default()
        }
    }

    /// Warm-up fetches along the rules like a pull, so it waits as pulls do for a complete rule
    /// set (e.g. the cluster's first list): without the cluster's NeverContactSource rules it
    /// could contact a source they forbid.
    async fn wait_for_complete_rules(&self, release: &Reference) {
        if let Some(why) = self.proxy.incomplete() {
            tracing::info!(%release, %why, "warm: waiting for the rules to be complete");
            self.proxy.rules_complete().await;
        }
    }

    async fn run(&self, job: &Arc<Job>, release: &Reference) {
        self.wait_for_complete_rules(release).await;
        let fetcher = ProxyFetcher::new(self.proxy.clone(), Some(job.clone()));
        let (options, slots) = {
            let settings = self.settings();
            (
                WalkOptions {
                    platforms: settings.config.architectures.clone(),
                    concurrency: settings.config.concurrency,
                    ..WalkOptions::default()
                },
                settings.slots.clone(),
            )
        };
        let plan = match plan_release(&fetcher, release, &options).await {
            Ok(plan) => plan,
            Err(error) => {
                job.failed(FailureReport {
                    component: None,
                    reference: release.to_string(),
                    reason: error.to_string(),
                });
                return;
            }
        };
        // The blobs each image manifest waits for, from the manifests the walk read.
        let images: Vec<HashSet<String>> = plan
            .manifests()
            .filter_map(|entry| {
                let (bytes, media_type) = fetcher.manifest_read(entry.reference.digest_str()?)?;
                match Manifest::parse(&bytes, Some(&media_type)).ok()? {
                    Manifest::Image { config, layers } => Some(
                        std::iter::once(config)
                            .chain(layers)
                            .map(|d| d.digest.to_string())
                            .collect(),
                    ),
                    Manifest::Index { .. } => None,
                }
            })
            .collect();
        job.planned(&plan, images);
        let blobs: Vec<(Reference, u64)> = plan.blob_references();
        stream::iter(blobs)
            .map(|(reference, size)| {
                let proxy = self.proxy.clone();
                let job = job.clone();
                let slots = slots.clone();
                async move { warm_blob(proxy, job, reference, size, slots).await }
            })
            .buffer_unordered(options.concurrency)
            .collect::<Vec<()>>()
            .await;
    }
}

/// Makes blob `reference` (`size` bytes) warm for `job`, within one of the `slots`.
async fn warm_blob(
    proxy: Arc<Proxy>,
    job: Arc<Job>,
    reference: Reference,
    size: u64,
    slots: Arc<Semaphore>,
) {
    let Some(digest) = reference.digest() else {
        return;
    };
    if let Some(fetched) = job.read_while_planning(&digest) {
        job.blob_done(&digest, size, fetched, true);
        return;
    }
    if proxy.cached_blob_size(&digest).is_some() {
        job.blob_done(&digest, size, false, false);
        return;
    }
    let Ok(_slot) = slots.acquire().await else {
        return;
    };
    let cached = proxy.cached_blob_size(&digest).is_some();
    match proxy.ensure_blob(&reference, &digest).await {
        Ok(stored) => job.blob_done(&digest, stored, !cached, false),
        Err(error) => job.failed(FailureReport {
            component: None,
            reference: reference.to_string(),
            reason: error.to_string(),
        }),
    }
}
