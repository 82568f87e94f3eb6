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

from conftest import HOST, free_port, make_config, port_held_by_another_process, server_binary


def run_once(tmp_path, cfg, *extra):
    path = tmp_path / "diag.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run([str(server_binary()), "run", "--config", str(path), "--pid-file", str(tmp_path / "run" / "s7commd.pid"),
                           "--state-dir", str(tmp_path / "state"), *extra], capture_output=True, text=True, timeout=30)


def test_port_in_use_names_the_holder(tmp_path):
    port = free_port()
    with port_held_by_another_process(port) as holder:
        r = run_once(tmp_path, make_config(port))
        assert r.returncode == 3, r.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
        assert f"held by pid {holder.pid}" in r.stderr and "python3 -c" in r.stderr, r.stderr
        assert "server.port" in r.stderr and "Nothing was started" in r.stderr


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
        assert report["counters"]["refused"]["max_clients"] == 1, report
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
        assert "refused: max_clients 1," in out, out
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
    control = Path(h.log_path).parent / "control.sock"
    # The listener accepts (start_server returns) a moment before the supervisor's control socket exists.
    deadline = time.monotonic() + 10
    while not control.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    control.unlink()
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
    # Garbage, the old JSON request, the memory socket's attach request (another peer's
    # message), and a status request with a byte too many.
    for junk in (b"garbage", b'{"statusRequest":{}}', b"\x40", b"\x30\x00"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(5)
            s.connect(path)
            s.send(junk)
            assert s.recv(100) == b""
    expected = ["tag 0x67 is no message a control client sends", "tag 0x7b is no message a control client sends",
                "tag 0x40 is no message a control client sends", "1 bytes follow the end of a status-request message"]
    deadline = time.monotonic() + 5
    while not all(e in h.log() for e in expected) and time.monotonic() < deadline:
        time.sleep(0.05)
    for e in expected:
        assert f"sent something outside the protocol ({e}); closed" in h.log(), h.log()
    assert "control socket: pid" in h.log(), h.log()
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


def test_33rd_client_is_refused_logged_and_counted_with_max_clients_32(start_server):
    """At the shipped default of 32, the 33rd connection is closed at once, named in the log
    with the limit, counted in status, and the 32 connected clients keep working."""
    h = start_server(server_overrides={"max_clients": 32})
    clients = []
    try:
        for i in range(32):
            c = snap7.client.Client()
            c.connect(h.host, 0, 1, tcp_port=h.port)
            clients.append(c)
            assert c.get_connected(), f"client {i + 1} of 32 did not connect"
            assert c.get_cpu_state() == "S7CpuStatusRun", f"client {i + 1} of 32"
        extra = socket.create_connection((h.host, h.port), timeout=5)
        extra_port = extra.getsockname()[1]
        try:
            extra.settimeout(5)
            assert extra.recv(16) == b"", "the 33rd client must be closed at once"
        finally:
            extra.close()
        wanted = f"refused 127.0.0.1:{extra_port}: max_clients (32)"
        deadline = time.monotonic() + 5
        while wanted not in h.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wanted in h.log(), h.log()[-4000:]
        report = status_json(h)
        assert report["counters"]["refused"]["max_clients"] == 1, report["counters"]
        assert report["max_clients"] == 32, report
        assert len(report["clients"]) == 32, report["clients"]
        assert f"127.0.0.1:{extra_port}" not in {x["peer"] for x in report["clients"]}
        for i, c in enumerate(clients):
            assert len(c.db_read(1, 0, 2)) == 2, f"client {i + 1} of 32 after the refusal"
    finally:
        for c in clients:
            c.disconnect()


OUTSIDER = "s7commd-outsider"

# Run as the outsider: connect to the control socket, send a status request, report what came back.
OUTSIDER_PROBE = r"""
import json, os, socket, sys
out = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except OSError as e:
    out["connect_error"] = repr(e)
else:
    # The supervisor closes with the request unread, so the kernel may report the close as a
    # reset (on send or recv) rather than an end of file: both mean "closed without an answer".
    try:
        s.send(b"\x30")
        out["reply"] = s.recv(200000).decode("latin-1")
    except (ConnectionResetError, BrokenPipeError) as e:
        out["reply"] = ""
        out["closed_by"] = type(e).__name__
    except OSError as e:
        out["error"] = repr(e)
print(json.dumps(out))
"""


def test_control_socket_refuses_a_peer_outside_the_service_group(start_server):
    """The control socket trusts root, the service user and its group by SO_PEERCRED, not only
    by the file mode: with the file opened up to 0666, another user still gets no answer."""
    import pwd
    h = start_server()
    run_dir = Path(h.log_path).parent
    path = str(run_dir / "control.sock")
    assert oct(os.stat(path).st_mode & 0o777) == "0o660"
    request = b"\x30"  # ControlRequest.status (Sources/S7IPC/Messages.swift)

    # Control: root sending these bytes gets the status, so an empty answer below is a refusal.
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(5)
        s.connect(path)
        s.send(request)
        answer = s.recv(200000)
    # ControlReply.status: its tag, then the report, which holds the endpoint as text.
    assert answer[:1] == b"\x31" and f"codes7://127.0.0.1:{h.port}".encode() in answer, answer

    created = subprocess.run(["id", OUTSIDER], capture_output=True).returncode != 0
    if created:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--user-group", OUTSIDER], check=True)
    try:
        outsider = pwd.getpwnam(OUTSIDER)
        service = pwd.getpwnam("s7commd")
        assert outsider.pw_gid != service.pw_gid
        as_outsider = ["setpriv", "--reuid", OUTSIDER, "--regid", str(outsider.pw_gid), "--clear-groups"]

        os.chmod(path, 0o666)  # let connect() through, so the peer-credential check decides
        try:
            child = subprocess.run([*as_outsider, "python3", "-c", OUTSIDER_PROBE, path],
                                   capture_output=True, text=True, timeout=30)
        finally:
            os.chmod(path, 0o660)
        assert child.returncode == 0, child.stderr
        seen = json.loads(child.stdout)
        assert seen["uid"] == outsider.pw_uid and seen["gid"] == outsider.pw_gid and seen["groups"] == [], seen
        assert "connect_error" not in seen and "error" not in seen, seen  # a timeout lands in "error"
        assert seen["reply"] == "", f"the outsider got an answer: {seen}"

        refusal = "control socket: refused a peer that is neither root, the service user, nor in its group"
        deadline = time.monotonic() + 5
        while refusal not in h.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refusal in h.log(), h.log()[-4000:]
        assert status_json(h)["state"] == "listening"

        # The same user with the service group as a supplementary group (found through /proc,
        # SO_PEERCRED gives only the effective gid) is trusted, at the socket's own mode 0660.
        member = subprocess.run(["setpriv", "--reuid", OUTSIDER, "--regid", str(outsider.pw_gid),
                                 "--groups", str(service.pw_gid), "python3", "-c", OUTSIDER_PROBE, path],
                                capture_output=True, text=True, timeout=30)
        assert member.returncode == 0, member.stderr
        got = json.loads(member.stdout)
        assert got.get("reply", "")[:1] == "\x31", got
        assert status_json(h)["state"] == "listening"

        # With the socket at 0660, `s7commd status` as the outsider says why it has no live data.
        # It falls back to the state file and exits 0 (not asserted: arguably it should fail).
        pid_file = run_dir / (Path(h.log_path).stem + ".pid")
        r = subprocess.run([*as_outsider, str(server_binary()), "status", "--pid-file", str(pid_file)],
                           capture_output=True, text=True, timeout=30)
        said = r.stdout + r.stderr
        assert "the control socket did not answer" in said, said
        assert f"could not connect to {path} (connect): Permission denied" in said, said
        assert "only root, the service user and members of its group s7commd may use it" in said and "sudo adduser $USER s7commd" in said, said
    finally:
        if created:
            subprocess.run(["userdel", OUTSIDER], check=False)


RETAINED = {"db_number": 7, "size_bytes": 16, "retain": True}


def test_open_files_limit_too_low_for_max_clients_stops_the_start(tmp_path):
    """A hard RLIMIT_NOFILE below what server.max_clients needs (max_clients + 64): nothing
    starts, exit status 9, and the message names both numbers and LimitNOFILE=. With a hard
    limit that suffices, the soft limit is raised and the server serves."""
    cfg = make_config(free_port())
    cfg["server"]["max_clients"] = 100
    path = tmp_path / "many.json"
    path.write_text(json.dumps(cfg))
    args = [str(server_binary()), "run", "--config", str(path), "--pid-file", str(tmp_path / "run" / "s7commd.pid"),
            "--state-dir", str(tmp_path / "state")]
    r = subprocess.run(["prlimit", "--nofile=150:150", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 9, r.stderr
    assert "server.max_clients 100 needs up to 164 open descriptors" in r.stderr, r.stderr
    assert "the hard open-files limit (RLIMIT_NOFILE) is 150" in r.stderr and "LimitNOFILE=164" in r.stderr, r.stderr
    assert "Nothing was started" in r.stderr, r.stderr
    with socket.socket() as s:
        assert s.connect_ex((HOST, cfg["server"]["port"])) != 0, "nothing may listen after the refused start"

    p = subprocess.Popen(["prlimit", "--nofile=100:2000", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                c = snap7.client.Client()
                c.connect(HOST, 0, 1, tcp_port=cfg["server"]["port"])
                assert len(c.db_read(1, 0, 4)) == 4
                c.disconnect()
                break
            except RuntimeError:
                assert p.poll() is None and time.monotonic() < deadline, p.stdout.read() if p.poll() is not None else "not serving"
                time.sleep(0.2)
        children = [c for task in Path(f"/proc/{p.pid}/task").iterdir() for c in (task / "children").read_text().split()]
        worker = next(int(c) for c in children if Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")[1] == b"__worker")
        soft = next(line.split()[3] for line in Path(f"/proc/{worker}/limits").read_text().splitlines()
                    if line.startswith("Max open files"))
        assert int(soft) >= 164, f"the worker's soft open-files limit is {soft}, below max_clients 100 + 64"
    finally:
        p.terminate()
        p.wait(timeout=15)


def test_state_directory_not_writable_stops_the_start(tmp_path):
    """Started as the service user (no root) with a retained DB and a state directory it may not
    write: nothing starts, exit status 7, and the message names the directory and the chown."""
    import pwd
    user = pwd.getpwnam("s7commd")
    locked = tmp_path / "locked-state"
    locked.mkdir(mode=0o755)  # owned by root
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.chown(run_dir, user.pw_uid, user.pw_gid)
    cfg = make_config(free_port())
    cfg["data_blocks"].append(RETAINED)
    path = tmp_path / "retained.json"
    path.write_text(json.dumps(cfg))
    r = subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
                        str(server_binary()), "run", "--config", str(path), "--pid-file", str(run_dir / "s7commd.pid"),
                        "--state-dir", str(locked)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 7, r.stderr
    assert f"cannot keep retained data in the state directory {locked}" in r.stderr, r.stderr
    assert f"uid {user.pw_uid} may not write there (Permission denied)" in r.stderr, r.stderr
    assert "DB7 is configured" in r.stderr and f"chown s7commd: {locked}" in r.stderr and "Nothing was started" in r.stderr, r.stderr

    # a directory it may write: the same start gets past the check (and is stopped again)
    os.chown(locked, user.pw_uid, user.pw_gid)
    p = subprocess.Popen(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
                          str(server_binary()), "run", "--config", str(path), "--pid-file", str(run_dir / "s7commd.pid"),
                          "--state-dir", str(locked)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", cfg["server"]["port"]), timeout=1).close()
                break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline, p.stdout.read() if p.poll() is not None else "not listening"
                time.sleep(0.1)
    finally:
        p.terminate()
        p.wait(timeout=15)


SECCOMP_DENY_MEMFD = r"""
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
/* Runs argv[1...] with memfd_create refused (EPERM), as a strict seccomp profile would. */
int main(int argc, char **argv) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_memfd_create, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (argc < 2 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp");
        return 99;
    }
    execv(argv[1], argv + 1);
    perror("execv");
    return 98;
}
"""


def test_shared_memory_unavailable_stops_the_start(tmp_path):
    """memfd_create refused by a seccomp filter (as a container profile may do): nothing starts,
    exit status 8, and the message says what is needed; doctor reports the same."""
    src = tmp_path / "deny_memfd.c"
    src.write_text(SECCOMP_DENY_MEMFD)
    helper = tmp_path / "deny_memfd"
    subprocess.run(["gcc", "-O1", "-o", str(helper), str(src)], check=True)
    cfg = make_config(free_port())
    path = tmp_path / "shm.json"
    path.write_text(json.dumps(cfg))
    r = subprocess.run([str(helper), str(server_binary()), "run", "--config", str(path), "--pid-file", str(tmp_path / "run" / "s7commd.pid"),
                        "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 8, r.stdout + r.stderr
    assert "cannot create the shared PLC memory segment" in r.stderr and "memfd_create" in r.stderr, r.stderr
    assert "Operation not permitted" in r.stderr and "allow memfd_create" in r.stderr and "Nothing was started" in r.stderr, r.stderr
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", cfg["server"]["port"])) != 0, "nothing may listen after the refused start"

    d = subprocess.run([str(helper), str(server_binary()), "doctor", "--config", str(path), "--pid-file", str(tmp_path / "run" / "s7commd.pid"),
                        "--state-dir", str(tmp_path / "state"), "--json"], capture_output=True, text=True, timeout=30)
    assert d.returncode == 1
    shm = next(c for c in json.loads(d.stdout) if c["check"] == "shared memory")
    assert shm["status"] == "problem" and "Operation not permitted" in shm["detail"], shm


def test_logging_switches_are_honoured(start_server):
    """logging.log_connections, log_errors and log_data_access each switch their own lines."""
    quiet = start_server(server_overrides={"ping_timeout_ms": 400},
                         config_overrides={"logging": {"log_connections": False, "log_errors": True, "log_data_access": True}})
    c = snap7.client.Client()
    c.connect(quiet.host, 0, 1, tcp_port=quiet.port)
    c.db_read(1, 0, 4)
    c.db_write(1, 0, bytearray(b"\x00\x01"))
    try:
        c.plc_stop()
    except RuntimeError:
        pass
    time.sleep(1.0)  # past ping_timeout_ms: the server drops the idle client
    c.disconnect()
    deadline = time.monotonic() + 5
    while "disconnected: no request for" not in quiet.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = quiet.log()
    assert " read DB1.DBB0" in log or " read DB1" in log, log          # log_data_access
    assert " wrote DB1" in log, log
    assert "refused: PLC control is not allowed" in log, log            # log_errors
    assert "disconnected: no request for 400 ms (server.ping_timeout_ms=400)" in log, log  # a drop is an error event
    assert " connected (" not in log and "set up communication" not in log and "opened an ISO connection" not in log, log

    chatty = start_server(config_overrides={"logging": {"log_connections": True, "log_errors": False, "log_data_access": False}})
    c = snap7.client.Client()
    c.set_param(snap7.type.Parameter.PDURequest, 960)
    c.connect(chatty.host, 0, 1, tcp_port=chatty.port)
    c.db_read(1, 0, 4)
    try:
        c.plc_stop()
    except RuntimeError:
        pass
    c.disconnect()
    deadline = time.monotonic() + 5
    while "disconnected: " not in chatty.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = chatty.log()
    assert " connected (" in log and "proposed PDU 960, agreed 480" in log and "disconnected: " in log, log
    assert "refused: PLC control" not in log and " read DB1" not in log, log
