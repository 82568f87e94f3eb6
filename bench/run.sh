#!/usr/bin/env bash
# s7commd benchmark: s7commd vs the snap7 C server vs a bare loopback floor
# (optionally also s7commd with its Prometheus metrics on and scraped once a second).
#
#   bench/run.sh
#
# Environment (all optional):
#   BENCH_SECONDS=5           measured seconds per run (plus 0.5 s warm-up)
#   BENCH_MODES="read write"  BENCH_SIZES="4 200"  BENCH_CONNS="1 4 32"
#   BENCH_SERVERS="floor snap7 s7commd"   subset of the columns to run; add s7commd-metrics
#                             for the same s7commd with "metrics": {"enabled": true, "port": P},
#                             scraped (GET http://127.0.0.1:P/metrics) once a second during each run
#   BENCH_IDLE_CONNS=1024     connections for the idle RSS test (0 = skip it)
#   BENCH_ROUNDS=2            rounds over the whole matrix; the table shows the best round
#                             (highest rps) of each cell, raw results keep every round
#   BENCH_CLIENT_THREADS=1    s7load threads (the machine is small: keep 1)
#   BENCH_SPIN_K1=1           at K=1 the client busy-polls (s7load -P) so that its own
#                             vCPU wake-up (~35 us on this VM) is not part of the numbers
#   BENCH_SKIP_BUILD=1        use the existing .build/release/s7commd as is
#   BENCH_BASE_BIN=PATH       with s7commd-base in BENCH_SERVERS: a second s7commd binary (e.g. an
#                             earlier commit's release build) measured in the same run, cell by
#                             cell, in alternating order per round; the table adds s7commd/base
#   S7COMMD_BIN=PATH          with BENCH_SKIP_BUILD=1: measure this s7commd binary instead
#                             (e.g. an earlier commit's, to compare two versions run by run)
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
# s7commd's supervisor runs as the user s7commd when started as root: it must be
# able to reach and re-read its configuration, pid-file directory and state directory.
chmod 0755 "$WORK"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$OUT/results-$STAMP.jsonl"
: >"$RESULTS"
PIDS=()
S7_STATUS="not run"
EXIT=0

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
. "$BENCH_DIR/common.sh"   # process helpers, wait_serving, free_ports, wait_port, snap7_python, start_snap7, start_s7commd


install_cleanup

has_server() { [[ " $SERVERS " == *" $1 "* ]]; }
has_s7commd() { has_server s7commd || has_server s7commd-metrics; }

# Many connections: server and client inherit this limit.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "ulimit -n = $(ulimit -n)"

# ---------------------------------------------------------------- build C
log "building s7load and floor_server (gcc -O2)"
gcc -O2 -Wall -pthread -o "$BIN/s7load" "$BENCH_DIR/s7load.c" || { log "gcc s7load failed"; exit 1; }
gcc -O2 -Wall -o "$BIN/floor_server" "$BENCH_DIR/floor_server.c" || { log "gcc floor_server failed"; exit 1; }

# ---------------------------------------------------------------- venv
if has_server snap7; then
    snap7_python || exit 1
fi

# ---------------------------------------------------------------- s7commd
S7BIN="${S7COMMD_BIN:-$ROOT/.build/release/s7commd}"
S7_OK=0
if has_s7commd || [ "$IDLE_CONNS" -gt 0 ]; then
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

# ---------------------------------------------------------------- metrics scraper
HTTP_CLIENT=none
if has_server s7commd-metrics; then
    if command -v curl >/dev/null 2>&1; then HTTP_CLIENT=curl; else HTTP_CLIENT=python3; fi
    log "s7commd-metrics: scraping with $HTTP_CLIENT"
fi

