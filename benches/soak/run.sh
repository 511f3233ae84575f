#!/usr/bin/env bash
# Soak test: mirrorgate under mixed pulls for DURATION seconds (default 10 minutes) while its
# mirror registry flaps (killed, restarted on the same port, again and again). Reports the client
# operations, the errors by kind, mirrorgate's own counters and its RSS at the start and the end.
# See benches/soak/README.md. Everything listens on 127.0.0.1; every process started here is
# stopped when the script exits, also on failure or Ctrl-C.
#
#   bash benches/soak/run.sh                 # 10 minutes
#   DURATION=60 bash benches/soak/run.sh     # quick check
#
# The report goes to stdout (Markdown, paste-able), progress to stderr. Exit status: 0 the run
# passed; 1 the harness failed (setup, or the mirror could not be restarted); 2 mirrorgate died;
# 3 more than MAX_ERROR_PCT % of the client operations failed.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME with a '.', sort and awk without surprises

DURATION=${DURATION:-600}          # seconds of mixed load (also 90s, 10m)
CLIENTS=${CLIENTS:-4}              # concurrent client loops
FLAP=${FLAP:-20}                   # the mirror is up FLAP s, killed, down FLAP s, restarted, ...
SAMPLE=${SAMPLE:-5}                # seconds between RSS / metrics samples
IMAGES=${IMAGES:-4}                # single-arch images pushed to both registries
MULTI=${MULTI:-1}                  # 1: also a two-platform image index (on both registries)
CACHE_MIB=${CACHE_MIB:-auto}       # cache.max_size in MiB; auto: 60% of the image bytes, so blobs are evicted
TAG_TTL=${TAG_TTL:-2s}             # cache.tag_ttl: tags are revalidated often
THINK=${THINK:-0}                  # seconds each client sleeps between operations
MAX_ERROR_PCT=${MAX_ERROR_PCT:-1}  # fail (exit 3) above this share of failed operations, in %
RSS_FLAT_PCT=${RSS_FLAT_PCT:-10}   # "RSS flat" when the growth stays under this, in %
MG_LOG=${MG_LOG:-info}             # RUST_LOG of mirrorgate (its log goes to a file)
KEEP=${KEEP:-0}                    # 1: keep the work directory (logs, per-client records)

READY_TIMEOUT=30     # seconds for a server to answer its readiness URL
START_ATTEMPTS=3     # a free port can be taken between choosing it and binding it
RESTART_ATTEMPTS=10  # restarts of the mirror on its port before the run is abandoned
OP_TIMEOUT=60        # curl --max-time of one client request
SKOPEO_TIMEOUT=300   # timeout(1) of one client skopeo copy
STOP_GRACE=30        # seconds the clients get to finish their operation at the end

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Shared helpers: log, die, require_tools, free_port, start/wait_ready, stop_pid.
# shellcheck source=benches/common.sh
source "$REPO/benches/common.sh"
MG="$REPO/target/release/mirrorgate"

for n in KEEP MULTI; do
    [[ ${!n} =~ ^[01]$ ]] || die "$n must be 0 or 1 (got '${!n}')"
