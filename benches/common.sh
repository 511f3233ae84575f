# shellcheck shell=bash
# Shell helpers shared by the benchmark scripts (benches/load/run.sh, benches/soak/run.sh):
# logging, starting servers on free loopback ports until they answer, stopping them.
# The sourcing script sets READY_TIMEOUT, START_ATTEMPTS and the array PIDS (every process it
# started, for its cleanup).

log() { printf '==> %s\n' "$*" >&2; }

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

forget_pid() {
    local pid=$1 kept=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

# Stops one process started here: SIGTERM, up to 5 s, then SIGKILL; reaps it.
stop_pid() {
    local pid=$1 i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_ready NAME PID URL: until URL answers 200 (true), PID exits or READY_TIMEOUT passes (false).
wait_ready() {
    local name=$1 pid=$2 url=$3 deadline code
    deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited while starting"
            return 1
        fi
        # -k: a TLS server under test presents the run's own self-signed certificate.
        code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
        if [ "$code" = 200 ]; then
            # Another process holding the port would answer while ours failed to bind.
            sleep 0.2
            kill -0 "$pid" 2>/dev/null && return 0
            log "$name exited after its port answered (port taken?)"
            return 1
        fi
        sleep 0.1
    done
    log "$name did not answer 200 on $url within ${READY_TIMEOUT}s"
    return 1
}

# start NAME LAUNCHER READY_PATH [SCHEME]: runs `LAUNCHER PORT` on a fresh free port (the launcher
# writes its configuration, starts the process in the background and sets LAUNCHED_PID) until the
# server is ready at SCHEME://127.0.0.1:PORT/READY_PATH (SCHEME: http, or https for a TLS
# listener); sets STARTED_PORT and STARTED_PID.
start() {
    local name=$1 launcher=$2 path=$3 scheme=${4:-http} attempt port
    for ((attempt = 1; attempt <= START_ATTEMPTS; attempt++)); do
        port=$(free_port)
        "$launcher" "$port"
        if wait_ready "$name" "$LAUNCHED_PID" "$scheme://127.0.0.1:$port$path"; then
            STARTED_PORT=$port
            STARTED_PID=$LAUNCHED_PID
            log "$name ready on 127.0.0.1:$port (pid $STARTED_PID)"
            return 0
        fi
        stop_pid "$LAUNCHED_PID"
    done
    die "$name did not start in $START_ATTEMPTS attempts (logs below)"
}

# require_tools CMD:PACKAGE...: installs with apt-get (as root, or through sudo) the Debian
# PACKAGE of every CMD that is missing; a CMD with an empty PACKAGE must be installed by hand.
require_tools() {
    local pair cmd pkg need_packages=() as_root=()
    for pair in "$@"; do
        cmd=${pair%%:*} pkg=${pair#*:}
        if ! command -v "$cmd" >/dev/null 2>&1; then
            [ -n "$pkg" ] || die "$cmd is missing (install the Rust toolchain)"
            need_packages+=("$pkg")
        fi
    done
    [ "${#need_packages[@]}" -gt 0 ] || return 0
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            die "missing ${need_packages[*]}: install them as root (apt-get install ${need_packages[*]})"
        as_root=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing ${need_packages[*]}, and apt-get is not available"
    log "installing ${need_packages[*]}"
    "${as_root[@]}" apt-get update -q >&2 || die "apt-get update failed"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${need_packages[@]}" >&2 || die "apt-get install ${need_packages[*]} failed"
}

# registry_config STORAGE PORT SECRET ACCESSLOG [PROXY_URL]: prints a Distribution registry
# configuration on 127.0.0.1:PORT storing in STORAGE; ACCESSLOG is `true` to log every request (to
# stdout), and PROXY_URL makes it a pull-through proxy of that registry.
registry_config() {
    local storage=$1 port=$2 secret=$3 accesslog=$4 proxy=${5:-}
    cat <<EOF
version: 0.1
log:
  level: error
  formatter: text
  accesslog:
    disabled: $([ "$accesslog" = true ] && echo false || echo true)
storage:
  filesystem:
    rootdirectory: $storage
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: $secret
EOF
    if [ -n "$proxy" ]; then
        printf 'proxy:\n  remoteurl: %s\n' "$proxy"
    fi
}

# show_log FILE: the lines of FILE worth seeing when a run failed; a script may redefine it.
show_log() { tail -n 15 "$1"; }

# end_run RC: stops every process in PIDS; when RC is not 0 prints what show_log keeps of each log
# in $WORK/logs; removes $WORK unless KEEP=1; exits with RC. Called from a script's EXIT trap.
end_run() {
    local rc=$1 pid f lines
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ "$rc" -ne 0 ]; then
        echo "--- the run failed (exit $rc); last lines of the logs ---" >&2
        for f in "$WORK"/logs/*.log; do
            lines=$(show_log "$f")
            [ -n "$lines" ] || continue
            printf -- '--- %s\n%s\n' "$f" "$lines" >&2
        done
    fi
    if [ "$KEEP" = 1 ]; then
        echo "work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
