#!/usr/bin/env bash
# s7commd benchmark: s7commd vs the snap7 C server vs a bare loopback floor.
#
#   bench/run.sh
#
# Environment (all optional):
#   BENCH_SECONDS=5           measured seconds per run (plus 0.5 s warm-up)
#   BENCH_MODES="read write"  BENCH_SIZES="4 200"  BENCH_CONNS="1 4 32"
#   BENCH_SERVERS="floor snap7 s7commd"   subset of the columns to run
#   BENCH_IDLE_CONNS=1024     connections for the idle RSS test (0 = skip it)
#   BENCH_ROUNDS=2            rounds over the whole matrix; the table shows the best round
#                             (highest rps) of each cell, raw results keep every round
#   BENCH_CLIENT_THREADS=1    s7load threads (the machine is small: keep 1)
#   BENCH_SPIN_K1=1           at K=1 the client busy-polls (s7load -P) so that its own
#                             vCPU wake-up (~35 us on this VM) is not part of the numbers
#   BENCH_SKIP_BUILD=1        use the existing .build/release/s7commd as is
#   BENCH_S7COMMD_ARGS="..."  extra arguments for `s7commd run` (e.g. --threads 1)
#
# Writes bench/out/latest.md (and bench/out/results-*.jsonl).  Loopback only.
# Exit status: 0 ok, 3 if s7commd could not be built/started (the other
# columns are still measured and written), 1 on other failures.
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT="$BENCH_DIR/out"
BIN="$OUT/bin"
D=${BENCH_SECONDS:-5}
MODES=${BENCH_MODES:-read write}
SIZES=${BENCH_SIZES:-4 200}
CONNS=${BENCH_CONNS:-1 4 32}
SERVERS=${BENCH_SERVERS:-floor snap7 s7commd}
IDLE_CONNS=${BENCH_IDLE_CONNS:-1024}
CTHREADS=${BENCH_CLIENT_THREADS:-1}
ROUNDS=${BENCH_ROUNDS:-2}
SPIN_K1=${BENCH_SPIN_K1:-1}
HOST=127.0.0.1
CMDLINE="$0${*:+ $*}"
ENVLINE=$(env | grep -E '^BENCH_' | sort | tr '\n' ' ')

mkdir -p "$OUT" "$BIN"
WORK=$(mktemp -d /tmp/s7bench.XXXXXX)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$OUT/results-$STAMP.jsonl"
: >"$RESULTS"
PIDS=()
S7_STATUS="not run"
EXIT=0

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null
    done
    sleep 0.3
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

has_server() { [[ " $SERVERS " == *" $1 "* ]]; }

# Many connections: server and client inherit this limit.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "ulimit -n = $(ulimit -n)"

# ---------------------------------------------------------------- build C
log "building s7load and floor_server (gcc -O2)"
gcc -O2 -Wall -pthread -o "$BIN/s7load" "$BENCH_DIR/s7load.c" || { log "gcc s7load failed"; exit 1; }
gcc -O2 -Wall -o "$BIN/floor_server" "$BENCH_DIR/floor_server.c" || { log "gcc floor_server failed"; exit 1; }

# ---------------------------------------------------------------- venv
VENV="$BENCH_DIR/.venv"
PY="$VENV/bin/python"
if has_server snap7; then
    if ! "$PY" -c 'import snap7, sys; sys.exit(0 if snap7.__version__ == "2.0.2" else 1)' 2>/dev/null; then
        log "setting up $VENV with python-snap7==2.0.2"
        python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'python-snap7==2.0.2' \
            || { log "venv / pip install python-snap7==2.0.2 failed"; exit 1; }
    fi
fi

