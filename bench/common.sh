# Shared by bench/run.sh, bench/compare-modes.sh and bench/attack.sh (sourced). wait_serving and
# wait_port need HOST (and wait_serving BIN); snap7_python needs BENCH_DIR and log; start_snap7
# needs PY, HOST and PIDS; start_s7commd needs S7BIN, WORK, HOST and PIDS.

children_of() { # pid -> child pids (s7commd's supervisor: its S7 worker and memory process)
    cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$' || true
}

# All processes of one server: the pid itself and (privsep) its children.
procs_of() { echo "$1"; children_of "$1"; }
proc_role() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | awk '{print ($2 ~ /^__/) ? $2 : "main"}'; }
worker_of() { local c; for c in $(children_of "$1"); do [ "$(proc_role "$c")" = __worker ] && echo "$c"; done; }

stop_server() { # pid: SIGTERM it (and, for s7commd's supervisor, wait for its children), SIGKILL after 5 s
    local all p
    all=$(procs_of "$1")
    kill "$1" 2>/dev/null
    for _ in $(seq 1 50); do
        local alive=0
        for p in $all; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && return 0
        sleep 0.1
    done
    for p in $all; do kill -9 "$p" 2>/dev/null; done
}

# s7commd's supervisor opens the listener before its S7 worker serves, so a TCP connect
# proves nothing: waits until the server answers a real S7 handshake and one read.
wait_serving() { # port pid timeout_s
    local i
    for ((i = 0; i < $3 * 5; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        if timeout 5 "$BIN/s7load" -m read -H "$HOST" -p "$1" -k 1 -n 4 -d 0.1 -w 0 >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}

stop_all() { # pid...: SIGTERM each, wait up to 3 s for them and their children, SIGKILL what is left
    local p c all=()
    # Collect s7commd's children before their supervisor goes away.
    for p in "$@"; do
        [ -n "$p" ] || continue
        all+=("$p")
        for c in $(children_of "$p"); do all+=("$c"); done
    done
    for p in "$@"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    for _ in $(seq 1 30); do
        local alive=0
        for p in "${all[@]:-}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${all[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
}

free_ports() { # prints N free loopback ports
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_port() { # port pid timeout_s: until a TCP connect to HOST:port works (0) or pid is gone / time is up (1)
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# The benchmark's s7commd configuration: HOST:port, DB1 and PE/PA/MK of 1024 bytes, PDU 480.
write_s7commd_config() { # file port max_clients [metrics_port] [more "server" keys, e.g. '"recv_timeout_ms": 3000']
    local metrics="" more=""
    [ -n "${4:-}" ] && metrics=",
 \"metrics\": {\"enabled\": true, \"port\": $4}"
    [ -n "${5:-}" ] && more=", $5"
    cat >"$1" <<EOF
{"server": {"enabled": true, "bind_address": "$HOST", "port": $2, "max_clients": $3, "pdu_size": 480$more},
 "plc_identity": {"name": "bench"},
 "data_blocks": [{"db_number": 1, "description": "bench", "size_bytes": 1024}],
 "system_areas": {"pe_area": {"enabled": true, "size_bytes": 1024}, "pa_area": {"enabled": true, "size_bytes": 1024}, "mk_area": {"enabled": true, "size_bytes": 1024}},
 "logging": {"log_connections": false, "log_data_access": false, "log_errors": true}$metrics}
EOF
    chmod 0644 "$1"
}

# Sets PY to a python with python-snap7 2.0.2: bench/.venv's, else python3 when it has that
# version installed, else a new bench/.venv (pip install python-snap7==2.0.2). 1 when none works.
snap7_python() {
    local venv="$BENCH_DIR/.venv" check='import snap7, sys; sys.exit(0 if snap7.__version__ == "2.0.2" else 1)'
    PY="$venv/bin/python"
    "$PY" -c "$check" 2>/dev/null && return 0
    if python3 -c "$check" 2>/dev/null; then PY=$(command -v python3); return 0; fi
    log "setting up $venv with python-snap7==2.0.2"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q 'python-snap7==2.0.2' \
        || { log "venv / pip install python-snap7==2.0.2 failed"; return 1; }
}

start_snap7() { # port max_clients logfile -> sets SNAP7_PID (max_clients 0: snap7's own default)
    "$PY" "$BENCH_DIR/snap7_server.py" --bind "$HOST" --port "$1" --max-clients "$2" --pdu 480 >"$3" 2>&1 &
    SNAP7_PID=$!; PIDS+=("$SNAP7_PID")
    wait_port "$1" "$SNAP7_PID" 20
}

start_s7commd() { # port max_clients tag [metrics_port] [more "server" keys] -> sets S7_PID (binary: START_BIN, else S7BIN)
    # Each instance gets its own pid file (control, memory and metrics sockets go beside
    # it) and state directory, so that two can run side by side. Log: $WORK/s7commd-TAG.log
    mkdir -p "$WORK/run-$3" "$WORK/state-$3"
    write_s7commd_config "$WORK/s7commd-$3.json" "$1" "$2" "${4:-}" "${5:-}"
    # shellcheck disable=SC2086
    "${START_BIN:-$S7BIN}" run --config "$WORK/s7commd-$3.json" --pid-file "$WORK/run-$3/s7commd.pid" --state-dir "$WORK/state-$3" \
        ${BENCH_S7COMMD_ARGS:-} >"$WORK/s7commd-$3.log" 2>&1 &
    S7_PID=$!; PIDS+=("$S7_PID")
    wait_serving "$1" "$S7_PID" 30
}

# At exit (or on INT/TERM): stops every process in PIDS, waits for them, removes WORK.
install_cleanup() {
    cleanup() {
        stop_all "${PIDS[@]:-}"
        wait 2>/dev/null
        rm -rf "$WORK"
    }
    trap cleanup EXIT
    trap 'log "interrupted"; exit 130' INT TERM
}
