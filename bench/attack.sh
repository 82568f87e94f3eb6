#!/usr/bin/env bash
# Hostile clients against s7commd and the snap7 server, side by side: what one good client
# sees while each attack runs.
#
#   bench/attack.sh
#
# Per server and attack ("cell"): a good client (s7load -m read -k 1 -n 4, closed loop) connects,
# 0.3 s later the attack starts and runs ATTACK_SECONDS; the good client measures
# ATTACK_SECONDS - 2 s after a 1 s warm-up, so the whole measurement is under attack. Meanwhile
# the good client also connects fresh ATTACK_PROBES times (s7attack -m probe: connect + setup +
# one Read Var, at most 2 s per step). Attacks (bench/s7attack.c; a connection the server closes is
# opened again 100 ms later, as a real attacker would):
#   none         no attack (the baseline for the p99 goal); run again at the end as none-end,
#                and the baseline is the one of the two with the lower p99
#   drip-read    max_clients connections, set up, each dripping a Read Var one byte per second
#   drip-cr      max_clients connections dripping a COTP connect request one byte per second
#   silent       max_clients TCP connections that send nothing
#   pipeline-1   one connection with a 4 KiB receive window pipelining Read Vars, reading nothing
#   pipeline-32  32 such connections
#   churn        TCP connect + close as fast as possible, at most ATTACK_CHURN_RATE per second,
#                with up to 2 x max_clients open at once
#
# Environment (all optional):
#   ATTACK_SECONDS=8          length of each attack (>= 4)
#   ATTACK_LIST="none drip-read drip-cr silent pipeline-1 pipeline-32 churn"
#   ATTACK_SERVERS="snap7 s7commd"
#   ATTACK_MAX_CLIENTS=32     s7commd's server.max_clients and the attacks' connection count
#   ATTACK_PROBES=5           fresh connects of the good client per cell
#   ATTACK_CHURN_RATE=2000    connects per second in the churn attack
#   ATTACK_SPIN=0             1: the good client busy-polls (s7load -P)
#   ATTACK_SCHED=normal       idle: the attacker runs under SCHED_IDLE (chrt --idle 0), so
#                             that on a machine with fewer cores than the three parties the
#                             attacker's own CPU (and the loopback TCP work it does in its
#                             context) is taken from idle time, as it is on a separate host,
#                             and not from the server or the good client
#   S7COMMD_BIN=PATH          use this s7commd binary (no build)
#   BENCH_SKIP_BUILD=1        use the existing .build-bench/release/s7commd as is
#   BENCH_S7COMMD_ARGS="..."  extra arguments for `s7commd run`
#
# s7commd gets bench/run.sh's configuration with max_clients ATTACK_MAX_CLIENTS and
# recv_timeout_ms 3000 (other timeouts: its defaults); snap7 keeps its default MaxClients.
# Builds s7commd with `swift build -c release --scratch-path .build-bench` (never in .build).
# Writes bench/out/attack-latest.md and bench/out/attack-<stamp>.jsonl (one line per cell).
# Loopback only; every attack stops by itself, and every process started is stopped on exit.
# Exit status: 0 ran, 3 s7commd could not be built/started or died, 1 other failures.
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT="$BENCH_DIR/out"
BIN="$OUT/bin"
D=${ATTACK_SECONDS:-8}
ATTACKS=${ATTACK_LIST:-none drip-read drip-cr silent pipeline-1 pipeline-32 churn}
SERVERS=${ATTACK_SERVERS:-snap7 s7commd}
MAXC=${ATTACK_MAX_CLIENTS:-32}
PROBES=${ATTACK_PROBES:-5}
CHURN_RATE=${ATTACK_CHURN_RATE:-2000}
SPIN=${ATTACK_SPIN:-0}
SCHED=${ATTACK_SCHED:-normal}
case "$SCHED" in
    normal) ATTACKER_PREFIX=() ;;
    idle) ATTACKER_PREFIX=(chrt --idle 0) ;;
    *) echo "ATTACK_SCHED must be normal or idle, not '$SCHED'" >&2; exit 1 ;;
esac
RECV_TIMEOUT_MS=3000
HOST=127.0.0.1
CMDLINE="$0${*:+ $*}"
ENVLINE=$(env | grep -E '^(ATTACK_|BENCH_|S7COMMD_BIN)' | sort | tr '\n' ' ')

