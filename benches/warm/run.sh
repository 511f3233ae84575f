#!/usr/bin/env bash
# Release warm-up benchmark: a synthetic OpenShift release (COMPONENTS component images sharing
# layers, UNIQUE_MIB MiB of unique blobs) in a local Distribution registry, warmed through
# `mirrorgate serve` with `mirrorgate warm`, side by side on the same machine with
#   - a sequential `skopeo copy` of every component (and the release) to a local directory,
#   - a parallel `curl` (CURL_PARALLEL at once) of the unique blobs straight from the registry,
# and a second warm on the warm cache. Reports times, upstream blob bytes / unique bytes (from the
# registry's access log; 1.0 means each unique blob crossed the wire once), and mirrorgate's peak
# RSS (VmHWM). Everything listens on 127.0.0.1; every process started here is stopped on exit.
#
#   bash benches/warm/run.sh                               # 100 components, 1 GiB unique
#   COMPONENTS=40 UNIQUE_MIB=128 bash benches/warm/run.sh  # a smaller release
#   WARM_BENCH_SKIP=1 bash benches/warm/run.sh             # does nothing (for CI-like callers)
#
# Needs a release build (built when missing: cargo build --release --locked) and disk for three
# copies of the unique bytes plus the largest component (skopeo's copies are removed one by one). Report to stdout, progress to
# stderr.
set -euo pipefail

COMPONENTS=${COMPONENTS:-100}       # component images
UNIQUE_MIB=${UNIQUE_MIB:-1024}      # unique blob bytes of the release, MiB
CONCURRENCY=${CONCURRENCY:-8}       # warm.concurrency
CURL_PARALLEL=${CURL_PARALLEL:-8}   # parallel curl downloads of the unique blobs
KEEP=${KEEP:-0}                     # 1: keep the work directory
if [ "${WARM_BENCH_SKIP:-0}" = 1 ]; then
    echo "benches/warm: skipped (WARM_BENCH_SKIP=1)" >&2
    exit 0
fi

READY_TIMEOUT=30
START_ATTEMPTS=3
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=benches/common.sh
source "$REPO/benches/common.sh"
MG=${MG:-$REPO/target/release/mirrorgate}
for n in COMPONENTS UNIQUE_MIB CONCURRENCY CURL_PARALLEL; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer (got '${!n}')"
done
require_tools skopeo:skopeo docker-registry:docker-registry curl:curl python3:python3 cargo:

WORK=$(mktemp -d -t mirrorgate-warm-bench.XXXXXX)
PIDS=()
trap 'end_run $?' EXIT
mkdir -p "$WORK/logs" "$WORK/upstream/data" "$WORK/rules" "$WORK/cache" "$WORK/skopeo"

if [ ! -x "$MG" ]; then
    log "building mirrorgate (release)"
    (cd "$REPO" && cargo build --release --locked) >&2 || die "cargo build --release --locked failed"
fi

launch_upstream() {
    registry_config "$WORK/upstream/data" "$1" mirrorgate-warm true >"$WORK/upstream/config.yml"
    docker-registry serve "$WORK/upstream/config.yml" >>"$WORK/logs/upstream.access.log" \
        2>>"$WORK/logs/upstream.log" &
    LAUNCHED_PID=$!
    PIDS+=("$LAUNCHED_PID")
}
start upstream launch_upstream /v2/
UP=127.0.0.1:$STARTED_PORT

log "pushing the synthetic release ($COMPONENTS components, $UNIQUE_MIB MiB unique)"
python3 "$REPO/benches/warm/release.py" "$UP" "$COMPONENTS" "$UNIQUE_MIB" "$WORK"
RELEASE=$(cat "$WORK/release")
UNIQUE_BYTES=$(awk '{ s += $2 } END { print s }' "$WORK/blobs")
UNIQUE_COUNT=$(wc -l <"$WORK/blobs")

launch_mirrorgate() {
    cat >"$WORK/mirrorgate.yaml" <<YAML
listen: 127.0.0.1:$1
rules: [$WORK/rules]
cache: {dir: $WORK/cache, max_size: 64GiB, min_free_space: 1GiB}
registries: {quay.io: {endpoint: "http://$UP", insecure: true}}
watch: false
log_level: warn
warm: {concurrency: $CONCURRENCY}
YAML
    "$MG" serve --config "$WORK/mirrorgate.yaml" >>"$WORK/logs/mirrorgate.log" 2>&1 &
    LAUNCHED_PID=$!
    PIDS+=("$LAUNCHED_PID")
}
start mirrorgate launch_mirrorgate /healthz
MG_ADDR=127.0.0.1:$STARTED_PORT
MG_PID=$STARTED_PID

