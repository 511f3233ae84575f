//! One warm-up job: its progress as it runs ([`Job`]), and the same as the admin API and the
//! CLI see it ([`Progress`], with the summary text).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::metrics::warm::WarmMetrics;
use crate::reference::Digest;
use crate::release::Plan;
use crate::section::values::ByteSize;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Reading the release and its components' manifests.
    Planning,
    /// Fetching the unique blobs.
    Fetching,
    /// Everything is warm.
    Succeeded,
    /// Done, but something could not be fetched (see the failures).
    Failed,
}

impl State {
    /// Whether the job has ended.
    pub fn is_finished(self) -> bool {
        matches!(self, State::Succeeded | State::Failed)
    }

    fn as_str(self) -> &'static str {
        match self {
            State::Planning => "planning",
            State::Fetching => "fetching",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
        }
    }
}

/// Done out of total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Done.
    pub done: u64,
    /// Known so far (final once the job is fetching).
    pub total: u64,
}

/// Blob bytes of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteCounts {
    /// The size of the unique blob set.
    pub total: u64,
    /// Fetched from upstreams by this job.
    pub fetched: u64,
    /// Already in the cache when the job came to them.
    pub cached: u64,
}

/// Something a job could not fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    /// The release component it belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The reference that failed (`repository@digest`, or the release).
    pub reference: String,
    /// Why.
    pub reason: String,
}

/// A job's progress, as the admin API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The job's number (per process).
    pub id: u64,
    /// The release image, as asked for.
    pub image: String,
    /// What started it: `api`, `config` (`warm.releases`) or `hostedcluster <ns>/<name>`.
    pub trigger: String,
    /// Where it is.
    pub state: State,
    /// When it started (Unix seconds).
    pub started_at: u64,
    /// Seconds since it started (until it ended).
    pub elapsed_seconds: f64,
    /// The digest of the release's top manifest, once read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The release version, once read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Components `image-references` names.
    pub components: u64,
    /// Image manifests (release payloads, components and their platform images) whose every
    /// blob is warm.
    pub images: Count,
    /// Unique blobs warm.
    pub blobs: Count,
    /// Blob bytes.
    pub bytes: ByteCounts,
    /// Bytes fetched per second so far.
    pub rate_bytes_per_second: u64,
    /// What could not be fetched.
    pub failures: Vec<FailureReport>,
}

impl Progress {
    /// One line for a log or a terminal that is not a terminal.
    pub fn line(&self) -> String {
        format!(
            "job {} {} {}: images {}/{}, blobs {}/{}, {} fetched, {} cached, {}/s, {} failure(s)",
            self.id,
            self.image,
            self.state.as_str(),
            self.images.done,
            self.images.total,
            self.blobs.done,
            self.blobs.total,
            ByteSize(self.bytes.fetched).human(),
            ByteSize(self.bytes.cached).human(),
            ByteSize(self.rate_bytes_per_second).human(),
            self.failures.len(),
        )
    }

    /// The summary `mirrorgate warm` prints at the end.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "release {}", self.image);
        if let Some(digest) = &self.digest {
            let _ = write!(out, " ({digest})");
        }
        let _ = writeln!(out, ": {}", self.state.as_str());
        if let Some(version) = &self.version {
            let _ = writeln!(out, "  version {version}");
        }
        let _ = writeln!(out, "  components {}", self.components);
        let _ = writeln!(out, "  images {}/{}", self.images.done, self.images.total);
        let _ = writeln!(
            out,
            "  unique blobs {}/{} ({})",
            self.blobs.done,
            self.blobs.total,
            ByteSize(self.bytes.total).human()
        );
        let _ = writeln!(
            out,
            "  bytes fetched {} ({} bytes)",
            ByteSize(self.bytes.fetched).human(),
            self.bytes.fetched
        );
        let _ = writeln!(
            out,
            "  bytes already cached {} ({} bytes)",
            ByteSize(self.bytes.cached).human(),
            self.bytes.cached
        );
        let _ = writeln!(
            out,
            "  time {:.1}s ({}/s)",
            self.elapsed_seconds,
            ByteSize(self.rate_bytes_per_second).human()
        );
        let _ = writeln!(out, "  failures {}", self.failures.len());
        for failure in &self.failures {
            match &failure.component {
                Some(component) => {
                    let _ = writeln!(
                        out,
                        "    {component} {}: {}",
                        failure.reference, failure.reason
                    );
                }
                None => {
                    let _ = writeln!(out, "    {}: {}", failure.reference, failure.reason);
                }
            }
        }
        out
    }
}

/// A job as it runs: shared by its task (which updates it) and the admin API (which reads it).
pub struct Job {
    id: u64,
    image: String,
    trigger: String,
    started_at: u64,
    started: Instant,
    metrics: WarmMetrics,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Option<State>,
    finished: Option<Instant>,
    digest: Option<String>,
    version: Option<String>,
    components: u64,
    images: Count,
    blobs: Count,
    bytes: ByteCounts,
    failures: Vec<FailureReport>,
    /// Blobs the walk read while planning: whether the job fetched them.
    planning_blobs: HashMap<String, bool>,
    /// For each image manifest, the blobs it still waits for.
    waiting: Vec<HashSet<String>>,
    /// Blob → the images waiting for it.
    waiters: HashMap<String, Vec<usize>>,
}

