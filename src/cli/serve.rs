//! `mirrorgate serve`: the proxy, on `listen` (and `metrics_listen`), with the rules reloaded,
//! the warm-up jobs and the logs, until SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::{Context, Result};
use mirrorgate::http;
use mirrorgate::proxy::{Proxy, Reachable};
use mirrorgate::reload;
use mirrorgate::upstream::Upstream;
use mirrorgate::warm::Warmer;
use tokio::net::TcpListener;

use crate::{LogFormat, RuleArgs};

pub fn serve(args: &RuleArgs, log_format: LogFormat) -> Result<()> {
    let (rule_set, config, config_path) = args.load(false)?;
    let _log_guard = init_tracing(log_format, &config.log_level);
    let source = config_path
        .as_ref()
        .map_or("built-in defaults".to_owned(), |p| p.display().to_string());
    let summary = rule_set.summary();
    tracing::info!(
        config = %source,
        files = summary.files.len(),
        scopes = summary.scopes,
        blocked_scopes = summary.blocked_scopes.len(),
        "rules loaded"
    );
    for warning in rule_set.warnings() {
        tracing::warn!(%warning, "rule warning");
    }
    mirrorgate::reload::check_strict(&config, &rule_set).context("refusing to start")?;
    for self_mirror in rule_set.self_mirrors() {
        tracing::info!(%self_mirror, "self mirror");
    }
    for registry in Reachable::unused_registries(&rule_set, &(&config).into()) {
        tracing::warn!(
            registry,
            "{}",
            Reachable::unused_registry_warning(&registry)
        );
    }
    let upstream = Upstream::new(&config).context("cannot set up the upstream client")?;
    mirrorgate::access::Access::load(&config.clients)
        .context("the clients settings are invalid")?;
    let tls = http::ServerTls::from_config(config.tls.as_ref())
        .context("the tls settings are invalid")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local = listener.local_addr()?;
        tracing::info!(listen = %local, tls = tls.is_some(), "serving");
        tracing::info!(
            "pull through mirrorgate as {local}/<registry>/<repository>:<tag> (e.g. skopeo inspect {}docker://{local}/quay.io/openshift/release:4.16), as {local}/<repository> with ?ns=<registry> (containerd hosts.toml), or as {local}/<repository> for default_registry {}",
            if tls.is_some() { "" } else { "--tls-verify=false " },
            config.default_registry
        );
        let proxy = Arc::new(Proxy::new(Arc::new(rule_set), upstream, &config)?);
        proxy.set_config_path(config_path.as_deref());
        let source = mirrorgate::source::Config::from_config(&config).build(&proxy).await?;
        let mut reloaded =
            reload::spawn(proxy.clone(), config_path.clone(), config.clone(), source);
        proxy.check_shared_cache();
        // Withdrawals made on other replicas (the shared store's record), every 10 s.
        tokio::spawn(proxy.clone().follow_withdrawn());
        let warmer = Warmer::new(proxy.clone(), &config.warm);
        if let Some(address) = config.metrics_listen {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} for metrics"))?;
            tracing::info!(metrics_listen = %listener.local_addr()?, "serving metrics");
            tokio::spawn(http::serve_metrics(
                listener,
                proxy.clone(),
                Some(warmer.clone()),
            ));
        }
        // `warm.releases` now, and the new ones of each good reload.
        warmer.apply(&config.warm, true);
        // HostedClusters' release images, warmed when created or upgraded; the task lives as
        // long as the server.
        #[cfg(feature = "kubernetes")]
        let _hosted_clusters = warmer.watch_hosted_clusters(config.kubernetes.as_ref());
        {
            let warmer = warmer.clone();
            tokio::spawn(async move {
                while reloaded.changed().await.is_ok() {
                    let warm = reloaded.borrow_and_update().warm.clone();
                    warmer.apply(&warm, false);
                }
            });
        }
        http::serve_with_warm(
            listener,
            proxy,
            tls,
            config.limits.clone(),
            Some(warmer),
            shutdown_signal(),
        )
        .await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("stopping: letting in-flight requests finish");
}

/// Logs to stderr, filtered by `RUST_LOG` or else the configuration's `log_level`. Lines are written by a background
/// thread, so a request never waits for the terminal or the log collector; the guard flushes
/// what is queued when `serve` returns.
fn init_tracing(format: LogFormat, level: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // rustls warns at every handshake whose client names an IP address in SNI (RFC 6066 forbids
    // it, and OpenSSL-based clients such as wrk and h2load do it) and then ignores the name:
    // nothing for an operator to act on, so it stays below `error` unless a filter names rustls.
    if !filter.to_string().contains("rustls")
        && let Ok(directive) = "rustls::msgs::handshake=error".parse()
    {
        filter = filter.add_directive(directive);
    }
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    watch_dropped_log_lines(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

/// The log writer drops lines rather than stall requests when stderr cannot keep up; say how many,
/// from a thread of its own, so that a gap in the log is never silent.
fn watch_dropped_log_lines(dropped: tracing_appender::non_blocking::ErrorCounter) {
    std::thread::spawn(move || {
        let mut reported = 0;
        loop {
            std::thread::sleep(std::time::Duration::from_secs(10));
            let now = dropped.dropped_lines();
            if now > reported {
                tracing::warn!(
                    dropped = now - reported,
                    total = now,
                    "log lines dropped: stderr is not read fast enough"
                );
                reported = now;
            }
        }
    });
}
