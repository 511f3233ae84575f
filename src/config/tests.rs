//! Tests of the file format: defaults, composition of the sections, and errors naming the file and key.

use std::time::Duration;

use super::*;

const ORIGIN: &str = "config/mirrorgate.yaml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_str(text, ORIGIN)
}

fn error_text(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => err.to_string(),
    }
}

const FULL_EXAMPLE: &str = r#"
listen: 127.0.0.1:5000          # OCI API, plus /metrics /healthz /readyz unless metrics_listen is set
metrics_listen: null            # optional second address for /metrics
rules: [config/rules]           # files or directories of YAML/JSON mirror objects, read in sorted order
default_registry: docker.io
registries:                     # per-registry settings, keyed by the host as written in references and rules
  mirror.corp.com:
    endpoint: https://10.0.0.5:8443   # where to connect; default https://<host>
    insecure: false                   # true: plain http allowed, TLS not verified
    ca_file: null                     # extra PEM roots for this registry
pull_secret: null               # dockerconfigjson / auth.json with credentials per registry
cache:
  dir: var/cache                # blobs and manifests on disk
  max_size: 10GiB               # disk bound, least recently used evicted first
  memory: 256MiB                # in-memory manifest bound
  tag_ttl: 5m                   # tag → digest answers are reused this long without asking upstream
  stale_if_error: 24h           # serve an expired tag answer when every upstream fails
upstream:
  connect_timeout: 5s
  timeout: 30s
watch: true                     # reload rule files and this file on change (also on SIGHUP)
"#;

#[test]
fn empty_file_gives_defaults() {
    assert_eq!(parse("").ok(), Some(Config::default()));
}

#[test]
fn comment_only_file_gives_defaults() {
    assert_eq!(
        parse("# nothing set yet\n# listen: 0.0.0.0:5000\n").ok(),
        Some(Config::default())
    );
}

#[test]
fn defaults_match_the_documented_values() {
    let expected = Config {
        listen: "127.0.0.1:5000".parse().expect("literal address"),
        metrics_listen: None,
        rules: vec![PathBuf::from("config/rules")],
        default_registry: "docker.io".to_owned(),
        registries: BTreeMap::new(),
        pull_secret: None,
        cache: CacheConfig {
            dir: PathBuf::from("var/cache"),
            max_size: ByteSize(10 * 1024 * 1024 * 1024),
            memory: ByteSize(256 * 1024 * 1024),
            tag_ttl: Duration::from_secs(300),
            stale_if_error: Duration::from_secs(86_400),
            min_free_space: ByteSize(512 * 1024 * 1024),
            shared: None,
        },
        upstream: UpstreamConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            redirect_allowed_networks: Vec::new(),
        },
        watch: true,
        rules_strict: false,
        log_level: "info".to_owned(),
        allow_any_registry: false,
        tls: None,
        clients: ClientsConfig {
            mode: ClientMode::Anonymous,
            htpasswd_file: None,
            tokens_file: None,
            scopes: BTreeMap::new(),
            trust_loopback: true,
        },
        limits: LimitsConfig {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            max_header_size: ByteSize(64 * 1024),
            max_headers: 100,
            max_upstream_fetches: 64,
            upstream_queue_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(30),
            max_concurrent_streams: 100,
        },
        self_names: Vec::new(),
        via_token: None,
        #[cfg(feature = "kubernetes")]
        kubernetes: None,
        warm: crate::warm::WarmConfig::default(),
    };
    assert_eq!(Config::default(), expected);
}

#[test]
fn full_example_parses_to_expected_values() {
    let mut expected = Config::default();
    expected.registries.insert(
        "mirror.corp.com".to_owned(),
        RegistrySettings {
            endpoint: Some("https://10.0.0.5:8443".parse().expect("valid endpoint")),
            insecure: false,
            ca_file: None,
        },
    );
    assert_eq!(parse(FULL_EXAMPLE).ok(), Some(expected));
}

#[test]
fn null_value_means_default() {
    let text = "listen:\nrules: ~\ncache:\nupstream: null\nregistries:\n  quay.io:\n";
    let mut expected = Config::default();
    expected
        .registries
        .insert("quay.io".to_owned(), RegistrySettings::default());
    assert_eq!(parse(text).ok(), Some(expected));
}

#[test]
fn null_keys_inside_sections_keep_defaults_that_are_not_their_types_own() {
    let text = "limits:\n  max_connections:\nwarm:\n  concurrency: ~\n  hosted_clusters: null\n\
                clients:\n  trust_loopback:\nupstream:\n  timeout:\n";
    assert_eq!(parse(text).ok(), Some(Config::default()));
}

