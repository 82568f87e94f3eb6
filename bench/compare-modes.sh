#!/usr/bin/env bash
# s7commd: privilege-separated runtime (supervisor + S7 worker + memory process)
# against --single-process, same binary, same configuration, same machine.
#
#   bench/compare-modes.sh
#
# Uses the existing release build .build/release/s7commd (build it first with
# `swift build -c release --product s7commd`); builds bench/out/bin/s7load if missing.
#
# Environment (all optional):
#   COMPARE_SECONDS=4          measured seconds per run (plus s7load's 0.5 s warm-up)
#   COMPARE_ROUNDS=2           rounds over the matrix; the table shows the best (highest rps) round
#   COMPARE_MODES="read write" COMPARE_SIZES="4 200" COMPARE_CONNS="1 4 32"
#   COMPARE_IDLE_CONNS=256     idle connections for the RSS test (0 = skip it)
#   COMPARE_SPIN_K1=1          s7load -P (busy-poll) at K=1, as bench/run.sh does
#   COMPARE_TOLERANCE=0.05     a cell is outside when privsep rps < (1 - tolerance) * single rps
#   COMPARE_S7COMMD_ARGS="..." extra arguments for both `s7commd run` (e.g. --threads 1)
#   COMPARE_S7COMMD_BIN=PATH   another s7commd binary (e.g. a copy, while others rebuild .build/)
#
# Writes bench/out/compare-latest.md and bench/out/compare-<stamp>.jsonl (every run, every round).
# Loopback only.  Every server it starts is stopped on exit (trap).
# Exit status: 0 all cells within tolerance, 4 some cell outside, 3 a server did not
# start or died, 1 other failures.
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT="$BENCH_DIR/out"
BIN="$OUT/bin"
S7BIN=${COMPARE_S7COMMD_BIN:-$ROOT/.build/release/s7commd}
D=${COMPARE_SECONDS:-4}
ROUNDS=${COMPARE_ROUNDS:-2}
MODES=${COMPARE_MODES:-read write}
SIZES=${COMPARE_SIZES:-4 200}
CONNS=${COMPARE_CONNS:-1 4 32}
IDLE_CONNS=${COMPARE_IDLE_CONNS:-256}
SPIN_K1=${COMPARE_SPIN_K1:-1}
TOL=${COMPARE_TOLERANCE:-0.05}
HOST=127.0.0.1
CMDLINE="$0${*:+ $*}"
ENVLINE=$(env | grep -E '^COMPARE_' | sort | tr '\n' ' ')

mkdir -p "$OUT" "$BIN"
WORK=$(mktemp -d /tmp/s7cmp.XXXXXX)
# The privsep supervisor runs as the user s7commd when started as root: it must be
# able to reach and re-read the configuration.
chmod 0755 "$WORK"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LOAD0=$(cut -d" " -f1 /proc/loadavg)
RESULTS="$OUT/compare-$STAMP.jsonl"
: >"$RESULTS"
PIDS=()      # everything this script started (supervisors, single servers, s7load idle)
EXIT=0

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
. "$BENCH_DIR/common.sh"   # process helpers, wait_serving, free_ports


install_cleanup

ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- tools
if [ ! -x "$BIN/s7load" ]; then
    log "building s7load (gcc -O2)"
    gcc -O2 -Wall -pthread -o "$BIN/s7load" "$BENCH_DIR/s7load.c" || { log "gcc s7load failed"; exit 1; }
fi
if [ ! -x "$S7BIN" ]; then
    log "$S7BIN is missing: run 'swift build -c release --product s7commd' first"
    exit 3
fi

write_config() { # file port max_clients
    cat >"$1" <<EOF
{"server": {"enabled": true, "bind_address": "$HOST", "port": $2, "max_clients": $3, "pdu_size": 480},
 "plc_identity": {"name": "bench"},
 "data_blocks": [{"db_number": 1, "description": "bench", "size_bytes": 1024}],
 "logging": {"log_connections": false, "log_data_access": false, "log_errors": true}}
EOF
    chmod 0644 "$1"
}


