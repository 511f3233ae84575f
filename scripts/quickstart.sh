#!/usr/bin/env bash
# mirrorgate in five minutes, offline: two local Distribution registries stand for quay.io (the source)
# and mirror.corp.com (its mirror); a small image is pushed to the mirror only; the rules are HyperShift's
# unified mirror ConfigMap (idms.yaml + itms.yaml); `mirrorgate serve` routes by them, skopeo pulls through
# it by tag and by digest, and `mirrorgate resolve` explains the route.
#
# Needs: docker-registry and skopeo (Debian packages; `bash scripts/test.sh` installs them), python3, and a
# mirrorgate binary (MIRRORGATE=path, else target/debug/mirrorgate, built with cargo when missing). No
# network. Everything it starts is stopped and its work directory removed on exit (KEEP=1 keeps the
# directory). Run by scripts/test.sh, so the manual's copy of its output cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "quickstart: error: $*" >&2
    exit 1
}
for tool in docker-registry skopeo python3 sha256sum tar gzip; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is needed (apt-get install docker-registry skopeo python3)"
done
mirrorgate="${MIRRORGATE:-${CARGO_TARGET_DIR:-target}/debug/mirrorgate}"
if [ ! -x "$mirrorgate" ]; then
    echo "building mirrorgate (cargo build --bin mirrorgate)"
    cargo build --quiet --bin mirrorgate || fail "cargo build failed"
fi
mirrorgate="$(cd "$(dirname "$mirrorgate")" && pwd)/$(basename "$mirrorgate")"