#[test]
fn json_config_is_accepted() {
    let text = r#"{"listen": "[::1]:5001", "cache": {"max_size": "1GiB", "tag_ttl": "0s"},
                       "registries": {"localhost:5000": {"endpoint": "http://localhost:5000",
                                                         "insecure": true}}}"#;
    let config = parse(text).expect("valid JSON config");
    assert_eq!(
        (
            config.listen.to_string(),
            config.cache.max_size,
            config.cache.tag_ttl,
            config.endpoint_for("localhost:5000").to_string(),
        ),
        (
            "[::1]:5001".to_owned(),
            ByteSize::gib(1),
            Duration::ZERO,
            "http://localhost:5000".to_owned(),
        )
    );
}

#[test]
fn unknown_top_level_key_is_rejected_and_named() {
    let err = error_text("listen: 127.0.0.1:5000\nlisten_addr: 0.0.0.0:5000\n");
    assert!(
        err.starts_with("config/mirrorgate.yaml:2:1: ") && err.contains("`listen_addr`"),
        "{err}"
    );
}

#[test]
fn unknown_nested_key_is_rejected() {
    let err = error_text("cache:\n  maxsize: 10GiB\n");
    assert!(err.contains("unknown field `maxsize`"), "{err}");
}

#[test]
fn an_unknown_key_lists_the_keys_of_its_section_in_order() {
    let err = error_text("limits:\n  max_conections: 1\n");
    assert!(
        err.contains(
            "unknown field `max_conections`, expected one of max_connections, \
             header_read_timeout, max_header_size, max_headers, max_upstream_fetches, \
             upstream_queue_timeout, write_stall_timeout, max_concurrent_streams"
        ),
        "{err}"
    );
}

#[test]
fn unknown_registry_key_is_rejected() {
    let err = error_text("registries:\n  quay.io:\n    endpoints: https://q\n");
    assert!(err.contains("unknown field `endpoints`"), "{err}");
}

#[test]
fn bad_duration_is_rejected_with_location() {
    let err = error_text("upstream:\n  timeout: 30 seconds later\n");
    assert!(
        err.starts_with("config/mirrorgate.yaml:2:") && err.contains("invalid duration"),
        "{err}"
    );
}

#[test]
fn duration_without_unit_is_rejected() {
    let err = error_text("upstream:\n  timeout: 30\n");
    assert!(err.contains("invalid duration \"30\""), "{err}");
}

#[test]
fn zero_tag_ttl_is_accepted() {
    let config = parse("cache:\n  tag_ttl: 0s\n").expect("0s is a valid tag_ttl");
    assert_eq!(config.cache.tag_ttl, Duration::ZERO);
}

#[test]
fn decimal_size_unit_is_rejected_with_binary_hint() {
    let err = error_text("cache:\n  max_size: 10GB\n");
    assert!(err.contains("use the binary unit \"GiB\""), "{err}");
}

#[test]
fn binary_sizes_and_bare_bytes_parse() {
    let config = parse("cache:\n  memory: 512MiB\n  max_size: 1GiB\n")
        .and_then(|a| parse("cache:\n  max_size: 1048576\n").map(|b| (a, b)))
        .expect("valid sizes");
    assert_eq!(
        (
            config.0.cache.memory,
            config.0.cache.max_size,
            config.1.cache.max_size
        ),
        (ByteSize(512 << 20), ByteSize(1 << 30), ByteSize(1 << 20))
    );
}

#[test]
fn negative_yaml_size_is_rejected() {
    let err = error_text("cache:\n  memory: -1\n");
    assert!(err.contains("must not be negative"), "{err}");
}

#[test]
fn http_endpoint_without_insecure_is_rejected() {
    let err = error_text("registries:\n  mirror.corp.com:\n    endpoint: http://10.0.0.5\n");
    assert_eq!(
        err,
        "config/mirrorgate.yaml: registries.\"mirror.corp.com\".endpoint: plain http \
             endpoint \"http://10.0.0.5\" needs insecure: true"
    );
}

#[test]
fn http_endpoint_with_insecure_is_accepted() {
    let text =
        "registries:\n  mirror.corp.com:\n    endpoint: http://10.0.0.5/\n    insecure: true\n";
    let config = parse(text).expect("insecure http endpoint is allowed");
    assert_eq!(
        config.endpoint_for("mirror.corp.com").to_string(),
        "http://10.0.0.5"
    );
}

