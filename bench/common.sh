# Shared by bench/run.sh and bench/compare-modes.sh (sourced; needs BIN and HOST set).

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