# ---------------------------------------------------------------- s7commd
S7BIN="$ROOT/.build/release/s7commd"
S7_OK=0
if has_server s7commd || [ "$IDLE_CONNS" -gt 0 ]; then
    if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
        log "BENCH_SKIP_BUILD=1: using existing $S7BIN"
        if [ -x "$S7BIN" ]; then S7_OK=1; S7_STATUS="prebuilt (BENCH_SKIP_BUILD=1)"; else S7_STATUS="BENCH_SKIP_BUILD=1 but $S7BIN missing"; fi
    elif [ ! -f "$ROOT/Package.swift" ]; then
        S7_STATUS="NOT BUILT: $ROOT/Package.swift does not exist - the s7commd sources are not ready yet"
    else
        log "building s7commd: swift build -c release --product s7commd (log: $OUT/s7commd-build.log)"
        if (cd "$ROOT" && swift build -c release --product s7commd) >"$OUT/s7commd-build.log" 2>&1 && [ -x "$S7BIN" ]; then
            S7_OK=1
            S7_STATUS="built: swift build -c release --product s7commd"
        else
            S7_STATUS="NOT BUILT: 'swift build -c release --product s7commd' failed - the s7commd sources are probably not ready yet (see bench/out/s7commd-build.log)"
            tail -n 25 "$OUT/s7commd-build.log" >&2
        fi
    fi
    if [ "$S7_OK" != 1 ]; then
        log "================================================================"
        log "s7commd: $S7_STATUS"
        log "s7commd columns will be n/a; floor and snap7 are still measured."
        log "================================================================"
        EXIT=3
    fi
fi

