"""Malformed input over raw sockets: the server must answer with an error or
close the connection promptly, keep serving other clients, not crash, and log
the peer (127.0.0.1:port) with a reason."""
import re
import socket
import struct
import time

import pytest

from s7helpers import connect

REACTION_TIMEOUT_S = 5.0
LOG_TIMEOUT_S = 3.0

COTP_CR = bytes.fromhex("11e00000000100c0010ac1020100c2020102")  # TSAP 0x0102 = rack 0 slot 2
COTP_DT = bytes.fromhex("02f080")
S7_SETUP = bytes.fromhex("3201000000010008000" "0" "f0000001000101e0")


def tpkt(payload: bytes) -> bytes:
    return struct.pack(">BBH", 3, 0, len(payload) + 4) + payload


def s7_read_var_item(area=0x84, db=1, start=0, amount=2, ts=0x02):
    return bytes([0x12, 0x0A, 0x10, ts]) + struct.pack(">HH", amount, db) + bytes([area]) + (start * 8).to_bytes(3, "big")


def s7_job(pdu_ref: int, param: bytes, data: bytes = b"") -> bytes:
    return bytes([0x32, 0x01, 0, 0]) + struct.pack(">HHH", pdu_ref, len(param), len(data)) + param + data


def recv_tpkt(sock, timeout=REACTION_TIMEOUT_S) -> bytes:
    sock.settimeout(timeout)
    hdr = _recv_exact(sock, 4)
    assert hdr[0] == 3, f"bad TPKT from server: {short(hdr)}"
    (length,) = struct.unpack(">H", hdr[2:4])
    return hdr + _recv_exact(sock, length - 4)


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes: {short(buf)}")
        buf += chunk
    return buf


