"""Start-up failures explained with what is found on this host, and the events a technician
looks for in the log: who holds the port, which capability is missing, PDU negotiation, and
the client over max_clients."""
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import snap7

from conftest import HOST, free_port, make_config, server_binary


def run_once(tmp_path, cfg, *extra):
    path = tmp_path / "diag.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run([str(server_binary()), "run", "--config", str(path), "--pid-file", str(tmp_path / "run" / "s7commd.pid"),
                           "--state-dir", str(tmp_path / "state"), *extra], capture_output=True, text=True, timeout=30)


def test_port_in_use_names_the_holder(tmp_path):
    port = free_port()
    holder = subprocess.Popen(["python3", "-c", f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); print('ready', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        r = run_once(tmp_path, make_config(port))
        assert r.returncode == 3, r.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
        assert f"held by pid {holder.pid}" in r.stderr and "python3 -c" in r.stderr, r.stderr
        assert "server.port" in r.stderr and "Nothing was started" in r.stderr
    finally:
        holder.kill()
        holder.wait()


def test_address_not_on_this_host_lists_the_host_addresses(tmp_path):
    cfg = make_config(free_port())
    cfg["server"]["bind_address"] = "192.0.2.123"
    r = run_once(tmp_path, cfg)
    assert r.returncode == 2, r.stderr
    assert "server.bind_address" in r.stderr and "192.0.2.123" in r.stderr
    assert "127.0.0.1 (lo)" in r.stderr, r.stderr


def test_pdu_mismatch_and_client_over_the_limit_are_logged(start_server):
    h = start_server(pdu_size=480, server_overrides={"max_clients": 2})
    clients = []
    try:
        c = snap7.client.Client()
        c.set_param(snap7.type.Parameter.PDURequest, 960)
        c.connect(h.host, 0, 1, tcp_port=h.port)
        assert c.get_pdu_length() == 480
        clients.append(c)
        c2 = snap7.client.Client()
        c2.connect(h.host, 0, 1, tcp_port=h.port)
        clients.append(c2)
        extra = socket.create_connection((h.host, h.port), timeout=5)
        extra_port = extra.getsockname()[1]
        extra.settimeout(5)
        assert extra.recv(16) == b"", "the client over max_clients must be closed at once"
        extra.close()
        deadline = time.monotonic() + 5
        while f"refused 127.0.0.1:{extra_port}" not in h.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = h.log()
        assert "proposed PDU 960, agreed 480" in log
        assert f"refused 127.0.0.1:{extra_port}: max_clients (2)" in log, log
        # the others are undisturbed
        assert clients[0].db_read(1, 0, 2) is not None and clients[1].get_cpu_state() == "S7CpuStatusRun"
    finally:
        for c in clients:
            c.disconnect()


def doctor(tmp_path, cfg, *extra):
    import shutil
    path = tmp_path / "doctor.json"
    path.write_text(json.dumps(cfg))
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    shutil.chown(state, "s7commd", "s7commd")
    return subprocess.run([str(server_binary()), "doctor", "--config", str(path), "--pid-file", str(tmp_path / "run" / "s7commd.pid"),
                           "--state-dir", str(state), *extra], capture_output=True, text=True, timeout=30)


def test_doctor_finds_nothing_wrong_on_a_good_setup(tmp_path):
    r = doctor(tmp_path, make_config(free_port()))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    for check in ("configuration", "port 127.0.0.1:", "service user", "state directory", "shared memory"):
        assert any(l.startswith("ok") and check in l for l in lines), (check, r.stdout)
    as_json = json.loads(doctor(tmp_path, make_config(free_port()), "--json").stdout)
    assert {c["check"] for c in as_json} >= {"configuration", "service user", "shared memory"}


def test_doctor_reports_each_problem_with_a_fix(tmp_path):
    port = free_port()
    holder = subprocess.Popen(["python3", "-c", f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); print('ready', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        r = doctor(tmp_path, make_config(port), "--user", "no-such-user-s7")
        assert r.returncode == 1
        out = r.stdout
        assert f"PROBLEM port 127.0.0.1:{port}: in use" in out and f"pid {holder.pid}" in out, out
        assert "PROBLEM service user" in out and "adduser --system" in out, out
        bad = make_config(free_port())
        bad["server"]["pdu_size"] = 100
        r = doctor(tmp_path, bad)
        assert r.returncode == 1 and "PROBLEM configuration" in r.stdout and "server.pdu_size = 100" in r.stdout
        assert "fix: s7commd config check" in r.stdout
    finally:
        holder.kill()
        holder.wait()


def test_doctor_sees_the_running_instance_holding_the_port(tmp_path, start_server):
    h = start_server()
    pid_file = next(Path(h.log_path).parent.glob("s7commd-*.pid"))
    cfg_path = next(Path(h.log_path).parent.glob("s7commd-*.json"))
    r = subprocess.run([str(server_binary()), "doctor", "--config", str(cfg_path), "--pid-file", str(pid_file)],
                       capture_output=True, text=True, timeout=30)
    assert f"held by the running s7commd (pid {h.process.pid})" in r.stdout, r.stdout
    assert "PROBLEM port" not in r.stdout, r.stdout


def status(h, *extra):
    pid_file = Path(h.log_path).parent / (Path(h.log_path).stem + ".pid")
    return subprocess.run([str(server_binary()), "status", "--pid-file", str(pid_file), *extra],
                          capture_output=True, text=True, timeout=30)


def status_json(h):
    r = status(h, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["source"] == "control socket", report
    return report


def test_status_shows_each_client_with_its_pdu_and_counts_the_refused(start_server):
    h = start_server(pdu_size=480, server_overrides={"max_clients": 2})
    clients = []
    try:
        c = snap7.client.Client()
        c.set_param(snap7.type.Parameter.PDURequest, 960)
        c.connect(h.host, 0, 1, tcp_port=h.port)
        clients.append(c)
        c2 = snap7.client.Client()
        c2.connect(h.host, 0, 1, tcp_port=h.port)
        clients.append(c2)
        c.db_read(1, 0, 2)
        c.db_read(1, 0, 2)
        extra = socket.create_connection((h.host, h.port), timeout=5)
        extra.settimeout(5)
        assert extra.recv(16) == b""
        extra.close()
        report = status_json(h)
        assert report["state"] == "listening"
        assert report["endpoint"] == f"codes7://127.0.0.1:{h.port}"
        assert report["counters"]["refused_max_clients"] == 1, report
        assert report["max_clients"] == 2
        assert len(report["clients"]) == 2, report["clients"]
        mine = next(x for x in report["clients"] if x["pdu_proposed"] == 960)
        assert mine["pdu_agreed"] == 480
        assert mine["rack"] == 0 and mine["slot"] == 1 and mine["connection_type"] == "PG"
        assert mine["requests"] >= 2 and mine["errors"] == 0
        assert report["counters"]["requests_total"] >= 2
        assert {x["role"] for x in report["children"]} == {"S7 worker", "memory process"}

        r = status(h)
        assert r.returncode == 0, r.stderr
        out = r.stdout
        assert "state: listening" in out, out
        assert f"endpoint: codes7://127.0.0.1:{h.port}" in out and "rack and a slot" in out, out
        assert "refused over max_clients 1" in out, out
        rows = [l for l in out.splitlines() if l.strip().startswith("127.0.0.1:")]
        assert len(rows) == 2, out
        assert any("960→480" in l and "PG/0/1" in l for l in rows), out
        assert "the file on disk is what is in effect" in out, out
    finally:
        for c in clients:
            c.disconnect()


def test_status_counts_restarts_per_child(start_server):
    h = start_server()
    before = {x["role"]: x for x in status_json(h)["children"]}
    assert before["S7 worker"]["restarts"] == 0
    os.kill(before["S7 worker"]["pid"], 9)
    deadline = time.monotonic() + 15
    while True:
        now = {x["role"]: x for x in status_json(h)["children"]}
        if now["S7 worker"]["restarts"] == 1 and now["S7 worker"].get("pid") and now["S7 worker"]["pid"] != before["S7 worker"]["pid"]:
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.2)
    assert now["memory process"]["restarts"] == 0
    assert now["memory process"]["pid"] == before["memory process"]["pid"]
    out = status(h).stdout
    assert "S7 worker: pid" in out and "restarts 1" in out, out


def test_status_falls_back_to_the_state_file_without_the_control_socket(start_server):
    h = start_server()
    (Path(h.log_path).parent / "control.sock").unlink()
    r = status(h)
    assert r.returncode == 0, r.stderr
    assert "control socket did not answer" in r.stdout and f"codes7://127.0.0.1:{h.port}" in r.stdout, r.stdout
    report = json.loads(status(h, "--json").stdout)
    assert report["source"] == "state file" and report["source_problem"]


def test_status_exits_3_when_nothing_runs(tmp_path):
    r = subprocess.run([str(server_binary()), "status", "--pid-file", str(tmp_path / "none.pid")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 3


def test_control_socket_ends_a_peer_that_sends_anything_else(start_server):
    h = start_server()
    path = str(Path(h.log_path).parent / "control.sock")
    assert oct(os.stat(path).st_mode & 0o777) == "0o660"
    for junk in (b"garbage", b'{"attach":{}}'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(5)
            s.connect(path)
            s.send(junk)
            assert s.recv(100) == b""
    deadline = time.monotonic() + 5
    while "instead of a status request" not in h.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "control socket: pid" in h.log() and "not one of the runtime's messages" in h.log(), h.log()
    assert "sent attach instead of a status request" in h.log(), h.log()
    assert status_json(h)["state"] == "listening"


def test_journal_lines_carry_priority_and_fields(start_server):
    """Under systemd (JOURNAL_STREAM set) every line is one event with its syslog priority, so
    the journal keeps the level, and the peer as a key=value field."""
    h = start_server(env={"JOURNAL_STREAM": "8:12345"}, server_overrides={"bogus_key": 1})
    c = snap7.client.Client()
    c.connect(h.host, 0, 1, tcp_port=h.port)
    c.disconnect()
    deadline = time.monotonic() + 5
    while "set up communication" not in h.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [l for l in h.log().splitlines() if l]
    assert lines and all(l[0] == "<" and l[2] == ">" and l[1] in "2345678" for l in lines), lines[:5]
    assert any(l.startswith("<6>s7commd-worker: client") and " peer=127.0.0.1:" in l for l in lines), lines
    assert any(l.startswith("<4>s7commd: configuration: server.bogus_key") for l in lines), lines