done
[[ $CACHE_MIB =~ ^(auto|[1-9][0-9]*)$ ]] || die "CACHE_MIB must be auto or a positive integer (got '$CACHE_MIB')"
for n in CLIENTS FLAP SAMPLE IMAGES; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer (got '${!n}')"
done
for n in THINK MAX_ERROR_PCT RSS_FLAT_PCT; do
    [[ ${!n} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$n must be a number (got '${!n}')"
done
[[ $TAG_TTL =~ ^[0-9]+(ms|s|m)$ ]] || die "TAG_TTL must look like 2s, 500ms or 1m (got '$TAG_TTL')"
if [[ $DURATION =~ ^([1-9][0-9]*)([sm]?)$ ]]; then
    DURATION_S=${BASH_REMATCH[1]}
    [ "${BASH_REMATCH[2]}" != m ] || DURATION_S=$((DURATION_S * 60))
else
    die "DURATION must be seconds, like 600, 90s or 10m (got '$DURATION')"
fi

# ---------------------------------------------------------------------------------------------
# Tools: install what is missing (Debian packages).
# ---------------------------------------------------------------------------------------------
require_tools skopeo:skopeo docker-registry:docker-registry curl:curl python3:python3 cargo:

# ---------------------------------------------------------------------------------------------
# Work directory and cleanup.
# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mirrorgate-soak.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/clients"
STOP="$WORK/stop"          # exists: the client loops and the flapper finish
GO="$WORK/go"              # exists: the flapper starts flapping
MIRROR_STATE="$WORK/mirror.state" # up | down | failed, written by the flapper
FLAPS="$WORK/flaps.log"    # "<epoch> up|down|restart-failed", written by the flapper
SAMPLES="$WORK/samples.tsv"
PIDS=()    # processes started by this script and still running
GROUPS_=() # process groups of the loops (clients, flapper): each stopped as a whole

# Stops a loop's process group (the loop, its curl/skopeo, the flapper's registry): SIGTERM, up
# to 5 s, SIGKILL. The group's leader is a child of this shell; it is reaped.
stop_group() {
    local pgid=$1 i kept=() g
    for g in "${GROUPS_[@]}"; do [ "$g" = "$pgid" ] || kept+=("$g"); done
    GROUPS_=("${kept[@]}")
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 -- "-$pgid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pgid" 2>/dev/null || true
    wait "$pgid" 2>/dev/null || true
}

# The registries log every 404 (the not-found operations) as an error: not news.
show_log() { grep -v 'msg="response completed with error"' "$1" | tail -n 15; }

cleanup() {
    local rc=$? pgid
    trap - EXIT INT TERM
    set +e
    touch "$STOP"
    for pgid in "${GROUPS_[@]}"; do stop_group "$pgid"; done
    end_run "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# spawn_group FUNCTION ARGS...: runs FUNCTION in the background in a process group of its own
# (job control on for the fork), so that it and everything it started can be stopped together,
# and so that Ctrl-C reaches only this shell, whose cleanup stops them. Sets SPAWNED.
spawn_group() {
    set -m
    "$@" </dev/null &
    SPAWNED=$!
    set +m
    GROUPS_+=("$SPAWNED")
}

# ---------------------------------------------------------------------------------------------
# Python glue: the images, the metrics, the report.
# ---------------------------------------------------------------------------------------------
HELPER="$WORK/helper.py"
cat >"$HELPER" <<'PYEOF'
import hashlib, json, os, random, re, statistics, sys

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"

def make_images(work, n_images, multi):
    """OCI image layouts under work/images/<name>, and three TSV files naming what clients ask for:
    images.tsv   name, tag, digest of the tag's manifest (an index for the multi-platform image),
                 registries holding it (both | source), the linux/amd64 manifest's digest, multi (0|1)
    manifests.tsv  name, digest of every manifest (index and platform manifests)
    blobs.tsv    name, digest, size, local path of every blob (configs and layers)
    Layers are random bytes declared as uncompressed tar layers (their digest is their diff_id):
    registries store and serve them as they are, skopeo copies them with --preserve-digests and
    nothing unpacks them. Every single-platform image shares a 1 MiB base layer, as images built on
    one base do; each has 1-2 more layers of 256 KiB to 4 MiB."""
    rnd = random.SystemRandom()
    base = os.urandom(1 << 20)
    images, manifests, blobs = [], [], []

    def layer():
        return os.urandom(rnd.randrange(4, 65) * 64 * 1024)

    def put(name, layout, data, listed=True):
        d = hashlib.sha256(data).hexdigest()
        path = os.path.join(layout, "blobs", "sha256", d)
        with open(path, "wb") as f:
            f.write(data)
        if listed:
            blobs.append((name, "sha256:" + d, len(data), path))
        return "sha256:" + d, len(data)

    def image_manifest(name, layout, arch, layer_data):
        layers = [put(name, layout, data) for data in layer_data]
        config = json.dumps({
            "architecture": arch, "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]},
        }, separators=(",", ":")).encode()
        config_digest, config_size = put(name, layout, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": d, "size": n} for d, n in layers],
        }, separators=(",", ":")).encode()
        digest, size = put(name, layout, manifest, listed=False)
        manifests.append((name, digest))
        return digest, size

    def layout_for(name):
        layout = os.path.join(work, "images", name)
        os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(layout, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        return layout

    def tag(layout, media_type, digest, size):
        with open(os.path.join(layout, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
                {"mediaType": media_type, "digest": digest, "size": size,
                 "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, f)

    plan = [("app%d" % i, "both") for i in range(1, n_images + 1)] + [("only", "source")]
    for name, where in plan:
        layout = layout_for(name)
        digest, size = image_manifest(name, layout, "amd64",
                                      [base] + [layer() for _ in range(rnd.choice([1, 2]))])
        tag(layout, MANIFEST, digest, size)
        images.append((name, "v1", digest, where, digest, 0))
    if multi:
        name = "multi"
        layout = layout_for(name)
        children = []
        for arch in ("amd64", "arm64"):
            d, n = image_manifest(name, layout, arch, [layer(), layer()])
            children.append({"mediaType": MANIFEST, "digest": d, "size": n,
                             "platform": {"architecture": arch, "os": "linux"}})
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": children},
                           separators=(",", ":")).encode()
        digest, size = put(name, layout, index, listed=False)
        manifests.append((name, digest))
        tag(layout, INDEX, digest, size)
        images.append((name, "v1", digest, "both", children[0]["digest"], 1))

    def write(fname, rows):
        with open(os.path.join(work, fname), "w") as f:
            for row in rows:
                f.write("\t".join(str(x) for x in row) + "\n")
    write("images.tsv", images)
    write("manifests.tsv", manifests)
    # A blob shared by several images is listed once per image (each repository holds it).
    write("blobs.tsv", blobs)
    print(len(images), len(manifests), len(blobs),
          sum(n for _, _, n, _ in {b[1]: b for b in blobs}.values()))

LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

def read_metrics(path):
    """OpenMetrics text -> {(name, ((label, value), ...)): value}."""
    out = {}
    if not path or not os.path.exists(path):
        return out
    for line in open(path, errors="replace"):
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][\w:]*)(\{.*\})?\s+(\S+)", line)
        if not m:
            continue
        labels = tuple(LABEL.findall(m.group(2) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return out

def metrics_sample(path):
    """One TSV line for samples.tsv: fallbacks, upstream mirror ok, mirror failed (error, timeout),
    source ok, source failed; from /metrics text."""
    m = read_metrics(path)
    fb = sum(v for (n, _), v in m.items() if n == "mirrorgate_fallbacks_total")
    def up(role, outcomes):
        return sum(v for (n, l), v in m.items() if n == "mirrorgate_upstream_requests_total"
                   and dict(l).get("role") == role and dict(l).get("outcome") in outcomes)
    bad = ("error", "timeout", "digest_mismatch")
    print("\t".join("%d" % x for x in (fb, up("mirror", ("ok",)), up("mirror", bad),
                                      up("source", ("ok",)), up("source", bad))))

def median(xs):
    return statistics.median(xs) if xs else float("nan")

def report(work, t0, t_end, duration, flap, max_error_pct, rss_flat_pct, hung_file, mg_state,
           loops_dead):
    t0, t_end = float(t0), float(t_end)
    max_error_pct, rss_flat_pct = float(max_error_pct), float(rss_flat_pct)

    # The mirror's state over time: [(from, to, state)].
    events = []
    if os.path.exists(os.path.join(work, "flaps.log")):
        for line in open(os.path.join(work, "flaps.log")):
            p = line.split()
            if len(p) >= 2:
                events.append((float(p[0]), p[1]))
    spans, state, since = [], "up", t0 - 1e6
    for t, ev in events:
        new = "up" if ev == "up" else "down"
        if new != state:
            spans.append((since, t, state))
            state, since = new, t
    spans.append((since, float("inf"), state))

    def state_during(a, b):
        states = {s for (x, y, s) in spans if x < b and y > a} or {"up"}
        return states.pop() if len(states) == 1 else "flap"
    # The flapper's first "up" (before the soak) is not a restart.
    stops = sum(1 for t, ev in events if ev == "down" and t >= t0)
    starts = sum(1 for t, ev in events if ev == "up" and t >= t0)
    failed_restart = any(ev == "restart-failed" for _, ev in events)
    down_time = sum(min(y, t_end) - max(x, t0) for (x, y, s) in spans
                    if s == "down" and min(y, t_end) > max(x, t0))

    # Client operations.
    ops = []  # (t0, t1, op, target, result, detail, state)
    cdir = os.path.join(work, "clients")
    for f in sorted(os.listdir(cdir)):
        if not f.endswith(".log"):
            continue
        for line in open(os.path.join(cdir, f), errors="replace"):
            p = line.rstrip("\n").split("\t")
            if len(p) != 6:
                continue
            a, b = float(p[0]), float(p[1])
            ops.append((a, b, p[2], p[3], p[4], p[5], state_during(a, b)))
    hung, messages = [], {}
    if hung_file and os.path.exists(hung_file):
        for line in open(hung_file):
            p = line.split()
            if len(p) >= 2:
                a = float(p[0])
                hung.append((a, t_end, p[1], "?", "error", "hung", state_during(a, t_end)))
                messages.setdefault("hung", "still running when the clients were stopped")
    ops += hung
    for f in sorted(os.listdir(cdir)):
        if f.endswith(".errors"):
            for line in open(os.path.join(cdir, f), errors="replace"):
                p = line.rstrip("\n").split("\t")
                if len(p) >= 3:
                    messages.setdefault(p[1], p[2])

    total = len(ops)
    errors = [o for o in ops if o[4] == "error"]
    err_pct = 100.0 * len(errors) / total if total else 0.0
    elapsed = t_end - t0

    # Samples: epoch, rss KiB, hwm KiB, fds, threads, mirror state, metrics columns.
    samples = []
    sp = os.path.join(work, "samples.tsv")
    if os.path.exists(sp):
        for line in open(sp):
            p = line.rstrip("\n").split("\t")
            if len(p) >= 11 and p[1].isdigit():
                samples.append((float(p[0]), int(p[1]), int(p[2]), int(p[3]), int(p[4]), p[5],
                                [int(x) for x in p[6:11]]))

    out = print
    # --- verdict
    alive = mg_state == "alive"
    reasons = []
    if not alive:
        reasons.append("mirrorgate died")
    if err_pct > max_error_pct:
        reasons.append("%.2f%% of the operations failed (limit %g%%)" % (err_pct, max_error_pct))
    if failed_restart:
        reasons.append("the mirror could not be restarted (harness)")
    if not total:
        reasons.append("no operation completed")
    if loops_dead:
        reasons.append("loops ended before the soak did (harness): " + loops_dead.rstrip("; "))
    out("## Verdict")
    out()
    out("- result: " + ("**FAIL**: " + "; ".join(reasons) if reasons else "**pass**"))
    out("- mirrorgate: " + ("alive at the end" if alive else "**DIED** during the run (%s)" % mg_state))
    out("- client operations: %d in %.0f s (%.1f/s), failed: %d (%.2f%%; the run fails above %g%%)"
        % (total, elapsed, total / elapsed if elapsed else 0, len(errors), err_pct, max_error_pct))
    n_down = sum(1 for o in ops if o[6] != "up")
    out("- mirror stops: %d (down %.0f s of %.0f s); %d operations overlapped a time it "
        "was down, %d of them failed" % (stops, down_time, elapsed, n_down,
                                         sum(1 for o in ops if o[6] != "up" and o[4] == "error")))
    if failed_restart:
        out("- **the mirror could not be restarted** on its port: the rest of the run had no mirror")
    # RSS: the first `ramp` seconds (caches and allocator pools filling) are left out of the
    # baseline, which is the median of the next `window` seconds; the end is the median of the
    # last `window` seconds.
    rss_line = None
    ramp = window = min(60.0, duration / 4.0)
    base = [s[1] for s in samples if ramp <= s[0] - t0 < ramp + window]
    last = [s[1] for s in samples if s[0] >= t_end - window]
    if base and last:
        m1, m2 = median(base), median(last)
        growth = 100.0 * (m2 - m1) / m1
        rss_line = ("RSS flat: %s (growth %+.1f%%: median VmRSS %.1f MiB at t = %.0f-%.0f s, %.1f MiB at "
                    "t = %.0f-%.0f s; flat means under %g%%)" % (
                        "yes" if growth < rss_flat_pct else "no", growth, m1 / 1024, ramp,
                        ramp + window, m2 / 1024, t_end - t0 - window, t_end - t0, rss_flat_pct))
        if duration < 300:
            rss_line += "; a run under 5 minutes is too short to judge"
    else:
        rss_line = "RSS flat: unknown (too few samples)"
    if not alive:
        rss_line = "RSS flat: not judged (mirrorgate died)"
    out("- " + rss_line)
    out()

    # --- operations
    kinds = {}
    for o in ops:
        k = kinds.setdefault(o[2], {"n": 0, "err": 0, "expected": {}, "dur": [], "down": 0})
        k["n"] += 1
        k["dur"].append(o[1] - o[0])
        if o[6] != "up":
            k["down"] += 1
        if o[4] == "error":
            k["err"] += 1
        elif o[5] != "-":
            k["expected"][o[5]] = k["expected"].get(o[5], 0) + 1
    out("## Client operations")
    out()
    out("Each operation's answer is checked: status, and the bytes (sha256 of manifests and blobs, the "
        "requested slice of a blob, the digest of what skopeo copied). *mirror not up* counts "
        "operations that overlapped a time the mirror was down.")
    out()
    out("| operation | count | failed | expected error answers | mirror not up | mean s | max s |")
    out("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for name in sorted(kinds):
        k = kinds[name]
        exp = ", ".join("%s ×%d" % kv for kv in sorted(k["expected"].items())) or "–"
        out("| %s | %d | %d | %s | %d | %.3f | %.3f |" % (name, k["n"], k["err"], exp, k["down"],
            sum(k["dur"]) / len(k["dur"]), max(k["dur"])))
    out("| **all** | **%d** | **%d** | | %d | | |" % (total, len(errors),
                                                    sum(1 for o in ops if o[6] != "up")))
    out()

    # --- errors
    out("## Errors by kind (client side)")
    out()
    if not errors:
        out("None.")
    else:
        by = {}
        for o in errors:
            k = by.setdefault((o[5], o[2]), {"up": 0, "down": 0, "flap": 0})
            k[o[6]] += 1
        out("Mirror *up* / *down*: the whole operation ran while the mirror was up / down; *across "
            "a flap*: the mirror was stopped or started during the operation.")
        out()
        out("| kind | operation | count | mirror up | mirror down | across a flap | example |")
        out("| --- | --- | ---: | ---: | ---: | ---: | --- |")
        for (kind, op), k in sorted(by.items(), key=lambda kv: -sum(kv[1].values())):
            ex = messages.get(kind, "").replace("|", "\\|")[:160]
            out("| %s | %s | %d | %d | %d | %d | %s |" % (kind, op, sum(k.values()), k["up"],
                                                         k["down"], k["flap"], ex))
        out()
        cats = {}
        for o in errors:
            c = o[5].split(":")[0]
            cats[c] = cats.get(c, 0) + 1
        out("By category: " + ", ".join("%s %d" % kv for kv in sorted(cats.items())) +
            ". While the mirror was up the whole time: %d." % sum(1 for o in errors if o[6] == "up"))
    out()

    # --- mirror flaps
    out("## The flapping mirror")
    out()
    by_state = {}
    for o in ops:
        s = by_state.setdefault(o[6], [0, 0])
        s[0] += 1
        s[1] += o[4] == "error"
    out("- stops (SIGKILL): %d, restarts: %d; down %.0f s of %.0f s" %
        (stops, starts, down_time, elapsed))
    for st, label in (("up", "while up"), ("down", "while down"), ("flap", "across a stop or start")):
        n, e = by_state.get(st, [0, 0])
        out("- operations %s: %d, failed %d (%.2f%%)" % (label, n, e, 100.0 * e / n if n else 0))
    if len(samples) >= 2:
        acc = {}
        for a, b in zip(samples, samples[1:]):
            st = a[5] if a[5] == b[5] else "flap"
            d = [y - x for x, y in zip(a[6], b[6])]
            s = acc.setdefault(st, [0, 0, 0, 0, 0, 0.0])
            for i in range(5):
                s[i] += d[i]
            s[5] += b[0] - a[0]
        out()
        out("mirrorgate's counters between consecutive samples (every sample notes the mirror's "
            "state; an interval where it changed counts as *changing*):")
        out()
        out("| mirror | seconds | fallbacks | upstream mirror ok | mirror failed | source ok | source failed |")
        out("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for st, label in (("up", "up"), ("down", "down"), ("flap", "changing")):
            if st in acc:
                s = acc[st]
                out("| %s | %.0f | %d | %d | %d | %d | %d |" % (label, s[5], *s[:5]))
    out()

    # --- mirrorgate's counters
    m0 = read_metrics(os.path.join(work, "metrics.start"))
    m1 = read_metrics(os.path.join(work, "metrics.end"))
    def delta(name):
        rows = {}
        for (n, l), v in m1.items():
            if n == name:
                rows[l] = v - m0.get((n, l), 0.0)
        return rows
    def table(title, name, cols):
        rows = delta(name)
        out("**%s** (`%s`)" % (title, name))
        out()
        if not rows:
            out("none")
            out()
            return
        out("| " + " | ".join(cols) + " | during the soak | total |")
        out("|" + " --- |" * len(cols) + " ---: | ---: |")
        for l, v in sorted(rows.items(), key=lambda kv: [dict(kv[0]).get(c, "") for c in cols]):
            d = dict(l)
            out("| " + " | ".join(d.get(c, "") for c in cols) +
                " | %d | %d |" % (v, m1[(name, l)]))
        out()
    out("## mirrorgate's counters (`/metrics`)")
    out()
    if not m1:
        out("No final /metrics (mirrorgate was not answering).")
        out()
    else:
        if mg_state != "alive":
            out("(mirrorgate died: the last sampled /metrics)")
            out()
        out("*during the soak*: the end minus the values after the warm-up; *total*: since start.")
        out()
        table("Requests answered", "mirrorgate_http_requests_total", ["route", "method", "status"])
        table("Upstream attempts", "mirrorgate_upstream_requests_total",
              ["registry", "role", "route", "outcome"])
        table("Fallbacks (served by another than the first pull source)", "mirrorgate_fallbacks_total", ["route"])
        table("Source attempts after every mirror failed", "mirrorgate_source_after_mirrors_total", ["route"])
        out("**Cache**")
        out()
        out("| counter | during the soak | total |")
        out("| --- | ---: | ---: |")
        for (n, l), v in sorted(m1.items()):
            if l or not (n.startswith("mirrorgate_cache_") or n.startswith("mirrorgate_bytes_")):
                continue
            gauge = not n.endswith("_total")
            out("| %s | %s | %d |" % (n + (" (now)" if gauge else ""),
                                      "" if gauge else "%d" % (v - m0.get((n, l), 0.0)), v))
        out()

    # --- memory
    out("## mirrorgate's memory")
    out()
    if not samples:
        out("No samples.")
    else:
        s0, s1 = samples[0], samples[-1]
        out("| | VmRSS MiB | open fds | threads |")
        out("| --- | ---: | ---: | ---: |")
        out("| after the warm-up pulls (t = 0) | %.1f | %d | %d |" % (s0[1] / 1024, s0[3], s0[4]))
        if base:
            out("| start: median of t = %.0f-%.0f s | %.1f | | |" % (ramp, ramp + window, median(base) / 1024))
        if last:
            out("| end: median of the last %.0f s | %.1f | | |" % (window, median(last) / 1024))
        out("| last sample (t = %.0f s) | %.1f | %d | %d |" % (s1[0] - t0, s1[1] / 1024, s1[3], s1[4]))
        out("| lowest / highest sample | %.1f / %.1f | %d / %d | %d / %d |" % (
            min(s[1] for s in samples) / 1024, max(s[1] for s in samples) / 1024,
            min(s[3] for s in samples), max(s[3] for s in samples),
            min(s[4] for s in samples), max(s[4] for s in samples)))
        out("| peak (VmHWM) | %.1f | | |" % (max(s[2] for s in samples) / 1024))
        out()
        out(rss_line)
        out()
        # A compact series: about 12 points.
        step = max(1, len(samples) // 12)
        pts = samples[::step]
        if pts[-1] is not samples[-1]:
            pts.append(samples[-1])
        out("VmRSS over time (t s: MiB, threads): " +
            ", ".join("%.0f: %.1f, %d" % (s[0] - t0, s[1] / 1024, s[4]) for s in pts))
    out()

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make-images":
        make_images(args[0], int(args[1]), args[2] == "1")
    elif cmd == "metrics-sample":
        metrics_sample(args[0])
    elif cmd == "report":
        report(args[0], args[1], args[2], float(args[3]), float(args[4]), args[5], args[6],
               args[7], args[8], args[9])
    else:
        sys.exit("unknown helper command " + cmd)
PYEOF
helper() { python3 "$HELPER" "$@"; }

# ---------------------------------------------------------------------------------------------
# Launchers: `launch_X PORT` writes X's configuration, starts it in the background, sets
# LAUNCHED_PID and records it in PIDS.
# ---------------------------------------------------------------------------------------------
launch_registry() {
    local name=$1 port=$2 dir="$WORK/$1"
    mkdir -p "$dir/data"
    registry_config "$dir/data" "$port" mirrorgate-soak false >"$dir/config.yml"
    docker-registry serve "$dir/config.yml" >>"$WORK/logs/$name.log" 2>&1 &
    LAUNCHED_PID=$!
    PIDS+=("$LAUNCHED_PID")
}
launch_source() { launch_registry source "$1"; }
launch_mirror() { launch_registry mirror "$1"; }

RULES_DIR="$WORK/rules"
write_rules() {
    mkdir -p "$RULES_DIR"
    cat >"$RULES_DIR/mirrors.yaml" <<'EOF'
apiVersion: config.openshift.io/v1
kind: ImageDigestMirrorSet
metadata:
  name: soak-digest
spec:
  imageDigestMirrors:
    - source: source.test/soak
      mirrors: [mirror.test/soak]
---
apiVersion: config.openshift.io/v1
kind: ImageTagMirrorSet
metadata:
  name: soak-tag
spec:
  imageTagMirrors:
    - source: source.test/soak
      mirrors: [mirror.test/soak]
EOF
}

launch_mirrorgate() {
    local port=$1 dir="$WORK/mirrorgate"
    mkdir -p "$dir/cache"
    cat >"$dir/config.yaml" <<EOF
listen: 127.0.0.1:$port
rules: [$RULES_DIR]
registries:
  source.test:
    endpoint: http://127.0.0.1:$SOURCE_PORT
    insecure: true
  mirror.test:
    endpoint: http://127.0.0.1:$MIRROR_PORT
    insecure: true
cache:
  dir: $dir/cache
  max_size: ${CACHE_MIB}MiB
  memory: 32MiB
  tag_ttl: $TAG_TTL
upstream:
  connect_timeout: 2s
  timeout: 10s
EOF
    (cd "$dir" && RUST_LOG=$MG_LOG exec "$MG" serve --config "$dir/config.yaml") \
        >>"$WORK/logs/mirrorgate.log" 2>&1 &
    LAUNCHED_PID=$!
    PIDS+=("$LAUNCHED_PID")
}

# kib FIELD PID: a field of /proc/PID/status in KiB (or a count, for Threads).
kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"; }

now() { printf '%s' "$EPOCHREALTIME"; }

# ---------------------------------------------------------------------------------------------
# The flapping mirror. Runs in its own process group and owns every mirror process it starts:
# starts the mirror on MIRROR_PORT, and once GO exists, keeps it up FLAP s, kills it (SIGKILL,
# mid-transfer if need be), leaves it down FLAP s, starts it again on the same port and storage.
# ---------------------------------------------------------------------------------------------
# nap SECONDS: sleeps, in steps of at most 1 s; false as soon as STOP exists.
nap() {
    local left=$1
    while ((left > 0)); do
        [ ! -e "$STOP" ] || return 1
        sleep 1
        left=$((left - 1))
    done
    [ ! -e "$STOP" ]
}

flapper() {
    set +e
    local pid="" attempt
    mirror_up() {
        for ((attempt = 1; attempt <= RESTART_ATTEMPTS; attempt++)); do
            launch_mirror "$MIRROR_PORT"
            pid=$LAUNCHED_PID
            if wait_ready mirror "$pid" "http://127.0.0.1:$MIRROR_PORT/v2/"; then
                echo up >"$MIRROR_STATE"
                echo "$(now) up" >>"$FLAPS"
                return 0
            fi
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            sleep 1
        done
        echo failed >"$MIRROR_STATE"
        echo "$(now) restart-failed" >>"$FLAPS"
        return 1
    }
    mirror_up || exit 1
    until [ -e "$GO" ]; do
        [ ! -e "$STOP" ] || break
        sleep 0.2
    done
    while nap "$FLAP"; do
        echo down >"$MIRROR_STATE"
        echo "$(now) down" >>"$FLAPS"
        log "mirror: killed (pid $pid)"
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        nap "$FLAP" || break
        mirror_up || exit 1
        log "mirror: started again (pid $pid)"
    done
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    exit 0
}

# ---------------------------------------------------------------------------------------------
# The clients. Each loop picks an operation at random (weights below), checks the answer and
# appends one line per operation to clients/N.log: start, end, operation, target, ok|error,
# detail ("-", an expected error answer such as expected-404, or the error's kind). Error
# messages go to clients/N.errors. clients/N.current names the operation in progress.
# ---------------------------------------------------------------------------------------------
OPS="skopeo-tag:10 skopeo-digest:8 manifest-get-tag:10 manifest-head-tag:6 manifest-get-digest:10 manifest-head-digest:6 blob-get:16 blob-range:12 not-found:12 malformed:10"
ACCEPT_ALL="Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

fail() {
    RESULT=error DETAIL=$1
    MSG=$(printf '%s' "$2" | tr '\t\n\r' '   ' | head -c 400)
}

# http ARGS...: one curl, body in $T/body, headers in $T/headers; sets CODE and CURL_RC.
http() {
    CURL_RC=0
    CODE=$(curl -sS --max-time "$OP_TIMEOUT" -o "$T/body" -D "$T/headers" -w '%{http_code}' "$@" \
        2>"$T/curl.err") || CURL_RC=$?
}

# expect CODE...: the last answer had one of these statuses (true), or records the error.
expect() {
    local want kind
    if [ "$CURL_RC" != 0 ]; then
        fail "transport:curl-$CURL_RC" "$(head -c 300 "$T/curl.err")"
        return 1
    fi
    for want in "$@"; do [ "$CODE" != "$want" ] || return 0; done
    case "$CODE" in 5??) kind=http-5xx ;; 4??) kind=http-4xx ;; *) kind=http-other ;; esac
    fail "$kind:$CODE" "$(head -c 300 "$T/body")"
    return 1
}

body_is() { # DIGEST: the body hashes to DIGEST
    local got
    got=$(sha256sum "$T/body" | cut -d' ' -f1)
    [ "sha256:$got" = "$1" ] && return 0
    fail content:body-digest "body sha256:$got, expected $1 ($(stat -c %s "$T/body") bytes)"
    return 1
}

header_digest_is() { # DIGEST: Docker-Content-Digest is DIGEST
    local got
    got=$(awk 'tolower($1) == "docker-content-digest:" { print $2 }' "$T/headers" | tr -d '\r' | tail -n 1)
    [ "$got" = "$1" ] && return 0
    fail content:header-digest "Docker-Content-Digest '$got', expected $1"
    return 1
}

pick_image() {
    local i=$((RANDOM % ${#IMG_NAME[@]}))
    P_NAME=${IMG_NAME[i]} P_TAG=${IMG_TAG[i]} P_DIGEST=${IMG_DIGEST[i]}
    P_AMD64=${IMG_AMD64[i]} P_MULTI=${IMG_MULTI[i]}
}
pick_manifest() {
    local i=$((RANDOM % ${#MAN_NAME[@]}))
    P_NAME=${MAN_NAME[i]} P_DIGEST=${MAN_DIGEST[i]}
}
pick_blob() {
    local i=$((RANDOM % ${#BLOB_NAME[@]}))
    P_NAME=${BLOB_NAME[i]} P_DIGEST=${BLOB_DIGEST[i]} P_SIZE=${BLOB_SIZE[i]} P_PATH=${BLOB_PATH[i]}
}

op_skopeo() { # tag | digest
    local ref all=() want rc=0 msg class
    pick_image
    if [ "$1" = tag ]; then ref="$P_NAME:$P_TAG"; else ref="$P_NAME@$P_DIGEST"; fi
    TARGET=$ref
    want=$P_AMD64
    # The index with every platform, or (multi-platform image, half the time) linux/amd64 only.
    if [ "$P_MULTI" = 1 ] && ((RANDOM % 2)); then all=(--all) want=$P_DIGEST TARGET+=" --all"; fi
    rm -rf "$T/oci"
    timeout "$SKOPEO_TIMEOUT" skopeo --insecure-policy --override-os linux --override-arch amd64 \
        copy --quiet --preserve-digests --src-tls-verify=false "${all[@]}" \
        "docker://127.0.0.1:$MG_PORT/source.test/soak/$ref" "oci:$T/oci:x" >/dev/null 2>"$T/skopeo.err" || rc=$?
    if [ "$rc" != 0 ]; then
        msg=$(tr '\n' ' ' <"$T/skopeo.err" | sed -E 's/time="[^"]*" level=[a-z]+ msg=//g')
        # The kind, from the message without its digests (whose hex could read as a status).
        case "$(printf '%s' "${msg,,}" | sed -E 's/[0-9a-f]{64}//g')" in
            *"timed out"* | *timeout* | *deadline*) class=timeout ;;
            *"unexpected eof"* | *": eof"*) class=eof ;;
            *"connection reset"*) class=reset ;;
            *"connection refused"*) class=refused ;;
            *"status: 5"* | *"status code 5"* | *" 502 "* | *"bad gateway"*) class=http-5xx ;;
            *"manifest unknown"* | *"blob unknown"* | *"not found"*) class=not-found ;;
            *digest*) class=digest ;;
            *) class=other ;;
        esac
        [ "$rc" != 124 ] || class=timeout
        fail "skopeo:$class" "exit $rc: $msg"
    elif ! grep -q "\"$want\"" "$T/oci/index.json" 2>/dev/null; then
        fail content:skopeo-digest "the copy is not $want: $(head -c 300 "$T/oci/index.json" 2>/dev/null)"
    fi
    rm -rf "$T/oci"
}

op_manifest() { # GET|HEAD tag|digest
    local method=$1 by=$2 url
    if [ "$by" = tag ]; then
        pick_image
        url="$MG_BASE/$P_NAME/manifests/$P_TAG" TARGET="$P_NAME:$P_TAG"
    else
        pick_manifest
        url="$MG_BASE/$P_NAME/manifests/$P_DIGEST" TARGET="$P_NAME@$P_DIGEST"
    fi
    if [ "$method" = HEAD ]; then
        http --head -H "$ACCEPT_ALL" "$url"
        expect 200 && header_digest_is "$P_DIGEST"
    else
        http -H "$ACCEPT_ALL" "$url"
        expect 200 && body_is "$P_DIGEST"
    fi
    return 0
}

op_blob_get() {
    pick_blob
    TARGET="$P_NAME@$P_DIGEST"
    http "$MG_BASE/$P_NAME/blobs/$P_DIGEST"
    expect 200 && body_is "$P_DIGEST"
    return 0
}

op_blob_range() {
    local from len
    pick_blob
    from=$(((RANDOM * 32768 + RANDOM) % P_SIZE))
    len=$((P_SIZE - from))
    ((len <= 65536)) || len=$((1 + (RANDOM * 32768 + RANDOM) % 65536))
    TARGET="$P_NAME@$P_DIGEST bytes=$from-$((from + len - 1))"
    http -H "Range: bytes=$from-$((from + len - 1))" "$MG_BASE/$P_NAME/blobs/$P_DIGEST"
    expect 206 || return 0
    if ! cmp -s "$T/body" <(tail -c +"$((from + 1))" "$P_PATH" | head -c "$len"); then
        fail content:range-bytes "$(stat -c %s "$T/body") bytes that are not bytes $from-$((from + len - 1)) of $P_DIGEST"
    fi
    return 0
}

# Names that exist nowhere: 404 when every source said "not found". While the mirror cannot be
# reached (down, or skipped for 5 s after a failed connection), mirrorgate answers 502 instead (a
# source failed: it cannot know the mirror lacks it), naming the source's "not found"; that answer
# is expected too, recorded as expected-502-mirror-unreachable.
op_not_found() {
    local url hex
    pick_image
    if ((RANDOM % 2)); then
        url="$MG_BASE/$P_NAME/manifests/missing-$RANDOM" TARGET="$P_NAME:missing"
    else
        hex=$(printf '%s' "$RANDOM$EPOCHREALTIME" | sha256sum | cut -d' ' -f1)
        url="$MG_BASE/$P_NAME/blobs/sha256:$hex" TARGET="$P_NAME@sha256:random"
    fi
    http -H "$ACCEPT_ALL" "$url"
    expect 404 502 || return 0
    if [ "$CODE" = 404 ]; then
        DETAIL=expected-404
    elif grep -q "source source\.test/soak/[^\"]*: not found" "$T/body"; then
        DETAIL=expected-502-mirror-unreachable
    else
        fail "http-5xx:502" "$(head -c 300 "$T/body")"
    fi
    return 0
}

op_malformed() {
    local path
    pick_image
    case $((RANDOM % 5)) in
        0) path="$P_NAME/manifests/sha256:1234" ;;           # DIGEST_INVALID
        1) path="$P_NAME/blobs/sha256:zz" ;;                 # DIGEST_INVALID
        2) path="${P_NAME^^}/manifests/$P_TAG" ;;            # NAME_INVALID (upper case)
        3) path="$P_NAME/manifests/bad%21tag" ;;             # MANIFEST_INVALID (bad tag)
        4) path="$P_NAME/tags/list?n=many" ;;                # invalid page size
    esac
    TARGET=$path
    http "$MG_BASE/$path"
    expect 400 && DETAIL=expected-400
    return 0
}

client() {
    local id=$1 r op w t0 pair
    set +e
    T="$WORK/clients/$id.tmp"
    mkdir -p "$T"
    RANDOM=$(((id * 7919 + $$) % 32768))
    while [ ! -e "$STOP" ]; do
        r=$((RANDOM % 100))
        for pair in $OPS; do
            op=${pair%:*} w=${pair#*:}
            ((r < w)) && break
            r=$((r - w))
        done
        RESULT=ok DETAIL=- MSG="" TARGET=""
        t0=$(now)
        echo "$t0 $op" >"$WORK/clients/$id.current"
        case "$op" in
            skopeo-tag) op_skopeo tag ;;
            skopeo-digest) op_skopeo digest ;;
            manifest-get-tag) op_manifest GET tag ;;
            manifest-head-tag) op_manifest HEAD tag ;;
            manifest-get-digest) op_manifest GET digest ;;
            manifest-head-digest) op_manifest HEAD digest ;;
            blob-get) op_blob_get ;;
            blob-range) op_blob_range ;;
            not-found) op_not_found ;;
            malformed) op_malformed ;;
        esac
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t0" "$(now)" "$op" "$TARGET" "$RESULT" "$DETAIL" \
            >>"$WORK/clients/$id.log"
        [ -z "$MSG" ] || printf '%s\t%s\t%s\t%s\n' "$t0" "$DETAIL" "$MSG" "$TARGET" >>"$WORK/clients/$id.errors"
        rm -f "$WORK/clients/$id.current"
        [ "$THINK" = 0 ] || sleep "$THINK"
    done
    exit 0
}

