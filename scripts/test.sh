#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with the Rust toolchain: style, lints, unit and
# integration tests. The rule vectors are read from ../shared/vectors, beside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f ../shared/vectors/mirror-vectors.yaml ]; then
    echo "error: ../shared/vectors/mirror-vectors.yaml is missing (the shared directory sits beside the repository)" >&2
    exit 1
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet
cargo test --locked