work="$(mktemp -d "${TMPDIR:-/tmp}/mirrorgate-quickstart.XXXXXX")"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        for log in "$work"/*.log; do
            [ -f "$log" ] && { echo "--- $log"; tail -n 20 "$log"; } >&2
        done
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until http://127.0.0.1:$1/v2/ answers (pid $2 must stay alive), for up to 10 s.
wait_ready() {
    local port=$1 pid=$2 tries=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /v2/ HTTP/1.0\r\n\r\n' >&3 &&
        head -n 1 <&3 | grep -q ' 200 ') 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || fail "the process on port $port exited"
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || fail "nothing answered on port $port"
        sleep 0.1
    done
}

# A Distribution registry named $1 on a free loopback port; sets port_$1.
start_registry() {
    local name=$1 port
    port="$(free_port)"
    mkdir -p "$work/$name"
    cat >"$work/$name.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $work/$name
http:
  addr: 127.0.0.1:$port
  secret: quickstart
YAML
    docker-registry serve "$work/$name.yml" >"$work/$name-access.log" 2>"$work/$name.log" &
    pids+=($!)
    wait_ready "$port" "$!"
    printf -v "port_$name" '%s' "$port"
}

step() { printf '\n== %s\n' "$*"; }
# Shows a command as the reader would type it (work directory as $WORK, the binary as mirrorgate).
shown() { sed "s|$mirrorgate|mirrorgate|g; s|$work|\$WORK|g"; }
run() {
    printf '$ %s\n' "$*" | shown
    "$@"
}

step "two local registries: \"quay\" stands for quay.io, \"mirror\" for mirror.corp.com"
start_registry quay
start_registry mirror
echo "quay.io         -> http://127.0.0.1:$port_quay (empty)"
echo "mirror.corp.com -> http://127.0.0.1:$port_mirror"

step "a small image, built here as an OCI layout, pushed to the mirror only"
layout="$work/image"
mkdir -p "$layout/blobs/sha256" "$work/rootfs"
echo "hello from the mirror" >"$work/rootfs/hello.txt"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/rootfs" -cf "$work/layer.tar" hello.txt
gzip -n -c "$work/layer.tar" >"$work/layer.tar.gz"
blob() { # stores stdin as a blob; prints "sha256:<hex> <size>"
    cat >"$work/blob"
    local hex size
    hex="$(sha256sum "$work/blob" | cut -d' ' -f1)"
    size="$(stat -c %s "$work/blob")"
    mv "$work/blob" "$layout/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}
diff_id="sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
read -r layer_digest layer_size < <(blob <"$work/layer.tar.gz")
read -r config_digest config_size < <(printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["%s"]}}' "$diff_id" | blob)
read -r manifest_digest manifest_size < <(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" | blob)
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
    "$manifest_digest" "$manifest_size" >"$layout/index.json"
run skopeo copy --quiet --dest-tls-verify=false "oci:$layout:v1" \
    "docker://127.0.0.1:$port_mirror/openshift-release-dev/hello:v1"
echo "pushed openshift-release-dev/hello:v1 = $manifest_digest"

step "rules: HyperShift's unified mirror ConfigMap (digest and tag mirrors for quay.io/openshift-release-dev)"
mkdir -p "$work/rules"
cat >"$work/rules/unified-mirrors.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: unified-mirrors
  namespace: clusters
data:
  idms.yaml: |
    apiVersion: config.openshift.io/v1
    kind: ImageDigestMirrorSet
    metadata:
      name: cluster-digest-mirrors
    spec:
      imageDigestMirrors:
      - source: quay.io/openshift-release-dev
        mirrors:
        - mirror.corp.com/openshift-release-dev
  itms.yaml: |
    apiVersion: config.openshift.io/v1
    kind: ImageTagMirrorSet
    metadata:
      name: cluster-tag-mirrors
    spec:
      imageTagMirrors:
      - source: quay.io/openshift-release-dev
        mirrors:
        - mirror.corp.com/openshift-release-dev
YAML
cat "$work/rules/unified-mirrors.yaml"

step "configuration: registries maps the hosts the rules name to the local registries"
port_mirrorgate="$(free_port)"
cat >"$work/mirrorgate.yaml" <<YAML
listen: 127.0.0.1:$port_mirrorgate
rules: [$work/rules]
cache:
  dir: $work/cache
watch: false
registries:
  quay.io:
    endpoint: http://127.0.0.1:$port_quay
    insecure: true
  mirror.corp.com:
    endpoint: http://127.0.0.1:$port_mirror
    insecure: true
YAML
shown <"$work/mirrorgate.yaml"
run "$mirrorgate" check --config "$work/mirrorgate.yaml" | shown

step "serve"
"$mirrorgate" serve --config "$work/mirrorgate.yaml" >"$work/mirrorgate.log" 2>&1 &
pids+=($!)
wait_ready "$port_mirrorgate" "$!"
# serve says how to pull through it, once, at start (its log is written by a background thread).
for _ in $(seq 100); do
    grep -q 'pull through mirrorgate as' "$work/mirrorgate.log" && break
    sleep 0.1
done
grep -o 'pull through mirrorgate as.*' "$work/mirrorgate.log" || fail "serve did not log how to pull through it"

step "pull by digest and by tag through mirrorgate, naming quay.io"
proxy="127.0.0.1:$port_mirrorgate"
run skopeo copy --quiet --src-tls-verify=false \
    "docker://$proxy/quay.io/openshift-release-dev/hello@$manifest_digest" "oci:$work/pulled-by-digest:v1"
run skopeo copy --quiet --src-tls-verify=false \
    "docker://$proxy/quay.io/openshift-release-dev/hello:v1" "oci:$work/pulled-by-tag:v1"
for pulled in pulled-by-tag pulled-by-digest; do
    cmp -s "$work/$pulled/blobs/sha256/${layer_digest#sha256:}" "$layout/blobs/sha256/${layer_digest#sha256:}" ||
        fail "$pulled does not hold the image's layer"
done
echo "both copies hold the image pushed to the mirror"

step "who served: mirrorgate's log"
grep -Eo '(manifest|blob) (served|fetched) reference=[^ ]* served_by=[^ ]*( role=[^ ]*)?' "$work/mirrorgate.log"
mirror_requests="$(grep -c 'GET /v2/openshift-release-dev/' "$work/mirror-access.log" || true)"
quay_requests="$(grep -c 'GET /v2/openshift-release-dev/' "$work/quay-access.log" || true)"
echo "requests for the image at mirror.corp.com: $mirror_requests; at quay.io (the source): $quay_requests"
[ "$mirror_requests" -gt 0 ] || fail "the mirror's access log shows no request"
[ "$quay_requests" -eq 0 ] || fail "the source was contacted"

step "resolve: why"
# Each pull source names the object it comes from, in the work directory.
run "$mirrorgate" resolve --config "$work/mirrorgate.yaml" quay.io/openshift-release-dev/hello:v1 | shown
run "$mirrorgate" resolve --config "$work/mirrorgate.yaml" "quay.io/openshift-release-dev/hello@$manifest_digest" | shown
run "$mirrorgate" resolve --config "$work/mirrorgate.yaml" ghcr.io/example/app:v1 2>&1 | shown || true
echo "(tags follow the ImageTagMirrorSet, digests the ImageDigestMirrorSet, and the source comes last, as the"
echo "policy allows; each line names the object it comes from; a registry that no rule, registries entry or"
echo "default_registry names is refused, as serve does)"

step "done: everything started here is stopped on exit"