mkdir -p "$OUT" "$BIN"
WORK=$(mktemp -d /tmp/s7attack.XXXXXX)
chmod 0755 "$WORK"   # s7commd's supervisor (user s7commd when started as root) re-reads its config
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$OUT/attack-$STAMP.jsonl"
: >"$RESULTS"
PIDS=()
EXIT=0

log() { printf '[attack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
. "$BENCH_DIR/common.sh"   # process helpers, wait_serving, free_ports, snap7_python, start_snap7, start_s7commd

install_cleanup

has_server() { [[ " $SERVERS " == *" $1 "* ]]; }
forget() { # pid...: waited for, so cleanup must not signal that number again
    local p q keep=()
    for q in "${PIDS[@]:-}"; do
        for p in "$@"; do [ "$q" = "$p" ] && continue 2; done
        [ -n "$q" ] && keep+=("$q")
    done
    PIDS=("${keep[@]:-}")
}
[ "$D" -ge 4 ] 2>/dev/null || { log "ATTACK_SECONDS must be a whole number >= 4"; exit 1; }
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- tools
log "building s7load and s7attack (gcc -O2)"
gcc -O2 -Wall -pthread -o "$BIN/s7load" "$BENCH_DIR/s7load.c" || { log "gcc s7load failed"; exit 1; }
gcc -O2 -Wall -o "$BIN/s7attack" "$BENCH_DIR/s7attack.c" || { log "gcc s7attack failed"; exit 1; }
if has_server snap7; then snap7_python || exit 1; fi

# ---------------------------------------------------------------- s7commd
S7_OK=0
S7_STATUS="not run"
if has_server s7commd; then
    if [ -n "${S7COMMD_BIN:-}" ]; then
        S7BIN=$S7COMMD_BIN
        S7_STATUS="S7COMMD_BIN=$S7BIN"
    else
        S7BIN="$ROOT/.build-bench/release/s7commd"
        if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
            S7_STATUS="prebuilt (BENCH_SKIP_BUILD=1)"
        else
            log "building s7commd: swift build -c release --scratch-path .build-bench --product s7commd (log: $OUT/attack-build.log)"
            if (cd "$ROOT" && swift build -c release --scratch-path "$ROOT/.build-bench" --product s7commd) >"$OUT/attack-build.log" 2>&1; then
                S7_STATUS="built: swift build -c release --scratch-path .build-bench --product s7commd"
            else
                tail -n 15 "$OUT/attack-build.log" >&2
                S7_STATUS="BUILD FAILED (bench/out/attack-build.log), using the binary of an earlier build"
                EXIT=3
            fi
        fi
    fi
    if [ -x "$S7BIN" ]; then
        S7_OK=1
        S7_STATUS="$S7_STATUS; $S7BIN of $(date -u -r "$S7BIN" '+%Y-%m-%d %H:%M:%S UTC')"
    else
        S7_STATUS="$S7_STATUS; $S7BIN missing: s7commd not measured"
        log "s7commd: $S7_STATUS"
        EXIT=3
    fi
fi

# ---------------------------------------------------------------- servers
read -r P_SNAP7 P_S7 <<<"$(free_ports 2)"
S7_PIDFILE="$WORK/run-attack/s7commd.pid"
S7_LOG="$WORK/s7commd-attack.log"
SNAP7_MAXC="?"
ALIVE_snap7=0; ALIVE_s7commd=0
if has_server snap7; then
    if start_snap7 "$P_SNAP7" 0 "$WORK/snap7.log"; then
        ALIVE_snap7=1
        SNAP7_MAXC=$(sed -n 's/.*max_clients=\([0-9]*\).*/\1/p' "$WORK/snap7.log" | head -1)
        log "snap7 on $HOST:$P_SNAP7 (pid $SNAP7_PID): $(head -1 "$WORK/snap7.log")"
    else
        log "snap7 server failed to start:"; cat "$WORK/snap7.log" >&2; EXIT=1
    fi
fi
if has_server s7commd && [ "$S7_OK" = 1 ]; then
    if start_s7commd "$P_S7" "$MAXC" attack "" "\"recv_timeout_ms\": $RECV_TIMEOUT_MS"; then
        ALIVE_s7commd=1; S7_MAIN_PID=$S7_PID; S7_WORKER=$(worker_of "$S7_PID")
        log "s7commd on $HOST:$P_S7 (pid $S7_PID, S7 worker ${S7_WORKER:-none}), max_clients $MAXC, recv_timeout_ms $RECV_TIMEOUT_MS"
    else
        S7_STATUS="$S7_STATUS; FAILED TO START"
        log "s7commd failed to start:"; tail -n 20 "$S7_LOG" >&2; EXIT=3
    fi
fi

# ---------------------------------------------------------------- one cell
attack_args() { # attack -> s7attack arguments (none: nothing)
    case $1 in
    none | none-end) ;;
    drip-read | drip-cr) echo "-m $1 -k $MAXC -i 1000" ;;
    silent) echo "-m silent -k $MAXC" ;;
    pipeline-1) echo "-m pipeline -k 1 -R 4096" ;;
    pipeline-32) echo "-m pipeline -k 32 -R 4096" ;;
    churn) echo "-m churn -k $((2 * MAXC)) -r $CHURN_RATE" ;;
    *) log "unknown attack $1"; exit 1 ;;
    esac
}

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null; }

