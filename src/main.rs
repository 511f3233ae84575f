//! The `mirrorgate` command: the proxy (`serve`), and answers to rule questions (`resolve`,
//! `check`, `registries-conf`) from the configured rule files. Errors are reported here, at the
//! top, with their full context.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use mirrorgate::config::{self, Config};
use mirrorgate::http;
use mirrorgate::proxy::{Proxy, Reachable};
use mirrorgate::reference::Reference;
use mirrorgate::reload;
use mirrorgate::rules::{self, ResolveError, RuleSet};
use mirrorgate::source;
use mirrorgate::upstream::Upstream;
use mirrorgate::warm::Warmer;
use tokio::net::TcpListener;

mod warm_cli;

/// jemalloc rather than glibc's malloc. An idle keep-alive connection holds buffers of 8 KiB
/// (hyper's read buffer and response-head buffer) of which it has written the first page;
/// jemalloc gives each two pages of their own and keeps its bookkeeping elsewhere, where glibc's
/// chunk headers between neighbouring buffers make more of their pages resident (10,000 idle
/// connections: README, "Where clusters hurt"). It also keeps freed pages for reuse and returns
/// them to the kernel gradually, over about 10 s, so that a blob download does not page-fault in
/// the receive buffers the previous one freed, and threads that come and go (tokio's blocking
/// pool) leave nothing behind: what glibc needed `mallopt` settings for.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A pull-through OCI registry proxy that applies OpenShift image mirror rules
/// (ImageContentSourcePolicy, ImageDigestMirrorSet, ImageTagMirrorSet) as a node would.
#[derive(Debug, Parser)]
#[command(name = "mirrorgate", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the OCI distribution API as a pull-through proxy that applies the rules.
    Serve {
        /// The configuration file [default: config/mirrorgate.yaml, or the built-in defaults when
        /// that file does not exist].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Log lines as plain text or as JSON objects (one per line, for log collectors).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Print the ordered pull sources for IMAGE, one per line as `mirror <ref>` or `source <ref>`.
    Resolve {
        #[command(flatten)]
        rules: RuleArgs,
        /// Print a JSON array of {"reference", "role"} instead of lines.
        #[arg(long)]
        json: bool,
        /// The image reference, as a client writes it (`busybox`, `quay.io/ns/app:v1`, `…@sha256:…`).
        image: String,
    },
    /// Load and validate the configuration and every rule file, and print a summary. With
    /// `cache.shared`, also reach the bucket with the credentials (wrong credentials or a
    /// missing bucket are an error).
    Check {
        #[command(flatten)]
        rules: RuleArgs,
        /// Contact nothing: leave out reaching the shared cache's bucket and listing the
        /// cluster (for configurations checked away from where they run, e.g. in CI).
        #[arg(long)]
        offline: bool,
        /// Treat warnings as errors: fail, listing them (a misspelt field can lift
        /// NeverContactSource or drop a cluster's mirrors while the rules still load).
        #[arg(long)]
        strict: bool,
    },
    /// Print the rules as the containers-registries.conf(5) file the Machine Config Operator writes.
    RegistriesConf {
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Show what a running server is doing: the rules in force and the last reload, each
    /// upstream registry's health, the caches, and the upstream fetches under way.
    Status {
        #[command(flatten)]
        server: AdminArgs,
        /// Print the status as JSON (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Withdraw content on a running server: the digests are refused from then on (404, with a
    /// message saying so) whatever holds them, and deleted from the cache. Kept across restarts.
    Deny {
        #[command(flatten)]
        server: AdminArgs,
        /// Why, shown to clients refused and in `status` (e.g. a CVE).
        #[arg(long, default_value = "")]
        reason: String,
        /// The digests (`sha256:…`) of manifests or blobs to withdraw.
        #[arg(required = true, value_name = "DIGEST")]
        digests: Vec<String>,
    },
    /// Lift withdrawals made with `deny` on a running server.
    Allow {
        #[command(flatten)]
        server: AdminArgs,
        /// The digests to serve again.
        #[arg(required = true, value_name = "DIGEST")]
        digests: Vec<String>,
    },
    /// Warm the cache with whole OpenShift releases on a running server: start a job per
    /// release, follow them (a progress bar on a terminal, progress lines otherwise), print a
    /// summary, and fail if anything could not be fetched.
    Warm {
        #[command(flatten)]
        server: AdminArgs,
        /// Print each release's plan (version, components with their pull sources, unique
        /// blobs and size) without fetching it.
        #[arg(long)]
        dry_run: bool,
        /// Release images (`quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64`, or by
        /// digest).
        #[arg(required = true, value_name = "RELEASE")]
        releases: Vec<String>,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the rules come from.
#[derive(Debug, Args)]
struct RuleArgs {
    /// The configuration file [default: config/mirrorgate.yaml, or the built-in defaults when that
    /// file does not exist].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A rule file or directory to use instead of the configuration's `rules` (repeatable). Without
    /// --config, no configuration file is read.
    #[arg(long = "rules", value_name = "PATH")]
    rules: Vec<PathBuf>,
}

impl RuleArgs {
    /// The configuration in force and where it came from (`None`: built-in defaults).
    fn config(&self) -> Result<(Config, Option<PathBuf>)> {
        let path = match &self.config {
            Some(path) => path.clone(),
            None if !self.rules.is_empty() => return Ok((Config::default(), None)),
            None if !Path::new(config::DEFAULT_PATH).exists() => {
                return Ok((Config::default(), None));
            }
            None => PathBuf::from(config::DEFAULT_PATH),
        };
        let config = Config::load(&path)?;
        Ok((config, Some(path)))
    }

    /// The rule set, with the configuration it was loaded under. With a `kubernetes` section and
    /// `with_cluster`, the cluster is listed once and its objects merge with the rule files.
    fn load(&self, with_cluster: bool) -> Result<(RuleSet, Config, Option<PathBuf>)> {
        let (config, config_path) = self.config()?;
        let paths = if self.rules.is_empty() {
            &config.rules
        } else {
            &self.rules
        };
        if config_path.is_none()
            && self.rules.is_empty()
            && let Some(missing) = paths.iter().find(|p| !p.exists())
        {
            bail!(
                "no configuration file found ({} does not exist in {}), so the built-in defaults were used, and their rules path {} does not exist either: pass --config FILE (see config/mirrorgate.yaml in the repository), or --rules PATH to read rule files alone",
                config::DEFAULT_PATH,
                std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string()),
                missing.display()
            );
        }
        let source = source::Config::from_config(&config).with_files(paths.clone());
        let source = if with_cluster {
            source
        } else {
            source.files_only()
        };
        let views = source.load_once(&rules::SelfNames::new(config.self_names()))?;
        let rule_set = Arc::unwrap_or_clone(views.into_management());
        Ok((rule_set, config, config_path))
    }
}

/// A runtime on this thread for a command that does one piece of I/O and ends.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve { config, log_format } => serve(
            &RuleArgs {
                config,
                rules: Vec::new(),
            },
            log_format,
        ),
        Command::Resolve { rules, json, image } => resolve(&rules, json, &image),
        Command::Check {
            rules,
            offline,
            strict,
        } => check(&rules, offline, strict),
        Command::RegistriesConf { rules } => {
            let (rule_set, _, _) = rules.load(true)?;
            tell_refused(&rule_set);
            print!("{}", rule_set.to_registries_conf()?);
            Ok(())
        }
        Command::Status { server, json } => {
            let admin = admin("mirrorgate-status", Duration::from_secs(30), server)?;
            status(&admin, json)
        }
        Command::Deny {
            server,
            reason,
            digests,
        } => {
            let admin = admin("mirrorgate-deny", Duration::from_secs(30), server)?;
            withdrawal(
                &admin,
                http::withdrawn_endpoint::PATH,
                serde_json::json!({ "digests": digests, "reason": reason }),
                "added",
                "withdrawn",
            )
        }
        Command::Allow { server, digests } => {
            let admin = admin("mirrorgate-allow", Duration::from_secs(30), server)?;
            withdrawal(
                &admin,
                http::withdrawn_endpoint::ALLOW,
                serde_json::json!({ "digests": digests }),
                "lifted",
                "allowed again",
            )
        }
        Command::Warm {
            server,
            dry_run,
            releases,
        } => {
            let admin = admin("mirrorgate-warm", Duration::from_secs(300), server)?;
            if dry_run {
                warm_cli::dry_run(&admin, &releases)
            } else {
                warm_cli::warm(&admin, &releases)
            }
        }
    }
}

