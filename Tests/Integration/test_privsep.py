"""The privilege-separated runtime, checked in /proc of the running processes (run as root):
the supervisor drops every capability after binding; the S7 worker and the memory process run
unprivileged with no capability and no-new-privileges; the worker holds the socket the
supervisor bound; both children map the same memfd; killed children come back without losing
the listener or PLC memory."""
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import snap7

from conftest import HOST, SERVICE_USER, WORKER_USER, ServerHandle, _wait_accepting, _wait_started, free_port, make_config, server_binary, socket_inodes

CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def status(pid):
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def children_of(pid):
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":  # a killed child not yet reaped is no child
                out.append(int(entry.name))
    return out


def role_of(pid):
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return args[1].decode() if len(args) > 1 else ""


def roles(supervisor_pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {role_of(p): p for p in children_of(supervisor_pid)}
        if "__worker" in found and "__memory" in found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"children of {supervisor_pid} not found: {children_of(supervisor_pid)}")


def listening_inode(port):
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if int(cols[1].split(":")[1], 16) == port and cols[3] == "0A":
                return cols[9]
    return None


def memfd_inodes(pid):
    return {line.split()[4] for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "memfd:s7commd-plc-memory" in line}


def read_only_mappings(pid):
    """The mappings of the read-only segment in pid: (inode, permissions, VmFlags) each."""
    found, current = [], None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0] and not line.startswith("VmFlags"):
            current = (fields[4], fields[1]) if "memfd:s7commd-plc-readonly" in line else None
        elif line.startswith("VmFlags:") and current:
            found.append((*current, set(fields[1:])))
    return found


def start(tmp_path, cfg, prefix=(), expect_listening=True):
    # The runtime directory (the pid file's) may be written by no one but its owner: root, or
    # the service user for a start without root.
    tmp_path.chmod(0o755)
    if prefix:
        shutil.chown(tmp_path, SERVICE_USER, SERVICE_USER)
    cfg_path = tmp_path / "privsep.json"
    cfg_path.write_text(json.dumps(cfg))
    cfg_path.chmod(0o644)
    log_path = tmp_path / "privsep.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*prefix, str(server_binary()), "run", "--config", str(cfg_path),
                                 "--pid-file", str(tmp_path / "s7commd.pid"), "--state-dir", str(tmp_path / "state")],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    h = ServerHandle(HOST, cfg["server"]["port"], proc, log_path, cfg)
    if expect_listening:
        # Not just a TCP connect: the kernel accepts into the backlog as soon as the supervisor
        # binds, before it drops privileges.
        _wait_started(h, 15, single_process=False)
    return h


CAP_SETID = (1 << 5) | (1 << 6) | (1 << 7)  # CAP_KILL, CAP_SETGID, CAP_SETUID