rss_sampler() { # pid file: the largest VmRSS (KiB) of pid, every 0.25 s until killed
    local max=0 r
    while :; do
        r=$(rss_kib "$1"); [ -n "$r" ] && [ "$r" -gt "$max" ] && { max=$r; echo "$max" >"$2"; }
        sleep 0.25
    done
}

s7_counters() { # file: s7commd's counters from `status --json` (server.counters, or counters at the top), or null
    timeout 5 "$S7BIN" status --pid-file "$S7_PIDFILE" --json 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
    print(json.dumps(d["server"]["counters"] if "counters" in d.get("server", {}) else d["counters"]))
except Exception: print("null")' >"$1"
}

run_cell() { # server attack
    local server=$1 attack=$2 port pid rsspid c="$WORK/cell" args spin=() i
    case $server in
    snap7) port=$P_SNAP7; pid=${SNAP7_PID:-}; rsspid=$pid ;;
    s7commd) port=$P_S7; pid=${S7_MAIN_PID:-}; rsspid=${S7_WORKER:-$pid} ;;
    esac
    local alive_var="ALIVE_$server"
    if [ "${!alive_var}" != 1 ]; then
        printf '{"server":"%s","attack":"%s","failed":"server not running"}\n' "$server" "$attack" >>"$RESULTS"
        return
    fi
    rm -rf "$c"; mkdir -p "$c"
    if ! wait_serving "$port" "$pid" 10; then
        log "!!! $server does not serve before $attack"
        printf '{"server":"%s","attack":"%s","failed":"does not answer a handshake and a read before the cell"}\n' "$server" "$attack" >>"$RESULTS"
        return
    fi
    args=$(attack_args "$attack")
    [ "$SPIN" = 1 ] && spin=(-P)
    [ "$server" = s7commd ] && s7_counters "$c/counters-before"
    local log0=0; [ "$server" = s7commd ] && log0=$(wc -l <"$S7_LOG")
    rss_kib "$rsspid" >"$c/rss-before"
    cut -d' ' -f1 /proc/loadavg >"$c/load"
    rss_sampler "$rsspid" "$c/rss-max" & local sampler=$!; PIDS+=("$sampler")

    timeout $((D + 30)) "$BIN/s7load" "${spin[@]}" -m read -H "$HOST" -p "$port" -k 1 -n 4 -w 1 -d $((D - 2)) \
        >"$c/good.json" 2>"$c/good.err" & local good=$!; PIDS+=("$good")
    sleep 0.3
    local att=""
    if [ -n "$args" ]; then
        # shellcheck disable=SC2086
        timeout $((D + 30)) "${ATTACKER_PREFIX[@]}" "$BIN/s7attack" $args -H "$HOST" -p "$port" -d "$D" >"$c/attack.out" 2>"$c/attack.err" &
        att=$!; PIDS+=("$att")
        for ((i = 0; i < 100; i++)); do
            grep -q '^ready' "$c/attack.out" 2>/dev/null && break
            kill -0 "$att" 2>/dev/null || break
            sleep 0.05
        done
    fi
    sleep 0.2
    timeout $((D + 30)) "$BIN/s7attack" -m probe -H "$HOST" -p "$port" -c "$PROBES" -i $(((D - 2) * 1000 / PROBES)) -t 2000 \
        >"$c/probe.json" 2>"$c/probe.err" & local probe=$!; PIDS+=("$probe")

    wait "$good"; local good_rc=$?
    wait "$probe"
    [ -n "$att" ] && wait "$att"
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
    forget "$good" "$probe" "$sampler" $att
    [ "$server" = s7commd ] && s7_counters "$c/counters-after"
    local log1=0; [ "$server" = s7commd ] && log1=$(wc -l <"$S7_LOG")

    local alive=1 note=""
    if ! kill -0 "$pid" 2>/dev/null; then
        alive=0; note="server died"; printf -v "$alive_var" 0; EXIT=3
    elif [ "$server" = s7commd ] && ! kill -0 "${S7_WORKER:-$pid}" 2>/dev/null; then
        note="S7 worker ${S7_WORKER:-} died (restarted by the supervisor)"; S7_WORKER=$(worker_of "$pid"); EXIT=3
    fi
    [ -n "$note" ] && log "!!! $server during $attack: $note"
    python3 - "$c" "$server" "$attack" "$good_rc" "$alive" "$note" $((log1 - log0)) "$args" >>"$RESULTS" <<'EOF'