# ---------------------------------------------------------------------------------------------
# 0. The machine and the command.
# ---------------------------------------------------------------------------------------------
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
command_line="cd $REPO && DURATION=$DURATION CLIENTS=$CLIENTS FLAP=$FLAP SAMPLE=$SAMPLE IMAGES=$IMAGES MULTI=$MULTI CACHE_MIB=$CACHE_MIB TAG_TTL=$TAG_TTL THINK=$THINK MAX_ERROR_PCT=$MAX_ERROR_PCT RSS_FLAT_PCT=$RSS_FLAT_PCT MG_LOG=$MG_LOG bash benches/soak/run.sh"
echo "# mirrorgate soak test"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r), $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
echo "- command: \`$command_line\`"
echo "- mirrorgate: $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown) ($(rustc --version 2>/dev/null || echo 'rustc ?')), \`RUST_LOG=$MG_LOG\`"
echo "- distribution: $(docker-registry --version 2>/dev/null | awk '{ print $NF }'); skopeo $(skopeo --version | awk '{ print $3 }'); $(curl --version | head -n 1 | awk '{ print $1, $2 }')"

# ---------------------------------------------------------------------------------------------
# 1. Build.
# ---------------------------------------------------------------------------------------------
log "building mirrorgate (release)"
(cd "$REPO" && cargo build --release --locked) >&2 || die "cargo build --release --locked failed"
[ -x "$MG" ] || die "$MG was not built"

