"""`s7commd probe`: a small S7 client, run against s7commd and against the snap7 reference
server from python-snap7 2.0.2."""
import json
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest
import snap7

from conftest import HOST, PLC_IDENTITY, free_port, server_binary
from s7helpers import connect

PROBE_TIMEOUT_S = 30

# Labels of the human output and the PLC_IDENTITY keys they show.
IDENTITY_LINES = {
    "order code": "order_code",
    "firmware": "firmware_version",
    "module type": "module_type",
    "AS name": "name",
    "module name": "module_name",
    "plant id": "plant_identification",
    "copyright": "copyright",
    "serial number": "serial_number",
}

# JSON identity keys and the PLC_IDENTITY keys they show.
IDENTITY_JSON = {
    "order_code": "order_code",
    "firmware_version": "firmware_version",
    "module_type": "module_type",
    "as_name": "name",
    "module_name": "module_name",
    "plant_identification": "plant_identification",
    "copyright": "copyright",
    "serial_number": "serial_number",
}


def probe(*args):
    binary = server_binary()
    assert binary.is_file(), f"s7commd binary not found at {binary}"
    p = subprocess.run([str(binary), "probe", *map(str, args)], capture_output=True, text=True,
                       timeout=PROBE_TIMEOUT_S)
    return p


def fields(stdout: str) -> dict:
    """The human output as {label: value} (labels are padded to one column)."""
    out = {}
    for line in stdout.splitlines():
        label, _, value = line.partition("  ")
        out[label.strip()] = value.strip()
    return out


def target(h) -> str:
    return f"{h.host}:{h.port}"


def assert_s7commd_identity(f: dict):
    for label, key in IDENTITY_LINES.items():
        assert f[label] == PLC_IDENTITY[key], (label, f)
    assert f["CPU state"] == "RUN"


# ---------------------------------------------------------------- against s7commd

def test_probe_prints_identity_state_and_pdu(server):
    p = probe(target(server))
    assert p.returncode == 0, p.stderr
    f = fields(p.stdout)
    assert f["endpoint"] == target(server)
    assert f["TSAPs"] == "calling 01.00, called 01.01 (PG, rack 0, slot 1)"
    assert f["PDU"] == "proposed 480 → agreed 480"
    assert_s7commd_identity(f)
    server.assert_alive()


def test_probe_server_with_pdu_240(start_server):
    """The server agrees 240; SZL 0x001C then needs a follow-up request (two data units)."""
    h = start_server(pdu_size=240)
    p = probe(target(h))
    assert p.returncode == 0, p.stderr
    f = fields(p.stdout)
    assert f["PDU"] == "proposed 480 → agreed 240"
    assert_s7commd_identity(f)


def test_probe_proposing_240(server):
    p = probe(target(server), "--pdu", 240)
    assert p.returncode == 0, p.stderr
    f = fields(p.stdout)
    assert f["PDU"] == "proposed 240 → agreed 240"
    assert_s7commd_identity(f)


def test_probe_reads_what_a_snap7_client_wrote(server):
    c = connect(server)
    try:
        c.db_write(1, 0, bytearray(struct.pack(">h", -12345)))
        c.db_write(1, 4, bytearray(struct.pack(">f", 3.5)))
        c.db_write(1, 8, bytearray(b"\x05"))
    finally:
        c.disconnect()
        c.destroy()
    p = probe(target(server), "--read", "DB1.DBW0")
    assert p.returncode == 0, p.stderr
    assert fields(p.stdout)["DB1.DBW0"] == "0xCFC7 = -12345 (int16)"
    p = probe(target(server), "--read", "DB1.DBD4")
    assert fields(p.stdout)["DB1.DBD4"] == "0x40600000 = 1080033280 (int32) = 3.5 (real)"
    p = probe(target(server), "--read", "DB1.DBB8")
    assert fields(p.stdout)["DB1.DBB8"] == "0x05 = 5 (byte)"
    p = probe(target(server), "--read", "DB1.DBX8.2")
    assert fields(p.stdout)["DB1.DBX8.2"] == "0x01 = true (bool)"
    p = probe(target(server), "--read", "db1.dbx8.1", "--json")
    assert json.loads(p.stdout)["read"] == {"address": "DB1.DBX8.1", "hex": "00", "bool": False}


def test_probe_read_of_a_missing_block_is_explained(server):
    p = probe(target(server), "--read", "DB99.DBW0")
    # The connection and the negotiation worked: exit status 0, the read says why it failed.
    assert p.returncode == 0, p.stderr
    line = fields(p.stdout)["DB99.DBW0"]
    assert line.startswith("not read: the server answered return code 0x0A: object does not exist"), line
    assert "DB99" in line


def test_probe_json(server):
    p = probe(target(server), "--json", "--read", "MW2")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["ok"] is True
    assert d["endpoint"] == target(server) and d["port"] == server.port
    assert d["tsap"] == {"calling": "01.00", "called": "01.01"}
    assert d["pdu"] == {"proposed": 480, "agreed": 480}
    assert d["cpu_state"] == "RUN"
    for key, conf in IDENTITY_JSON.items():
        assert d["identity"][key] == PLC_IDENTITY[conf], key
    assert all(v["answered"] for v in d["szl"].values()), d["szl"]
    assert d["read"] == {"address": "MW2", "hex": "0000", "int16": 0}