#[test]
fn endpoint_with_path_is_rejected() {
    let err = error_text("registries:\n  a.io:\n    endpoint: https://b.io/v2\n");
    assert!(err.contains("must not have a path"), "{err}");
}

#[test]
fn unconfigured_registry_defaults_to_https_host() {
    assert_eq!(
        Config::default().endpoint_for("quay.io:8443").to_string(),
        "https://quay.io:8443"
    );
}

#[test]
fn docker_hub_defaults_to_its_registry_api_host() {
    assert_eq!(
        Config::default().endpoint_for("docker.io").to_string(),
        "https://registry-1.docker.io"
    );
}

#[test]
fn bad_registry_host_key_is_rejected() {
    let err = error_text("registries:\n  https://mirror.corp.com:\n    insecure: true\n");
    assert!(
        err.starts_with("config/mirrorgate.yaml: registries.\"https://mirror.corp.com\": "),
        "{err}"
    );
}

#[test]
fn registry_host_grammar() {
    let verdicts: Vec<(&str, bool)> = [
        "quay.io",
        "localhost",
        "localhost:5000",
        "10.0.0.5:8443",
        "[::1]:5000",
        "[fd00::1]",
        "my-registry.example.com",
        "-bad.io",
        "bad-.io",
        "a..b",
        "under_score.io",
        "quay.io/ns",
        "quay.io:0",
        "quay.io:65536",
        "quay.io:",
        "::1",
        "[::1",
        "[nope]",
        "",
    ]
    .iter()
    .map(|h| (*h, Host::parse_registry(h).is_ok()))
    .collect();
    let expected: Vec<(&str, bool)> = verdicts
        .iter()
        .enumerate()
        .map(|(i, (h, _))| (*h, i < 7))
        .collect();
    assert_eq!(verdicts, expected);
}

#[test]
fn bad_default_registry_is_rejected() {
    let err = error_text("default_registry: docker.io/library\n");
    assert!(err.contains(": default_registry: "), "{err}");
}

#[test]
fn invalid_log_level_is_rejected() {
    let err = error_text("log_level: \"mirrorgate=loud\"\n");
    assert!(err.contains("log_level: invalid log filter"), "{err}");
}

#[test]
fn log_level_filter_is_kept() {
    assert_eq!(
        parse("log_level: mirrorgate=debug\n").unwrap().log_level,
        "mirrorgate=debug"
    );
}

#[test]
fn zero_memory_is_rejected() {
    let err = error_text("cache:\n  memory: 0MiB\n");
    assert!(
        err.ends_with("cache.memory: must be greater than 0"),
        "{err}"
    );
}

#[test]
fn zero_max_size_is_rejected() {
    let err = error_text("cache:\n  max_size: 0\n");
    assert!(
        err.ends_with("cache.max_size: must be greater than 0"),
        "{err}"
    );
}

#[test]
fn zero_timeout_is_rejected() {
    let err = error_text("upstream:\n  connect_timeout: 0s\n");
    assert!(
        err.ends_with("upstream.connect_timeout: must be greater than 0s"),
        "{err}"
    );
}

#[test]
fn same_listen_and_metrics_listen_is_rejected() {
    let err = error_text("listen: 127.0.0.1:5000\nmetrics_listen: 127.0.0.1:5000\n");
    assert!(err.contains(": metrics_listen: "), "{err}");
}

#[test]
fn metrics_listen_on_wildcard_listen_port_is_rejected() {
    let err = error_text("listen: 0.0.0.0:5000\nmetrics_listen: 127.0.0.1:5000\n");
    assert!(err.contains("would bind the same port"), "{err}");
}

#[test]
fn two_ephemeral_listen_ports_are_accepted() {
    let text = "listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\n";
    assert!(parse(text).is_ok());
}

#[test]
fn distinct_metrics_listen_is_accepted() {
    let config = parse("metrics_listen: 127.0.0.1:9100\n").expect("distinct addresses");
    assert_eq!(
        config.metrics_listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
    );
}

#[test]
fn empty_rules_is_rejected() {
    let err = error_text("rules: []\n");
    assert!(
        err.ends_with("rules: must name at least one file or directory"),
        "{err}"
    );
}

#[test]
fn bad_listen_address_is_a_parse_error_with_location() {
    let err = error_text("watch: false\nlisten: localhost:5000\n");
    assert!(
        err.starts_with("config/mirrorgate.yaml:2:") && err.contains("host names are not"),
        "{err}"
    );
}