def check_runtime(h, expected_uid, bounding_empty=True, own_worker=False):
    """`own_worker`: the start could give the S7 worker its own user (root, or CAP_SETUID,
    CAP_SETGID and CAP_KILL): the supervisor keeps exactly those three for it and nothing else,
    and the children's bounding set is those three (they cannot drop it without CAP_SETPCAP);
    no child can ever hold one: every other set is empty and no-new-privileges is set."""
    sup = status(h.process.pid)
    # The supervisor is one thread: one poll loop, no async runtime, no Dispatch.
    assert sup["Threads"] == "1", f"the supervisor runs {sup['Threads']} threads"
    kept = CAP_SETID if own_worker else 0
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        want = kept if key in ("CapPrm", "CapEff") else 0
        assert int(sup[key], 16) == want, f"supervisor {key} = {sup[key]}, not {want:x}\n{h.log()}"
    if own_worker and bounding_empty:
        assert int(sup["CapBnd"], 16) == CAP_SETID, f"supervisor CapBnd = {sup['CapBnd']}"
    worker_uid = pwd.getpwnam(WORKER_USER).pw_uid if own_worker else expected_uid
    kids = roles(h.process.pid)
    for role, pid in kids.items():
        st = status(pid)
        uids = st["Uid"].split()
        want_uid = worker_uid if role == "__worker" else expected_uid
        assert uids[0] != "0" and all(u == str(want_uid) for u in uids), f"{role} runs as {st['Uid']}, not {want_uid}"
        if role == "__worker" and own_worker:
            gid = str(pwd.getpwnam(WORKER_USER).pw_gid)
            assert all(g == gid for g in st["Gid"].split()) and st["Groups"] == "", f"worker Gid {st['Gid']} Groups {st['Groups']}"
        for key in CAP_SETS:
            if key == "CapBnd" and not bounding_empty:
                continue
            want = CAP_SETID if key == "CapBnd" and own_worker else 0
            assert int(st[key], 16) == want, f"{role} {key} = {st[key]}"
        assert st["NoNewPrivs"] == "1", f"{role} NoNewPrivs = {st['NoNewPrivs']}"
    # PR_SET_DUMPABLE 0 in all three: another process of the same user may not read their
    # memory or environment (ptrace access mode), while it may read a dumpable one's.
    user = pwd.getpwuid(expected_uid).pw_name
    as_user = ["setpriv", f"--reuid={user}", f"--regid={pwd.getpwuid(expected_uid).pw_gid}", "--clear-groups"]
    with subprocess.Popen([*as_user, "sleep", "30"]) as dumpable:
        try:
            deadline = time.monotonic() + 5
            while status(dumpable.pid)["Uid"].split()[0] != str(expected_uid) and time.monotonic() < deadline:
                time.sleep(0.02)  # until setpriv has become the user and exec'd sleep
            for role, pid in [("control: a dumpable sleep", dumpable.pid), ("supervisor", h.process.pid), *kids.items()]:
                r = subprocess.run([*as_user, "head", "-c", "1", f"/proc/{pid}/environ"], capture_output=True, text=True, timeout=10)
                if role.startswith("control"):
                    assert r.returncode == 0, f"{role}: {r.stderr}"
                else:
                    assert r.returncode != 0 and "Permission denied" in r.stderr, f"{role} (pid {pid}) is dumpable: {r}"
        finally:
            dumpable.kill()
    listener = listening_inode(h.port)
    assert listener is not None, "no listening socket"
    # The kernel queues connections on the supervisor's socket before the worker serves, so
    # wait for the worker to have received the socket and mapped the segment.
    deadline = time.monotonic() + 5
    while (listener not in socket_inodes(kids["__worker"]) or not memfd_inodes(kids["__worker"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener in socket_inodes(kids["__worker"]), "the worker does not hold the listening socket"
    assert listener in socket_inodes(h.process.pid), "the supervisor no longer holds the listening socket"
    worker_memfd, memory_memfd = memfd_inodes(kids["__worker"]), memfd_inodes(kids["__memory"])
    assert worker_memfd and worker_memfd == memory_memfd, (worker_memfd, memory_memfd)
    # DB2 (read_only, storage of its own) is in the second segment. The memory process maps it
    # read-write; the worker maps it read-only from an O_RDONLY descriptor, so the kernel never
    # lets it become writable: no "mw" (VM_MAYWRITE) in its VmFlags, which is what makes
    # mprotect(PROT_WRITE) fail with EACCES.
    if any(db.get("read_only") and "mapping" not in db for db in h.config["data_blocks"]):
        worker_ro, memory_ro = read_only_mappings(kids["__worker"]), read_only_mappings(kids["__memory"])
        assert len(worker_ro) == 1 and len(memory_ro) == 1, (worker_ro, memory_ro)
        (w_inode, w_perms, w_flags), (m_inode, m_perms, m_flags) = worker_ro[0], memory_ro[0]
        assert w_inode == m_inode, "the worker maps another read-only segment than the memory process"
        assert w_perms == "r--s" and "mw" not in w_flags and "wr" not in w_flags, (w_perms, w_flags)
        assert m_perms == "rw-s" and "mw" in m_flags, (m_perms, m_flags)
    return kids


def client(h):
    c = snap7.client.Client()
    c.connect(h.host, 0, 1, tcp_port=h.port)
    return c


def stop(h):
    h.process.send_signal(signal.SIGTERM)
    assert h.process.wait(timeout=15) == 0, h.log()


@pytest.fixture(autouse=True)
def as_root():
    if os.geteuid() != 0:
        pytest.fail("these tests start s7commd as root and as the service user (setpriv): run them as root, as CI does")


def test_root_start_drops_all_but_what_the_workers_own_user_takes(tmp_path):
    h = start(tmp_path, make_config(free_port()))
    try:
        kids = check_runtime(h, pwd.getpwnam(SERVICE_USER).pw_uid, own_worker=True)
        # Only what starting and stopping the worker as its own user takes.
        assert int(status(h.process.pid)["CapBnd"], 16) == CAP_SETID
        c = client(h)
        c.db_write(1, 0, bytearray(b"\x11\x22\x33\x44"))
        assert c.db_read(1, 0, 4) == bytearray(b"\x11\x22\x33\x44")
        c.disconnect()
        assert "became s7commd" in h.log()
        assert kids
    finally:
        stop(h)


def privileged_port():
    for port in range(1000, 200, -7):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port below 1024")


def test_non_root_with_ambient_capability(tmp_path):
    """As systemd starts it: ambient CAP_NET_BIND_SERVICE, plus CAP_SETPCAP so the bounding set
    can be emptied too; afterwards no process holds anything."""
    user = pwd.getpwnam(SERVICE_USER)
    cfg = make_config(privileged_port())
    prefix = ("setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
              "--inh-caps=+net_bind_service,+setpcap", "--ambient-caps=+net_bind_service,+setpcap")
    h = start(tmp_path, cfg, prefix)
    try:
        check_runtime(h, user.pw_uid)
        assert int(status(h.process.pid)["CapBnd"], 16) == 0
        c = client(h)
        assert c.get_cpu_state() == "S7CpuStatusRun"
        c.disconnect()
    finally:
        stop(h)


def test_non_root_with_only_the_bind_capability(tmp_path):
    """Without CAP_SETPCAP the bounding set cannot be emptied: every other set is 0, NNP is set,
    and the log says why the bounding set stays."""
    user = pwd.getpwnam(SERVICE_USER)
    cfg = make_config(privileged_port())
    prefix = ("setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
              "--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service")
    h = start(tmp_path, cfg, prefix)
    try:
        check_runtime(h, user.pw_uid, bounding_empty=False)
        assert "emptying it needs CAP_SETPCAP" in h.log()
    finally:
        stop(h)


def test_non_root_without_capability_is_a_clear_error(tmp_path):
    user = pwd.getpwnam(SERVICE_USER)
    cfg = make_config(privileged_port())
    prefix = ("setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups")
    h = start(tmp_path, cfg, prefix, expect_listening=False)
    rc = h.process.wait(timeout=15)
    log = h.log()
    assert rc == 4, log
    sysctl = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip()
    assert "CAP_NET_BIND_SERVICE not held" in log, log  # the missing capability, by name
    assert f"net.ipv4.ip_unprivileged_port_start is {sysctl}" in log, log  # the sysctl's value on this host
    assert "1102" in log, log  # the way out: a port above the sysctl's value
    assert listening_inode(cfg["server"]["port"]) is None


def test_killed_children_come_back_with_listener_and_memory(tmp_path):
    h = start(tmp_path, make_config(free_port()))
    try:
        c = client(h)
        c.db_write(1, 0, bytearray(b"before"))
        c.disconnect()
        for role in ("__worker", "__memory", "__worker"):
            victim = roles(h.process.pid)[role]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 2.0
            while True:
                try:
                    c = client(h)
                    assert c.db_read(1, 0, 6) == bytearray(b"before")
                    c.db_write(1, 6, bytearray(role.encode()[:2]))
                    c.disconnect()
                    break
                except Exception:
                    assert time.monotonic() < deadline, f"no client could reconnect within 2 s after killing the {role}:\n{h.log()}"
                    time.sleep(0.05)
            deadline = time.monotonic() + 5
            while roles(h.process.pid)[role] == victim and time.monotonic() < deadline:
                time.sleep(0.05)
            assert roles(h.process.pid)[role] != victim
        assert h.log().count("killed by signal 9") == 3
        check_runtime(h, pwd.getpwnam(SERVICE_USER).pw_uid, own_worker=True)
    finally:
        stop(h)


def mem(h, op, *args):
    sock = str(Path(h.log_path).parent / "memory.sock")
    return subprocess.run([str(server_binary()), "mem", op, "--socket", sock, *args], capture_output=True, text=True, timeout=20)


def retained_config(tmp_path):
    cfg = make_config(free_port())
    cfg["data_blocks"][0]["retain"] = True
    return cfg


def test_client_and_plc_side_see_each_other(tmp_path):
    h = start(tmp_path, make_config(free_port()))
    try:
        c = client(h)
        c.db_write(1, 10, bytearray(b"\x12\x34"))
        r = mem(h, "read", "DB1.DBW10", "--type", "word")
        assert r.returncode == 0 and "= 4660" in r.stdout, r.stdout + r.stderr
        r = mem(h, "write", "DB1.DBD20", "2.5")
        assert r.returncode == 0, r.stderr
        import struct
        assert struct.unpack(">f", c.db_read(1, 20, 4))[0] == 2.5
        r = mem(h, "write", "M0.3", "true")
        assert r.returncode == 0, r.stderr
        assert c.read_area(snap7.type.Areas.MK, 0, 0, 1)[0] & 0x08
        # The PLC side may write read-only data; S7 clients may not.
        assert mem(h, "write", "DB2.DBW0", "7").returncode == 0
        assert c.db_read(2, 0, 2) == bytearray(b"\x00\x07")
        bad = mem(h, "read", "DB99.DBW0")
        assert bad.returncode != 0 and "DB99 does not exist" in bad.stderr
        c.disconnect()
    finally:
        stop(h)


def test_no_torn_values_with_eight_clients_and_the_plc_side(tmp_path):
    """8 clients write and read the same REAL and DINT items while the PLC side writes them
    too; every value written has four equal bytes, so a torn read shows mixed bytes."""
    import threading
    h = start(tmp_path, make_config(free_port()))
    offsets = (0, 4, 8)
    errors, torn, reads = [], [], [0]
    stop_at = time.monotonic() + 3.0

    def hammer(n):
        try:
            c = client(h)
            i = 0
            while time.monotonic() < stop_at:
                off = offsets[i % len(offsets)]
                b = (n * 16 + i) % 250 + 1
                c.db_write(1, off, bytearray([b] * 4))
                got = c.db_read(1, offsets[(i + 1) % len(offsets)], 4)
                reads[0] += 1
                if len(set(got)) != 1:
                    torn.append(bytes(got))
                i += 1
            c.disconnect()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    plc_writes = 0
    while time.monotonic() < stop_at:
        for off in offsets:
            b = 0x7F - plc_writes % 60
            value = int.from_bytes(bytes([b] * 4), "big", signed=True)
            r = mem(h, "write", f"DB1.DBD{off}", "--", str(value))
            assert r.returncode == 0, r.stderr
            got = mem(h, "read", f"DB1.DBD{off}", "--json")
            octets = json.loads(got.stdout)["bytes"].split()
            if len(set(octets)) != 1:
                torn.append(("plc", octets))
            plc_writes += 1
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        assert reads[0] > 500 and plc_writes > 10, (reads[0], plc_writes)
        assert not torn, f"{len(torn)} torn reads, e.g. {torn[:3]}"
    finally:
        stop(h)


def test_retained_db_survives_kill_of_the_whole_tree(tmp_path):
    h = start(tmp_path, retained_config(tmp_path))
    state = Path(h.log_path).parent
    c = client(h)
    c.db_write(1, 0, bytearray(b"RETAIN"))
    c.disconnect()
    time.sleep(1.0)  # the stated bound: on disk within 250 ms plus one write and fsync
    kids = roles(h.process.pid)
    for pid in [h.process.pid, *kids.values()]:
        os.kill(pid, signal.SIGKILL)
    h.process.wait(timeout=10)
    time.sleep(0.3)
    h2 = start(tmp_path, retained_config(tmp_path))
    try:
        c = client(h2)
        assert c.db_read(1, 0, 6) == bytearray(b"RETAIN"), h2.log()
        c.disconnect()
        assert "restored retained data of DB1" in h2.log()
    finally:
        stop(h2)
    assert state.exists()


def test_retained_read_only_db_is_restored_and_taken_over(tmp_path):
    """A retained read-only DB lives in the second segment: the PLC side writes it, clients
    may not, a restart restores it (the memory process writes it while restoring), and a
    memory process that takes the segments over can still write it."""
    cfg = make_config(free_port())
    cfg["data_blocks"][1]["retain"] = True  # DB2, read_only
    h = start(tmp_path, cfg)
    try:
        assert mem(h, "write", "DB2.DBW0", "4660").returncode == 0
        c = client(h)
        with pytest.raises(RuntimeError):
            c.db_write(2, 0, bytearray(b"\x00\x00"))
        assert c.db_read(2, 0, 2) == bytearray(b"\x12\x34")
        c.disconnect()
        time.sleep(1.0)  # on disk within 250 ms plus one write and fsync
    finally:
        stop(h)
    h = start(tmp_path, cfg)
    try:
        assert "restored retained data of DB2" in h.log(), h.log()
        c = client(h)
        assert c.db_read(2, 0, 2) == bytearray(b"\x12\x34"), h.log()
        c.disconnect()
        # A restarted memory process gets both segments read-write back from the supervisor.
        victim = roles(h.process.pid)["__memory"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while (roles(h.process.pid).get("__memory") in (None, victim) or "took over the PLC memory segment" not in h.log()) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "took over the PLC memory segment (51456 bytes, read-only segment 64 bytes)" in h.log(), h.log()
        r = mem(h, "write", "DB2.DBW2", "--", "-2")
        assert r.returncode == 0, r.stdout + r.stderr
        c = client(h)
        assert c.db_read(2, 0, 4) == bytearray(b"\x12\x34\xff\xfe")
        c.disconnect()
        check_runtime(h, pwd.getpwnam(SERVICE_USER).pw_uid, own_worker=True)
    finally:
        stop(h)


def test_corrupt_retained_file_is_reported_and_set_aside(tmp_path):
    cfg = retained_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / "retain.bin").write_bytes(b"S7CMDRET" + b"\x00" * 40)
    tmp_path.chmod(0o755)
    import shutil
    shutil.chown(state, SERVICE_USER, SERVICE_USER)
    cfg_path = tmp_path / "privsep.json"
    cfg_path.write_text(json.dumps(cfg))
    log_path = tmp_path / "privsep.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(server_binary()), "run", "--config", str(cfg_path), "--pid-file", str(tmp_path / "s7commd.pid"),
                                 "--state-dir", str(state)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    h = ServerHandle(HOST, cfg["server"]["port"], proc, log_path, cfg)
    _wait_accepting(h, 15)
    try:
        deadline = time.monotonic() + 5
        while "moved aside" not in h.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = h.log()
        assert "is corrupt" in log and "moved aside" in log and str(state / "retain.bin") in log, log
        assert list(state.glob("retain.bin.corrupt-*")), "the corrupt file must be kept, not deleted"
        c = client(h)
        assert c.db_read(1, 0, 4) == bytearray(4)
        c.disconnect()
    finally:
        stop(h)


def test_worker_killed_under_load_loses_no_acknowledged_write(tmp_path):
    """A client writes a rising counter as fast as it can; the worker is killed mid-stream.
    Every write the client saw acknowledged is in PLC memory afterwards."""
    import struct
    import threading
    h = start(tmp_path, make_config(free_port()))
    acknowledged = [0]
    done = threading.Event()

    def writer():
        c = client(h)
        n = 0
        try:
            while not done.is_set():
                n += 1
                c.db_write(1, 100, bytearray(struct.pack(">i", n)))
                acknowledged[0] = n
        except Exception:  # noqa: BLE001 - the worker was killed under it
            pass

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.5)
        os.kill(roles(h.process.pid)["__worker"], signal.SIGKILL)
        t.join(timeout=10)
        done.set()
        assert acknowledged[0] > 10, "the writer did not get going"
        deadline = time.monotonic() + 2.0
        while True:
            try:
                c = client(h)
                break
            except Exception:  # noqa: BLE001
                assert time.monotonic() < deadline, "no reconnect within 2 s"
                time.sleep(0.05)
        value = struct.unpack(">i", c.db_read(1, 100, 4))[0]
        c.disconnect()
        assert value >= acknowledged[0], (value, acknowledged[0])
    finally:
        done.set()
        stop(h)


def test_memory_socket_refuses_garbage_and_strangers(tmp_path):
    h = start(tmp_path, make_config(free_port()))
    sock_path = str(Path(h.log_path).parent / "memory.sock")
    try:
        deadline = time.monotonic() + 5
        while not Path(sock_path).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(sock_path)
        s.send(b"\x00garbage, not a message")
        s.settimeout(5)
        assert s.recv(100) == b"", "garbage must end the peer"
        s.close()
        # A user who is neither root, the service user nor in its group is refused.
        stranger = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                   str(server_binary()), "mem", "read", "DB1.DBW0", "--socket", sock_path],
                                  capture_output=True, text=True, timeout=20)
        # (the socket file's mode 0660 already stops it; the uid check behind it is the second line)
        assert stranger.returncode != 0 and "permission denied" in stranger.stderr.lower(), stranger.stderr
        log = h.log()
        assert "sent something outside the protocol (tag 0x0 is no message a memory client sends); closed" in log, log
        # still serving
        assert mem(h, "read", "DB1.DBW0").returncode == 0
        c = client(h)
        c.disconnect()
    finally:
        stop(h)


