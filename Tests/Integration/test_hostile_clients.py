"""Hostile clients must not exhaust s7commd (the hostile-clients contract, issue 10).

Each test runs the real binary on 127.0.0.1, mounts one bounded attack that stops by itself
(a deadline, or the server closing the attacking connections), and ends with a python-snap7
client that must connect and read DB1.DBB0..3 within server.recv_timeout_ms + 1 s of starting
to try. Every test also checks that the server and its S7 worker are still the same processes
and that the log shows no crash."""
import os
import re
import select
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import snap7

from test_bad_input import COTP_CR, COTP_DT, handshake, recv_tpkt, s7_job, s7_read_var_item, short, tpkt
from test_diagnostics import status_json

RECV_TIMEOUT_S = 3.0  # conftest's server.recv_timeout_ms (3000)
SEND_TIMEOUT_S = 3.0  # conftest's server.send_timeout_ms (3000)
GOOD_CLIENT_WINDOW_S = RECV_TIMEOUT_S + 1.0
DEADLINE_SLACK_S = 1.5  # how late after a deadline the server may close
AT_ONCE_S = 1.0  # "closed at once"
LOG_WAIT_S = 5.0
CRASH_MARKERS = ("Fatal error", "restarting it in", "; killing it", "Segmentation fault", "SIGSEGV", "SIGABRT", "SIGILL")
EMPTY_DT = tpkt(COTP_DT)  # a COTP DT TPDU with the EOT bit and no S7 PDU
MIB = 1024 * 1024


# --- raw sockets --------------------------------------------------------------------------

def read_var_request(ref: int, amount: int) -> bytes:
    """One complete Read Var of DB1.DBB0 with `amount` bytes, in TPKT/COTP."""
    return tpkt(COTP_DT + s7_job(ref, bytes([0x04, 0x01]) + s7_read_var_item(amount=amount)))