scrape_once() { # url file -> 0 when the answer is 200 and holds s7commd_requests_total
    rm -f "$2"
    if [ "$HTTP_CLIENT" = curl ]; then
        curl -sf --noproxy '*' --max-time 2 -o "$2" "$1" || return 1
    else
        python3 - "$1" "$2" <<'EOF' || return 1
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
with opener.open(sys.argv[1], timeout=2) as r:
    if r.status != 200: sys.exit(1)
    open(sys.argv[2], "wb").write(r.read())
EOF
    fi
    grep -q '^s7commd_requests_total' "$2"
}

scrape_loop() { # url tally_file: one scrape a second ("ok" or "fail" per line in tally_file) until killed
    while :; do
        if scrape_once "$1" "$WORK/scrape.txt"; then echo ok; else echo fail; fi >>"$2"
        sleep 1
    done
}

# ---------------------------------------------------------------- helpers
start_floor() { # port -> sets FLOOR_PID
    "$BIN/floor_server" -b "$HOST" -p "$1" >"$WORK/floor.log" 2>&1 &
    FLOOR_PID=$!; PIDS+=("$FLOOR_PID")
    wait_port "$1" "$FLOOR_PID" 10
}
read -r P_FLOOR P_SNAP7 P_S7 P_S7IDLE P_S7M P_S7M_HTTP P_S7B <<<"$(free_ports 7)"
METRICS_URL="http://$HOST:$P_S7M_HTTP/metrics"

ALIVE_floor=0; ALIVE_snap7=0; ALIVE_s7commd=0; ALIVE_s7commd_metrics=0; ALIVE_s7commd_base=0
if has_server floor; then
    if start_floor "$P_FLOOR"; then ALIVE_floor=1; log "floor_server on $HOST:$P_FLOOR (pid $FLOOR_PID)"; else log "floor_server failed to start"; EXIT=1; fi
fi
if has_server snap7; then
    if start_snap7 "$P_SNAP7" 1024 "$WORK/snap7.log"; then ALIVE_snap7=1; log "snap7 on $HOST:$P_SNAP7 (pid $SNAP7_PID): $(head -1 "$WORK/snap7.log")"; else log "snap7 server failed to start:"; cat "$WORK/snap7.log" >&2; EXIT=1; fi
fi
if has_server s7commd && [ "$S7_OK" = 1 ]; then
    if start_s7commd "$P_S7" 64 bench; then
        ALIVE_s7commd=1; S7_MAIN_PID=$S7_PID; S7_WORKER=$(worker_of "$S7_PID")
        log "s7commd on $HOST:$P_S7 (pid $S7_PID, S7 worker ${S7_WORKER:-none})"
    else
        S7_STATUS="$S7_STATUS; FAILED TO START (see log below)"
        log "s7commd failed to start:"; tail -n 20 "$WORK/s7commd-bench.log" >&2; EXIT=3
    fi
fi
S7B_STATUS="not run"
if has_server s7commd-base; then
    if [ -x "${BENCH_BASE_BIN:-}" ] && START_BIN=$BENCH_BASE_BIN start_s7commd "$P_S7B" 64 base; then
        ALIVE_s7commd_base=1; S7B_PID=$S7_PID; S7B_WORKER=$(worker_of "$S7_PID")
        S7B_STATUS="$BENCH_BASE_BIN of $(date -u -r "$BENCH_BASE_BIN" '+%Y-%m-%d %H:%M:%S UTC')"
        log "s7commd-base ($BENCH_BASE_BIN) on $HOST:$P_S7B (pid $S7B_PID, S7 worker ${S7B_WORKER:-none})"
    else
        S7B_STATUS="FAILED TO START (BENCH_BASE_BIN=${BENCH_BASE_BIN:-unset})"
        log "s7commd-base: $S7B_STATUS"; [ -f "$WORK/s7commd-base.log" ] && tail -n 20 "$WORK/s7commd-base.log" >&2; EXIT=3
    fi