# ---------------------------------------------------------------------------------------------
# 2. The two registries and the images.
# ---------------------------------------------------------------------------------------------
start source launch_source /v2/
SOURCE_PORT=$STARTED_PORT
start mirror launch_mirror /v2/
MIRROR_PORT=$STARTED_PORT
FIRST_MIRROR_PID=$STARTED_PID

log "generating the images"
read -r n_images n_manifests n_blobs image_bytes < <(helper make-images "$WORK" "$IMAGES" "$MULTI")
[ -n "${image_bytes:-}" ] || die "generating the images failed"
# The cache holds 60% of the distinct blob bytes: blobs are evicted and fetched again all along,
# so that fetches (and fallbacks) keep happening while the mirror flaps.
if [ "$CACHE_MIB" = auto ]; then
    CACHE_MIB=$((image_bytes * 6 / 10 / 1048576))
    ((CACHE_MIB >= 8)) || CACHE_MIB=8 # above the largest blob (4 MiB), with room
fi
IMG_NAME=() IMG_TAG=() IMG_DIGEST=() IMG_AMD64=() IMG_MULTI=()
while IFS=$'\t' read -r name tag digest where amd64 multi; do
    IMG_NAME+=("$name") IMG_TAG+=("$tag") IMG_DIGEST+=("$digest") IMG_AMD64+=("$amd64") IMG_MULTI+=("$multi")
    ports=("$SOURCE_PORT")
    [ "$where" != both ] || ports+=("$MIRROR_PORT")
    for port in "${ports[@]}"; do
        log "pushing soak/$name:$tag ($digest) to 127.0.0.1:$port"
        timeout 300 skopeo --insecure-policy copy --quiet --all --preserve-digests --dest-tls-verify=false \
            "oci:$WORK/images/$name:$tag" "docker://127.0.0.1:$port/soak/$name:$tag" </dev/null >&2 ||
            die "skopeo copy of soak/$name:$tag to 127.0.0.1:$port failed"
        got=$(curl -sf --max-time 10 -I -H "$ACCEPT_ALL" "http://127.0.0.1:$port/v2/soak/$name/manifests/$tag" </dev/null |
            awk 'tolower($1) == "docker-content-digest:" { print $2 }' | tr -d '\r')
        [ "$got" = "$digest" ] || die "127.0.0.1:$port has soak/$name:$tag as '$got', not $digest"
    done