def raw_socket(h, source=None, rcvbuf=None, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            s.bind((source, 0))
        s.settimeout(timeout)
        s.connect((h.host, h.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        s.close()
        raise
    return s


def raw_sockets(h, n, setup=None, **kw):
    """n raw connections; with setup=False/True each also does COTP CR/CC (and Setup Communication)."""
    socks = []
    try:
        for _ in range(n):
            socks.append(raw_socket(h, **kw))
            if setup is not None:
                handshake(socks[-1], setup=setup)
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def peer(sock) -> str:
    """How the server names this client socket in its log."""
    ip, port = sock.getsockname()[:2]
    return f"{ip}:{port}"


def wait_closed(sock, timeout):
    """Reads until the server closes (EOF or reset) or `timeout` passes.
    Returns (closed, bytes received meanwhile)."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, data
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            return False, data
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True, data
        if not chunk:
            return True, data
        data += chunk


def still_open(sock) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def assert_closed_at_once(sock, what):
    """The server closes `sock` within AT_ONCE_S with a plain FIN and no data."""
    closed, data = wait_closed(sock, AT_ONCE_S)
    assert closed, f"{what} ({peer(sock)}) was still open {AT_ONCE_S} s after connecting; it must be closed at once"
    assert data == b"", f"{what} ({peer(sock)}) got data before the close: {short(data)}"


def assert_read_var_answered(sock, ref, what):
    sock.sendall(read_var_request(ref, 4))
    try:
        r = recv_tpkt(sock)
    except (OSError, ConnectionError) as e:
        pytest.fail(f"{what} ({peer(sock)}) got no answer to a Read Var: {e!r}")
    assert r[8] == 0x03 and r[17:19] == b"\x00\x00" and r[21] == 0xFF, f"{what} ({peer(sock)}): bad Read Var answer {short(r)}"


# --- the server's processes, log and status ----------------------------------------------

def descendants(pid):
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            found += [k, *descendants(k)]
    return found


def workers_of(h):
    """Pids of the server's S7 workers: descendants whose second argument is `__worker`
    (bench/common.sh worker_of / proc_role)."""
    pids = []
    for pid in descendants(h.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[1] == b"__worker":
            pids.append(pid)
    return pids


def pss_kib(pid) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise AssertionError(f"no Pss line in /proc/{pid}/smaps_rollup")


def fd_count(pid) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def good_read(h):
    """One python-snap7 connect + db_read(1, 0, 4); raises RuntimeError when refused."""
    c = snap7.client.Client()
    try:
        c.connect(h.host, 0, 1, tcp_port=h.port)
        data = c.db_read(1, 0, 4)
        assert len(data) == 4, f"db_read(1, 0, 4) returned {len(data)} bytes"
        c.disconnect()
    finally:
        c.destroy()


def serving(h):
    """Waits until the worker really serves (the supervisor listens before its worker is up)
    and returns the worker's pid."""
    deadline = time.monotonic() + 15
    while True:
        try:
            good_read(h)
            break
        except RuntimeError as e:
            h.assert_alive()
            assert time.monotonic() < deadline, f"s7commd does not serve a read 15 s after start: {e}"
            time.sleep(0.2)
    workers = workers_of(h)
    assert len(workers) == 1, f"expected one S7 worker under pid {h.process.pid}, found {workers}"
    wait_clients(h, 0)
    return workers[0]


def good_client_gets_in(h, retry=False, window=GOOD_CLIENT_WINDOW_S, during=""):
    """A python-snap7 client connects and reads within `window` s of starting to try: one
    attempt, or (retry) attempts 50 ms apart inside the window only."""
    start = time.monotonic()
    failures = []
    while True:
        try:
            good_read(h)
            break
        except RuntimeError as e:
            failures.append(f"{time.monotonic() - start:.2f} s: {e}")
            if not retry or time.monotonic() - start >= window:
                pytest.fail(f"a good python-snap7 client could not connect and read{during}: "
                            f"{len(failures)} attempt(s) in {time.monotonic() - start:.2f} s, last ones {failures[-3:]}")
            time.sleep(0.05)
    elapsed = time.monotonic() - start
    assert elapsed <= window, (f"a good python-snap7 client needed {elapsed:.2f} s to connect and read{during}; "
                               f"allowed recv_timeout + 1 s = {window} s ({len(failures)} refused attempt(s))")
    return elapsed


def assert_healthy(h, worker):
    h.assert_alive()
    log = h.log()
    for marker in CRASH_MARKERS:
        assert marker not in log, f"the log shows a crash ({marker!r}):\n{log[-4000:]}"
    assert worker in workers_of(h), f"the S7 worker (pid {worker}) is gone (crashed and restarted?): now {workers_of(h)}"


def finish(h, worker):
    """The end of every test: a good client gets in at once, the processes are intact."""
    good_client_gets_in(h, during=" after the attack")
    assert_healthy(h, worker)


def wait_log(h, pattern, timeout=LOG_WAIT_S, what=None):
    """The first log line matching regex `pattern`, waiting up to `timeout` s."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        for line in h.log().splitlines():
            if rx.search(line):
                return line
        if time.monotonic() > deadline:
            pytest.fail(f"no log line {what or 'matching ' + repr(pattern)} within {timeout} s; log tail:\n{h.log()[-4000:]}")
        time.sleep(0.1)


def evicted_pattern(peer_rx, max_clients, waiting="not set up"):
    """The eviction line (words may follow "were taken" before the setting)."""
    return (rf"client {peer_rx} disconnected: evicted: {waiting} after \d+ ms when all "
            rf"server\.max_clients={max_clients} slots were taken\b.*\(server\.max_clients={max_clients}\)")


def wait_log_text(h, text, timeout=LOG_WAIT_S):
    return wait_log(h, re.escape(text), timeout, what=f"containing {text!r}")


def counters(h):
    """`s7commd status --json` counters (the contract calls them server.counters)."""
    report = status_json(h)
    server = report.get("server")
    if isinstance(server, dict) and isinstance(server.get("counters"), dict):
        return server["counters"]
    assert isinstance(report.get("counters"), dict), f"status --json has no counters: {report}"
    return report["counters"]


def counter(h, group, name):
    c = counters(h)
    assert isinstance(c.get(group), dict) and name in c[group], f"status --json has no counters.{group}.{name}: {c}"
    return c[group][name]


def wait_clients(h, at_most, timeout=3.0):
    """Until status lists at most `at_most` clients (the server has seen earlier closes)."""
    deadline = time.monotonic() + timeout
    while True:
        clients = status_json(h).get("clients", [])
        if len(clients) <= at_most:
            return
        assert time.monotonic() < deadline, f"status still lists {len(clients)} clients after {timeout} s: {clients}"
        time.sleep(0.05)


# --- attackers (threads that stop by themselves) -----------------------------------------

class Drip(threading.Thread):
    """Sends `payload` one byte per second to every socket, in step, until the server closes
    it, the payload is used up, `limit_s` passes or stop is set. Records when each socket's
    first byte went out and when the server closed it."""

    def __init__(self, socks, payload, limit_s=10.0):
        super().__init__(daemon=True)
        self.socks, self.payload, self.limit_s = socks, payload, limit_s
        self.first_byte, self.closed_at = {}, {}
        self.started_dripping = threading.Event()
        self.stop = threading.Event()

    def open_socks(self):
        return [s for s in self.socks if s not in self.closed_at]

    def run(self):
        start = time.monotonic()
        for i in range(len(self.payload)):
            if self.stop.is_set() or not self.open_socks() or time.monotonic() - start > self.limit_s:
                break
            for s in self.open_socks():
                try:
                    s.send(self.payload[i:i + 1])
                    self.first_byte.setdefault(s, time.monotonic())
                except OSError:
                    self.closed_at[s] = time.monotonic()
            self.started_dripping.set()
            self.watch_until(start + i + 1)
        self.started_dripping.set()

    def watch_until(self, until):
        while not self.stop.is_set() and self.open_socks():
            left = until - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select(self.open_socks(), [], [], min(left, 0.05))
            for s in readable:
                try:
                    closed = s.recv(65536) == b""
                except OSError:
                    closed = True
                if closed:
                    self.closed_at[s] = time.monotonic()


FLOOD_BYTES = 20 * MIB
FLOOD_WINDOW_S = 15.0
TCP_ESTABLISHED = 1


class Flood(threading.Thread):
    """Sends FLOOD_BYTES of 200-byte Read Var requests on every socket as fast as the kernel
    takes them, never reading an answer, until each is sent, dropped by the server, or
    FLOOD_WINDOW_S passes."""

    def __init__(self, socks, window_s=FLOOD_WINDOW_S):
        super().__init__(daemon=True)
        self.socks, self.window_s = socks, window_s
        self.names = {s: peer(s) for s in socks}
        self.sent = {s: 0 for s in socks}
        self.dropped, self.dropped_at = {}, {}
        self.started = time.monotonic()
        self.blocked = threading.Event()  # some send had to wait: the flood is established
        self.stop = threading.Event()
        self.ended_at = None

    def run(self):
        blob = b"".join(read_var_request(ref, 200) for ref in range(1, 1025))
        for s in self.socks:
            s.setblocking(False)
        self.started = time.monotonic()
        deadline = self.started + self.window_s
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                live = [s for s in self.socks if s not in self.dropped]
                if not live:
                    break
                self.note_drops(live)
                sending = [s for s in live if s not in self.dropped and self.sent[s] < FLOOD_BYTES]
                _, writable, _ = select.select([], sending, [], 0.1)
                if sending and len(writable) < len(sending):
                    self.blocked.set()
                for s in writable:
                    self.send_some(s, blob)
        finally:
            self.ended_at = time.monotonic()
            self.blocked.set()

    def send_some(self, s, blob):
        offset = self.sent[s] % len(blob)
        try:
            self.sent[s] += s.send(blob[offset:offset + min(len(blob) - offset, FLOOD_BYTES - self.sent[s])])
        except BlockingIOError:
            self.blocked.set()
        except OSError as e:
            self.drop(s, repr(e))

    def note_drops(self, live):
        for s in live:
            state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            if state != TCP_ESTABLISHED:
                self.drop(s, f"TCP state {state}")

    def describe(self):
        dropped = sorted(round(t - self.started, 1) for t in self.dropped_at.values())
        return (f"{sum(self.sent.values())} bytes sent on {len(self.socks)} connection(s); {len(self.dropped)} dropped, "
                f"after {dropped[:5]} s, e.g. {list(self.dropped.values())[:1]}")

    def drop(self, s, how):
        self.dropped[s] = how
        self.dropped_at[s] = time.monotonic()


class PssPeak(threading.Thread):
    """Samples a process's Pss every 50 ms until stop; keeps the peak."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = pss_kib(pid)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.05):
            try:
                self.peak = max(self.peak, pss_kib(self.pid))
            except OSError:
                return


def stop_thread(t):
    t.stop.set()
    t.join(5)


# --- tests --------------------------------------------------------------------------------

@pytest.mark.parametrize("max_clients", [8, 32])
@pytest.mark.parametrize("stage", ["cotp_connect", "read_var_after_setup"])
def test_one_byte_per_second_does_not_hold_the_slots(start_server, stage, max_clients):
    """max_clients connections trickle a request one byte per second: (a) the COTP connect
    request itself, or (b) after COTP CR/CC and Setup Communication, a Read Var. Trickled bytes
    do not extend the partial-request deadline (recv_timeout_ms 3000). In (a) the newcomer
    evicts a connection that is not set up and gets in at once; in (b) a set-up dripper becomes
    evictable once its request has been incomplete for 500 ms (ConnectionRegistry.evictionGrace),
    so a good client arriving 1 s into the drip gets in with one attempt. Every dripper that is
    not evicted is closed recv_timeout after its first byte."""
    h = start_server(server_overrides={} if max_clients == 32 else {"max_clients": max_clients})
    worker = serving(h)
    set_up = stage == "read_var_after_setup"
    socks = raw_sockets(h, max_clients, setup=True if set_up else None)
    drip = Drip(socks, read_var_request(2, 4) if set_up else tpkt(COTP_CR))
    try:
        drip.start()
        assert drip.started_dripping.wait(3), "the drippers did not start"
        if set_up:
            time.sleep(1.0)  # past the 500 ms eviction grace of a set-up connection's incomplete request
        good_client_gets_in(h, during=f" while {max_clients} connections drip one byte per second")
        drip.join(drip.limit_s + 3)
        never = [peer(s) for s in socks if s not in drip.closed_at]
        assert not never, f"{len(never)} of {max_clients} drippers were never closed by the server: {never[:5]}"
        late = {peer(s): round(drip.closed_at[s] - drip.first_byte[s], 2) for s in socks
                if drip.closed_at[s] - drip.first_byte[s] > RECV_TIMEOUT_S + DEADLINE_SLACK_S}
        assert not late, f"drippers closed later than recv_timeout + {DEADLINE_SLACK_S} s after their first byte (s): {late}"
    finally:
        stop_thread(drip)
        close_all(socks)
    wait_log(h, evicted_pattern(r"127\.0\.0\.1:\d+", max_clients, "a request incomplete" if set_up else "not set up"))
    if set_up:
        wait_log(h, r"client 127\.0\.0\.1:\d+ disconnected: request incomplete 3000 ms after its first byte \(server\.recv_timeout_ms=3000\)")
    finish(h, worker)


def test_silent_connections_do_not_hold_the_slots(start_server):
    """max_clients (8) TCP connections that send nothing: a good client evicts one at once,
    and the setup deadline closes the rest."""
    h = start_server(server_overrides={"max_clients": 8})
    worker = serving(h)
    opened = time.monotonic()
    socks = raw_sockets(h, 8)
    try:
        time.sleep(0.3)  # let the worker admit all 8
        good_client_gets_in(h, during=" with 8 silent connections in all 8 slots")
        for s in socks:
            closed, data = wait_closed(s, opened + RECV_TIMEOUT_S + DEADLINE_SLACK_S - time.monotonic())
            assert closed, f"silent connection {peer(s)} still open {RECV_TIMEOUT_S + DEADLINE_SLACK_S} s after connecting"
            assert data == b"", f"silent connection {peer(s)} got data: {short(data)}"
    finally:
        close_all(socks)
    wait_log(h, r"disconnected: not set up within 3000 ms of connecting \(server\.recv_timeout_ms=3000\)")
    finish(h, worker)


@pytest.mark.parametrize("flooders", [1, 32])
def test_pipelining_flood_is_throttled(start_server, flooders):
    """Connections with SO_RCVBUF 4096 set up (PDU 480), then pipeline 20 MB of 200-byte Read
    Vars each without reading an answer. The worker's Pss grows by less than 16 MiB in total,
    each flooder is throttled or dropped, and a good client reads during the flood."""
    h = start_server(server_overrides={"max_clients": flooders + 8} if flooders >= 32 else {})
    worker = serving(h)
    socks = raw_sockets(h, flooders, setup=True, rcvbuf=4096)
    baseline = pss_kib(worker)
    sampler = PssPeak(worker)
    flood = Flood(socks)
    try:
        sampler.start()
        flood.start()
        assert flood.blocked.wait(5) and flood.ended_at is None, f"the flood was never throttled before it ended: {flood.describe()}"
        time.sleep(0.2)
        good_client_gets_in(h, during=f" during a pipelining flood on {flooders} connection(s)")
        assert flood.ended_at is None, f"the flood was over before the good client was done, so it did not read during it: {flood.describe()}"
        flood.join(FLOOD_WINDOW_S + 5)
    finally:
        stop_thread(flood)
        stop_thread(sampler)
        close_all(socks)
    growth = (sampler.peak - baseline) * 1024
    assert growth < 16 * MIB, (f"the worker's Pss grew by {growth / MIB:.1f} MiB (from {baseline} kB to a peak of "
                               f"{sampler.peak} kB) under a pipelining flood on {flooders} connection(s); limit 16 MiB")
    unthrottled = [f"{flood.names[s]} sent {flood.sent[s]} bytes" for s in socks if flood.sent[s] >= FLOOD_BYTES and s not in flood.dropped]
    assert not unthrottled, f"flooders neither throttled nor dropped: {unthrottled}"
    print(f"flood: sent {[flood.sent[s] for s in socks][:5]}..., dropped {len(flood.dropped)} of {flooders}; "
          f"Pss {baseline} -> peak {sampler.peak} kB")
    wait_log(h, r"has more requests in flight than the AmQ \d+ it was granted; reading from it is paused until it takes its answers")
    if flood.dropped:
        wait_log(h, r"disconnected: took none of its answers for 3000 ms \(server\.send_timeout_ms=3000\)")
    c = counters(h)
    assert c.get("throttled", 0) >= flooders, f"status counters.throttled below {flooders} (each flooder is paused at least once): {c}"
    finish(h, worker)


REFUSED_DETAIL = re.compile(r"refused 127\.0\.0\.1:\d+: max_clients \(8\)")
REFUSED_SUMMARY = re.compile(r"refused (\d+) more connections\b.*\bmax_clients\b")


def refusals_logged(h):
    lines = h.log().splitlines()
    details = [l for l in lines if REFUSED_DETAIL.search(l)]
    summaries = [int(m.group(1)) for l in lines for m in [REFUSED_SUMMARY.search(l)] if m]
    return details, summaries


def open_and_close_over_the_limit(h, total, batch):
    """Opens `total` connections, `batch` at a time; each must be closed by the server with no
    data within AT_ONCE_S of connecting. Stops at the first batch with a problem."""
    for _ in range(0, total, batch):
        socks = []
        try:
            for _ in range(batch):
                socks.append((raw_socket(h, timeout=2.0), time.monotonic()))
            problems = []
            for s, connected in socks:
                closed, data = wait_closed(s, connected + AT_ONCE_S - time.monotonic())
                if not closed or data:
                    problems.append(f"{peer(s)}: {'closed' if closed else 'still open'} after {AT_ONCE_S} s, data {short(data)}")
        finally:
            close_all(s for s, _ in socks)
        assert not problems, f"connections over max_clients not closed at once with a plain FIN: {problems[:5]}"


def test_2000_connections_over_the_limit(start_server):
    """8 set-up connections hold all max_clients slots; 2,000 more are opened and closed in
    batches. Each is closed at once, no descriptor stays behind, the log has at most 5 detail
    lines per 10 s window plus summaries adding up to 2,000, and the 8 still answer."""
    h = start_server(server_overrides={"max_clients": 8, "ping_timeout_ms": 60000})
    worker = serving(h)
    held = raw_sockets(h, 8, setup=True)
    try:
        fds_before = fd_count(worker)
        open_and_close_over_the_limit(h, 2000, 50)
        deadline = time.monotonic() + 1.0
        while fd_count(worker) > fds_before + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fd_count(worker) <= fds_before + 20, f"the worker holds {fd_count(worker)} descriptors, {fds_before} before the 2,000 refusals"
        deadline = time.monotonic() + 12
        while True:
            details, summaries = refusals_logged(h)
            if len(details) + sum(summaries) >= 2000 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        refused_lines = [l for l in h.log().splitlines() if "refused" in l]
        assert len(refused_lines) <= 20, f"{len(refused_lines)} log lines about refusals for 2,000 refused connections (limit 20): {refused_lines[:8]}"
        assert summaries, f"no 'refused N more connections' summary within 12 s; refusal lines: {refused_lines}"
        assert len(details) <= 5 * len(summaries), f"more than 5 detail lines per 10 s window: {details}"
        assert len(details) + sum(summaries) == 2000, f"{len(details)} detail lines + summaries {summaries} do not account for the 2,000 refused"
        assert counter(h, "refused", "max_clients") == 2000
        for i, s in enumerate(held):
            assert_read_var_answered(s, 10 + i, f"held connection {i + 1} of 8")
    finally:
        close_all(held)
    wait_clients(h, 0)
    finish(h, worker)


def pi_service_param(name: bytes, block: bytes = b"") -> bytes:
    """Session.swift piServiceName(): 0x28, six reserved bytes, 0xFD, a 16-bit parameter-block
    length, the block, an 8-bit name length and the name, nothing after it."""
    return bytes([0x28]) + bytes(6) + bytes([0xFD]) + struct.pack(">H", len(block)) + block + bytes([len(name)]) + name


HOSTILE_NAME = b"EVIL\x1b[31m\rFAKE\nX\\Y"
HOSTILE_NAME_LOGGED = r"EVIL\x1b[31m\x0dFAKE\x0aX\\Y"


def test_pi_service_name_is_logged_escaped(start_server):
    """A PI service name with ESC, CR, LF and a backslash reaches the log escaped; no raw ESC
    or CR byte is anywhere in the log file, and no line is forged."""
    h = start_server()
    worker = serving(h)
    s = raw_socket(h)
    try:
        handshake(s)
        s.sendall(tpkt(COTP_DT + s7_job(5, pi_service_param(HOSTILE_NAME))))
        reply = recv_tpkt(s)
        assert reply[8] == 0x03 and reply[17:19] != b"\x00\x00", f"the PI service was not refused: {short(reply)}"
        line = wait_log_text(h, f"client {peer(s)}: job function 0x28")
    finally:
        s.close()
    raw = Path(h.log_path).read_bytes()
    for byte, name in ((b"\x1b", "ESC (0x1b)"), (b"\r", "CR (0x0d)")):
        at = raw.find(byte)
        assert at < 0, f"a raw {name} is in the log: {raw[max(0, at - 80):at + 80]!r}"
    assert "\\x1b" in line.lower() and "\\x0d" in line.lower(), f"ESC and CR not logged as \\x1b / \\x0d: {line!r}"
    assert not any(l.startswith("FAKE") for l in h.log().splitlines()), "the LF in the name forged a log line"
    assert HOSTILE_NAME_LOGGED.lower() in line.lower(), f"the name is not escaped as {HOSTILE_NAME_LOGGED!r}: {line!r}"
    finish(h, worker)


def test_newcomer_evicts_the_oldest_connection_not_set_up(start_server):
    """max_clients 4 held by connections that only did COTP CR/CC: a good client gets in at
    once, the oldest of them is evicted, logged and counted."""
    h = start_server(server_overrides={"max_clients": 4})
    worker = serving(h)
    socks = raw_sockets(h, 4, setup=False)
    try:
        good_client_gets_in(h, during=" with 4 connections not set up in all 4 slots")
        closed, _ = wait_closed(socks[0], AT_ONCE_S)
        assert closed, f"the oldest connection not set up ({peer(socks[0])}) was not evicted"
        assert all(still_open(s) for s in socks[1:]), "a younger connection was closed: the oldest must be the one evicted"
        wait_log(h, evicted_pattern(re.escape(peer(socks[0])), 4))
    finally:
        close_all(socks)
    assert counter(h, "closed", "evicted") >= 1
    finish(h, worker)


def test_max_clients_per_address(start_server):
    """max_clients_per_address 2: a third connection from 127.0.0.1 is closed at once, logged
    and counted; a connection from 127.0.0.2 still gets in."""
    h = start_server(server_overrides={"max_clients_per_address": 2})
    worker = serving(h)
    socks = raw_sockets(h, 2, setup=True)
    try:
        third = raw_socket(h)
        socks.append(third)
        assert_closed_at_once(third, "the third connection from 127.0.0.1")
        wait_log_text(h, f"refused {peer(third)}: max_clients_per_address (2) connections from 127.0.0.1 are open already (server.max_clients_per_address=2)")
        assert counter(h, "refused", "max_clients_per_address") == 1
        other = raw_socket(h, source="127.0.0.2")
        socks.append(other)
        handshake(other)
        assert_read_var_answered(other, 3, "a connection from 127.0.0.2")
    finally:
        close_all(socks)
    wait_clients(h, 0)
    finish(h, worker)


def test_empty_dt_tpdus_do_not_keep_a_connection_alive(start_server):
    """A set-up connection that sends an empty COTP DT TPDU every second is still closed
    ping_timeout_ms (2000) after its last request."""
    h = start_server(server_overrides={"ping_timeout_ms": 2000})
    worker = serving(h)
    s = raw_socket(h)
    try:
        handshake(s)
        last_request = time.monotonic()
        closed_at, data = None, b""
        ping = last_request + 1.0
        while closed_at is None and time.monotonic() < last_request + 2.0 + DEADLINE_SLACK_S + 1.0:
            closed, got = wait_closed(s, max(0.0, ping - time.monotonic()))
            data += got
            if not closed:
                try:
                    s.sendall(EMPTY_DT)
                    ping += 1.0
                    continue
                except OSError:
                    pass
            closed_at = time.monotonic()
        assert closed_at is not None, "a connection sending only empty COTP DT TPDUs was kept open past ping_timeout_ms + 2.5 s"
        elapsed = closed_at - last_request
        assert 1.8 <= elapsed <= 2.0 + DEADLINE_SLACK_S, f"closed {elapsed:.2f} s after its last request; expected ping_timeout 2 s (+{DEADLINE_SLACK_S} s)"
        assert data == b"", f"the server answered empty DT TPDUs: {short(data)}"
        wait_log_text(h, f"client {peer(s)} disconnected: no request for 2000 ms")
    finally:
        s.close()
    finish(h, worker)


def test_flooder_that_takes_no_answers_is_dropped(start_server):
    """The contract's end of a pipelining flood: a client that reads no answers is throttled,
    then dropped by send_timeout_ms (3000), logged with its peer and counted."""
    h = start_server()
    worker = serving(h)
    socks = raw_sockets(h, 1, setup=True, rcvbuf=4096)
    flood = Flood(socks, window_s=SEND_TIMEOUT_S + 4.0)
    try:
        flood.start()
        flood.join(flood.window_s + 3)
    finally:
        stop_thread(flood)
        close_all(socks)
    [s] = socks
    assert s in flood.dropped, (f"a client that took none of its answers was still connected {flood.window_s} s into its "
                                f"flood ({flood.sent[s]} bytes sent); send_timeout_ms is 3000")
    after = flood.dropped_at[s] - flood.started
    assert after <= SEND_TIMEOUT_S + 3.0, f"dropped {after:.1f} s into the flood; expected within send_timeout + 3 s"
    wait_log_text(h, f"client {flood.names[s]} disconnected: took none of its answers for 3000 ms (server.send_timeout_ms=3000)")
    assert counter(h, "closed", "send_timeout") >= 1
    finish(h, worker)