impl Job {
    pub(super) fn new(id: u64, image: String, trigger: String, metrics: WarmMetrics) -> Job {
        metrics.job_started();
        Job {
            id,
            image,
            trigger,
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            started: Instant::now(),
            metrics,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The job's number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The release image as asked for.
    pub fn image(&self) -> &str {
        &self.image
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        self.lock().finished.is_some()
    }

    /// The progress so far.
    pub fn progress(&self) -> Progress {
        let inner = self.lock();
        let elapsed = inner
            .finished
            .unwrap_or_else(Instant::now)
            .duration_since(self.started)
            .as_secs_f64();
        let rate = if elapsed > 0.0 {
            (inner.bytes.fetched as f64 / elapsed) as u64
        } else {
            0
        };
        Progress {
            id: self.id,
            image: self.image.clone(),
            trigger: self.trigger.clone(),
            state: inner.state.unwrap_or(State::Planning),
            started_at: self.started_at,
            elapsed_seconds: elapsed,
            digest: inner.digest.clone(),
            version: inner.version.clone(),
            components: inner.components,
            images: inner.images,
            blobs: inner.blobs,
            bytes: inner.bytes,
            rate_bytes_per_second: rate,
            failures: inner.failures.clone(),
        }
    }

    /// The walk read blob `digest` (`size` bytes) while planning; the job `fetched` it or
    /// found it cached.
    pub(super) fn blob_read_while_planning(&self, digest: &Digest, size: u64, fetched: bool) {
        let mut inner = self.lock();
        if inner
            .planning_blobs
            .insert(digest.to_string(), fetched)
            .is_none()
        {
            if fetched {
                inner.bytes.fetched += size;
            } else {
                inner.bytes.cached += size;
            }
        }
    }

    /// The plan is known: its figures, its failed components, and which image (by the blobs
    /// it is made of) waits for which blob.
    pub(super) fn planned(&self, plan: &Plan, images: Vec<HashSet<String>>) {
        let totals = plan.totals(|_| false);
        let failures: Vec<FailureReport> = plan
            .failures
            .iter()
            .map(|f| FailureReport {
                component: Some(f.component.clone()),
                reference: f.reference.clone(),
                reason: f.reason.clone(),
            })
            .collect();
        let mut inner = self.lock();
        inner.state = Some(State::Fetching);
        inner.digest = Some(plan.digest.to_string());
        inner.version = Some(plan.version.clone());
        inner.components = plan.components.len() as u64;
        inner.images = Count {
            done: 0,
            total: images.len() as u64,
        };
        inner.blobs = Count {
            done: 0,
            total: totals.blobs as u64,
        };
        inner.bytes.total = totals.bytes;
        for (i, image) in images.iter().enumerate() {
            for blob in image {
                inner.waiters.entry(blob.clone()).or_default().push(i);
            }
        }
        inner.waiting = images;
        for failure in &failures {
            self.metrics.failure();
            tracing::warn!(job = self.id, reference = %failure.reference, reason = %failure.reason, "warm: component failed");
        }
        inner.failures.extend(failures);
    }

    /// Whether the job fetched `digest` while planning (`Some(true)`), found it cached then
    /// (`Some(false)`), or has not read it yet (`None`).
    pub(super) fn read_while_planning(&self, digest: &Digest) -> Option<bool> {
        self.lock().planning_blobs.get(digest.as_str()).copied()
    }

    /// Blob `digest` (`size` bytes) is warm: the job `fetched` it now, or it was cached.
    /// `counted` says its bytes were already counted (read while planning).
    pub(super) fn blob_done(&self, digest: &Digest, size: u64, fetched: bool, counted: bool) {
        self.metrics.blob_warmed(size, fetched);
        let mut inner = self.lock();
        inner.blobs.done += 1;
        if !counted {
            if fetched {
                inner.bytes.fetched += size;
            } else {
                inner.bytes.cached += size;
            }
        }
        let waiting = inner.waiters.remove(digest.as_str()).unwrap_or_default();
        for image in waiting {
            let set = &mut inner.waiting[image];
            set.remove(digest.as_str());
            if set.is_empty() {
                inner.images.done += 1;
                self.metrics.image_warmed();
            }
        }
    }

    /// Something could not be fetched.
    pub(super) fn failed(&self, failure: FailureReport) {
        self.metrics.failure();
        tracing::warn!(job = self.id, reference = %failure.reference, reason = %failure.reason, "warm: fetch failed");
        self.lock().failures.push(failure);
    }

    /// The job ended.
    pub(super) fn finish(&self) {
        let mut inner = self.lock();
        if inner.finished.is_some() {
            return;
        }
        let succeeded = inner.failures.is_empty();
        inner.state = Some(if succeeded {
            State::Succeeded
        } else {
            State::Failed
        });
        inner.finished = Some(Instant::now());
        self.metrics.job_finished(succeeded);
    }
}
