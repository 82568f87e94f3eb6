"""A compromised S7 worker: as root, gdb (Debian's) attaches to the running worker and makes it
call, one at a time, what an attacker with code execution would. Each call must fail (an errno,
or SIGSYS from the seccomp filter), the siblings and files must be unchanged, and a worker the
sandbox ended must be serving again within 2 s with no acknowledged write lost."""
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SERVICE_USER, WORKER_USER, free_port, make_config, server_binary
from test_privsep import client, roles, start, status, stop

EACCES = 13
EPERM = 1


@pytest.fixture(autouse=True)
def root_and_gdb():
    if os.geteuid() != 0:
        pytest.fail("these tests attach gdb to s7commd's worker: run them as root, as CI does")
    if shutil.which("gdb") is None:
        pytest.fail("gdb is missing: scripts/install-deps installs it (apt-get install gdb)")


def gdb(pid, *commands):
    """Runs gdb commands in process `pid` (batch mode); returns gdb's output."""
    args = ["gdb", "-nx", "-batch", "-p", str(pid), "-ex", "set confirm off"]
    for command in commands:
        args += ["-ex", command]
    args += ["-ex", "detach"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


def values(output):
    """The $N = value lines gdb printed, in order."""
    return [int(v) for v in re.findall(r"^\$\d+ = (-?\d+)$", output, re.M)]


def fingerprint(directory):
    """Every file under `directory` with its content hash: what an attacker would change."""
    out = {}
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif not path.is_dir():
            out[str(path)] = "special"
    return out


def retained_config():
    cfg = make_config(free_port())
    cfg["data_blocks"][0]["retain"] = True
    return cfg


class Running:
    """A root start with a retained DB1 and an acknowledged write in it."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.h = start(tmp_path, retained_config())
        kids = roles(self.h.process.pid)
        self.worker, self.memory = kids["__worker"], kids["__memory"]
        c = client(self.h)
        c.db_write(1, 0, bytearray(b"acked!"))
        c.disconnect()
        retain = tmp_path / "state" / "retain.bin"
        deadline = time.monotonic() + 5
        while (not retain.exists() or b"acked!" not in retain.read_bytes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"acked!" in retain.read_bytes(), "the acknowledged write did not reach retain.bin"
        self.files = fingerprint(tmp_path / "state") | {k: v for k, v in fingerprint(tmp_path).items() if not k.endswith(".log")}

    def siblings_unchanged(self):
        assert self.h.process.poll() is None, f"the supervisor ended:\n{self.h.log()}"
        assert roles(self.h.process.pid)["__memory"] == self.memory, "the memory process was replaced"
        st = status(self.memory)
        assert st["State"][0] in "SR", f"the memory process is {st['State']}"
        assert st["TracerPid"] == "0", f"the memory process is traced by {st['TracerPid']}"
        now = fingerprint(self.tmp_path / "state") | {k: v for k, v in fingerprint(self.tmp_path).items() if not k.endswith(".log")}
        assert now == self.files, "files in the runtime or state directory changed"

    def worker_killed_and_back(self, name):
        """The sandbox ended the worker for system call `name`; a new one serves within 2 s."""
        ended = time.monotonic()
        deadline = ended + 2.0
        while True:
            try:
                c = client(self.h)
                assert c.db_read(1, 0, 6) == bytearray(b"acked!")
                c.disconnect()
                break
            except Exception:
                assert time.monotonic() < deadline, f"no worker served within 2 s after the sandbox ended one:\n{self.h.log()}"
                time.sleep(0.05)
        assert roles(self.h.process.pid)["__worker"] != self.worker
        log = self.h.log()
        assert re.search(rf"S7 worker \(pid {self.worker}\): sandbox violation: system call \d+", log), log
        assert re.search(rf"S7 worker \(pid {self.worker}\) was killed by the sandbox: system call \d+ \({name}\)", log), log
        r = subprocess.run([str(server_binary()), "status", "--pid-file", str(self.tmp_path / "s7commd.pid")],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0 and "sandbox kills 1" in r.stdout, r.stdout + r.stderr

    def worker_alive(self):
        assert roles(self.h.process.pid)["__worker"] == self.worker, f"the worker was replaced:\n{self.h.log()}"
        c = client(self.h)
        assert c.db_read(1, 0, 6) == bytearray(b"acked!")
        c.disconnect()


@pytest.fixture
def running(tmp_path):
    r = Running(tmp_path)
    yield r
    if r.h.process.poll() is None:  # a test may have had the sandbox end the supervisor
        stop(r.h)


def errno_call(running, call):
    out = gdb(running.worker, f"print (long){call}", "print *(int*)__errno_location()")
    result = values(out)
    assert len(result) == 2, out
    return result


def test_the_worker_is_confined_as_proc_shows(running):
    st = status(running.worker)
    assert st["Seccomp"] == "2", st["Seccomp"]
    assert int(st.get("Seccomp_filters", "0")) >= 1, st
    assert st["NoNewPrivs"] == "1"
    assert "sandbox: uid" in running.h.log() and "seccomp filter (" in running.h.log()
    r = subprocess.run([str(server_binary()), "status", "--pid-file", str(running.tmp_path / "s7commd.pid")],
                       capture_output=True, text=True, timeout=20)
    # One line per child, from what the kernel said once its sandbox was in place.
    lines = re.findall(r"^  sandbox: user (\S+) \(uid \d+, gid \d+\), seccomp filter mode, (\d+) filters?, NoNewPrivs 1, not dumpable, (Landlock ABI \d+: [^,]+)",
                       r.stdout, re.M)
    assert [(user, filters) for user, filters, _ in lines] == [("s7commd-worker", "2"), ("s7commd", "2")], r.stdout
    assert lines[0][2] == "Landlock ABI %s: no filesystem access" % lines[0][2].split()[2].rstrip(":"), lines
    assert "read-write beneath" in lines[1][2] and str(running.tmp_path / "state") in lines[1][2], lines
    assert r.stdout.count("sandbox kills 0") == 2, r.stdout
    # The supervisor: its deny-list (1 filter) and exactly the three capabilities it keeps.
    sup = status(running.h.process.pid)
    assert sup["Seccomp"] == "2" and sup["Seccomp_filters"] == "1" and sup["CapEff"] == "00000000000000e0", sup
    d = subprocess.run([str(server_binary()), "doctor", "--config", str(running.tmp_path / "privsep.json"),
                        "--pid-file", str(running.tmp_path / "s7commd.pid"), "--state-dir", str(running.tmp_path / "state")],
                       capture_output=True, text=True, timeout=30)
    assert re.search(r"^ok\s+S7 worker sandbox: pid \d+: user s7commd-worker", d.stdout, re.M), d.stdout
    assert re.search(r"^ok\s+memory process sandbox: pid \d+: user s7commd ", d.stdout, re.M), d.stdout
    assert re.search(r"^ok\s+Landlock: Landlock ABI \d+", d.stdout, re.M) and re.search(r"^ok\s+seccomp:", d.stdout, re.M), d.stdout


def test_opening_retain_bin_for_writing_fails(running):
    retain = running.tmp_path / "state" / "retain.bin"
    assert errno_call(running, f'open("{retain}", 1)') == [-1, EACCES]
    running.worker_alive()
    running.siblings_unchanged()


def test_creating_a_file_beside_memory_sock_fails(running):
    target = running.tmp_path / "planted"
    assert (running.tmp_path / "memory.sock").exists()
    assert errno_call(running, f'open("{target}", 0101, 0600)') == [-1, EACCES]
    assert not target.exists()
    running.worker_alive()
    running.siblings_unchanged()


def test_a_new_socket_fails(running):
    assert errno_call(running, "socket(2, 1, 0)") == [-1, EACCES]
    running.worker_alive()
    running.siblings_unchanged()


def test_connect_to_a_loopback_listener_ends_the_worker(running):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    # The worker can make no socket, so it would use one it holds: its channel (descriptor 3).
    net_port = ((port & 0xFF) << 8) | (port >> 8)
    out = gdb(running.worker, "set $a = (char *)malloc(16)", "set *(unsigned short *)$a = 2",
              f"set *(unsigned short *)($a + 2) = {net_port}", "set *(unsigned int *)($a + 4) = 0x0100007f",
              "print (int)connect(3, $a, 16)")
    assert "signaled while in a function called from GDB" in out, out
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()
    running.worker_killed_and_back("connect")
    running.siblings_unchanged()


# Each a call the worker's allow-list does not have: it ends the worker (SIGSYS) before it runs.
FORBIDDEN = {
    "kill-memory-process-SIGSTOP": (lambda r: f"print (int)kill({r.memory}, 19)", "kill"),
    "kill-supervisor-SIGTERM": (lambda r: f"print (int)kill({r.h.process.pid}, 15)", "kill"),
    "ptrace-attach-memory-process": (lambda r: f"print (long)ptrace(16, {r.memory}, 0, 0)", "ptrace"),
    "execve-bin-sh": (lambda r: 'print (int)execve("/bin/sh", 0, 0)', "execve"),
    "mmap-PROT_EXEC": (lambda r: "print (long)mmap(0, 4096, 5, 0x22, -1, 0)", "mmap"),
}


@pytest.mark.parametrize("attempt", FORBIDDEN)
def test_a_forbidden_call_ends_the_worker(running, attempt):
    command, name = FORBIDDEN[attempt]
    out = gdb(running.worker, command(running))
    assert "signaled while in a function called from GDB" in out, out
    running.worker_killed_and_back(name)
    running.siblings_unchanged()


def test_the_supervisor_can_never_become_root_again(running):
    """The supervisor keeps CAP_SETUID, CAP_SETGID and CAP_KILL to start and stop the worker as
    its own user; its seccomp filter lets setresuid reach that user only. Becoming root ends it
    (SIGSYS) before the call runs; the memory process and the worker see their channel close
    and stop, saving what is retained."""
    sup = running.h.process.pid
    out = gdb(sup, "print (long)syscall(117, 0, 0, 0)")  # setresuid(0, 0, 0) on x86-64
    assert "signaled while in a function called from GDB" in out, out
    assert running.h.process.wait(timeout=15) == -signal.SIGSYS, running.h.log()
    log = running.h.log()
    assert re.search(rf"supervisor \(pid {sup}\): sandbox violation: system call 117", log), log
    assert "supervisor sandbox: seccomp deny-list" in log and "setresuid/setresgid only to uid" in log, log
    deadline = time.monotonic() + 10
    while (Path(f"/proc/{running.worker}").exists() or Path(f"/proc/{running.memory}").exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{running.worker}").exists() and not Path(f"/proc/{running.memory}").exists()
    assert b"acked!" in (running.tmp_path / "state" / "retain.bin").read_bytes()


def probe_binary():
    return server_binary().parent / "S7SysProbe"


@pytest.mark.parametrize("call,who", [("landlock_create_ruleset", "memory process"), ("seccomp", "supervisor")])
def test_a_sandbox_that_cannot_be_installed_stops_the_start_with_the_reason(tmp_path, call, who):
    """A kernel that refuses Landlock or seccomp outright (here: the call fails with EPERM
    under a filter the probe installs before it execs s7commd): s7commd does not run without
    its sandbox, says which part failed and why, and exits 11 without serving."""
    assert probe_binary().exists(), f"{probe_binary()} is missing: swift build --build-tests builds it"
    cfg = retained_config()
    tmp_path.chmod(0o755)
    cfg_path = tmp_path / "sandbox.json"
    cfg_path.write_text(__import__("json").dumps(cfg))
    cfg_path.chmod(0o644)
    r = subprocess.run([str(probe_binary()), "exec-denying", call, str(EPERM), str(server_binary()), "run",
                        "--config", str(cfg_path), "--pid-file", str(tmp_path / "s7commd.pid"),
                        "--state-dir", str(tmp_path / "state")],
                       capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 11, out
    if who == "supervisor":
        # libseccomp meets the refused seccomp(2) while it sets the filter up, and says which step.
        assert re.search(r"could not put the supervisor's seccomp filter in place: could not .+\(errno \d+\)", out), out
    else:
        assert "memory process: could not put Landlock in place" in out and "Operation not permitted" in out, out
        assert "could not put its sandbox in place" in out and "stops (exit status 11)" in out, out
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", cfg["server"]["port"])) != 0, "something listens on the port after the refused start"


def readonly_mapping(pid):
    """Start address and permissions of the worker's mapping of the read-only segment."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if "memfd:s7commd-plc-readonly" in line:
            fields = line.split()
            return int(fields[0].split("-")[0], 16), fields[1]
    raise AssertionError(f"the worker maps no read-only segment:\n{Path(f'/proc/{pid}/maps').read_text()}")


def test_a_store_into_a_read_only_db_faults_and_changes_nothing(running):
    """DB2 is read_only: it lives in a segment the worker got as an O_RDONLY descriptor and
    mapped PROT_READ. Making it writable fails (EACCES: the descriptor cannot back a writable
    shared mapping), and a store ends the worker with SIGSEGV; the PLC side's value is intact."""
    written = subprocess.run([str(server_binary()), "mem", "write", "DB2.DBW0", "4660",
                              "--socket", str(running.tmp_path / "memory.sock")], capture_output=True, text=True, timeout=20)
    assert written.returncode == 0, written.stderr
    address, permissions = readonly_mapping(running.worker)
    assert permissions.startswith("r-") and permissions[3] == "s", permissions
    assert errno_call(running, f"mprotect({address}, 4096, 3)") == [-1, EACCES]
    out = gdb(running.worker, f"print (long)memset({address}, 65, 1)")
    assert "signaled while in a function called from GDB" in out and "SIGSEGV" in out, out
    # After gdb detaches, the store runs again and faults again: the worker ends.
    deadline = time.monotonic() + 2.0
    while Path(f"/proc/{running.worker}").exists() and Path(f"/proc/{running.worker}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline, f"the worker did not end after the fault:\n{running.h.log()}"
        time.sleep(0.02)
    while True:
        try:
            c = client(running.h)
            assert c.db_read(2, 0, 2) == bytearray(b"\x12\x34")
            assert c.db_read(1, 0, 6) == bytearray(b"acked!")
            c.disconnect()
            break
        except Exception:
            assert time.monotonic() < deadline, f"no worker served within 2 s after the fault:\n{running.h.log()}"
            time.sleep(0.05)
    assert f"S7 worker (pid {running.worker}) killed by signal 11" in running.h.log(), running.h.log()
    running.siblings_unchanged()


FIRST_LOOK = r'''#!/usr/bin/env python3
"""A stand-in for the S7 worker that looks at itself before it does anything else."""
import ctypes, json, os, time
libc = ctypes.CDLL(None, use_errno=True)
seen = dict(dumpable=libc.prctl(3, 0, 0, 0, 0), secure=libc.getauxval(23), ids=os.getresuid(), gids=os.getresgid(),
            groups=os.getgroups())
with open({record!r}, "a") as f:
    f.write(json.dumps(seen) + "\n")
time.sleep(30)
'''


def test_the_worker_is_not_dumpable_from_its_exec_on(tmp_path):
    """The supervisor execs the worker with the service group as its real gid and the worker's
    as effective and saved: a secure exec, which the kernel makes non-dumpable before the
    program's first instruction, whatever Yama says. A stand-in worker (--worker-program)
    reads PR_GET_DUMPABLE and AT_SECURE first thing; no exec window lets a process of the
    worker's uid trace it or open its /proc/PID/mem."""
    from test_root_start import launch, records
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    fake_dir.chmod(0o755)
    record = fake_dir / "seen"
    record.touch()
    record.chmod(0o666)
    program = fake_dir / "worker.py"
    program.write_text(FIRST_LOOK.format(record=str(record)))
    program.chmod(0o755)
    h = launch(tmp_path, make_config(free_port()), tmp_path / "run" / "x.pid", args=("--worker-program", str(program)),
               wait=False)
    try:
        deadline = time.monotonic() + 10
        while not records(record) and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = records(record)
        assert seen, f"the stand-in worker recorded nothing:\n{h.log()}"
        worker, service = pwd.getpwnam(WORKER_USER), pwd.getpwnam(SERVICE_USER)
        assert seen[0]["dumpable"] == 0 and seen[0]["secure"] == 1, seen[0]
        assert seen[0]["ids"] == [worker.pw_uid] * 3 and seen[0]["groups"] == [], seen[0]
        assert seen[0]["gids"] == [service.pw_gid, worker.pw_gid, worker.pw_gid], seen[0]
    finally:
        h.process.send_signal(signal.SIGTERM)
        h.process.wait(timeout=20)