# start_server MODE TAG PORT MAX_CLIENTS -> sets SRV_PID (the supervisor for privsep)
start_server() {
    local mode=$1 tag=$2 port=$3 maxc=$4 extra=()
    write_config "$WORK/$tag.json" "$port" "$maxc"
    if [ "$mode" = privsep ]; then
        mkdir -p "$WORK/p-$tag" "$WORK/state-$tag"
        extra=(--pid-file "$WORK/p-$tag/s7commd.pid" --state-dir "$WORK/state-$tag")
    else
        mkdir -p "$WORK/s-$tag"
        extra=(--single-process --pid-file "$WORK/s-$tag/s7commd.pid")
    fi
    # shellcheck disable=SC2086
    "$S7BIN" run --config "$WORK/$tag.json" "${extra[@]}" ${COMPARE_S7COMMD_ARGS:-} >"$WORK/$tag.log" 2>&1 &
    SRV_PID=$!; PIDS+=("$SRV_PID")
    if ! wait_serving "$port" "$SRV_PID" 30; then
        log "$mode ($tag) did not start serving on $HOST:$port:"; tail -n 20 "$WORK/$tag.log" >&2
        return 1
    fi
}


read -r P_PRIV P_SINGLE P_PRIV_IDLE P_SINGLE_IDLE <<<"$(free_ports 4)"

log "starting privsep on $HOST:$P_PRIV"
start_server privsep priv "$P_PRIV" 64 || { log "privsep failed to start"; exit 3; }
PRIV_PID=$SRV_PID
log "starting single-process on $HOST:$P_SINGLE"
start_server single single "$P_SINGLE" 64 || { log "single-process failed to start"; exit 3; }
SINGLE_PID=$SRV_PID
PRIV_WORKER=$(worker_of "$PRIV_PID")
for p in $(procs_of "$PRIV_PID"); do
    log "privsep pid $p: $(proc_role "$p") uid $(awk '/^Uid:/{print $2}' /proc/$p/status) threads $(awk '/^Threads:/{print $2}' /proc/$p/status)"
done
log "single  pid $SINGLE_PID: uid $(awk '/^Uid:/{print $2}' /proc/$SINGLE_PID/status) threads $(awk '/^Threads:/{print $2}' /proc/$SINGLE_PID/status)"
[ -n "$PRIV_WORKER" ] || { log "no __worker child under the privsep supervisor $PRIV_PID"; exit 3; }
echo "$PRIV_WORKER" >"$OUT/compare-worker.pid"   # for `perf record -p` by hand while it runs

# ---------------------------------------------------------------- load runs
ALIVE_single=1; ALIVE_privsep=1
run_one() { # server mode n k round
    local server=$1 mode=$2 n=$3 k=$4 round=$5 port pid out rc spin=()
    case $server in
    single) port=$P_SINGLE; pid=$SINGLE_PID ;;
    privsep) port=$P_PRIV; pid=$PRIV_PID ;;
    esac
    local alive_var="ALIVE_$server"
    if [ "${!alive_var}" != 1 ]; then
        printf '{"server":"%s","round":%s,"mode":"%s","n":%s,"k":%s,"failed":"server not running"}\n' "$server" "$round" "$mode" "$n" "$k" >>"$RESULTS"
        return
    fi
    [ "$SPIN_K1" = 1 ] && [ "$k" = 1 ] && spin=(-P)
    out=$(timeout $((${D%.*} + 30)) "$BIN/s7load" "${spin[@]}" -m "$mode" -H "$HOST" -p "$port" -k "$k" -n "$n" -d "$D" 2>"$WORK/s7load.err")
    rc=$?
    if [[ "$out" == "{"* ]]; then
        printf '{"server":"%s","round":%s,"req_mode":"%s","load1":%s,%s\n' "$server" "$round" "$mode" "$(cut -d' ' -f1 /proc/loadavg)" "${out#\{}" >>"$RESULTS"
    else
        local err; err=$(tr -d '"\\' <"$WORK/s7load.err" | tr '\n' ' ' | cut -c1-200)
        printf '{"server":"%s","round":%s,"mode":"%s","n":%s,"k":%s,"failed":"s7load rc=%s: %s"}\n' "$server" "$round" "$mode" "$n" "$k" "$rc" "$err" >>"$RESULTS"
    fi
    log "r$round $server $mode N=$n K=$k: ${out:-FAILED rc=$rc $(head -c 200 "$WORK/s7load.err")}"
    local p
    for p in $pid $([ "$server" = privsep ] && echo "$PRIV_WORKER"); do
        if ! kill -0 "$p" 2>/dev/null; then
            log "!!! $server (pid $p) died during $mode N=$n K=$k"
            printf -v "$alive_var" 0; EXIT=3
        fi
    done
}

T0=$(date +%s)
cell=0
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in $MODES; do
        for n in $SIZES; do
            for k in $CONNS; do
                # which mode goes first alternates from cell to cell and from round to round
                if (((cell + round) % 2 == 0)); then order="single privsep"; else order="privsep single"; fi
                for server in $order; do run_one "$server" "$mode" "$n" "$k" "$round"; done
                cell=$((cell + 1))
            done
        done
    done
