//! The `mirrorgate` command: the proxy (`serve`), answers to rule questions (`resolve`,
//! `check`, `registries-conf`) from the configured rule files, and the commands that talk to a
//! running server (`status`, `deny`, `allow`, `warm`). This file holds the command line, the
//! loading of the rules the commands share, and the dispatch to each command's module in
//! [`cli`]. Errors are reported here, at the top, with their full context.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use mirrorgate::config::{self, Config};
use mirrorgate::rules::{self, RuleSet};
use mirrorgate::source;

mod cli;

use cli::admin;

/// jemalloc rather than glibc's malloc. An idle keep-alive connection holds buffers of 8 KiB
/// (hyper's read buffer and response-head buffer) of which it has written the first page;
/// jemalloc gives each two pages of their own and keeps its bookkeeping elsewhere, where glibc's
/// chunk headers between neighbouring buffers make more of their pages resident (10,000 idle
/// connections: the manual, Performance, "Where clusters hurt"). It also keeps freed pages for reuse and returns
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
        Command::Serve { config, log_format } => cli::serve::serve(
            &RuleArgs {
                config,
                rules: Vec::new(),
            },
            log_format,
        ),
        Command::Resolve { rules, json, image } => cli::resolve::resolve(&rules, json, &image),
        Command::Check {
            rules,
            offline,
            strict,
        } => cli::check::check(&rules, offline, strict),
        Command::RegistriesConf { rules } => cli::registries_conf::print(&rules),
        Command::Status { server, json } => {
            let admin = admin::connect("mirrorgate-status", Duration::from_secs(30), server)?;
            cli::status::status(&admin, json)
        }
        Command::Deny {
            server,
            reason,
            digests,
        } => {
            let admin = admin::connect("mirrorgate-deny", Duration::from_secs(30), server)?;
            cli::withdraw::deny(&admin, &reason, &digests)
        }
        Command::Allow { server, digests } => {
            let admin = admin::connect("mirrorgate-allow", Duration::from_secs(30), server)?;
            cli::withdraw::allow(&admin, &digests)
        }
        Command::Warm {
            server,
            dry_run,
            releases,
        } => {
            let admin = admin::connect("mirrorgate-warm", Duration::from_secs(300), server)?;
            if dry_run {
                cli::warm::dry_run(&admin, &releases)
            } else {
                cli::warm::warm(&admin, &releases)
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