# ---------------------------------------------------------------- helpers
free_ports() { # prints N free loopback ports
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_port() { # port pid timeout_s
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

write_config() { # file port max_clients
    cat >"$1" <<EOF
{"server": {"enabled": true, "bind_address": "$HOST", "port": $2, "max_clients": $3, "pdu_size": 480},
 "plc_identity": {"name": "bench"},
 "data_blocks": [{"db_number": 1, "description": "bench", "size_bytes": 1024}],
 "system_areas": {"pe_area": {"enabled": true, "size_bytes": 1024}, "pa_area": {"enabled": true, "size_bytes": 1024}, "mk_area": {"enabled": true, "size_bytes": 1024}},
 "logging": {"log_connections": false, "log_data_access": false, "log_errors": true}}
EOF
}

start_floor() { # port -> sets FLOOR_PID
    "$BIN/floor_server" -b "$HOST" -p "$1" >"$WORK/floor.log" 2>&1 &
    FLOOR_PID=$!; PIDS+=("$FLOOR_PID")
    wait_port "$1" "$FLOOR_PID" 10
}
start_snap7() { # port -> sets SNAP7_PID
    "$PY" "$BENCH_DIR/snap7_server.py" --bind "$HOST" --port "$1" --max-clients 1024 --pdu 480 >"$WORK/snap7.log" 2>&1 &
    SNAP7_PID=$!; PIDS+=("$SNAP7_PID")
    wait_port "$1" "$SNAP7_PID" 20
}
start_s7commd() { # port max_clients tag -> sets S7_PID
    write_config "$WORK/s7commd-$3.json" "$1" "$2"
    "$S7BIN" run --config "$WORK/s7commd-$3.json" ${BENCH_S7COMMD_ARGS:-} >"$WORK/s7commd-$3.log" 2>&1 &
    S7_PID=$!; PIDS+=("$S7_PID")
    wait_port "$1" "$S7_PID" 20
}
stop_pid() { kill "$1" 2>/dev/null; for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -9 "$1" 2>/dev/null; }

read -r P_FLOOR P_SNAP7 P_S7 P_S7IDLE <<<"$(free_ports 4)"

ALIVE_floor=0; ALIVE_snap7=0; ALIVE_s7commd=0
if has_server floor; then
    if start_floor "$P_FLOOR"; then ALIVE_floor=1; log "floor_server on $HOST:$P_FLOOR (pid $FLOOR_PID)"; else log "floor_server failed to start"; EXIT=1; fi
fi
if has_server snap7; then
    if start_snap7 "$P_SNAP7"; then ALIVE_snap7=1; log "snap7 on $HOST:$P_SNAP7 (pid $SNAP7_PID): $(head -1 "$WORK/snap7.log")"; else log "snap7 server failed to start:"; cat "$WORK/snap7.log" >&2; EXIT=1; fi
fi
if has_server s7commd && [ "$S7_OK" = 1 ]; then
    if start_s7commd "$P_S7" 64 bench; then
        ALIVE_s7commd=1; log "s7commd on $HOST:$P_S7 (pid $S7_PID)"
    else
        S7_STATUS="$S7_STATUS; FAILED TO START (see log below)"
        log "s7commd failed to start:"; tail -n 20 "$WORK/s7commd-bench.log" >&2; EXIT=3
    fi
fi

# ---------------------------------------------------------------- load runs
run_one() { # server mode n k round
    local server=$1 mode=$2 n=$3 k=$4 round=$5 port pid lmode=$2 out rc
    case $server in
    floor) port=$P_FLOOR; pid=${FLOOR_PID:-}; [ "$mode" = read ] && lmode=floor ;;
    snap7) port=$P_SNAP7; pid=${SNAP7_PID:-} ;;
    s7commd) port=$P_S7; pid=${S7_PID:-} ;;
    esac
    local alive_var="ALIVE_$server"
    if [ "${!alive_var}" != 1 ]; then
        printf '{"server":"%s","round":%s,"mode":"%s","n":%s,"k":%s,"failed":"server not running"}\n' "$server" "$round" "$mode" "$n" "$k" >>"$RESULTS"
        return
    fi
    local spin=()
    [ "$SPIN_K1" = 1 ] && [ "$k" = 1 ] && spin=(-P)
    out=$(timeout $((${D%.*} + 60)) "$BIN/s7load" "${spin[@]}" -m "$lmode" -H "$HOST" -p "$port" -k "$k" -n "$n" -d "$D" -T "$CTHREADS" 2>"$WORK/s7load.err")
    rc=$?
    if [[ "$out" == "{"* ]]; then
        printf '{"server":"%s","round":%s,"req_mode":"%s",%s\n' "$server" "$round" "$mode" "${out#\{}" >>"$RESULTS"
    else
        local err
        err=$(tr -d '"\\' <"$WORK/s7load.err" | tr '\n' ' ' | cut -c1-200)
        printf '{"server":"%s","round":%s,"mode":"%s","n":%s,"k":%s,"failed":"s7load rc=%s: %s"}\n' "$server" "$round" "$mode" "$n" "$k" "$rc" "$err" >>"$RESULTS"
    fi
    log "r$round $server $mode N=$n K=$k: ${out:-FAILED rc=$rc $(head -c 200 "$WORK/s7load.err")}"
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        log "!!! $server (pid $pid) died during $mode N=$n K=$k"
        printf -v "$alive_var" 0
        [ "$server" = s7commd ] && { S7_STATUS="$S7_STATUS; DIED during $mode N=$n K=$k"; EXIT=3; }
    fi
}

T0=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in $MODES; do
        for n in $SIZES; do
            for k in $CONNS; do
                for server in floor snap7 s7commd; do
                    has_server "$server" && run_one "$server" "$mode" "$n" "$k" "$round"
                done
            done
        done
    done
done
log "load runs took $(($(date +%s) - T0)) s"

# ---------------------------------------------------------------- idle RSS
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null; }
threads_of() { awk '/^Threads:/{print $2}' "/proc/$1/status" 2>/dev/null; }