done <"$WORK/images.tsv"
MAN_NAME=() MAN_DIGEST=()
while IFS=$'\t' read -r name digest; do MAN_NAME+=("$name") MAN_DIGEST+=("$digest"); done <"$WORK/manifests.tsv"
BLOB_NAME=() BLOB_DIGEST=() BLOB_SIZE=() BLOB_PATH=()
while IFS=$'\t' read -r name digest size path; do
    BLOB_NAME+=("$name") BLOB_DIGEST+=("$digest") BLOB_SIZE+=("$size") BLOB_PATH+=("$path")
done <"$WORK/blobs.tsv"

# From here the flapper owns the mirror: this shell's instance makes way for it.
stop_pid "$FIRST_MIRROR_PID"
spawn_group flapper
FLAPPER=$SPAWNED
deadline=$((SECONDS + READY_TIMEOUT * RESTART_ATTEMPTS))
until [ "$(cat "$MIRROR_STATE" 2>/dev/null)" = up ]; do
    kill -0 "$FLAPPER" 2>/dev/null || die "the mirror did not start again on 127.0.0.1:$MIRROR_PORT"
    ((SECONDS < deadline)) || die "the mirror did not start again on 127.0.0.1:$MIRROR_PORT"
    sleep 0.2
done

# ---------------------------------------------------------------------------------------------
# 3. mirrorgate, and a warm-up: every image pulled once by tag, with the mirror up.
# ---------------------------------------------------------------------------------------------
write_rules
start mirrorgate launch_mirrorgate /readyz
MG_PORT=$STARTED_PORT MG_PID=$STARTED_PID
MG_BASE="http://127.0.0.1:$MG_PORT/v2/source.test/soak"
"$MG" check --config "$WORK/mirrorgate/config.yaml" >"$WORK/logs/mirrorgate-check.log" 2>&1 ||
    die "mirrorgate check rejects $WORK/mirrorgate/config.yaml: $(cat "$WORK/logs/mirrorgate-check.log")"