fi
S7M_STATUS="not run"
if has_server s7commd-metrics && [ "$S7_OK" = 1 ]; then
    if start_s7commd "$P_S7M" 64 metrics "$P_S7M_HTTP"; then
        S7M_PID=$S7_PID; S7M_WORKER=$(worker_of "$S7_PID")
        for ((i = 0; i < 50; i++)); do scrape_once "$METRICS_URL" "$WORK/scrape-first.txt" && break; sleep 0.2; done
        if [ -s "$WORK/scrape-first.txt" ]; then
            ALIVE_s7commd_metrics=1
            S7M_STATUS="metrics on, $METRICS_URL scraped once a second with $HTTP_CLIENT during each run"
            log "s7commd-metrics on $HOST:$P_S7M (pid $S7M_PID, S7 worker ${S7M_WORKER:-none}), $METRICS_URL answers ($(grep -c '^s7commd_' "$WORK/scrape-first.txt") samples)"
        else
            S7M_STATUS="FAILED: $METRICS_URL did not answer with metrics"
            log "s7commd-metrics: $METRICS_URL did not answer with metrics:"; tail -n 20 "$WORK/s7commd-metrics.log" >&2; EXIT=3
        fi
    else
        S7M_STATUS="FAILED TO START"
        log "s7commd-metrics failed to start:"; tail -n 20 "$WORK/s7commd-metrics.log" >&2; EXIT=3
    fi
fi
SCRAPES_OK=0; SCRAPES_FAILED=0

# ---------------------------------------------------------------- load runs
run_one() { # server mode n k round
    local server=$1 mode=$2 n=$3 k=$4 round=$5 port pid worker="" lmode=$2 out rc
    case $server in
    floor) port=$P_FLOOR; pid=${FLOOR_PID:-}; [ "$mode" = read ] && lmode=floor ;;
    snap7) port=$P_SNAP7; pid=${SNAP7_PID:-} ;;
    s7commd) port=$P_S7; pid=${S7_MAIN_PID:-}; worker=${S7_WORKER:-} ;;
    s7commd-metrics) port=$P_S7M; pid=${S7M_PID:-}; worker=${S7M_WORKER:-} ;;
    s7commd-base) port=$P_S7B; pid=${S7B_PID:-}; worker=${S7B_WORKER:-} ;;
    esac
    local alive_var="ALIVE_${server//-/_}"
    if [ "${!alive_var}" != 1 ]; then
        printf '{"server":"%s","round":%s,"mode":"%s","n":%s,"k":%s,"failed":"server not running"}\n' "$server" "$round" "$mode" "$n" "$k" >>"$RESULTS"
        return
    fi
    local spin=()
    [ "$SPIN_K1" = 1 ] && [ "$k" = 1 ] && spin=(-P)
    local scraper="" tally="$WORK/scrapes.txt" scrapes="" sok=0 sfail=0
    if [ "$server" = s7commd-metrics ]; then
        : >"$tally"
        scrape_loop "$METRICS_URL" "$tally" &
        scraper=$!; PIDS+=("$scraper")
    fi
    out=$(timeout $((${D%.*} + 60)) "$BIN/s7load" "${spin[@]}" -m "$lmode" -H "$HOST" -p "$port" -k "$k" -n "$n" -d "$D" -T "$CTHREADS" 2>"$WORK/s7load.err")
    rc=$?
    if [ -n "$scraper" ]; then
        kill "$scraper" 2>/dev/null; wait "$scraper" 2>/dev/null
        sok=$(grep -c '^ok' "$tally"); sfail=$(grep -c '^fail' "$tally")
        SCRAPES_OK=$((SCRAPES_OK + sok)); SCRAPES_FAILED=$((SCRAPES_FAILED + sfail))
        scrapes=$(printf '"scrapes":%s,"scrape_failures":%s,' $((sok + sfail)) "$sfail")
        [ "$sfail" -gt 0 ] && log "!!! $server $mode N=$n K=$k: $sfail of $((sok + sfail)) scrapes of $METRICS_URL failed"
    fi
    if [[ "$out" == "{"* ]]; then
        printf '{"server":"%s","round":%s,"req_mode":"%s",%s%s\n' "$server" "$round" "$mode" "$scrapes" "${out#\{}" >>"$RESULTS"
    else
        local err
        err=$(tr -d '"\\' <"$WORK/s7load.err" | tr '\n' ' ' | cut -c1-200)
        printf '{"server":"%s","round":%s,"mode":"%s","n":%s,"k":%s,"failed":"s7load rc=%s: %s"}\n' "$server" "$round" "$mode" "$n" "$k" "$rc" "$err" >>"$RESULTS"
    fi
    log "r$round $server $mode N=$n K=$k: ${out:-FAILED rc=$rc $(head -c 200 "$WORK/s7load.err")}${scraper:+ (scrapes: $sok ok, $sfail failed)}"
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        log "!!! $server (pid $pid) died during $mode N=$n K=$k"
        printf -v "$alive_var" 0
        [ "$server" = s7commd ] && { S7_STATUS="$S7_STATUS; DIED during $mode N=$n K=$k"; EXIT=3; }
        [ "$server" = s7commd-metrics ] && { S7M_STATUS="$S7M_STATUS; DIED during $mode N=$n K=$k"; EXIT=3; }
    elif [ -n "$worker" ] && ! kill -0 "$worker" 2>/dev/null; then
        # the supervisor restarts a dead worker; the numbers of this run include that
        log "!!! $server: S7 worker (pid $worker) died during $mode N=$n K=$k"
        printf '{"server":"%s","round":%s,"mode":"%s","n":%s,"k":%s,"failed":"S7 worker pid %s died during the run"}\n' "$server" "$round" "$mode" "$n" "$k" "$worker" >>"$RESULTS"
        worker=$(worker_of "$pid")
        case $server in s7commd) S7_WORKER=$worker ;; s7commd-base) S7B_WORKER=$worker ;; *) S7M_WORKER=$worker ;; esac
        EXIT=3
    fi
}