#[test]
fn load_missing_file_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent.yaml");
    let err = Config::load(&path).expect_err("file does not exist");
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn load_reads_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mirrorgate.yaml");
    std::fs::write(&path, "watch: false\n").expect("write config");
    assert!(!Config::load(&path).expect("valid config").watch);
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mirrorgate.yaml");
    std::fs::write(&path, "rules: []\n").expect("write config");
    let err = Config::load(&path).expect_err("empty rules");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: rules: ", path.display())),
        "{err}"
    );
}

#[test]
fn parse_error_keeps_a_snippet_naming_the_file() {
    let snippet = match parse("cache:\n  maxsize: 1\n") {
        Err(ConfigError::Parse { snippet, .. }) => snippet,
        other => panic!("expected a parse error, got {other:?}"),
    };
    assert!(snippet.contains("config/mirrorgate.yaml:2:3"), "{snippet}");
}

#[test]
fn tls_section_parses() {
    let config = parse("tls:\n  cert_file: /etc/mirrorgate/tls.crt\n  key_file: tls.key\n")
        .expect("valid tls section");
    assert_eq!(
        config.tls,
        Some(TlsConfig {
            cert_file: PathBuf::from("/etc/mirrorgate/tls.crt"),
            key_file: PathBuf::from("tls.key"),
        })
    );
}

#[test]
fn null_tls_means_plain_http() {
    assert_eq!(parse("tls:\n").ok(), Some(Config::default()));
}

#[test]
fn tls_without_key_file_is_rejected_with_location() {
    let err = error_text("watch: false\ntls:\n  cert_file: tls.crt\n");
    assert!(
        err.starts_with("config/mirrorgate.yaml:") && err.contains("`key_file`"),
        "{err}"
    );
}

#[test]
fn unknown_tls_key_is_rejected() {
    let err = error_text("tls:\n  cert_file: tls.crt\n  key_file: tls.key\n  ca_file: ca.crt\n");
    assert!(err.contains("unknown field `ca_file`"), "{err}");
}

#[test]
fn empty_tls_path_is_rejected() {
    let err = error_text("tls:\n  cert_file: tls.crt\n  key_file: \"\"\n");
    assert!(err.ends_with(": tls.key_file: empty path"), "{err}");
}

#[test]
fn clients_htpasswd_section_parses() {
    let text = "clients:\n  mode: htpasswd\n  htpasswd_file: /etc/mirrorgate/htpasswd\n  \
                    scopes:\n    alice: [\"quay.io/openshift-release-dev/*\", \"*\"]\n";
    let clients = parse(text).expect("valid clients section").clients;
    assert_eq!(
        clients,
        ClientsConfig {
            mode: ClientMode::Htpasswd,
            htpasswd_file: Some(PathBuf::from("/etc/mirrorgate/htpasswd")),
            tokens_file: None,
            scopes: BTreeMap::from([(
                "alice".to_owned(),
                vec![
                    crate::access::ClientScope::Under("quay.io/openshift-release-dev".to_owned()),
                    crate::access::ClientScope::All,
                ]
            )]),
            trust_loopback: true,
        }
    );
}

#[test]
fn clients_token_section_parses() {
    let clients = parse("clients:\n  mode: token\n  tokens_file: tokens.yaml\n")
        .expect("valid clients section")
        .clients;
    assert_eq!(
        (clients.mode, clients.tokens_file),
        (ClientMode::Token, Some(PathBuf::from("tokens.yaml")))
    );
}

#[test]
fn loopback_is_trusted_unless_clients_say_otherwise() {
    let trusted = |text: &str| {
        parse(text)
            .expect("valid clients section")
            .clients
            .trust_loopback
    };
    assert_eq!(
        (
            trusted(""),
            trusted("clients:\n  mode: anonymous\n"),
            trusted("clients:\n  mode: anonymous\n  trust_loopback: false\n"),
        ),
        (true, true, false)
    );
}

#[test]
fn null_clients_means_anonymous() {
    assert_eq!(parse("clients:\n").ok(), Some(Config::default()));
}

#[test]
fn unknown_clients_mode_is_rejected_with_location() {
    let err = error_text("watch: false\nclients:\n  mode: ldap\n");
    assert!(
        err.starts_with("config/mirrorgate.yaml:3:") && err.contains("ldap"),
        "{err}"
    );
}

#[test]
fn unknown_clients_key_is_rejected() {
    let err = error_text("clients:\n  mode: token\n  token_file: t.yaml\n");
    assert!(err.contains("unknown field `token_file`"), "{err}");
}

