#!/usr/bin/env bash
# Validates deploy/ without a cluster (run by scripts/test.sh; takes a few seconds once mirrorgate is
# built):
#  - the Kustomize base and overlays: referenced files exist, no manifest is left out; built-in kinds
#    against the Kubernetes JSON schemas (strict, kubernetes-validate from PyPI), the ServiceMonitor
#    (a CRD) for shape; the wiring between the objects and the restricted-v2 SCC rules;
#  - the mirrorgate configuration in each config ConfigMap: `mirrorgate check` on it, with the rules
#    ConfigMap laid out as a mounted ConfigMap volume, then `mirrorgate serve` on a loopback port
#    answering /healthz, /readyz and /v2/ and stopping cleanly on SIGTERM;
#  - the rendered kustomizations, when a kustomize or kubectl binary is installed (skipped otherwise);
#  - deploy/nodes: the registries.conf drop-in and containerd hosts.toml files parse as TOML and use
#    mirrorgate's addressing; deploy/Containerfile copies files that exist and runs what the
#    Deployment runs.
# Network: PyPI only, the first time (to install kubernetes-validate). Exit status non-zero on any failure.
#
# Environment: MIRRORGATE=path/to/binary to check with a given build (default: target/debug/mirrorgate,
# built with cargo when missing); K8S_VERSIONS="1.30 1.33" schema versions; KUSTOMIZE=path or "none".
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "deploy/validate.sh: error: $*" >&2
    exit 1
}

command -v python3 >/dev/null 2>&1 || fail "python3 is needed (apt-get install python3 python3-pip)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    fail "python3 >= 3.11 is needed (tomllib); this is $(python3 --version 2>&1)"

# kubernetes-validate (and with it PyYAML and jsonschema), installed once, quietly. PEP 668: an
# "externally managed" Python (Debian's own python3) refuses pip installs without
# --break-system-packages; a pyenv or venv Python has no such marker and needs no flag.
if ! python3 -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
    pip_flags=(--quiet --disable-pip-version-check --no-input)
    [ "$(id -u)" -eq 0 ] && pip_flags+=(--root-user-action=ignore)
    if python3 -c 'import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if os.path.exists(marker) and not in_venv else 1)'; then
        pip_flags+=(--break-system-packages)
    fi
    if ! python3 -c 'import os, sys, sysconfig
sys.exit(0 if os.access(sysconfig.get_path("purelib"), os.W_OK) else 1)'; then
        pip_flags+=(--user)
    fi
    echo "installing kubernetes-validate from PyPI (python3 -m pip install ${pip_flags[*]})"
    python3 -m pip install "${pip_flags[@]}" 'kubernetes-validate>=1.30' ||
        fail "could not install kubernetes-validate with pip (needs PyPI)"
    python3 -c 'import kubernetes_validate, yaml' ||
        fail "kubernetes-validate was installed but python3 cannot import it"
fi

# The mirrorgate binary that checks and serves the configuration.
if [ -n "${MIRRORGATE:-}" ]; then
    mirrorgate="$MIRRORGATE"
else
    mirrorgate="${CARGO_TARGET_DIR:-target}/debug/mirrorgate"
    if [ ! -x "$mirrorgate" ]; then
        command -v cargo >/dev/null 2>&1 || fail "$mirrorgate is missing and cargo is not installed"
        echo "building mirrorgate (cargo build --bin mirrorgate)"
        cargo build --quiet --locked --bin mirrorgate || fail "cargo build failed"
    fi
fi
[ -x "$mirrorgate" ] || fail "no mirrorgate binary at $mirrorgate"

# A renderer for the kustomizations, if one is installed (never downloaded).
renderer=()
case "${KUSTOMIZE:-}" in
    none) ;;
    "")
        if command -v kustomize >/dev/null 2>&1; then
            renderer=(kustomize build)
        elif command -v kubectl >/dev/null 2>&1; then
            renderer=(kubectl kustomize)
        fi
        ;;
    *) renderer=("$KUSTOMIZE" build) ;;
esac

exec python3 deploy/validate.py \
    --mirrorgate "$mirrorgate" \
    --k8s-versions "${K8S_VERSIONS:-1.30 1.33}" \
    -- ${renderer[@]+"${renderer[@]}"}