log "warm-up: pulling every image once through mirrorgate"
for name in "${IMG_NAME[@]}"; do
    rm -rf "$WORK/warmup"
    timeout 300 skopeo --insecure-policy copy --quiet --all --preserve-digests --src-tls-verify=false \
        "docker://127.0.0.1:$MG_PORT/source.test/soak/$name:v1" "oci:$WORK/warmup:x" >&2 ||
        die "warm-up: skopeo copy of source.test/soak/$name:v1 through mirrorgate failed"
done
rm -rf "$WORK/warmup"

echo "- parameters: ${DURATION_S} s, $CLIENTS clients, mirror up ${FLAP} s / down ${FLAP} s, samples every ${SAMPLE} s; cache.max_size ${CACHE_MIB} MiB, cache.memory 32 MiB, cache.tag_ttl $TAG_TTL, upstream connect_timeout 2 s / timeout 10 s"
echo "- images: $n_images repositories ($IMAGES on both registries$([ "$MULTI" = 1 ] && echo ", a two-platform index on both") and one on the source only), $n_manifests manifests, $n_blobs blobs, $((image_bytes / 1048576)) MiB of distinct blobs; rules: IDMS + ITMS source.test/soak → mirror.test/soak (AllowContactingSource)"
echo "- operation weights (%): $OPS"
echo

