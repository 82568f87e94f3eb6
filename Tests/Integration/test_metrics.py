"""The metrics endpoint: off by default; when enabled, a Prometheus scrape (parsed by the
prometheus_client library, not by us) over a loopback port or the Unix socket counts the real
traffic python-snap7 makes, the refused, the restarts, and the latency; it answers bad HTTP
with an error and never disturbs the S7 clients; a taken metrics port is explained like a taken
S7 port."""
import json
import os
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import snap7
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, make_config, port_held_by_another_process, server_binary, socket_inodes


def samples(text):
    """{(name, frozenset(labels)): value} of every sample in an exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found, name, **labels):
    return found[(name, frozenset(labels.items()))]


def scrape_tcp(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def http_over_unix(path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(request)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)


def listening_ports(pids):
    """TCP ports in LISTEN state held by any of `pids` (from /proc, as a technician's ss would)."""
    inodes = set().union(*(socket_inodes(pid) for pid in pids))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def status_json(h):
    r = subprocess.run([str(server_binary()), "status", "--json", "--pid-file", str(Path(h.log_path).parent / f"{Path(h.log_path).stem}.pid")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def processes(h):
    report = status_json(h)
    return [h.process.pid] + [c["pid"] for c in report["children"] if c.get("pid")]


def test_metrics_are_off_by_default(start_server):
    h = start_server()
    run_dir = Path(h.log_path).parent
    assert not (run_dir / "metrics.sock").exists()
    assert listening_ports(processes(h)) == {h.port}, "with metrics off, s7commd listens on the S7 port only"
    assert "metrics" not in h.log()
    assert status_json(h)["metrics"] == []


def test_metrics_over_a_loopback_port_count_what_clients_did(start_server):
    mport = free_port()
    h = start_server(pdu_size=480, server_overrides={"max_clients": 1},
                     config_overrides={"metrics": {"enabled": True, "port": mport}})
    assert f"metrics (Prometheus text format) at http://127.0.0.1:{mport}/metrics" in h.log(), h.log()
    assert listening_ports(processes(h)) == {h.port, mport}
    run_dir = Path(h.log_path).parent
    assert status_json(h)["metrics"] == [f"http://127.0.0.1:{mport}/metrics", f"unix:{run_dir}/metrics.sock"]
    human = subprocess.run([str(server_binary()), "status", "--pid-file", str(run_dir / f"{Path(h.log_path).stem}.pid")],
                           capture_output=True, text=True, timeout=30).stdout
    assert f"metrics: http://127.0.0.1:{mport}/metrics, unix:{run_dir}/metrics.sock" in human, human

    before = samples(scrape_tcp(mport))
    assert value(before, "s7commd_requests_total") == 0
    assert value(before, "s7commd_clients") == 0
    assert value(before, "s7commd_max_clients") == 1

    c = snap7.client.Client()
    c.set_param(snap7.type.Parameter.PDURequest, 960)
    c.connect(h.host, 0, 1, tcp_port=h.port)
    try:
        assert c.get_pdu_length() == 480
        for _ in range(20):
            c.db_read(1, 0, 16)
        c.db_write(1, 0, bytearray(b"\x01\x02"))
        try:
            c.plc_stop()  # refused as by a protected CPU: server.allow_plc_control is false
        except RuntimeError:
            pass
        extra = socket.create_connection((h.host, h.port), timeout=5)
        extra.settimeout(5)
        assert extra.recv(16) == b"", "the client over max_clients (1) must be closed"
        extra.close()
        time.sleep(0.2)
        during = samples(scrape_tcp(mport))
        assert value(during, "s7commd_clients") == 1
        assert value(during, "s7commd_connections_total") == value(before, "s7commd_connections_total") + 1
        assert value(during, "s7commd_connections_refused_total", reason="max_clients") == 1
        assert value(during, "s7commd_requests_total") >= 22
        assert value(during, "s7commd_request_errors_total", kind="refused") >= 1
        assert value(during, "s7commd_received_bytes_total") > 22 * 30
        assert value(during, "s7commd_sent_bytes_total") > 20 * 16
        count = value(during, "s7commd_request_duration_seconds_count")
        assert count >= 22
        assert value(during, "s7commd_request_duration_seconds_bucket", le="+Inf") == count
        assert 0 < value(during, "s7commd_request_duration_seconds_sum") < count * 1.0
        buckets = sorted((float(dict(k[1])["le"]), v) for k, v in during.items() if k[0] == "s7commd_request_duration_seconds_bucket")
        assert [v for _, v in buckets] == sorted(v for _, v in buckets), "cumulative buckets never decrease"
        # the same counters status shows
        report = status_json(h)
        assert report["counters"]["refused"]["max_clients"] == 1
        assert report["counters"]["bytes_received"] >= value(during, "s7commd_received_bytes_total")
    finally:
        c.disconnect()

    # a killed worker is restarted: the supervisor's count reaches the metrics of the new worker
    worker = next(x for x in status_json(h)["children"] if x["role"] == "S7 worker")
    assert value(samples(scrape_tcp(mport)), "s7commd_child_restarts_total", child="worker") == 0
    os.kill(worker["pid"], 9)
    deadline = time.monotonic() + 15
    while True:
        try:
            after = samples(scrape_tcp(mport))
            if value(after, "s7commd_child_restarts_total", child="worker") == 1:
                break
        except (urllib.error.URLError, ConnectionError, KeyError):
            pass
        assert time.monotonic() < deadline, "the restarted worker did not report the restart"
        time.sleep(0.2)
    assert value(after, "s7commd_child_restarts_total", child="memory") == 0
    assert listening_ports(processes(h)) == {h.port, mport}, "the supervisor keeps the metrics port across the restart"


def test_metrics_unix_socket_and_bad_http(start_server):
    h = start_server(config_overrides={"metrics": {"enabled": True}})
    path = Path(h.log_path).parent / "metrics.sock"
    st = path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    # Bound by root before the drop (the directory may be root's), handed to the service group.
    assert st.st_uid == 0 and st.st_gid == int(subprocess.check_output(["id", "-g", "s7commd"])), st
    assert listening_ports(processes(h)) == {h.port}, "metrics.port 0: no TCP port for metrics"

    c = snap7.client.Client()
    c.connect(h.host, 0, 1, tcp_port=h.port)
    try:
        c.db_read(1, 0, 4)
        answer = http_over_unix(str(path), b"GET /metrics HTTP/1.1\r\nHost: s7commd\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        found = samples(body.decode())
        assert value(found, "s7commd_requests_total") >= 1 and value(found, "s7commd_clients") == 1

        assert http_over_unix(str(path), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404")
        assert http_over_unix(str(path), b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").startswith(b"HTTP/1.1 405")
        assert http_over_unix(str(path), b"\x03\x00\x00\x16garbage that is not HTTP\r\n\r\n").startswith(b"HTTP/1.1 400")
        head = http_over_unix(str(path), b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n"), head

        # the S7 client was never disturbed
        assert c.db_read(1, 0, 4) is not None and c.get_cpu_state() == "S7CpuStatusRun"
    finally:
        c.disconnect()

    # a scraper that connects and sends nothing is closed (after 10 s), and does not block others
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(path))
        assert http_over_unix(str(path), b"GET /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")
        idle.settimeout(15)
        started = time.monotonic()
        assert idle.recv(16) == b""
        assert time.monotonic() - started > 5


def test_metrics_in_single_process_mode(start_server):
    mport = free_port()
    h = start_server(config_overrides={"metrics": {"enabled": True, "port": mport}}, args=("--single-process",))
    c = snap7.client.Client()
    c.connect(h.host, 0, 1, tcp_port=h.port)
    try:
        c.db_read(1, 0, 4)
        found = samples(scrape_tcp(mport))
        assert value(found, "s7commd_requests_total") >= 1 and value(found, "s7commd_clients") == 1
    finally:
        c.disconnect()


def test_a_taken_metrics_port_is_explained(tmp_path):
    mport = free_port()
    with port_held_by_another_process(mport) as holder:
        cfg = make_config(free_port())
        cfg["metrics"] = {"enabled": True, "port": mport}
        path = tmp_path / "metrics.json"
        path.write_text(json.dumps(cfg))
        r = subprocess.run([str(server_binary()), "run", "--config", str(path), "--pid-file", str(tmp_path / "run" / "s7commd.pid"),
                            "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=30)
        assert r.returncode == 3, r.stderr
        assert f"cannot listen on 127.0.0.1:{mport}" in r.stderr and "(metrics.port)" in r.stderr, r.stderr
        assert f"held by pid {holder.pid}" in r.stderr and "python3 -c" in r.stderr, r.stderr
        assert "s7commd config set metrics.port" in r.stderr and "Nothing was started" in r.stderr, r.stderr

        d = subprocess.run([str(server_binary()), "doctor", "--config", str(path), "--pid-file", str(tmp_path / "run" / "s7commd.pid"),
                            "--state-dir", str(tmp_path / "state"), "--json"], capture_output=True, text=True, timeout=30)
        assert d.returncode == 1, d.stdout
        checks = json.loads(d.stdout)
        metrics = next(c for c in checks if c["check"] == f"metrics port 127.0.0.1:{mport}")
        assert metrics["status"] == "problem" and f"held by pid {holder.pid}" in metrics["detail"], metrics


def test_metrics_may_not_listen_beyond_loopback(tmp_path):
    cfg = make_config(free_port())
    cfg["metrics"] = {"enabled": True, "bind_address": "0.0.0.0", "port": free_port()}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(cfg))
    r = subprocess.run([str(server_binary()), "config", "check", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert 'metrics.bind_address = "0.0.0.0"' in r.stderr + r.stdout and "loopback" in r.stderr + r.stdout, r.stderr + r.stdout