def test_probe_cpu_state_stop(start_server):
    h = start_server(server_overrides={"allow_plc_control": True})
    c = connect(h)
    try:
        assert c.plc_stop() == 0
        assert fields(probe(target(h)).stdout)["CPU state"] == "STOP"
        assert c.plc_hot_start() == 0
    finally:
        c.disconnect()
        c.destroy()
    assert fields(probe(target(h)).stdout)["CPU state"] == "RUN"


def test_probe_rack_slot_refused(start_server):
    h = start_server(server_overrides={"allowed_rack_slots": [{"rack": 0, "slot": 2}]})
    p = probe(target(h))
    assert p.returncode == 1
    assert "refused the COTP connection to TSAP 01.01 (rack 0, slot 1)" in p.stderr, p.stderr
    assert "why:" in p.stderr and "--rack R --slot S" in p.stderr
    assert "allowed_rack_slots" in p.stderr
    p = probe(target(h), "--slot", 2, "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["tsap"]["called"] == "01.02" and d["identity"]["as_name"] == PLC_IDENTITY["name"]


# ---------------------------------------------------------------- failures

def test_probe_nothing_listens():
    port = free_port()
    p = probe(f"{HOST}:{port}", "--timeout", 2)
    assert p.returncode == 1
    assert f"cannot connect to {HOST}:{port}: connection refused" in p.stderr, p.stderr
    assert f"nothing listens on TCP port {port}" in p.stderr
    assert "what to do:" in p.stderr
    assert p.stdout.startswith("endpoint")


def test_probe_nothing_listens_json():
    port = free_port()
    p = probe(f"{HOST}:{port}", "--json")
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert d["ok"] is False
    assert d["error"]["stage"] == "connect"
    assert "connection refused" in d["error"]["what"]
    assert d["error"]["why"] and d["error"]["fix"]
    assert d["pdu"]["agreed"] is None


def test_probe_silent_service_times_out():
    """TCP is accepted (the kernel completes the handshake) but nothing answers the COTP request."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(4)
        port = s.getsockname()[1]
        start = time.monotonic()
        p = probe(f"{HOST}:{port}", "--timeout", 1)
        elapsed = time.monotonic() - start
    assert p.returncode == 1
    assert "did not answer within 1 s (COTP connection request)" in p.stderr, p.stderr
    assert elapsed < 10


def test_probe_not_s7_service():
    """A service that answers something else (an HTTP server, say)."""
    import threading
    s = socket.socket()
    s.bind((HOST, 0))
    s.listen(4)
    port = s.getsockname()[1]

    def serve():
        conn, _ = s.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        time.sleep(0.5)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        p = probe(f"{HOST}:{port}")
    finally:
        t.join(timeout=5)
        s.close()
    assert p.returncode == 1
    assert "does not speak S7comm" in p.stderr and "not a TPKT header" in p.stderr, p.stderr


@pytest.mark.parametrize("args, message", [
    (["--read", "XYZ"], "is not an address"),
    (["--rack", "8"], "a rack is 0 to 7"),
    (["--pdu", "10"], "--pdu 10"),
])
def test_probe_bad_arguments(args, message):
    p = probe(f"{HOST}:1", *args)
    assert p.returncode not in (0, 1)  # a usage error, not a failed probe
    assert message in p.stderr, p.stderr


# ---------------------------------------------------------------- against snap7

SNAP7_SERVER = textwrap.dedent("""
    import signal, sys, time
    import snap7
    from snap7.type import SrvArea, WordLen
    srv = snap7.server.Server(log=False)
    buf = (WordLen.Byte.ctype * 64)()
    srv.register_area(SrvArea.DB, 1, buf)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    srv.start(tcp_port=int(sys.argv[1]))
    print("ready", flush=True)
    while not stop:
        time.sleep(0.05)
    srv.stop()
    srv.destroy()
""")


@pytest.fixture
def snap7_server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SNAP7_SERVER, str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "snap7 server does not accept connections"
                time.sleep(0.05)
        yield HOST, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_probe_snap7_reference_server(snap7_server):
    host, port = snap7_server
    c = snap7.client.Client()
    c.connect(host, 0, 1, tcp_port=port)
    try:
        info = c.get_cpu_info()
        order = c.get_order_code()
        c.db_write(1, 0, bytearray(struct.pack(">h", 4711)))
    finally:
        c.disconnect()
        c.destroy()
    p = probe(f"{host}:{port}", "--read", "DB1.DBW0")
    assert p.returncode == 0, p.stderr
    f = fields(p.stdout)
    # What snap7 answers, as its own client reads it.
    assert f["AS name"] == info.ASName.decode().strip() == "SNAP7-SERVER"
    assert f["module type"] == info.ModuleTypeName.decode().strip() == "CPU 315-2 PN/DP"
    assert f["module name"] == info.ModuleName.decode().strip()
    assert f["serial number"] == info.SerialNumber.decode().strip()
    assert f["copyright"] == info.Copyright.decode().strip()
    assert f["order code"] == order.OrderCode.decode().strip() == "6ES7 315-2EH14-0AB0"
    # The firmware record (index 7) says V3.2.6; snap7's client takes the last three bytes of
    # the list instead, which on its own server are the boot loader's.
    assert f["firmware"] == "V3.2.6"
    assert f["plant id"] == "(empty)"
    assert f["CPU state"] == "RUN"
    assert f["PDU"] == "proposed 480 → agreed 480"
    assert f["DB1.DBW0"] == "0x1267 = 4711 (int16)"


def test_probe_snap7_reference_server_json_and_pdu(snap7_server):
    host, port = snap7_server
    for pdu in (240, 960):
        p = probe(f"{host}:{port}", "--pdu", pdu, "--json", "--read", "DB2.DBW0")
        assert p.returncode == 0, p.stderr
        d = json.loads(p.stdout)
        assert d["pdu"] == {"proposed": pdu, "agreed": pdu}
        assert d["identity"]["as_name"] == "SNAP7-SERVER"
        assert d["cpu_state"] == "RUN"
        assert "object does not exist" in d["read"]["problem"]


# ---------------------------------------------------------------- a partial S7 server

def _fake_cpu(listener):
    """Answers the COTP CR and Setup Communication (PDU 240); refuses SZL 0x0011 with 0xD401,
    answers SZL 0x001C with one record, never answers SZL 0x0424."""
    conn, _ = listener.accept()
    conn.settimeout(10)

    def frame():
        head = b""
        while len(head) < 4:
            chunk = conn.recv(4 - len(head))
            if not chunk:
                return None
            head += chunk
        body = b""
        n = struct.unpack(">H", head[2:4])[0] - 4
        while len(body) < n:
            chunk = conn.recv(n - len(body))
            if not chunk:
                return None
            body += chunk
        return head + body

    def send_s7(pdu):
        conn.sendall(struct.pack(">BBH", 3, 0, len(pdu) + 7) + b"\x02\xf0\x80" + pdu)

    try:
        while (f := frame()) is not None:
            if f[5] == 0xE0:
                cc = bytearray(f)
                cc[5] = 0xD0
                conn.sendall(bytes(cc))
                continue
            s7 = f[7:]
            ref = s7[4:6]
            if s7[1] == 1 and s7[10] == 0xF0:
                send_s7(b"\x32\x03\x00\x00" + ref + b"\x00\x08\x00\x00\x00\x00\xf0\x00\x00\x01\x00\x01\x00\xf0")
            elif s7[1] == 7:
                szl = s7[22:24]  # header 10, parameters 8, then FF 09 00 04 ID INDEX
                params = b"\x00\x01\x12\x08\x12\x84\x01\x00\x00\x00"
                if szl == b"\x00\x11":
                    send_s7(b"\x32\x07\x00\x00" + ref + b"\x00\x0c\x00\x04" + params + b"\xd4\x01" + b"\x0a\x00\x00\x00")
                elif szl == b"\x00\x1c":
                    rec = b"\x00\x01" + b"FAKE-CPU".ljust(32, b"\x00")
                    data = b"\x00\x1c\x00\x00\x00\x22\x00\x01" + rec
                    send_s7(b"\x32\x07\x00\x00" + ref + b"\x00\x0c" + struct.pack(">H", len(data) + 4) + params
                            + b"\x00\x00\xff\x09" + struct.pack(">H", len(data)) + data)
                # 0x0424: no answer at all
            elif s7[1] == 1 and s7[10] == 0x04:
                send_s7(b"\x32\x03\x00\x00" + ref + b"\x00\x02\x00\x04\x00\x00\x04\x01\x0a\x00\x00\x00")
    except OSError:
        pass
    finally:
        conn.close()


def test_probe_partial_answers_are_not_answered_not_failures():
    import threading
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    t = threading.Thread(target=_fake_cpu, args=(listener,), daemon=True)
    t.start()
    try:
        p = probe(f"{HOST}:{port}", "--timeout", 1, "--read", "DB1.DBW0")
    finally:
        t.join(timeout=10)
        listener.close()
    assert p.returncode == 0, p.stderr
    f = fields(p.stdout)
    assert f["PDU"] == "proposed 480 → agreed 240"
    assert f["order code"] == ("not answered (error 0xD401 (information function unavailable "
                               "(this SZL ID is not provided)))"), f
    assert f["firmware"].startswith("not answered (error 0xD401")
    assert f["AS name"] == "FAKE-CPU"
    assert f["module type"] == "not in the answer"
    assert f["CPU state"].startswith("not answered (") and "did not answer within 1 s" in f["CPU state"], f
    # The read's answer comes after the unanswered request: matched by PDU reference.
    assert f["DB1.DBW0"].startswith("not read: the server answered return code 0x0A"), f