done
log "load runs took $(($(date +%s) - T0)) s"

# ---------------------------------------------------------------- idle RSS
status_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null; }
pss_kib() { awk '/^Pss:/{print $2}' "/proc/$1/smaps_rollup" 2>/dev/null; }

# Prints one JSON object per process: role, VmRSS, RssAnon, RssFile, RssShmem, Pss, threads.
snapshot() { # pid label
    local p
    for p in $(procs_of "$1"); do
        printf '{"pid":%s,"role":"%s","rss":%s,"anon":%s,"file":%s,"shmem":%s,"pss":%s,"threads":%s}\n' \
            "$p" "$(proc_role "$p")" "$(status_kib "$p" VmRSS)" "$(status_kib "$p" RssAnon)" \
            "$(status_kib "$p" RssFile)" "$(status_kib "$p" RssShmem)" "$(pss_kib "$p")" "$(status_kib "$p" Threads)"
    done | python3 -c 'import json,sys; print(json.dumps({"label": sys.argv[1], "procs": [json.loads(l) for l in sys.stdin]}))' "$2"
}

idle_test() { # mode port
    local mode=$1 port=$2 lpid ok=0 i before after
    start_server "$mode" "idle-$mode" "$port" $((IDLE_CONNS + 64)) || {
        printf '{"idle":"%s","conns":%s,"failed":"did not start"}\n' "$mode" "$IDLE_CONNS" >>"$RESULTS"; EXIT=3; return; }
    local spid=$SRV_PID
    sleep 1
    before=$(snapshot "$spid" before)
    "$BIN/s7load" -m idle -H "$HOST" -p "$port" -k "$IDLE_CONNS" >"$WORK/idle-$mode.out" 2>"$WORK/idle-$mode.err" &
    lpid=$!; PIDS+=("$lpid")
    for ((i = 0; i < 600; i++)); do
        if grep -q '^ready' "$WORK/idle-$mode.out" 2>/dev/null; then ok=1; break; fi
        kill -0 "$lpid" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$ok" = 1 ]; then
        sleep 1
        after=$(snapshot "$spid" after)
        printf '{"idle":"%s","conns":%s,"before":%s,"after":%s}\n' "$mode" "$IDLE_CONNS" "$before" "$after" >>"$RESULTS"
        log "idle $mode: $IDLE_CONNS conns: $after"
    else
        local err; err=$(tr -d '"\\' <"$WORK/idle-$mode.err" | tr '\n' ' ' | cut -c1-200)
        printf '{"idle":"%s","conns":%s,"failed":"%s"}\n' "$mode" "$IDLE_CONNS" "$err" >>"$RESULTS"
        log "idle $mode FAILED: $err"
    fi
    kill "$lpid" 2>/dev/null; wait "$lpid" 2>/dev/null
    stop_server "$spid"
}

if [ "$IDLE_CONNS" -gt 0 ]; then
    # the load-test servers go first, so that they do not share the machine
    stop_server "$PRIV_PID"; stop_server "$SINGLE_PID"
    idle_test single "$P_SINGLE_IDLE"
    idle_test privsep "$P_PRIV_IDLE"
fi

# ---------------------------------------------------------------- report
COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo "none")
DIRTY=$(git -C "$ROOT" status --porcelain -- Sources Package.swift 2>/dev/null | head -c1)
[ -n "$DIRTY" ] && COMMIT="$COMMIT (+ uncommitted changes in Sources/ or Package.swift)"
BUILT=$(date -u -r "$S7BIN" '+%Y-%m-%d %H:%M:%S UTC')

python3 - "$RESULTS" "$OUT/compare-latest.md" "$TOL" <<EOF
import json, sys
res = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tol = float(sys.argv[3])
load, idle = {}, {}
for r in res:
    if "idle" in r: idle[r["idle"]] = r; continue
    key = (r["server"], r.get("req_mode", r.get("mode")), int(r["n"]), int(r["k"]))
    old = load.get(key)
    if old is None or ("failed" not in old and not old.get("errors") and
                       ("failed" in r or r.get("errors") or r["rps"] > old["rps"])):
        load[key] = r
def ok(r): return r is not None and "failed" not in r and not r.get("errors")
def cell(r):
    if r is None: return "n/a", "n/a"
    if "failed" in r: return "FAIL", "-"
    e = " (%d err!)" % r["errors"] if r.get("errors") else ""
    return "%.0f%s" % (r["rps"], e), "%.0f / %.0f" % (r["p50_us"], r["p99_us"])
