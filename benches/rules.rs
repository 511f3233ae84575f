//! Benchmarks of the rules engine: resolving references against, and loading, a generated rule
//! set of realistic shape with 10, 1,000 and 10,000 source entries.
//!
//! The rule set is a fixed core of ten entries (a registry → namespace → repository nest on a
//! registry with a port, a `*.domain` wildcard, Docker Hub's `library`, a NeverContactSource
//! namespace) plus generated bulk entries: namespaces and repositories under quay.io,
//! registry.redhat.io, docker.io and registry.corp.example.com:5000, in IDMS and ITMS objects of
//! 5–50 entries, 1–3 mirrors each, about 5% NeverContactSource sources, a few registry-level
//! rules and wildcards. The benchmark references only touch the core scopes, so they resolve the
//! same way at every size and the sizes measure the effect of the map alone; that is asserted
//! once per size before anything is timed.

use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use mirrorgate::reference::Reference;
use mirrorgate::rules::{self, RuleSet, Scope};

/// Source entries in the generated rule sets.
const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// Files the largest rule set is split across for `load_files`.
const FILES: usize = 50;
/// Benchmark references, cycled.
const REFERENCES: usize = 64;

/// splitmix64: a small deterministic generator, so every run benchmarks the same rule set.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

/// FNV-1a, to make a source's policy a function of its string: every entry for one source string
/// then agrees, as the MCO requires.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Idms,
    Itms,
}

struct Entry {
    source: String,
    mirrors: Vec<String>,
    /// `Some(true)`: NeverContactSource; `Some(false)`: an explicit AllowContactingSource.
    policy: Option<bool>,
}

struct Object {
    kind: Kind,
    entries: Vec<Entry>,
}

fn entry(source: &str, mirrors: &[&str], policy: Option<bool>) -> Entry {
    Entry {
        source: source.to_owned(),
        mirrors: mirrors.iter().map(|m| (*m).to_owned()).collect(),
        policy,
    }
}

/// The ten core entries the benchmark references resolve against.
fn core_objects() -> Vec<Object> {
    const CORP: &str = "registry.corp.example.com:5000";
    vec![
        Object {
            kind: Kind::Idms,
            entries: vec![
                entry(
                    CORP,
                    &[
                        "mirror-a.corp.example.com/corp",
                        "mirror-b.corp.example.com/corp",
                    ],
                    None,
                ),
                entry(
                    "registry.corp.example.com:5000/platform",
                    &["mirror-a.corp.example.com/corp/platform"],
                    None,
                ),
                entry(
                    "registry.corp.example.com:5000/platform/api-gateway",
                    &[
                        "mirror-a.corp.example.com/corp/platform/api-gateway",
                        "mirror-b.corp.example.com/corp/platform/api-gateway",
                        "mirror-c.corp.example.com/corp/platform/api-gateway",
                    ],
                    None,
                ),
                entry(
                    "*.apps.example.com",
                    &["mirror-a.corp.example.com/apps"],
                    None,
                ),
                entry(
                    "docker.io/library",
                    &[
                        "mirror-a.corp.example.com/dockerhub/library",
                        "mirror-b.corp.example.com/dockerhub/library",
                    ],
                    None,
                ),
            ],
        },
        Object {
            kind: Kind::Itms,
            entries: vec![
                entry(CORP, &["mirror-a.corp.example.com/corp"], None),
                entry(
                    "registry.corp.example.com:5000/platform",
                    &[
                        "mirror-b.corp.example.com/corp/platform",
                        "mirror-c.corp.example.com/corp/platform",
                    ],
                    Some(false),
                ),
                entry(
                    "*.apps.example.com",
                    &["mirror-b.corp.example.com/apps"],
                    None,
                ),
                entry(
                    "docker.io/library",
                    &["mirror-a.corp.example.com/dockerhub/library"],
                    None,
                ),
                entry(
                    "registry.redhat.io/restricted",
                    &["mirror-a.corp.example.com/redhat/restricted"],
                    Some(true),
                ),
            ],
        },
    ]
}