/// How the commands that talk to a running server (`status`, `warm`) find and reach it.
#[derive(Debug, Args)]
struct AdminArgs {
    /// The server's base URL [default: from the configuration: `metrics_listen` when set,
    /// else `listen`, with 127.0.0.1 for an unspecified address].
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The configuration file that gives the default server [default: config/mirrorgate.yaml,
    /// or the built-in defaults when that file does not exist].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// `USER:PASSWORD` for a server on another host that wants `clients` credentials
    /// (htpasswd mode; for `warm`, a user named in `warm.admins`).
    #[arg(long, value_name = "USER:PASSWORD", conflicts_with = "token")]
    creds: Option<String>,
    /// A token for a server on another host that wants `clients` credentials (token mode; for
    /// `warm`, a name in `warm.admins`).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Extra PEM roots to trust for an https server.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

/// The admin API of the running server `args` name, reached as `agent`, each request bounded
/// by `timeout`.
fn admin(agent: &str, timeout: Duration, args: AdminArgs) -> Result<warm_cli::Admin> {
    let server = match args.server {
        Some(server) => server,
        None => {
            let rule_args = RuleArgs {
                config: args.config,
                rules: Vec::new(),
            };
            default_status_server(&rule_args.config()?.0)
        }
    };
    let credentials = match (args.creds, args.token) {
        (Some(creds), _) => Some(StatusCredentials::Basic(creds)),
        (None, Some(token)) => Some(StatusCredentials::Bearer(token)),
        (None, None) => None,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(format!("{agent}/{}", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .no_proxy();
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{}: no PEM certificate", path.display()))?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(warm_cli::Admin {
        client: builder.build().context("cannot set up the HTTP client")?,
        server: server.trim_end_matches('/').to_owned(),
        credentials,
    })
}

/// How `mirrorgate status` authenticates.
enum StatusCredentials {
    /// `USER:PASSWORD`.
    Basic(String),
    /// A token.
    Bearer(String),
}

/// Where a server started from `config` serves `/status`.
fn default_status_server(config: &Config) -> String {
    let (address, tls) = match config.metrics_listen {
        Some(address) => (address, false),
        None => (config.listen, config.tls.is_some()),
    };
    let host = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}:{}", address.port())
}

/// Prints the status of the server `admin` reaches.
fn status(admin: &warm_cli::Admin, json: bool) -> Result<()> {
    let runtime = runtime()?;
    let path = http::status_endpoint::PATH;
    let body = runtime.block_on(admin.call(reqwest::Method::GET, path, None))?;
    let status: mirrorgate::status::Status = serde_json::from_str(&body)
        .with_context(|| format!("{}{path} did not answer a mirrorgate status", admin.server))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}

/// Sends a change of the deny list and prints what it did: one line per digest `field` of the
/// answer lists (`withdrawn sha256:…`), and how many digests stay withdrawn.
fn withdrawal(
    admin: &warm_cli::Admin,
    path: &str,
    body: serde_json::Value,
    field: &str,
    done: &str,
) -> Result<()> {
    let runtime = runtime()?;
    let answer = runtime.block_on(admin.call(reqwest::Method::POST, path, Some(body)))?;
    let answer: serde_json::Value = serde_json::from_str(&answer)
        .with_context(|| format!("{}{path} did not answer JSON", admin.server))?;
    let changed = answer[field].as_array().cloned().unwrap_or_default();
    for digest in &changed {
        println!("{done} {}", digest.as_str().unwrap_or_default());
    }
    if changed.is_empty() {
        println!("nothing changed");
    }
    let count = answer["withdrawn"].as_object().map_or(0, |m| m.len());
    println!("{count} digest(s) withdrawn on {}", admin.server);
    Ok(())
}

fn serve(args: &RuleArgs, log_format: LogFormat) -> Result<()> {
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
        let source = source::Config::from_config(&config).build(&proxy).await?;
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

/// Says on stderr which cluster objects the answer leaves out or takes in an earlier version
/// (as `serve` does), so that it is not mistaken for the whole cluster's.
fn tell_refused(rule_set: &RuleSet) {
    for error in rule_set.errors() {
        eprintln!("refused: {error}");
    }
}

fn resolve(args: &RuleArgs, json: bool, image: &str) -> Result<()> {
    let (rule_set, config, _) = args.load(true)?;
    tell_refused(&rule_set);
    // The same normalisation as `serve`'s addressing: a name without a registry is in
    // `default_registry`.
    let reference = Reference::parse_with_default(image, &config.default_registry)
        .with_context(|| format!("invalid image \"{image}\""))?;
    let mut resolution = match rule_set.resolve(&reference) {
        Ok(resolution) => resolution,
        Err(error @ ResolveError::Blocked { .. }) => {
            if let ResolveError::Blocked {
                blocked, skipped, ..
            } = &error
            {
                for attempt in skipped {
                    eprintln!("skipped: {attempt}");
                }
                for attempt in blocked {
                    eprintln!(
                        "not contacted: {} {} (in blocked scope \"{}\")",
                        attempt.role, attempt.reference, attempt.blocked_by
                    );
                }
            }
            bail!(error);
        }
        Err(error) => bail!(error),
    };
    for attempt in &resolution.skipped {
        eprintln!("skipped: {attempt}");
    }
    for attempt in &resolution.blocked {
        eprintln!(
            "not contacted: {} {} (in blocked scope \"{}\")",
            attempt.role, attempt.reference, attempt.blocked_by
        );
    }
    // `serve` contacts only the registries the rules and configuration name; say so here too.
    let reachable = Reachable::new(&rule_set, &(&config).into());
    resolution.sources.retain(|source| {
        let registry = source.reference.domain();
        let allowed = reachable.allows(registry, source.role);
        if !allowed {
            eprintln!(
                "not contacted: {} {} ({})",
                source.role,
                source.reference,
                Reachable::refusal(registry)
            );
        }
        allowed
    });
    if resolution.sources.is_empty() {
        bail!(
            "{}; serve refuses this pull with 403 DENIED. Name it under `registries` in the configuration, or in a rule",
            Reachable::refusal(reference.domain())
        );
    }
    if json {
        let sources: Vec<_> = resolution
            .sources
            .iter()
            .map(|s| {
                serde_json::json!({
                    "reference": s.reference.to_string(),
                    "role": s.role.as_str(),
                    "origin": s.origin.as_deref(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&sources)?);
    } else {
        for source in &resolution.sources {
            match &source.origin {
                Some(origin) => println!("{} {}  ({origin})", source.role, source.reference),
                None => println!("{} {}", source.role, source.reference),
            }
        }
    }
    Ok(())
}

/// Reaches the shared cache (`cache.shared`), if configured, with its credentials: wrong
/// credentials, a missing bucket or an unusable key file are an error. Returns what it checked,
/// and whether its records are sealed.
fn check_shared_cache(cache: &mirrorgate::cache::CacheConfig) -> Result<Option<String>> {
    use mirrorgate::cache::shared::{SharedStore, Timeouts};
    let Some(shared) = &cache.shared else {
        return Ok(None);
    };
    let described = shared.s3.describe();
    let store = SharedStore::open(shared, Timeouts::default())
        .with_context(|| format!("the shared cache {described} cannot be used"))?;
    let runtime = runtime()?;
    runtime
        .block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(30), store.check())
                .await
                .map_err(|_| anyhow::anyhow!("no answer within 30s"))?
                .map_err(anyhow::Error::from)
        })
        .with_context(|| format!("the shared cache {described} cannot be used"))?;
    let records = match store.record_keys() {
        0 => "no cache.shared.key_file: confirmations and tag answers are neither shared nor \
              trusted, only content is"
            .to_owned(),
        keys => format!("records sealed and checked with {keys} key(s) from cache.shared.key_file"),
    };
    Ok(Some(format!(
        "{described} (reachable, bucket found; {records})"
    )))
}

fn check(args: &RuleArgs, offline: bool, strict: bool) -> Result<()> {
    let (rule_set, config, config_path) = args.load(!offline)?;
    // The files the proxy reads at start (pull secret, CA bundles, clients) must be good too.
    Upstream::new(&config).context("the upstream settings are invalid")?;
    mirrorgate::access::Access::load(&config.clients)
        .context("the clients settings are invalid")?;
    http::ServerTls::from_config(config.tls.as_ref()).context("the tls settings are invalid")?;
    let shared = if offline {
        None
    } else {
        check_shared_cache(&config.cache)?
    };
    let summary = rule_set.summary();
    match &config_path {
        Some(path) => println!("config: {} (listen {})", path.display(), config.listen),
        None => println!("config: built-in defaults (listen {})", config.listen),
    }
    if let Some(shared) = shared {
        println!("shared cache: {shared}");
    }
    println!("files: {}", summary.files.len());
    for file in &summary.files {
        println!("  {}", file.display());
    }
    let objects: usize = summary.objects.values().sum();
    println!("objects: {objects}");
    for (kind, count) in &summary.objects {
        println!("  {kind}: {count}");
    }
    println!("scopes: {}", summary.scopes);
    for rule in rule_set.rules() {
        println!(
            "  {}: {} digest mirror(s), {} tag mirror(s){}",
            rule.scope,
            rule.digest_mirrors.len(),
            rule.tag_mirrors.len(),
            if rule.blocked { ", source blocked" } else { "" }
        );
    }
    if !summary.config_map_uses.is_empty() {
        println!("hypershift config maps:");
        for config_use in &summary.config_map_uses {
            println!("  {} {}:", config_use.kind, config_use.object);
            for applied in &config_use.applied {
                println!("    applied ConfigMap {applied}");
            }
            for missing in &config_use.missing {
                println!("    missing ConfigMap {missing} (not in the rule files; see warnings)");
            }
        }
    }
    println!("blocked scopes: {}", summary.blocked_scopes.len());
    for scope in &summary.blocked_scopes {
        println!("  {scope}");
    }
    // Mirrors that are mirrorgate itself are expected where a cluster's own mirror sets send
    // pulls through it; they are reported, not warned about.
    let self_mirrors = rule_set.self_mirrors();
    println!(
        "self mirrors: {} (self names: {})",
        self_mirrors.len(),
        rule_set.self_names().names().join(", ")
    );
    for self_mirror in &self_mirrors {
        println!("  {self_mirror}");
    }
    let unused = Reachable::unused_registries(&rule_set, &(&config).into());
    let mut warnings: Vec<String> = summary.warnings.iter().map(ToString::to_string).collect();
    for registry in &unused {
        let at = config_path
            .as_ref()
            .map_or("built-in defaults".to_owned(), |p| p.display().to_string());
        warnings.push(format!(
            "{at}: {}",
            Reachable::unused_registry_warning(registry)
        ));
    }
    println!("warnings: {}", warnings.len());
    for warning in &warnings {
        println!("  {warning}");
    }
    // A refused cluster object does not stop `serve` (the rest is served), but it is an error
    // of the configuration to fix: listed, and the check fails.
    if !summary.errors.is_empty() {
        println!("refused cluster objects: {}", summary.errors.len());
        for error in &summary.errors {
            println!("  {error}");
        }
        bail!(
            "{} cluster object(s) refused: {}",
            summary.errors.len(),
            summary
                .errors
                .iter()
                .map(|e| e.member.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if strict && !warnings.is_empty() {
        bail!(
            "--strict: {} warning(s) are errors:\n  {}",
            warnings.len(),
            warnings.join("\n  ")
        );
    }
    println!("ok");
    Ok(())
}