L = ["## s7commd privsep vs --single-process — $STAMP", "",
     "- command: \`$CMDLINE\` ${ENVLINE:+(env: $ENVLINE)}",
     "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); s7commd binary built $BUILT",
     "- git commit: $COMMIT",
     "- nproc: $(nproc); kernel: $(uname -r); running as uid $(id -u); 1-min load average at the start: $LOAD0",
     "- $D s per run after a 0.5 s warm-up, best of $ROUNDS rounds, order of the two modes alternating per cell; client busy-polls at K=1: $([ "$SPIN_K1" = 1 ] && echo yes || echo no)",
     "", "privsep/single: ratio of the best rounds' rps; paired median: median over rounds of privsep rps / single rps",
     "measured back to back in that round (robust to background load that changes between rounds).", "",
     "| mode | N | K | single rps | single p50/p99 | privsep rps | privsep p50/p99 | privsep/single | paired median (rounds) |",
     "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
byround = {}
for r in res:
    if "idle" in r or not ok(r): continue
    byround.setdefault((r["req_mode"], int(r["n"]), int(r["k"]), r["round"]), {})[r["server"]] = r["rps"]
def paired(mode, n, k):
    qs = sorted(v["privsep"] / v["single"] for (m, nn, kk, _), v in byround.items()
                if (m, nn, kk) == (mode, n, k) and "privsep" in v and "single" in v)
    if not qs: return "n/a"
    med = qs[len(qs) // 2] if len(qs) % 2 else (qs[len(qs) // 2 - 1] + qs[len(qs) // 2]) / 2
    return "%.3f (%d)" % (med, len(qs))
outside, faster = [], []
for mode in "$MODES".split():
    for n in [int(x) for x in "$SIZES".split()]:
        for k in [int(x) for x in "$CONNS".split()]:
            s = load.get(("single", mode, n, k)); p = load.get(("privsep", mode, n, k))
            if ok(s) and ok(p):
                q = p["rps"] / s["rps"]; rt = "%.3f" % q
                if q < 1 - tol: outside.append("%s N=%d K=%d (%.3f)" % (mode, n, k, q))
                if q > 1 + tol: faster.append("%s N=%d K=%d (%.3f)" % (mode, n, k, q))
            else:
                rt = "n/a"; outside.append("%s N=%d K=%d (no valid result)" % (mode, n, k))
            L.append("| %s | %d | %d | %s | %s | %s | %s | %s | %s |" % ((mode, n, k) + cell(s) + cell(p) + (rt, paired(mode, n, k))))
L.append("")
L.append("Verdict: " + ("all cells within %g %%" % (tol * 100) if not outside else
         "outside %g %%: " % (tol * 100) + ", ".join(outside)))
if faster: L.append("(privsep faster by more than %g %%: %s)" % (tol * 100, ", ".join(faster)))
L.append("")
if idle:
    L.append("Idle connections: VmRSS / Pss from /proc (KiB -> MiB); privsep sums supervisor + worker + memory process.")
    L.append("")
    L.append("| mode | conns | process | VmRSS before | VmRSS with conns | Pss with conns | RssShmem | threads |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|")
    names = {"main": "", "__worker": "worker", "__memory": "memory"}
    for m in ("single", "privsep"):
        r = idle.get(m)
        if r is None: continue
        if "failed" in r: L.append("| %s | %s | FAIL: %s | | | | | |" % (m, r["conns"], r["failed"])); continue
        b = {x["pid"]: x for x in r["before"]["procs"]}
        procs = r["after"]["procs"]
        for x in procs:
            role = names.get(x["role"], x["role"]) or ("supervisor" if m == "privsep" else "s7commd")
            L.append("| %s | %d | %s | %.1f | %.1f | %.1f | %.1f | %d |" % (m, r["conns"], role,
                     b.get(x["pid"], {}).get("rss", 0)/1024, x["rss"]/1024, x["pss"]/1024, x["shmem"]/1024, x["threads"]))
        if len(procs) > 1:
            L.append("| %s | %d | **sum** | %.1f | %.1f | %.1f | %.1f | %d |" % (m, r["conns"],
                     sum(x["rss"] for x in r["before"]["procs"])/1024, sum(x["rss"] for x in procs)/1024,
                     sum(x["pss"] for x in procs)/1024, sum(x["shmem"] for x in procs)/1024, sum(x["threads"] for x in procs)))
    L.append("")
L.append("Raw results: \`bench/out/$(basename "$RESULTS")\`")
L.append("")
open(sys.argv[2], "w").write("\n".join(L))
print("\n".join(L))
sys.exit(4 if outside else 0)
EOF
rc=$?
log "wrote $OUT/compare-latest.md"
[ "$EXIT" = 0 ] && EXIT=$rc
exit "$EXIT"
