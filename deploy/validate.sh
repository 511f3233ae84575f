#!/usr/bin/env bash
# Validates deploy/ without a cluster (run by scripts/test.sh; takes a few seconds once mirrorgate is
# built):
#  - the Kustomize base, components and overlays: referenced files exist, no manifest is left out;
#    each component (kind Component) rendered on top of the base and used by an overlay whose
#    mirrorgate.yaml has the section the component needs (the combined overlay uses all three); built-in kinds
#    against the Kubernetes JSON schemas (strict, kubernetes-validate from PyPI), the ServiceMonitor
#    (a CRD) for shape; the wiring between the objects and the restricted-v2 SCC rules;
#  - the mirrorgate configuration in each config ConfigMap: `mirrorgate check` on it, with the rules
#    ConfigMap laid out as a mounted ConfigMap volume, then `mirrorgate serve` on a loopback port
#    answering /healthz, /readyz and /v2/ and stopping cleanly on SIGTERM;
#  - the rendered kustomizations, when a kustomize or kubectl binary is installed (skipped otherwise);
#  - deploy/nodes: the registries.conf drop-in and containerd hosts.toml files parse as TOML and use
#    mirrorgate's addressing; deploy/Containerfile copies files that exist and runs what the
#    Deployment runs.
# Needs python3 >= 3.11 (tomllib). Network: the first time only, PyPI (kubernetes-validate, into a
# virtual environment) and, when python3's venv module is missing, Debian (python3-venv). Exit status
# non-zero on any failure.
#
# Environment: MIRRORGATE=path/to/binary to check with a given build (default: target/debug/mirrorgate,
# built with cargo when missing); K8S_VERSIONS="1.30 1.33" schema versions; KUSTOMIZE=path or "none".
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "deploy/validate.sh: error: $*" >&2
    exit 1
}

command -v python3 >/dev/null 2>&1 || fail "python3 is needed (apt-get install python3 python3-venv)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    fail "python3 >= 3.11 is needed (tomllib); this is $(python3 --version 2>&1)"

# kubernetes-validate (and with it PyYAML and jsonschema), installed once, quietly, into a virtual
# environment of its own (default: <cargo target dir>/deploy-venv; VALIDATE_VENV=dir to choose): a
# stock Debian python3 is "externally managed" (PEP 668) and refuses pip installs outside one, and the
# system's packages are left alone. Debian ships the venv module separately (python3-venv); it is
# installed with apt-get when missing.
venv="${VALIDATE_VENV:-${CARGO_TARGET_DIR:-target}/deploy-venv}"
if [ ! -x "$venv/bin/python3" ] || ! "$venv/bin/python3" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        if [ "$(id -u)" -eq 0 ]; then
            as_root=()
        elif command -v sudo >/dev/null 2>&1; then
            as_root=(sudo)
        else
            fail "python3's venv module is missing: apt-get install python3-venv (as root)"
        fi
        command -v apt-get >/dev/null 2>&1 ||
            fail "python3's venv module is missing and apt-get is not available to install it"
        echo "installing python3-venv (for the kubernetes-validate virtual environment)"
        "${as_root[@]}" apt-get update -q >/dev/null &&
            "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends python3-venv >/dev/null ||
            fail "could not install python3-venv with apt-get"
    fi
    rm -rf "$venv"
    python3 -m venv "$venv" || fail "could not create a virtual environment in $venv"
    echo "installing kubernetes-validate from PyPI into $venv"
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check --no-input \
        'kubernetes-validate>=1.30' ||
        fail "could not install kubernetes-validate with pip (needs PyPI)"
    "$venv/bin/python3" -c 'import kubernetes_validate, yaml' ||
        fail "kubernetes-validate was installed but cannot be imported"
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

exec "$venv/bin/python3" deploy/validate.py \
    --mirrorgate "$mirrorgate" \
    --k8s-versions "${K8S_VERSIONS:-1.30 1.33}" \
    -- ${renderer[@]+"${renderer[@]}"}