# ---------------------------------------------------------------------------------------------
# 4. The soak: clients, the flapping mirror, and samples of mirrorgate's memory and counters.
# ---------------------------------------------------------------------------------------------
# sample: one line of samples.tsv (epoch, VmRSS KiB, VmHWM KiB, fds, threads, mirror state,
# fallbacks, upstream mirror ok/failed, source ok/failed); false when mirrorgate is gone.
sample() {
    local t rss hwm fds threads state counters
    t=$(now)
    rss=$(kib VmRSS "$MG_PID" 2>/dev/null) || return 1
    hwm=$(kib VmHWM "$MG_PID" 2>/dev/null) || return 1
    threads=$(kib Threads "$MG_PID" 2>/dev/null) || return 1
    fds=$(find "/proc/$MG_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    state=$(cat "$MIRROR_STATE" 2>/dev/null || echo '?')
    if curl -sf --max-time 5 -o "$WORK/metrics.tmp" "http://127.0.0.1:$MG_PORT/metrics"; then
        mv "$WORK/metrics.tmp" "$WORK/metrics.last"
    fi
    counters=$(helper metrics-sample "$WORK/metrics.last")
    [ -n "$rss" ] || return 1
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rss" "$hwm" "$fds" "$threads" "$state" "$counters" >>"$SAMPLES"
}

curl -sf --max-time 10 -o "$WORK/metrics.start" "http://127.0.0.1:$MG_PORT/metrics" || die "GET /metrics failed"
cp "$WORK/metrics.start" "$WORK/metrics.last"
T0=$(now)
START_S=$SECONDS
sample || die "mirrorgate is gone"
touch "$GO"
CLIENT_PIDS=()
for ((i = 1; i <= CLIENTS; i++)); do
    spawn_group client "$i"
    CLIENT_PIDS+=("$SPAWNED")
done
log "soak: ${DURATION_S} s, $CLIENTS clients, the mirror flapping every ${FLAP} s"

MG_STATE=alive
LOOPS_DEAD="" # a client loop or the flapper that ended before the soak did: a harness failure
while :; do
    elapsed=$((SECONDS - START_S))
    ((elapsed < DURATION_S)) || break
    left=$((DURATION_S - elapsed))
    sleep $((left < SAMPLE ? left : SAMPLE))
    if ! kill -0 "$MG_PID" 2>/dev/null || ! sample; then
        MG_STATE="gone at t = $((SECONDS - START_S)) s"
        log "mirrorgate died ($MG_STATE)"
        break
    fi
    for ((i = 1; i <= CLIENTS; i++)); do
        if ! kill -0 "${CLIENT_PIDS[i - 1]}" 2>/dev/null && [[ $LOOPS_DEAD != *"client $i "* ]]; then
            LOOPS_DEAD+="client $i (t = $((SECONDS - START_S)) s); "
            log "client $i ended early"
        fi
    done
    if ! kill -0 "$FLAPPER" 2>/dev/null && [[ $LOOPS_DEAD != *flapper* ]]; then
        LOOPS_DEAD+="flapper (t = $((SECONDS - START_S)) s); "
        log "the flapper ended early"
    fi
    if (((SECONDS - START_S) % 60 < SAMPLE)); then
        log "t = $((SECONDS - START_S)) s: $(cat "$WORK"/clients/*.log 2>/dev/null | wc -l) operations, mirror $(cat "$MIRROR_STATE"), VmRSS $(($(kib VmRSS "$MG_PID") / 1024)) MiB"
    fi
done
T_END=$(now)

# The end: the clients finish the operation under way (up to STOP_GRACE s); one still running
# then is recorded as hung. The last metrics are read with the load gone.
touch "$STOP"
log "stopping the clients (up to ${STOP_GRACE} s for the operations under way)"
deadline=$((SECONDS + STOP_GRACE))
for pid in "${CLIENT_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
done
HUNG="$WORK/hung.txt"
: >"$HUNG"
for ((i = 1; i <= CLIENTS; i++)); do
    if [ -e "$WORK/clients/$i.current" ]; then
        cat "$WORK/clients/$i.current" >>"$HUNG"
    fi
done
for pid in "${CLIENT_PIDS[@]}"; do stop_group "$pid"; done
if [ "$MG_STATE" = alive ] && kill -0 "$MG_PID" 2>/dev/null; then
    curl -sf --max-time 10 -o "$WORK/metrics.end" "http://127.0.0.1:$MG_PORT/metrics" ||
        cp "$WORK/metrics.last" "$WORK/metrics.end"
else
    [ "$MG_STATE" != alive ] || MG_STATE="gone at the end"
    cp "$WORK/metrics.last" "$WORK/metrics.end"
fi
FLAPPER_OK=1
if [ "$(cat "$MIRROR_STATE" 2>/dev/null)" = failed ] || [[ $LOOPS_DEAD == *flapper* ]]; then FLAPPER_OK=0; fi
stop_group "$FLAPPER"

# ---------------------------------------------------------------------------------------------
# 5. The report.
# ---------------------------------------------------------------------------------------------
helper report "$WORK" "$T0" "$T_END" "$DURATION_S" "$FLAP" "$MAX_ERROR_PCT" "$RSS_FLAT_PCT" \
    "$HUNG" "$MG_STATE" "$LOOPS_DEAD" >"$WORK/report.md"
cat "$WORK/report.md"

echo "## mirrorgate's log"
echo
warns=$(grep -cE ' (WARN|ERROR) ' "$WORK/logs/mirrorgate.log" || true)
echo "$(wc -l <"$WORK/logs/mirrorgate.log") lines, WARN/ERROR: $warns"
if [ "$warns" -gt 0 ]; then
    echo
    echo "The most frequent WARN/ERROR messages (digests, ports and numbers masked):"
    echo
    echo '```'
    grep -E ' (WARN|ERROR) ' "$WORK/logs/mirrorgate.log" | cut -d' ' -f2- |
        sed -E 's/sha256:[0-9a-f]{64}/sha256:…/g; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -n 8 |
        cut -c1-400
    echo '```'
fi
echo

# Exit status.
total=$(cat "$WORK"/clients/*.log 2>/dev/null | wc -l)
failed=$(cat "$WORK"/clients/*.log 2>/dev/null | awk -F'\t' '$5 == "error"' | wc -l)
failed=$((failed + $(wc -l <"$HUNG")))
if [ "$MG_STATE" != alive ]; then
    log "FAILED: mirrorgate died ($MG_STATE)"
    exit 2
fi
if [ "$FLAPPER_OK" != 1 ]; then
    log "FAILED: the mirror could not be restarted on its port, or the flapper ended (harness)"
    exit 1
fi
if [ -n "$LOOPS_DEAD" ]; then
    log "FAILED: loops ended before the soak did (harness): $LOOPS_DEAD"
    exit 1
fi
if [ "$total" -eq 0 ]; then
    log "FAILED: no client operation completed"
    exit 1
fi
if awk -v f="$failed" -v t="$total" -v m="$MAX_ERROR_PCT" 'BEGIN { exit !(100 * f / t > m) }'; then
    log "FAILED: $failed of $total operations failed, above ${MAX_ERROR_PCT}%"
    exit 3
fi
log "passed: $total operations, $failed failed"