T0=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in $MODES; do
        for n in $SIZES; do
            for k in $CONNS; do
                # s7commd and s7commd-base swap places every other round
                order="floor snap7 s7commd s7commd-base s7commd-metrics"
                [ $((round % 2)) = 0 ] && order="floor snap7 s7commd-base s7commd s7commd-metrics"
                for server in $order; do
                    has_server "$server" && run_one "$server" "$mode" "$n" "$k" "$round"
                done
            done
        done
    done
done
log "load runs took $(($(date +%s) - T0)) s"
has_server s7commd-metrics && log "scrapes of $METRICS_URL during the s7commd-metrics runs: $((SCRAPES_OK + SCRAPES_FAILED)), failed: $SCRAPES_FAILED"

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
        printf '{"idle":"%s","process":"%s","conns":%s,"rss_before_kib":%s,"rss_kib":%s,"threads":%s}\n' \
            "$name" "$(proc_role "$pid")" "$IDLE_CONNS" "${before:-0}" "${after:-0}" "${thr:-0}" >>"$RESULTS"
        log "idle $name (pid $pid, $(proc_role "$pid")): $IDLE_CONNS conns, VmRSS $before KiB -> $after KiB, threads $thr"
    else
        local err; err=$(tr -d '"\\' <"$WORK/idle-$name.err" | tr '\n' ' ' | cut -c1-200)
        printf '{"idle":"%s","conns":%s,"failed":"%s"}\n' "$name" "$IDLE_CONNS" "$err" >>"$RESULTS"
        log "idle $name FAILED: $err"
    fi
    kill "$lpid" 2>/dev/null; wait "$lpid" 2>/dev/null
}