def open_raw(server):
    s = socket.create_connection((server.host, server.port), timeout=REACTION_TIMEOUT_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def handshake(sock, setup=True):
    sock.sendall(tpkt(COTP_CR))
    cc = recv_tpkt(sock)
    assert cc[5] == 0xD0, f"expected COTP CC, got {short(cc)}"
    if setup:
        sock.sendall(tpkt(COTP_DT + S7_SETUP))
        ack = recv_tpkt(sock)
        assert ack[7] == 0x32 and ack[8] == 0x03, f"expected setup ack, got {short(ack)}"
        assert ack[17:19] == b"\x00\x00", f"setup refused: {short(ack)}"


QUIET_S = 0.5


def reaction(sock, timeout=REACTION_TIMEOUT_S):
    """Wait for the server's reaction to what was just sent. Returns
    ("closed", b"")               the server closed without answering,
    ("reply_then_closed", data)   it answered, then closed (within 0.5 s),
    ("reply", data)               it answered and kept the connection open
                                  for a further 0.5 s of silence.
    Fails if nothing happens within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    quiet_until = None
    while True:
        now = time.monotonic()
        limit = quiet_until if data else deadline
        if now >= limit:
            if data:
                print(f"observed: reply {short(data)}")
                return "reply", data
            pytest.fail(f"no reply and no close within {timeout}s")
        sock.settimeout(limit - now)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            kind = "reply_then_closed" if data else "closed"
            print(f"observed: {kind} {short(data)}")
            return kind, data
        data += chunk
        quiet_until = time.monotonic() + QUIET_S


def short(b: bytes) -> str:
    """Hex of at most the first 64 bytes, with the total length."""
    h = b[:64].hex()
    return f"{h}{'...' if len(b) > 64 else ''} ({len(b)} bytes)"


def parse_s7_error_reply(data: bytes):
    """Return (error_class, error_code) of an S7 ack_data reply in TPKT/COTP."""
    assert data[0] == 3 and data[5] == 0xF0 and data[7] == 0x32, f"not an S7 reply: {short(data)}"
    assert data[8] in (0x02, 0x03), f"not an ack: {short(data)}"
    assert data[8] == 0x03, f"ack without error header: {short(data)}"
    return data[17], data[18]


def assert_server_ok(server):
    server.assert_alive()
    c = connect(server)
    try:
        c.db_write(1, 0, bytearray(b"\x42\x43"))
        assert c.db_read(1, 0, 2) == bytearray(b"\x42\x43")
    finally:
        c.disconnect()
        c.destroy()
    server.assert_alive()


REASON_WORDS = re.compile(
    r"clos|disconnect|error|invalid|malformed|bad|reject|drop|refus|unexpected|protocol|reset|"
    r"timeout|abort|unsupported|outside|before|expected|not an",
    re.I,
)
CLIENT_CLOSED = re.compile(r"client closed|closed by (the )?(peer|client)|peer closed|eof", re.I)


def assert_log_names_peer(server, peer_port, server_reason=True):
    """Some log line names the peer 127.0.0.1:<port> and gives a reason for
    the close. With server_reason, the reason must be the server's own
    (the protocol error), not merely "the client closed the connection"."""
    peer = f"127.0.0.1:{peer_port}"
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while True:
        lines = [l for l in server.log().splitlines() if peer in l]
        reasons = [l for l in lines if REASON_WORDS.search(l.replace(peer, ""))]
        if server_reason:
            reasons = [l for l in reasons if not CLIENT_CLOSED.search(l)]
        if reasons:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"server log has no line naming {peer} with a "
                f"{'server-side ' if server_reason else ''}reason for the close; lines naming it: "
                f"{lines}\nfull log tail:\n{server.log()[-3000:]}"
            )
        time.sleep(0.1)


# ---------------------------------------------------------------------------


def test_garbage_bytes(server):
    s = open_raw(server)
    port = s.getsockname()[1]
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)))
    kind, data = reaction(s)
    s.close()
    assert kind == "closed", f"expected close, got reply {short(data)}"
    assert data == b"", f"unexpected bytes before close: {short(data)}"
    assert_log_names_peer(server, port)
    assert_server_ok(server)


def test_tpkt_bad_version(server):
    s = open_raw(server)
    port = s.getsockname()[1]
    bad = bytearray(tpkt(COTP_CR))
    bad[0] = 0x04
    s.sendall(bytes(bad))
    kind, data = reaction(s)
    s.close()
    assert (kind, data) == ("closed", b""), f"expected close, got {kind}: {short(data)}"
    assert_log_names_peer(server, port)
    assert_server_ok(server)


def test_tpkt_bad_version_after_setup(server):
    s = open_raw(server)
    port = s.getsockname()[1]
    handshake(s)
    bad = bytearray(tpkt(COTP_DT + s7_job(2, bytes([0x04, 0x01]) + s7_read_var_item())))
    bad[0] = 0x07
    s.sendall(bytes(bad))
    kind, data = reaction(s)
    s.close()
    assert (kind, data) == ("closed", b""), f"expected close, got {kind}: {short(data)}"
    assert_log_names_peer(server, port)
    assert_server_ok(server)


def test_truncated_tpkt_then_close(server):
    s = open_raw(server)
    port = s.getsockname()[1]
    full = tpkt(COTP_CR)
    s.sendall(full[:9])  # header announces 22 bytes, only 9 sent
    s.shutdown(socket.SHUT_WR)
    kind, data = reaction(s)
    s.close()
    assert (kind, data) == ("closed", b""), f"expected close, got {kind}: {short(data)}"
    assert_log_names_peer(server, port, server_reason=False)
    assert_server_ok(server)


def test_truncated_tpkt_header_then_close(server):
    s = open_raw(server)
    port = s.getsockname()[1]
    s.sendall(b"\x03\x00")
    s.close()
    assert_log_names_peer(server, port, server_reason=False)
    assert_server_ok(server)


def test_oversize_tpkt_length(server):
    s = open_raw(server)
    port = s.getsockname()[1]
    handshake(s)
    # announces 65535 bytes (far above the negotiated PDU); only a few follow
    s.sendall(b"\x03\x00\xff\xff" + COTP_DT + S7_SETUP)
    kind, data = reaction(s)
    s.close()
    assert kind == "closed", f"expected close on oversize TPKT, got reply {short(data)}"
    assert_log_names_peer(server, port)
    assert_server_ok(server)


def test_oversize_tpkt_length_before_cr(server):
    s = open_raw(server)
    port = s.getsockname()[1]
    s.sendall(b"\x03\x00\xff\xf0" + COTP_CR)
    kind, data = reaction(s)
    s.close()
    assert (kind, data) == ("closed", b""), f"expected close, got {kind}: {short(data)}"
    assert_log_names_peer(server, port)
    assert_server_ok(server)


@pytest.mark.parametrize("length", [0, 3, 4, 5])
def test_undersize_tpkt_length(server, length):
    s = open_raw(server)
    port = s.getsockname()[1]
    s.sendall(struct.pack(">BBH", 3, 0, length) + b"\x00" * 8)
    kind, data = reaction(s)
    s.close()
    assert (kind, data) == ("closed", b""), f"expected close, got {kind}: {short(data)}"
    assert_log_names_peer(server, port)
    assert_server_ok(server)


def test_cotp_dt_before_cr(server):
    s = open_raw(server)
    port = s.getsockname()[1]
    s.sendall(tpkt(COTP_DT + S7_SETUP))
    kind, data = reaction(s)
    s.close()
    assert kind == "closed", f"expected close, got reply {short(data)}"
    assert_log_names_peer(server, port)
    assert_server_ok(server)


def test_s7_job_before_setup_communication(server):
    """Observed with s7commd: the connection is closed without a reply."""
    s = open_raw(server)
    port = s.getsockname()[1]
    handshake(s, setup=False)
    s.sendall(tpkt(COTP_DT + s7_job(1, bytes([0x04, 0x01]) + s7_read_var_item())))
    kind, data = reaction(s)
    s.close()
    assert (kind, data) == ("closed", b""), f"expected close, got {kind}: {short(data)}"
    assert_log_names_peer(server, port)
    assert_server_ok(server)


def test_read_var_item_count_mismatch(server):
    """Observed with s7commd: an S7 ack_data error reply (error class 0x81,
    code 0x04) and the connection stays usable."""
    s = open_raw(server)
    port = s.getsockname()[1]
    handshake(s)
    # item count says 2, the parameter (length 14) carries only one item
    s.sendall(tpkt(COTP_DT + s7_job(2, bytes([0x04, 0x02]) + s7_read_var_item())))
    kind, data = reaction(s)
    assert kind == "reply", f"expected an error reply on an open connection, got {kind}: {short(data)}"
    ec = parse_s7_error_reply(data)
    assert ec != (0, 0), f"malformed read var answered without error: {short(data)}"
    assert data[11:13] == b"\x00\x02", f"reply does not echo PDU reference 2: {short(data)}"
    # the connection is still usable after an error reply
    s.sendall(tpkt(COTP_DT + s7_job(3, bytes([0x04, 0x01]) + s7_read_var_item(amount=2))))
    ok = recv_tpkt(s)
    s.close()
    assert ok[8] == 0x03 and ok[17:19] == b"\x00\x00", short(ok)
    assert ok[21] == 0xFF, f"item result {ok[21]:#x}: {short(ok)}"
    assert_log_names_peer(server, port)  # the refusal is logged with the peer
    assert_server_ok(server)


def test_read_var_item_count_too_small(server):
    """Item count 1 but two items in the parameter (length 26). Observed with
    s7commd: an S7 error reply, connection kept open."""
    s = open_raw(server)
    port = s.getsockname()[1]
    handshake(s)
    param = bytes([0x04, 0x01]) + s7_read_var_item() + s7_read_var_item(start=4)
    s.sendall(tpkt(COTP_DT + s7_job(2, param)))
    kind, data = reaction(s)
    s.close()
    assert kind == "reply", f"expected an error reply on an open connection, got {kind}: {short(data)}"
    ec = parse_s7_error_reply(data)
    assert ec != (0, 0), f"malformed read var answered without error: {short(data)}"
    assert_log_names_peer(server, port)  # the refusal is logged with the peer
    assert_server_ok(server)


def test_s7_header_lengths_exceed_tpkt(server):
    """S7 parameter length (200) beyond the TPKT. Observed with s7commd: close."""
    s = open_raw(server)
    port = s.getsockname()[1]
    handshake(s)
    job = bytearray(s7_job(2, bytes([0x04, 0x01]) + s7_read_var_item()))
    job[6:8] = struct.pack(">H", 200)
    s.sendall(tpkt(COTP_DT + bytes(job)))
    kind, data = reaction(s)
    s.close()
    assert (kind, data) == ("closed", b""), f"expected close, got {kind}: {short(data)}"
    assert_log_names_peer(server, port)
    assert_server_ok(server)


def test_valid_raw_read_after_setup(server):
    """Sanity check of the raw helpers themselves: a well-formed read works."""
    c = connect(server)
    c.db_write(1, 0, bytearray(b"\x12\x34"))
    c.disconnect()
    c.destroy()
    s = open_raw(server)
    handshake(s)
    s.sendall(tpkt(COTP_DT + s7_job(7, bytes([0x04, 0x01]) + s7_read_var_item(amount=2))))
    r = recv_tpkt(s)
    s.close()
    assert r[7] == 0x32 and r[8] == 0x03 and r[17:19] == b"\x00\x00", r.hex()
    assert r[19:21] == b"\x04\x01", r.hex()
    assert r[21] == 0xFF and r[22] == 0x04 and r[23:25] == b"\x00\x10" and r[25:27] == b"\x12\x34", r.hex()


def test_many_bad_connections(server):
    """A burst of bad connections (bounded: 40) does not exhaust the server."""
    for i in range(40):
        s = open_raw(server)
        s.sendall(b"\x00" * (i % 7 + 1) if i % 2 else b"\x03\x00\x00\x16\x11\xe0")
        s.close()
    time.sleep(0.2)
    assert_server_ok(server)


def test_idle_client_does_not_block_others(server):
    """A connection that completes TCP but never sends anything must not stop
    other clients from being served."""
    idle = open_raw(server)
    half = open_raw(server)
    half.sendall(tpkt(COTP_CR)[:6])
    try:
        assert_server_ok(server)
    finally:
        idle.close()
        half.close()