#[test]
fn clients_mode_without_its_file_is_rejected() {
    let errors = [
        error_text("clients:\n  mode: htpasswd\n"),
        error_text("clients:\n  mode: token\n"),
    ];
    assert_eq!(
        errors,
        [
            "config/mirrorgate.yaml: clients.htpasswd_file: mode htpasswd needs htpasswd_file",
            "config/mirrorgate.yaml: clients.tokens_file: mode token needs tokens_file",
        ]
    );
}

#[test]
fn clients_keys_of_another_mode_are_rejected() {
    let errors = [
        error_text("clients:\n  htpasswd_file: h\n"),
        error_text("clients:\n  mode: token\n  tokens_file: t\n  scopes:\n    a: [\"*\"]\n"),
        error_text("clients:\n  mode: htpasswd\n  htpasswd_file: h\n  tokens_file: t\n"),
    ];
    assert!(
        errors[0].ends_with("clients.htpasswd_file: not used with mode anonymous")
            && errors[1].contains("clients.scopes: not used with mode token; the scopes")
            && errors[2].ends_with("clients.tokens_file: not used with mode htpasswd"),
        "{errors:?}"
    );
}

#[test]
fn bad_client_scope_is_rejected_with_location() {
    let err = error_text(
        "clients:\n  mode: htpasswd\n  htpasswd_file: h\n  scopes:\n    alice: [busybox]\n",
    );
    assert!(
        err.starts_with("config/mirrorgate.yaml:5:") && err.contains("starts with the registry"),
        "{err}"
    );
}

#[test]
fn empty_client_scope_list_is_rejected() {
    let err =
        error_text("clients:\n  mode: htpasswd\n  htpasswd_file: h\n  scopes:\n    alice: []\n");
    assert!(
        err.contains("clients.scopes.\"alice\": empty list"),
        "{err}"
    );
}

#[test]
fn limits_section_parses() {
    let config = parse(
            "limits:\n  max_connections: 10\n  header_read_timeout: 2s\n  max_header_size: 16KiB\n  max_headers: 200\n  max_upstream_fetches: 3\n  upstream_queue_timeout: 500ms\n  write_stall_timeout: 5s\n  max_concurrent_streams: 20\n",
        )
        .expect("valid limits");
    assert_eq!(
        config.limits,
        LimitsConfig {
            max_connections: 10,
            header_read_timeout: Duration::from_secs(2),
            max_header_size: ByteSize::kib(16),
            max_headers: 200,
            max_upstream_fetches: 3,
            upstream_queue_timeout: Duration::from_millis(500),
            write_stall_timeout: Duration::from_secs(5),
            max_concurrent_streams: 20,
        }
    );
}

#[test]
fn zero_limits_are_rejected_naming_the_key() {
    let errors: Vec<String> = [
        "limits:\n  max_connections: 0\n",
        "limits:\n  max_upstream_fetches: 0\n",
        "limits:\n  header_read_timeout: 0s\n",
        "limits:\n  write_stall_timeout: 0s\n",
        "limits:\n  max_concurrent_streams: 0\n",
    ]
    .iter()
    .map(|text| error_text(text))
    .collect();
    assert!(
        errors[0].contains("limits.max_connections: must be greater than 0")
            && errors[1].contains("limits.max_upstream_fetches: must be greater than 0")
            && errors[2].contains("limits.header_read_timeout: must be greater than 0s")
            && errors[3].contains("limits.write_stall_timeout: must be greater than 0s")
            && errors[4].contains("limits.max_concurrent_streams: must be greater than 0"),
        "{errors:?}"
    );
}

#[test]
fn too_few_headers_are_rejected() {
    let err = error_text("limits:\n  max_headers: 8\n");
    assert!(
        err.contains("limits.max_headers: must be at least 16"),
        "{err}"
    );
}

#[test]
fn a_header_size_below_what_hyper_needs_is_rejected() {
    let err = error_text("limits:\n  max_header_size: 1KiB\n");
    assert!(
        err.contains("limits.max_header_size: must be at least 8KiB"),
        "{err}"
    );
}

#[test]
fn redirect_networks_accept_networks_and_single_addresses() {
    let config =
        parse("upstream:\n  redirect_allowed_networks: [127.0.0.0/8, \"::1\", 169.254.10.7/16]\n")
            .expect("valid networks");
    let networks: Vec<String> = config
        .upstream
        .redirect_allowed_networks
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(networks, ["127.0.0.0/8", "::1/128", "169.254.0.0/16"]);
}