idle_test() { # name pid port
    local name=$1 pid=$2 port=$3 before after thr lpid ok=0 i
    before=$(rss_kib "$pid")
    "$BIN/s7load" -m idle -H "$HOST" -p "$port" -k "$IDLE_CONNS" >"$WORK/idle-$name.out" 2>"$WORK/idle-$name.err" &
    lpid=$!; PIDS+=("$lpid")
    for ((i = 0; i < 1200; i++)); do
        if grep -q '^ready' "$WORK/idle-$name.out" 2>/dev/null; then ok=1; break; fi
        kill -0 "$lpid" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$ok" = 1 ]; then
        sleep 1
        after=$(rss_kib "$pid"); thr=$(threads_of "$pid")
        printf '{"idle":"%s","conns":%s,"rss_before_kib":%s,"rss_kib":%s,"threads":%s}\n' \
            "$name" "$IDLE_CONNS" "${before:-0}" "${after:-0}" "${thr:-0}" >>"$RESULTS"
        log "idle $name: $IDLE_CONNS conns, VmRSS $before KiB -> $after KiB, threads $thr"
    else
        local err; err=$(tr -d '"\\' <"$WORK/idle-$name.err" | tr '\n' ' ' | cut -c1-200)
        printf '{"idle":"%s","conns":%s,"failed":"%s"}\n' "$name" "$IDLE_CONNS" "$err" >>"$RESULTS"
        log "idle $name FAILED: $err"
    fi
    kill "$lpid" 2>/dev/null; wait "$lpid" 2>/dev/null
}

if [ "$IDLE_CONNS" -gt 0 ]; then
    # stop the load-test servers first so that they do not share the machine
    [ -n "${S7_PID:-}" ] && stop_pid "$S7_PID"
    [ -n "${FLOOR_PID:-}" ] && stop_pid "$FLOOR_PID"
    if [ "$S7_OK" = 1 ]; then
        if start_s7commd "$P_S7IDLE" "$IDLE_CONNS" idle; then
            sleep 0.5
            idle_test s7commd "$S7_PID" "$P_S7IDLE"
            stop_pid "$S7_PID"
        else
            log "s7commd (max_clients $IDLE_CONNS) failed to start"; tail -n 20 "$WORK/s7commd-idle.log" >&2
            printf '{"idle":"s7commd","conns":%s,"failed":"did not start"}\n' "$IDLE_CONNS" >>"$RESULTS"
        fi
    else
        printf '{"idle":"s7commd","conns":%s,"failed":"s7commd not available (see the s7commd line above)"}\n' "$IDLE_CONNS" >>"$RESULTS"
    fi
    if [ "$ALIVE_snap7" = 1 ]; then
        idle_test snap7 "$SNAP7_PID" "$P_SNAP7"
    fi
fi

# ---------------------------------------------------------------- report
COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo "none (no commits yet)")
DIRTY=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -v '^?? bench/' | head -c1)
[ -n "$DIRTY" ] && COMMIT="$COMMIT (+ uncommitted changes)"
CPU=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
SWIFTV=$(swift --version 2>/dev/null | head -1)
SNAP7V=$("$PY" -c 'import snap7; print(snap7.__version__)' 2>/dev/null || echo "?")

python3 - "$RESULTS" "$OUT/latest.md" <<EOF
import json, sys
res = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
load = {}
idle = {}
for r in res:
    if "idle" in r: idle[r["idle"]] = r
    else:
        key = (r["server"], r.get("req_mode", r.get("mode")), int(r["n"]), int(r["k"]))
        old = load.get(key)
        # best round = highest rps; a failed or erroring round always shows
        if old is None or ("failed" not in old and not old.get("errors") and
                           ("failed" in r or r.get("errors") or r["rps"] > old["rps"])):
            load[key] = r
def cell(r):
    if r is None or r.get("failed") == "server not running": return "n/a", "n/a"
    if "failed" in r: return "FAIL", "-"
    e = " (%d err!)" % r["errors"] if r.get("errors") else ""
    return "%.0f%s" % (r["rps"], e), "%.0f / %.0f" % (r["p50_us"], r["p99_us"])