import json, os, sys
c, server, attack, good_rc, alive, note, log_lines, args = sys.argv[1:9]
def read(name):
    try: return open(os.path.join(c, name)).read()
    except OSError: return ""
def last_json(name, err):
    for line in reversed(read(name).splitlines()):
        if line.startswith("{"):
            try: return json.loads(line)
            except ValueError: break
    return {"failed": (read(err).strip() or "no output").replace("\n", " ")[:300]}
def num(name):
    t = read(name).strip()
    return int(t) if t.isdigit() else None
def counters(name):
    t = read(name).strip()
    try: return json.loads(t) if t else None
    except ValueError: return None
rec = {"server": server, "attack": attack, "attack_args": args,
       "good": last_json("good.json", "good.err"), "good_rc": int(good_rc),
       "probe": last_json("probe.json", "probe.err"),
       "attacker": last_json("attack.out", "attack.err") if args else None,
       "rss_before_kib": num("rss-before"), "rss_max_kib": num("rss-max") or num("rss-before"),
       "server_alive": alive == "1", "loadavg_1min": float(read("load").strip() or 0)}
if note: rec["note"] = note
if server == "s7commd":
    rec["log_lines"] = int(log_lines)
    rec["counters_before"] = counters("counters-before"); rec["counters_after"] = counters("counters-after")
print(json.dumps(rec))
EOF
    log "$server $attack: $(tail -1 "$RESULTS" | cut -c1-400)"
}

# ---------------------------------------------------------------- the matrix
T0=$SECONDS
i=0
for attack in $ATTACKS; do
    order="snap7 s7commd"; [ $((i % 2)) = 1 ] && order="s7commd snap7"
    for server in $order; do has_server "$server" && run_cell "$server" "$attack"; done
    i=$((i + 1))
done
# The no-attack cell again at the end: the baseline is the better of the two, so that a
# noisy first run cannot make every attack look harmless.
if [[ " $ATTACKS " == *" none "* ]] && [ "$(wc -w <<<"$ATTACKS")" -gt 1 ]; then
    for server in snap7 s7commd; do has_server "$server" && run_cell "$server" none-end; done
fi
ELAPSED=$((SECONDS - T0))
log "cells took $ELAPSED s"
[ "$ALIVE_s7commd" = 1 ] && cp "$S7_LOG" "$OUT/attack-s7commd.log"