if [ "$IDLE_CONNS" -gt 0 ]; then
    # stop the load-test servers first so that they do not share the machine
    [ -n "${S7_MAIN_PID:-}" ] && stop_server "$S7_MAIN_PID"
    [ -n "${S7M_PID:-}" ] && stop_server "$S7M_PID"
    [ -n "${FLOOR_PID:-}" ] && stop_server "$FLOOR_PID"
    if [ "$S7_OK" = 1 ]; then
        if start_s7commd "$P_S7IDLE" "$IDLE_CONNS" idle; then
            sleep 0.5
            # the S7 worker holds the connections (the supervisor only when --single-process)
            IDLE_WORKER=$(worker_of "$S7_PID")
            idle_test s7commd "${IDLE_WORKER:-$S7_PID}" "$P_S7IDLE"
            stop_server "$S7_PID"
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
SNAP7V=$("${PY:-python3}" -c 'import snap7; print(snap7.__version__)' 2>/dev/null || echo "?")

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
if "s7commd-metrics" in "$SERVERS".split():
    L.append("- s7commd-metrics: the same binary and configuration plus \"metrics\": {\"enabled\": true, \"port\": $P_S7M_HTTP}; $S7M_STATUS")
if "s7commd-base" in "$SERVERS".split():
    L.append("- s7commd-base: $S7B_STATUS, same configuration; measured right before or after s7commd in each cell (order swapped every round)")
L.append("- snap7: python-snap7 $SNAP7V (bundled libsnap7 C server), PDU param 480, MaxClients 1024")
L.append("- swift: $SWIFTV")
L.append("")
L.append("Throughput in requests/s (rps); latency p50 / p99 in µs per request, measured in the client.")
L.append("Ratios are s7commd rps divided by snap7 rps and by floor rps (higher is better; s7commd/floor ≤ 1).")
with_metrics = "s7commd-metrics" in "$SERVERS".split()
if with_metrics:
    L.append("s7commd-metrics / s7commd: the cost of metrics on and scraped once a second (1 = no cost); s7commd-metrics/snap7 as s7commd/snap7.")
L.append("")
head = "| mode | N | K | floor rps | floor p50/p99 | snap7 rps | snap7 p50/p99 | s7commd rps | s7commd p50/p99 | s7commd/snap7 | s7commd/floor |"
rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
with_base = "s7commd-base" in "$SERVERS".split()
if with_base:
    head += " s7commd-base rps | s7commd-base p50/p99 | s7commd / s7commd-base |"
    rule += "---:|---:|---:|"
if with_metrics:
    head += " s7commd-metrics rps | s7commd-metrics p50/p99 | s7commd-metrics / s7commd | s7commd-metrics/snap7 |"
    rule += "---:|---:|---:|---:|"
L.append(head)
L.append(rule)
for mode in "$MODES".split():
    for n in [int(x) for x in "$SIZES".split()]:
        for k in [int(x) for x in "$CONNS".split()]:
            f = load.get(("floor", mode, n, k)); s = load.get(("snap7", mode, n, k)); c = load.get(("s7commd", mode, n, k))
            row = "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % ((mode, n, k) + cell(f) + cell(s) + cell(c) + (ratio(c, s), ratio(c, f)))
            if with_base:
                b = load.get(("s7commd-base", mode, n, k))
                row += " %s | %s | %s |" % (cell(b) + (ratio(c, b),))
            if with_metrics:
                m = load.get(("s7commd-metrics", mode, n, k))
                row += " %s | %s | %s | %s |" % (cell(m) + (ratio(m, c), ratio(m, s)))
            L.append(row)
L.append("")
if with_metrics:
    sc = [r for r in res if r.get("server") == "s7commd-metrics" and "scrapes" in r]
    total = sum(r["scrapes"] for r in sc); failed = sum(r["scrape_failures"] for r in sc)
    L.append("Scrapes of the metrics endpoint during the s7commd-metrics runs (all rounds): %d, failed: %d." % (total, failed))
    for r in sc:
        if r["scrape_failures"]:
            L.append("- round %s %s N=%s K=%s: %d of %d scrapes failed" % (r["round"], r["req_mode"], r["n"], r["k"], r["scrape_failures"], r["scrapes"]))
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
        label = name + (" (S7 worker)" if r.get("process") == "__worker" else "")
        L.append("| %s | %d | %.1f MiB | %.1f MiB | %.1f KiB | %d |" % (label, r["conns"], r["rss_before_kib"]/1024, r["rss_kib"]/1024, per, r["threads"]))
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