def ratio(a, b):
    if not a or not b or a.get("errors") or b.get("errors") or "failed" in a or "failed" in b or not b.get("rps"): return "n/a"
    return "%.2f" % (a["rps"] / b["rps"])
L = []
L.append("## s7commd benchmark — $STAMP")
L.append("")
L.append("- command: \`$CMDLINE\` ${ENVLINE:+(env: $ENVLINE)}")
L.append("- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')")
L.append("- git commit: $COMMIT")
L.append("- nproc: $(nproc); CPU: $CPU; kernel: $(uname -r)")
L.append("- duration per run: ${D} s measured after a 0.5 s warm-up; rounds: $ROUNDS (table = best round per cell); s7load threads: $CTHREADS; client busy-polls at K=1: $([ "$SPIN_K1" = 1 ] && echo yes || echo no); closed loop, 1 outstanding request per connection")
L.append("- s7commd: $S7_STATUS")
L.append("- snap7: python-snap7 $SNAP7V (bundled libsnap7 C server), PDU param 480, MaxClients 1024")
L.append("- swift: $SWIFTV")
L.append("")
L.append("Throughput in requests/s (rps); latency p50 / p99 in µs per request, measured in the client.")
L.append("Ratios are s7commd rps divided by snap7 rps and by floor rps (higher is better; s7commd/floor ≤ 1).")
L.append("")
L.append("| mode | N | K | floor rps | floor p50/p99 | snap7 rps | snap7 p50/p99 | s7commd rps | s7commd p50/p99 | s7commd/snap7 | s7commd/floor |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for mode in "$MODES".split():
    for n in [int(x) for x in "$SIZES".split()]:
        for k in [int(x) for x in "$CONNS".split()]:
            f = load.get(("floor", mode, n, k)); s = load.get(("snap7", mode, n, k)); c = load.get(("s7commd", mode, n, k))
            L.append("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % ((mode, n, k) + cell(f) + cell(s) + cell(c) + (ratio(c, s), ratio(c, f))))
L.append("")
if idle:
    L.append("Idle connections: $IDLE_CONNS connections handshaken and idle; VmRSS of the server process from /proc/PID/status.")
    L.append("")
    L.append("| server | conns | VmRSS before | VmRSS with conns | per conn | threads |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for name in ("s7commd", "snap7"):
        r = idle.get(name)
        if r is None: continue
        if "failed" in r:
            L.append("| %s | %s | FAIL: %s | | | |" % (name, r["conns"], r["failed"])); continue
        per = (r["rss_kib"] - r["rss_before_kib"]) / max(1, r["conns"])
        L.append("| %s | %d | %.1f MiB | %.1f MiB | %.1f KiB | %d |" % (name, r["conns"], r["rss_before_kib"]/1024, r["rss_kib"]/1024, per, r["threads"]))
    L.append("")
    L.append("(snap7's process is a Python interpreter hosting libsnap7: its baseline includes CPython.)")
    L.append("")
fails = [r for r in res if "failed" in r and r["failed"] != "server not running"]
errs = [r for r in res if r.get("errors")]
if fails or errs:
    L.append("Problems:")
    for r in fails:
        if "idle" in r: L.append("- idle test %s (%s conns): %s" % (r["idle"], r["conns"], r["failed"]))
        else: L.append("- round %s %s %s N=%s K=%s: %s" % (r.get("round"), r["server"], r["mode"], r["n"], r["k"], r["failed"]))
    for r in errs: L.append("- round %s %s %s N=%s K=%s: %d errors, first: %s" % (r.get("round"), r["server"], r["req_mode"], r["n"], r["k"], r["errors"], r.get("first_error", "?")))
    L.append("")
L.append("Raw results: \`bench/out/$(basename "$RESULTS")\`")
L.append("")
open(sys.argv[2], "w").write("\n".join(L))
print("\n".join(L))
EOF
log "wrote $OUT/latest.md"
exit "$EXIT"