# ---------------------------------------------------------------- report
COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo "none")
DIRTY=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -v '^?? bench/' | head -c1)
[ -n "$DIRTY" ] && COMMIT="$COMMIT (+ uncommitted changes)"
SNAP7V=$("${PY:-python3}" -c 'import snap7; print(snap7.__version__)' 2>/dev/null || echo "?")
export RESULTS STAMP CMDLINE ENVLINE COMMIT SNAP7V SNAP7_MAXC S7_STATUS MAXC RECV_TIMEOUT_MS D PROBES CHURN_RATE SPIN ELAPSED
export TOTAL=$SECONDS NPROC=$(nproc) KERNEL=$(uname -r) DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
python3 - "$OUT/attack-latest.md" <<'EOF'
import json, os, sys
E = os.environ
res = [json.loads(l) for l in open(E["RESULTS"]) if l.strip()]
cells = {(r["server"], r["attack"]): r for r in res}
servers = [s for s in ("snap7", "s7commd") if any(r["server"] == s for r in res)]
attacks = list(dict.fromkeys(r["attack"] for r in res))
desc = {
    "none": "no attack",
    "none-end": "no attack, once more after all the attacks",
    "drip-read": "%s set-up connections, each dripping a Read Var 1 byte/s" % E["MAXC"],
    "drip-cr": "%s connections dripping a COTP CR 1 byte/s" % E["MAXC"],
    "silent": "%s silent TCP connections" % E["MAXC"],
    "pipeline-1": "1 connection, 4 KiB receive window, pipelining Read Vars, reading nothing",
    "pipeline-32": "32 such connections",
    "churn": "TCP connect + close, up to %s/s, up to %d open at once" % (E["CHURN_RATE"], 2 * int(E["MAXC"])),
}
def good(r): return r.get("good") or {}
def ok_good(r): return "failed" not in good(r) and r.get("good_rc") == 0 and not good(r).get("errors")
def probes_ok(r): p = r.get("probe") or {}; return "failed" not in p and p.get("ok") == p.get("count")
def never_refused(r): return ok_good(r) and probes_ok(r)
def yn(b): return "yes" if b else "**NO**"
baseline = {}  # server -> the no-attack cell with the lower p99 (of none and none-end)
for s in servers:
    ok = [cells[(s, a)] for a in ("none", "none-end") if (s, a) in cells and ok_good(cells[(s, a)])]
    if ok: baseline[s] = min(ok, key=lambda r: good(r)["p99_us"])
loads = [r["loadavg_1min"] for r in res if "loadavg_1min" in r]
L = []
L.append("## s7commd attack benchmark — %s" % E["STAMP"])
L.append("")
L.append("- command: `%s` %s" % (E["CMDLINE"], "(env: %s)" % E["ENVLINE"] if E["ENVLINE"].strip() else ""))
L.append("- date: %s; git commit: %s; nproc: %s; kernel: %s" % (E["DATE"], E["COMMIT"], E["NPROC"], E["KERNEL"]))
L.append("- s7commd: %s" % E["S7_STATUS"])
L.append("- s7commd config: bench/run.sh's, with server.max_clients %s and server.recv_timeout_ms %s (send/ping timeouts: defaults)" % (E["MAXC"], E["RECV_TIMEOUT_MS"]))
L.append("- snap7: python-snap7 %s (libsnap7 C server), MaxClients left at its default: %s (so the %s-connection attacks do not reach its limit)" % (E["SNAP7V"], E["SNAP7_MAXC"], E["MAXC"]))
L.append("- each attack runs %s s; the good client (s7load -m read -k 1 -n 4%s, closed loop, connected before the attack starts) measures %d s of it after a 1 s warm-up, and connects fresh %s times during it (connect + setup + one Read Var, at most 2 s per step)" % (E["D"], " -P" if E["SPIN"] == "1" else "", int(E["D"]) - 2, E["PROBES"]))
L.append("- the attacker opens a connection again 100 ms after the server closed or refused it")
if loads: L.append("- 1-minute load average at the start of the cells: %.2f to %.2f (2 cores; anything else running on the machine shows here)" % (min(loads), max(loads)))
L.append("- the p99 baseline of each server is the better (lower p99) of its two no-attack runs, `none` first and `none-end` last")
L.append("- run time: %s s for the cells, %s s in all (including builds and server starts)" % (E["ELAPSED"], E["TOTAL"]))
L.append("")
L.append("Goals: the good client is never refused (its connection works throughout, and every fresh connect gets its first read answered); its p99 under attack is at most 2x its p99 without attack (same server).")
L.append("")
L.append("| attack | server | good rps | p50 / p99 µs | p99 / baseline p99 | fresh connects ok | worst fresh connect ms | never refused | p99 ≤ 2x |")
L.append("|---|---|---:|---:|---:|---:|---:|:---:|:---:|")
for a in attacks:
    for s in servers:
        r = cells.get((s, a))
        if r is None: continue
        if r.get("failed"):
            L.append("| %s | %s | %s | | | | | | |" % (a, s, r["failed"])); continue
        g, p = good(r), r.get("probe") or {}
        base = baseline.get(s)
        if "failed" in g:
            rps, lat, ratio, p99ok = "FAIL: %s" % g["failed"][:80], "-", "-", False
        else:
            e = " (%d err: %s)" % (g["errors"], g.get("first_error", "?")) if g.get("errors") else ""
            rps, lat = "%.0f%s" % (g["rps"], e), "%.0f / %.0f" % (g["p50_us"], g["p99_us"])
            ratio, p99ok = "n/a", None
            if base and ok_good(base) and good(base).get("p99_us"):
                q = g["p99_us"] / good(base)["p99_us"]; ratio = "%.2f" % q; p99ok = q <= 2.0 and ok_good(r)
        if "failed" in p: pr, worst = "FAIL: %s" % p["failed"][:60], "-"
        else:
            pr = "%d/%d" % (p["ok"], p["count"]) + (" (%s)" % p["first_error"] if p.get("first_error") else "")
            worst = "%.1f" % p["worst_ms"] if p["ok"] else "-"
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (a, s, rps, lat, ratio, pr, worst, yn(never_refused(r)),
                 "-" if p99ok is None else yn(p99ok)))
