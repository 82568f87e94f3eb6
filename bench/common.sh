# Shared by bench/run.sh and bench/compare-modes.sh (sourced; wait_serving needs BIN and HOST).

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