# upstream_blobs MARK: "bytes requests max-per-digest" of the blob GETs answered 200 after line MARK.
upstream_blobs() {
    tail -n +"$(($1 + 1))" "$WORK/logs/upstream.access.log" | python3 -c '
import re, sys, collections
sizes, counts = 0, collections.Counter()
for line in sys.stdin:
    m = re.search(r"\"GET (/v2/\S+/blobs/(sha256:[0-9a-f]+)) HTTP/[0-9.]+\" 200 (\d+)", line)
    if m:
        sizes += int(m.group(3))
        counts[m.group(2)] += 1
print(sizes, sum(counts.values()), max(counts.values(), default=0))'
}
lines() { wc -l <"$WORK/logs/upstream.access.log"; }
now() { date +%s.%N; }
seconds() { python3 -c "print(f'{$2 - $1:.2f}')"; }

log "mirrorgate warm (cold cache)"
mark=$(lines)
t0=$(now)
"$MG" warm --server "http://$MG_ADDR" "$RELEASE" >"$WORK/warm.out" 2>"$WORK/logs/warm-cli.log" ||
    die "mirrorgate warm failed: $(cat "$WORK/warm.out")"
t1=$(now)
WARM_S=$(seconds "$t0" "$t1")
read -r WARM_BYTES WARM_GETS WARM_MAX <<<"$(upstream_blobs "$mark")"
PEAK_KIB=$(awk '/^VmHWM/ { print $2 }' "/proc/$MG_PID/status")

log "mirrorgate warm (warm cache)"
mark=$(lines)
t0=$(now)
"$MG" warm --server "http://$MG_ADDR" "$RELEASE" >"$WORK/rewarm.out" 2>>"$WORK/logs/warm-cli.log" ||
    die "the second mirrorgate warm failed: $(cat "$WORK/rewarm.out")"
t1=$(now)
REWARM_S=$(seconds "$t0" "$t1")
REWARM_REQUESTS=$(($(lines) - mark))

log "sequential skopeo copy of every component to a directory"
t0=$(now)
while read -r name digest; do
    skopeo copy --quiet --src-tls-verify=false \
        "docker://$UP/openshift-release-dev/ocp-v4.0-art-dev@$digest" "dir:$WORK/skopeo/$name" >&2
    # Each copy holds the component's every layer: keep the disk from filling on a large release.
    rm -rf "${WORK:?}/skopeo/$name"
done <"$WORK/components"
skopeo copy --quiet --src-tls-verify=false "docker://$UP/${RELEASE#quay.io/}" "dir:$WORK/skopeo/release" >&2
t1=$(now)
SKOPEO_S=$(seconds "$t0" "$t1")
rm -rf "$WORK/skopeo"

log "parallel curl of the unique blobs ($CURL_PARALLEL at once)"
t0=$(now)
awk -v up="$UP" '{ print "http://" up "/v2/" $3 "/blobs/" $1 }' "$WORK/blobs" |
    xargs -P "$CURL_PARALLEL" -n 1 curl -sf -o /dev/null
t1=$(now)
CURL_S=$(seconds "$t0" "$t1")

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo "## Release warm-up ($COMPONENTS components, $UNIQUE_COUNT unique blobs, $((UNIQUE_BYTES / 1048576)) MiB unique)"
echo
echo "| run | seconds |"
echo "| --- | --- |"
echo "| mirrorgate warm, cold cache (warm.concurrency $CONCURRENCY) | $WARM_S |"
echo "| mirrorgate warm, warm cache | $REWARM_S |"
echo "| skopeo copy of each component in turn, to dir: | $SKOPEO_S |"
echo "| curl of the unique blobs, $CURL_PARALLEL at once | $CURL_S |"
echo
echo "- sequential skopeo / warm: $(ratio "$SKOPEO_S" "$WARM_S")x (target >= 2)"
echo "- warm / parallel curl: $(ratio "$WARM_S" "$CURL_S")x (target <= 1.2)"
echo "- upstream blob bytes / unique bytes: $(ratio "$WARM_BYTES" "$UNIQUE_BYTES") ($WARM_GETS blob GETs for $UNIQUE_COUNT unique blobs, at most $WARM_MAX per blob)"
echo "- upstream requests of the second warm: $REWARM_REQUESTS"
echo "- mirrorgate peak RSS (VmHWM): $((PEAK_KIB / 1024)) MiB (target < 128)"
echo "- $(sed -n 's/^  time /warm summary time /p' "$WORK/warm.out")"
