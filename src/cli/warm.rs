//! `mirrorgate warm`: starts warm-up jobs on a running server through its admin API
//! ([`Admin`]), follows them, and prints their summaries; `--dry-run` prints their plans.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mirrorgate::http::warm_endpoint::{JOBS, PLAN};
use mirrorgate::warm::Progress;

use super::admin::Admin;

/// How often running jobs are asked for their progress.
const POLL: Duration = Duration::from_millis(250);
/// How often a progress line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(2);

impl Admin {
    /// The progress of the warm job `path` names (`body`: start it with that request).
    async fn progress(&self, path: &str, body: Option<serde_json::Value>) -> Result<Progress> {
        let method = if body.is_some() {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let text = self.call(method, path, body).await?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}{path} did not answer a warm job's progress", self.server))
    }
}

/// Prints the plan of each release.
pub fn dry_run(admin: &Admin, releases: &[String]) -> Result<()> {
    crate::runtime()?.block_on(async {
        for release in releases {
            let text = admin
                .call(
                    reqwest::Method::POST,
                    PLAN,
                    Some(serde_json::json!({ "image": release })),
                )
                .await
                .with_context(|| format!("cannot plan {release}"))?;
            let answer: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}{PLAN} did not answer a plan", admin.server))?;
            print!("{}", answer["plan"].as_str().unwrap_or_default());
        }
        Ok(())
    })
}

/// Starts a job per release, follows them to their end, prints the summaries; fails when a
/// job did.
pub fn warm(admin: &Admin, releases: &[String]) -> Result<()> {
    let finished = crate::runtime()?.block_on(async {
        let mut jobs = BTreeMap::new();
        for release in releases {
            let progress = admin
                .progress(JOBS, Some(serde_json::json!({ "image": release })))
                .await
                .with_context(|| format!("cannot start warming {release}"))?;
            jobs.insert(progress.id, progress);
        }
        follow(admin, jobs).await
    })?;
    let started = finished.len();
    let mut failed = 0;
    for progress in finished.values() {
        print!("{}", progress.summary());
        if !progress.failures.is_empty() {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {started} release(s) could not be warmed completely");
    }
    Ok(())
}

/// Polls the jobs until every one has ended: a bar per job on a terminal, else a line per job
/// every few seconds.
async fn follow(
    admin: &Admin,
    mut jobs: BTreeMap<u64, Progress>,
) -> Result<BTreeMap<u64, Progress>> {
    let terminal = std::io::stderr().is_terminal();
    let bars = MultiProgress::with_draw_target(if terminal {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    )
    .context("progress bar template")?
    .progress_chars("=> ");
    let bar_of: BTreeMap<u64, ProgressBar> = jobs
        .keys()
        .map(|id| {
            let bar = bars.add(ProgressBar::new(0));
            bar.set_style(style.clone());
            bar.set_prefix(format!("job {id}"));
            (*id, bar)
        })
        .collect();
    let mut last_line = Instant::now();
    loop {
        for (id, progress) in jobs.iter_mut() {
            if !progress.state.is_finished() {
                *progress = admin.progress(&format!("{JOBS}/{id}"), None).await?;
            }
            let bar = &bar_of[id];
            bar.set_length(progress.bytes.total);
            bar.set_position(progress.bytes.fetched + progress.bytes.cached);
            bar.set_message(format!(
                "{} images {}/{} blobs {}/{} failures {}",
                progress.image,
                progress.images.done,
                progress.images.total,
                progress.blobs.done,
                progress.blobs.total,
                progress.failures.len()
            ));
            if progress.state.is_finished() && !bar.is_finished() {
                bar.finish();
            }
        }
        let done = jobs.values().all(|p| p.state.is_finished());
        if !terminal && (done || last_line.elapsed() >= LINE_EVERY) {
            for progress in jobs.values() {
                eprintln!("{}", progress.line());
            }
            last_line = Instant::now();
        }
        if done {
            return Ok(jobs);
        }
        tokio::time::sleep(POLL).await;
    }
}