/// Registries of the bulk entries: host, mirror path prefix, namespace prefix, weight (%).
const REGISTRIES: [(&str, &str, &str, usize); 4] = [
    ("quay.io", "quay", "team", 40),
    ("registry.redhat.io", "redhat", "ns", 25),
    ("docker.io", "dockerhub", "org", 15),
    ("registry.corp.example.com:5000", "corp", "team", 20),
];

/// Registries that get bulk registry-level rules (nesting the bulk namespace and repository
/// rules under them). docker.io gets none, so Docker Hub references can match nothing.
const REGISTRY_LEVEL: [(&str, &str); 2] = [("registry.redhat.io", "redhat"), ("quay.io", "quay")];

/// 1–3 of the three mirror hosts, in a fixed order (so merged lists never contradict).
fn mirrors_for(rng: &mut Rng, path: &str) -> Vec<String> {
    let hosts = ["mirror-a", "mirror-b", "mirror-c"];
    let chosen: Vec<&str> = match rng.below(10) {
        0..=3 => vec![hosts[rng.below(3)]],
        4..=7 => {
            let skip = rng.below(3);
            (0..3).filter(|&i| i != skip).map(|i| hosts[i]).collect()
        }
        _ => hosts.to_vec(),
    };
    chosen
        .into_iter()
        .map(|host| format!("{host}.corp.example.com/{path}"))
        .collect()
}

/// The `i`th bulk entry.
fn bulk_entry(rng: &mut Rng, i: usize, bulk: usize) -> Entry {
    if i % 1000 == 500 {
        let (host, prefix) = REGISTRY_LEVEL[(i / 1000) % REGISTRY_LEVEL.len()];
        return Entry {
            source: host.to_owned(),
            mirrors: mirrors_for(rng, prefix),
            policy: None,
        };
    }
    if i % 1000 == 250 {
        let k = i / 1000;
        return Entry {
            source: format!("*.cdn-{k:02}.example.net"),
            mirrors: mirrors_for(rng, &format!("cdn-{k:02}")),
            policy: None,
        };
    }
    let mut pick = rng.below(100);
    let &(host, prefix, ns_prefix, _) = REGISTRIES
        .iter()
        .find(|r| {
            if pick < r.3 {
                true
            } else {
                pick -= r.3;
                false
            }
        })
        .expect("weights sum to 100");
    let namespaces = (bulk / 25).max(4);
    let namespace = format!("{ns_prefix}-{:04}", rng.below(namespaces));
    let path = if rng.percent(30) {
        namespace
    } else {
        format!("{namespace}/app-{:02}", rng.below(30))
    };
    let source = format!("{host}/{path}");
    let policy = if fnv1a(&source).is_multiple_of(20) {
        Some(true)
    } else if rng.percent(10) {
        Some(false)
    } else {
        None
    };
    Entry {
        mirrors: mirrors_for(rng, &format!("{prefix}/{path}")),
        source,
        policy,
    }
}

/// The objects of a rule set with `n` source entries (at least the ten core ones).
fn generate(n: usize) -> Vec<Object> {
    let mut objects = core_objects();
    let core: usize = objects.iter().map(|o| o.entries.len()).sum();
    let bulk = n.saturating_sub(core);
    let mut rng = Rng(0x6d69_7272_6f72_6761);
    let mut i = 0;
    while i < bulk {
        let kind = if rng.percent(60) {
            Kind::Idms
        } else {
            Kind::Itms
        };
        let size = (5 + rng.below(46)).min(bulk - i);
        let entries = (i..i + size)
            .map(|j| bulk_entry(&mut rng, j, bulk))
            .collect();
        objects.push(Object { kind, entries });
        i += size;
    }
    objects
}