#[test]
fn a_bad_redirect_network_is_rejected_with_location() {
    let err = error_text("upstream:\n  redirect_allowed_networks: [10.0.0.0/33]\n");
    assert!(
        err.starts_with("config/mirrorgate.yaml:2:") && err.contains("is not an IP network"),
        "{err}"
    );
}

#[test]
fn rules_strict_is_off_unless_set() {
    assert_eq!(
        (
            parse("").map(|c| c.rules_strict).ok(),
            parse("rules_strict: true\n").map(|c| c.rules_strict).ok(),
        ),
        (Some(false), Some(true))
    );
}

#[test]
fn the_shipped_example_file_states_the_defaults() {
    let shipped = include_str!("../../config/mirrorgate.yaml");
    assert_eq!(parse(shipped).ok(), Some(Config::default()));
}

#[test]
fn a_non_loopback_listen_needs_the_clients_section() {
    let err = error_text("listen: 0.0.0.0:5000\n");
    assert!(
        err.contains("clients: listen 0.0.0.0:5000 is not a loopback address"),
        "{err}"
    );
}

#[test]
fn a_non_loopback_listen_with_explicit_anonymous_clients_is_accepted() {
    let config = parse("listen: \"[::]:5000\"\nclients:\n  mode: anonymous\n");
    assert!(config.is_ok(), "{config:?}");
}

#[test]
fn self_names_include_the_listen_address() {
    let config = parse("self_names: [mirrorgate.mirrorgate.svc:5000, mirrorgate.example.com]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.self_names(),
        vec![
            "mirrorgate.mirrorgate.svc:5000",
            "mirrorgate.example.com",
            "127.0.0.1:5000"
        ]
    );
}

#[test]
fn an_all_interfaces_listen_address_adds_the_loopback_names_and_port_zero_none() {
    let wildcard = parse("listen: \"[::]:5000\"\nclients:\n  mode: anonymous\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let ephemeral = parse("listen: 127.0.0.1:0\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (wildcard.self_names(), ephemeral.self_names()),
        (
            vec![
                "localhost:5000".to_owned(),
                "127.0.0.1:5000".to_owned(),
                "[::1]:5000".to_owned()
            ],
            vec![]
        )
    );
}

#[test]
fn a_self_name_with_a_path_is_rejected_and_named() {
    let err = error_text("self_names: [ok.example.com, mirrorgate.svc:5000/quay.io]\n");
    assert_eq!(
        (
            err.starts_with("config/mirrorgate.yaml: self_names[1]: "),
            err.contains("a host has no path")
        ),
        (true, true),
        "{err}"
    );
}

#[test]
fn a_via_token_is_a_token_or_host_port() {
    let accepted = parse("via_token: mirrorgate.mirrorgate.svc:5000\n")
        .map(|c| c.via_token)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = error_text("via_token: \"mirror gate\"\n");
    assert_eq!(
        (
            accepted.as_deref(),
            err.starts_with("config/mirrorgate.yaml: via_token: ' ' is not allowed")
        ),
        (Some("mirrorgate.mirrorgate.svc:5000"), true),
        "{err}"
    );
}

#[cfg(feature = "kubernetes")]
#[test]
fn the_kubernetes_section_is_read_with_its_defaults_and_absent_means_files_only() {
    let absent = parse("rules: [r]\n").unwrap().kubernetes;
    let empty = parse("kubernetes: {}\n").unwrap().kubernetes;
    let written = parse("kubernetes:\n  kubeconfig: /etc/kube/config\n  hosted_clusters: false\n")
        .unwrap()
        .kubernetes;
    assert_eq!(
        (absent, empty, written),
        (
            None,
            Some(crate::kubernetes::Config::default()),
            Some(crate::kubernetes::Config {
                kubeconfig: Some(PathBuf::from("/etc/kube/config")),
                hosted_clusters: false,
                ..crate::kubernetes::Config::default()
            })
        )
    );
}

#[cfg(feature = "kubernetes")]
#[test]
fn a_bad_kubernetes_section_names_the_file_and_key() {
    assert_eq!(
        error_text("kubernetes:\n  namespaces: [clusters, Bad_Name]\n")
            .split(": invalid")
            .next(),
        Some("config/mirrorgate.yaml: kubernetes.namespaces[1]")
    );
    assert!(error_text("kubernetes:\n  namespace: [x]\n").contains("namespace"));
}