L.append("")
L.append("What the attacker saw, and the server's side (RSS: the process that holds the connections, the S7 worker for s7commd; load avg: 1-minute load average when the cell started; log lines: lines s7commd wrote during the cell):")
L.append("")
L.append("| attack | server | connects | failed connects / setups | closed by server | held by server ms min/avg/max | slots held avg (min) | requests sent | RSS before → max MiB | load avg | log lines | s7commd counters that changed |")
L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
def delta(b, a, pre=""):
    out = []
    if isinstance(a, dict):
        for k, v in a.items():
            out += delta((b or {}).get(k) if isinstance(b, dict) else None, v, pre + k + ".")
    elif isinstance(a, (int, float)) and not isinstance(a, bool):
        d = a - (b if isinstance(b, (int, float)) else 0)
        if d and pre[:-1] not in ("bytes_received", "bytes_sent", "requests_total"):
            out.append("%s +%g" % (pre[:-1], d))
    return out
for a in attacks:
    for s in servers:
        r = cells.get((s, a))
        if r is None or r.get("failed"): continue
        t = r.get("attacker")
        if not t: atk = ["-"] * 6
        elif "failed" in t: atk = ["FAIL: %s" % t["failed"][:60]] + [""] * 5
        else:
            hold = "%s / %s / %s" % (t["hold_ms_min"], t["hold_ms_avg"], t["hold_ms_max"]) if t.get("hold_ms_avg") is not None else "-"
            held = "%.1f (%d)" % (t["held_avg"], t["held_min"]) if "held_avg" in t else "-"
            fails = "%d / %d" % (t.get("connect_failures", 0), t.get("handshake_failures", 0)) if "handshakes" in t else "%d" % t.get("connect_failures", 0)
            if t.get("first_error"): fails += " (%s)" % t["first_error"]
            rate = " (%.0f/s)" % t["connects_per_s"] if "connects_per_s" in t else ""
            atk = ["%d%s" % (t["connects"], rate), fails, str(t.get("server_closes", "-")), hold, held,
                   str(t.get("requests_sent", "-")) if a.startswith("pipeline") else "-"]
        rss = "%.1f → %.1f" % (r["rss_before_kib"] / 1024, r["rss_max_kib"] / 1024) if r.get("rss_before_kib") and r.get("rss_max_kib") else "?"
        logl = str(r["log_lines"]) if "log_lines" in r else "-"
        if s == "s7commd":
            cb, ca = r.get("counters_before"), r.get("counters_after")
            cnt = ", ".join(delta(cb, ca)) or "none" if ca is not None else "n/a (no counters in status --json)"
        else: cnt = "-"
        if r.get("note"): cnt += " — **%s**" % r["note"]
        L.append("| %s | %s | %s | %s | %.2f | %s | %s |" % (a, s, " | ".join(atk), rss, r.get("loadavg_1min", 0), logl, cnt))
L.append("")
L.append("Attacks:")
for a in attacks: L.append("- **%s**: %s" % (a, desc.get(a, a)))
L.append("")
probs = [r for r in res if r.get("failed") or r.get("note") or not r.get("server_alive", True)]
if probs:
    L.append("Problems:")
    for r in probs: L.append("- %s %s: %s" % (r["server"], r["attack"], r.get("failed") or r.get("note") or "server died"))
    L.append("")
L.append("Raw results: `bench/out/%s` (one JSON line per cell)%s" % (os.path.basename(E["RESULTS"]), "; s7commd's log: `bench/out/attack-s7commd.log`" if "s7commd" in servers else ""))
L.append("")
open(sys.argv[1], "w").write("\n".join(L))
print("\n".join(L))
EOF
log "wrote $OUT/attack-latest.md (total $SECONDS s)"
exit "$EXIT"