/// Renders objects as multi-document YAML; `first` numbers the object names.
fn render(objects: &[Object], first: usize) -> String {
    let mut out = String::new();
    for (k, object) in objects.iter().enumerate() {
        let (kind, short, field) = match object.kind {
            Kind::Idms => ("ImageDigestMirrorSet", "idms", "imageDigestMirrors"),
            Kind::Itms => ("ImageTagMirrorSet", "itms", "imageTagMirrors"),
        };
        if k > 0 {
            out.push_str("---\n");
        }
        let _ = writeln!(
            out,
            "apiVersion: config.openshift.io/v1\nkind: {kind}\nmetadata:\n  name: {short}-{:05}\nspec:\n  {field}:",
            first + k
        );
        for entry in &object.entries {
            if entry.source.starts_with('*') {
                let _ = writeln!(out, "  - source: \"{}\"", entry.source);
            } else {
                let _ = writeln!(out, "  - source: {}", entry.source);
            }
            out.push_str("    mirrors:\n");
            for mirror in &entry.mirrors {
                let _ = writeln!(out, "    - {mirror}");
            }
            match entry.policy {
                Some(true) => out.push_str("    mirrorSourcePolicy: NeverContactSource\n"),
                Some(false) => out.push_str("    mirrorSourcePolicy: AllowContactingSource\n"),
                None => {}
            }
        }
    }
    out
}

/// A benchmark reference: a template (`{tag}`, `{digest}` are filled per copy) and the expected
/// resolution.
struct Probe {
    template: &'static str,
    scope: Option<&'static str>,
    sources: usize,
    blocked: usize,
}

const PROBES: [Probe; 15] = [
    // A digest reference matching a repository-level rule (three digest mirrors + source).
    Probe {
        template: "registry.corp.example.com:5000/platform/api-gateway@{digest}",
        scope: Some("registry.corp.example.com:5000/platform/api-gateway"),
        sources: 4,
        blocked: 0,
    },
    Probe {
        template: "registry.corp.example.com:5000/platform/api-gateway:{tag}@{digest}",
        scope: Some("registry.corp.example.com:5000/platform/api-gateway"),
        sources: 4,
        blocked: 0,
    },
    // A tag reference matching a namespace rule (two tag mirrors + source).
    Probe {
        template: "registry.corp.example.com:5000/platform/scheduler:{tag}",
        scope: Some("registry.corp.example.com:5000/platform"),
        sources: 3,
        blocked: 0,
    },
    Probe {
        template: "registry.corp.example.com:5000/platform/scheduler@{digest}",
        scope: Some("registry.corp.example.com:5000/platform"),
        sources: 2,
        blocked: 0,
    },
    // A tag reference under a repository rule with digest mirrors only: the longest scope still
    // applies, and it has no tag mirrors.
    Probe {
        template: "registry.corp.example.com:5000/platform/api-gateway:{tag}",
        scope: Some("registry.corp.example.com:5000/platform/api-gateway"),
        sources: 1,
        blocked: 0,
    },
    // Only the registry-level rule matches.
    Probe {
        template: "registry.corp.example.com:5000/legacy/billing:{tag}",
        scope: Some("registry.corp.example.com:5000"),
        sources: 2,
        blocked: 0,
    },
    Probe {
        template: "registry.corp.example.com:5000/legacy/billing@{digest}",
        scope: Some("registry.corp.example.com:5000"),
        sources: 3,
        blocked: 0,
    },
    // A wildcard.
    Probe {
        template: "ci.apps.example.com/builds/runner:{tag}",
        scope: Some("*.apps.example.com"),
        sources: 2,
        blocked: 0,
    },
    Probe {
        template: "eu-1.apps.example.com/tools/kaniko@{digest}",
        scope: Some("*.apps.example.com"),
        sources: 2,
        blocked: 0,
    },
    // Nothing matches.
    Probe {
        template: "ghcr.io/octo-org/tool:{tag}",
        scope: None,
        sources: 1,
        blocked: 0,
    },
    Probe {
        template: "randomuser/app:{tag}",
        scope: None,
        sources: 1,
        blocked: 0,
    },
    // Docker Hub official images, normalised to docker.io/library/….
    Probe {
        template: "nginx:{tag}",
        scope: Some("docker.io/library"),
        sources: 2,
        blocked: 0,
    },
    Probe {
        template: "alpine@{digest}",
        scope: Some("docker.io/library"),
        sources: 3,
        blocked: 0,
    },
    Probe {
        template: "docker.io/library/redis:{tag}",
        scope: Some("docker.io/library"),
        sources: 2,
        blocked: 0,
    },
    // A NeverContactSource scope with a tag mirror: the source is dropped as blocked.
    Probe {
        template: "registry.redhat.io/restricted/ubi9:{tag}",
        scope: Some("registry.redhat.io/restricted"),
        sources: 1,
        blocked: 1,
    },
];

