#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with the Rust toolchain: style, lints, unit and
# integration tests. The rule vectors are the project's own test data (tests/data).
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests run real registries and clients: Debian's docker-registry (CNCF
# Distribution) and skopeo, and a real Prometheus with promtool (Debian's prometheus; the tests run
# their own server on a free loopback port, never the packaged service's :9090). Install whichever
# is missing; nothing happens when all are present.
missing=()
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
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

# The cluster rule source's tests (tests/kubernetes.rs) run an emulated Kubernetes API server:
# PyPI `kmock` in a virtual environment under the cargo target directory, where
# tests/support/kmock.rs looks for it (or set KMOCK_PYTHON to a python that has kmock).
if [ -z "${KMOCK_PYTHON:-}" ]; then
    kmock_venv="${CARGO_TARGET_DIR:-target}/tmp/kmock-venv"
    if ! "$kmock_venv/bin/python" -c 'import kmock' >/dev/null 2>&1; then
        if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
            echo "installing python3-venv for the kmock virtual environment" >&2
            "${as_root[@]}" apt-get update -q
            "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends python3-venv
        fi
        echo "installing kmock (PyPI) into $kmock_venv" >&2
        mkdir -p "$(dirname "$kmock_venv")"
        python3 -m venv "$kmock_venv"
        "$kmock_venv/bin/python" -m pip install --quiet --disable-pip-version-check 'kmock>=0.8,<0.9' || {
            echo "error: could not install kmock from PyPI (needed by tests/kubernetes.rs)" >&2
            exit 1
        }
    fi
fi

bash deploy/validate.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet
cargo test --locked
# The README's quickstart, offline against local registries, with the binary the tests built; the
# README shows its output, which must still be what it prints (ports and digests aside).
quickstart_out="$(mktemp)"
trap 'rm -f "$quickstart_out"' EXIT
bash scripts/quickstart.sh | tee "$quickstart_out"
normalise() { sed -E 's/127\.0\.0\.1:[0-9]+/127.0.0.1:PORT/g; s/sha256:[0-9a-f]{64}/sha256:DIGEST/g'; }
if ! diff -u \
    <(sed -n '/^<!-- quickstart output: begin -->$/,/^<!-- quickstart output: end -->$/p' README.md |
        sed '1,2d;$d' | sed '$d' | normalise) \
    <(normalise <"$quickstart_out"); then
    echo "error: README.md's quickstart output is not what scripts/quickstart.sh prints (diff above)" >&2
    exit 1
fi