def test_socket_activation_uses_the_passed_socket(tmp_path):
    """As systemd's s7commd.socket would: the supervisor adopts the listening socket it is
    handed (LISTEN_FDS) and binds nothing."""
    port = free_port()
    cfg = make_config(1102 if port != 1102 else 1103)  # server.port differs: it must be ignored
    tmp_path.chmod(0o755)
    cfg_path = tmp_path / "privsep.json"
    cfg_path.write_text(json.dumps(cfg))
    log_path = tmp_path / "privsep.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["systemd-socket-activate", "-l", f"{HOST}:{port}", str(server_binary()), "run",
                                 "--config", str(cfg_path), "--pid-file", str(tmp_path / "s7commd.pid"),
                                 "--state-dir", str(tmp_path / "state")],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    cfg["server"]["port"] = port
    h = ServerHandle(HOST, port, proc, log_path, cfg)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                c = client(h)  # the first connection makes systemd-socket-activate start s7commd
                break
            except Exception:  # noqa: BLE001
                assert time.monotonic() < deadline, h.log()
                time.sleep(0.2)
        assert c.get_cpu_state() == "S7CpuStatusRun"
        c.disconnect()
        assert "using the listening socket systemd passed" in h.log(), h.log()
        assert listening_inode(1102) is None and listening_inode(1103) is None
    finally:
        stop(h)