/// The benchmark reference strings, each with its probe.
fn reference_strings() -> Vec<(String, &'static Probe)> {
    let mut rng = Rng(0x7265_6665_7265_6e63);
    (0..REFERENCES)
        .map(|i| {
            let probe = &PROBES[i % PROBES.len()];
            let digest = format!(
                "sha256:{:016x}{:016x}{:016x}{:016x}",
                rng.next(),
                rng.next(),
                rng.next(),
                rng.next()
            );
            let text = probe
                .template
                .replace("{tag}", &format!("v1.{i}.0"))
                .replace("{digest}", &digest);
            (text, probe)
        })
        .collect()
}

/// Parses the benchmark references and checks that each resolves as its probe expects in `set`.
fn checked_references(set: &RuleSet, n: usize) -> (Vec<String>, Vec<Reference>) {
    let mut texts = Vec::with_capacity(REFERENCES);
    let mut references = Vec::with_capacity(REFERENCES);
    for (text, probe) in reference_strings() {
        let reference = Reference::parse_normalized(&text)
            .unwrap_or_else(|e| panic!("{text}: does not parse: {e}"));
        let resolution = set
            .resolve(&reference)
            .unwrap_or_else(|e| panic!("N={n}: {text}: does not resolve: {e}"));
        assert_eq!(
            resolution.matched_scope.as_ref().map(Scope::as_str),
            probe.scope,
            "N={n}: {text}: wrong scope"
        );
        assert_eq!(
            (resolution.sources.len(), resolution.blocked.len()),
            (probe.sources, probe.blocked),
            "N={n}: {text}: wrong number of sources / blocked attempts"
        );
        texts.push(text);
        references.push(reference);
    }
    (texts, references)
}

/// A generated rule set of one size.
struct Fixture {
    n: usize,
    objects: Vec<Object>,
    text: String,
    set: RuleSet,
}

impl Fixture {
    fn new(n: usize) -> Fixture {
        let objects = generate(n);
        let entries: usize = objects.iter().map(|o| o.entries.len()).sum();
        assert_eq!(entries, n, "generator entry count");
        let text = render(&objects, 1);
        let set = rules::load_str(&text, "bench.yaml")
            .unwrap_or_else(|e| panic!("N={n}: generated rules do not load: {e}"));
        assert!(
            set.warnings().is_empty(),
            "N={n}: warnings: {:?}",
            set.warnings()
        );
        Fixture {
            n,
            objects,
            text,
            set,
        }
    }

    /// One line describing the rule set.
    fn describe(&self) -> String {
        let idms = self.objects.iter().filter(|o| o.kind == Kind::Idms).count();
        let itms = self.objects.len() - idms;
        let summary = self.set.summary();
        let rules = self.set.rules();
        let depth = |level: usize| {
            rules
                .iter()
                .filter(|r| {
                    !r.scope.is_wildcard() && r.scope.as_str().matches('/').count() == level
                })
                .count()
        };
        let wildcards = rules.iter().filter(|r| r.scope.is_wildcard()).count();
        // Scopes with a rule for an enclosing scope (registry or namespace) too.
        let nested = rules
            .iter()
            .filter(|r| {
                let s = r.scope.as_str();
                !r.scope.is_wildcard()
                    && s.match_indices('/')
                        .any(|(i, _)| self.set.rule(&s[..i]).is_some())
            })
            .count();
        // Repository scopes whose namespace has a rule too.
        let under_namespace = rules
            .iter()
            .filter(|r| {
                let s = r.scope.as_str();
                !r.scope.is_wildcard()
                    && s.matches('/').count() == 2
                    && self
                        .set
                        .rule(&s[..s.rfind('/').expect("a slash")])
                        .is_some()
            })
            .count();
        format!(
            "N={}: {} objects ({idms} IDMS, {itms} ITMS), {} bytes of YAML; {} scopes \
             ({} registry, {} namespace, {} repository, {wildcards} wildcard), \
             {nested} nested under another scope ({under_namespace} repositories under a \
             namespace rule), {} NeverContactSource",
            self.n,
            self.objects.len(),
            self.text.len(),
            summary.scopes,
            depth(0),
            depth(1),
            depth(2),
            summary.blocked_scopes.len(),
        )
    }
}

fn resolve_benches(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = SIZES.into_iter().map(Fixture::new).collect();
    for fixture in &fixtures {
        eprintln!("{}", fixture.describe());
    }

    let mut group = c.benchmark_group("resolve");
    group.throughput(Throughput::Elements(1));
    for fixture in &fixtures {
        let (_, references) = checked_references(&fixture.set, fixture.n);
        group.bench_with_input(
            BenchmarkId::from_parameter(fixture.n),
            &fixture.set,
            |b, set| {
                let mut i = 0;
                b.iter(|| {
                    let reference = &references[i];
                    i = (i + 1) % REFERENCES;
                    set.resolve(black_box(reference))
                });
            },
        );
    }
    group.finish();

    let largest = fixtures.last().expect("sizes");
    let (texts, _) = checked_references(&largest.set, largest.n);
    let mut group = c.benchmark_group("parse_and_resolve");
    group.throughput(Throughput::Elements(1));
    group.bench_with_input(
        BenchmarkId::from_parameter(largest.n),
        &largest.set,
        |b, set| {
            let mut i = 0;
            b.iter(|| {
                let text = &texts[i];
                i = (i + 1) % REFERENCES;
                let reference = Reference::parse_normalized(black_box(text)).expect("parses");
                set.resolve(&reference)
            });
        },
    );
    group.finish();
}

/// Writes the objects across `FILES` files in `dir`, in the order `load_str` reads them.
fn write_files(objects: &[Object], dir: &Path) {
    let per_file = objects.len().div_ceil(FILES);
    for (f, chunk) in objects.chunks(per_file).enumerate() {
        let path = dir.join(format!("rules-{f:02}.yaml"));
        fs::write(&path, render(chunk, 1 + f * per_file))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// What two rule sets route, without where the rules came from.
fn routing(set: &RuleSet) -> Vec<(String, bool, Vec<String>, Vec<String>)> {
    let names = |mirrors: &[rules::RepoScope]| mirrors.iter().map(|m| m.to_string()).collect();
    set.rules()
        .iter()
        .map(|r| {
            (
                r.scope.to_string(),
                r.blocked,
                names(&r.digest_mirrors),
                names(&r.tag_mirrors),
            )
        })
        .collect()
}

fn load_benches(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = SIZES.into_iter().map(Fixture::new).collect();

    let mut group = c.benchmark_group("load");
    group.sample_size(20);
    group.sampling_mode(SamplingMode::Flat);
    for fixture in &fixtures {
        if fixture.n >= 10_000 {
            group.measurement_time(Duration::from_secs(3));
        }
        group.throughput(Throughput::Elements(fixture.n as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(fixture.n),
            fixture.text.as_str(),
            |b, text| b.iter(|| rules::load_str(black_box(text), "bench.yaml").expect("loads")),
        );
    }
    group.finish();

    let largest = fixtures.last().expect("sizes");
    let dir = tempfile::tempdir().expect("tempdir");
    write_files(&largest.objects, dir.path());
    let paths = vec![dir.path().to_path_buf()];
    let from_files = rules::load(&paths).expect("generated rule files load");
    let file_count = from_files.summary().files.len();
    assert!(
        (FILES - 5..=FILES).contains(&file_count),
        "{file_count} files"
    );
    assert_eq!(
        routing(&from_files),
        routing(&largest.set),
        "files and text differ"
    );
    eprintln!("load_files: N={} in {file_count} files", largest.n);

    let mut group = c.benchmark_group("load_files");
    group.sample_size(20);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(largest.n as u64));
    group.bench_with_input(
        BenchmarkId::from_parameter(largest.n),
        &paths,
        |b, paths| b.iter(|| rules::load(black_box(paths)).expect("loads")),
    );
    group.finish();
}

criterion_group!(benches, resolve_benches, load_benches);
criterion_main!(benches);
