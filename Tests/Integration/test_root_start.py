"""Starting s7commd as root ("privilege separation, second edition"), checked against the real
binary: the service user must exist; the runtime directory (the pid file's) and the state
directory are created only as a missing leaf and an existing one is never chowned or chmodded;
the pid and state files refuse planted symlinks and hard links; the children start detached
(stdin /dev/null, a session of their own, a scrubbed environment, only the descriptors they
need); and a child that breaks the supervisor protocol is killed and restarted, while a child
told something outside the protocol exits with status 70."""
import json
import os
import pty
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import HOST, SERVICE_USER, ServerHandle, _wait_started, _wait_until, free_port, make_config, server_binary
from test_privsep import listening_inode, roles

# The only variables a child may inherit (SupervisorLoop.childEnvironment).
CHILD_ENVIRONMENT = {"PATH", "SWIFT_BACKTRACE", "TZ", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "LC_NUMERIC", "LC_TIME"}
# What NIO and the child's own loop open: epoll instances, their wake-up eventfds, timers.
NIO_DESCRIPTORS = {"anon_inode:[eventpoll]", "anon_inode:[eventfd]", "anon_inode:[timerfd]"}
MEMFD = "/memfd:s7commd-plc-memory (deleted)"
# The second segment, for read_only regions with storage of their own (DB2 of the base configuration).
READ_ONLY_MEMFD = "/memfd:s7commd-plc-readonly (deleted)"
# A refused start ends at once; more than this means it was not refused.
REFUSAL_TIMEOUT_S = 10


@pytest.fixture(autouse=True)
def as_root():
    if os.geteuid() != 0:
        pytest.fail("these tests start s7commd as root: run them as root, as CI does")


def service_ids():
    user = pwd.getpwnam(SERVICE_USER)
    return user.pw_uid, user.pw_gid


def write_config(tmp_path, cfg, name):
    cfg_path = tmp_path / f"{name}.json"
    cfg_path.write_text(json.dumps(cfg))
    cfg_path.chmod(0o644)
    return cfg_path


def command(cfg_path, pid_file, state_dir, args):
    return [str(server_binary()), "run", "--config", str(cfg_path), "--pid-file", str(pid_file),
            "--state-dir", str(state_dir), *args]


def launch(tmp_path, cfg, pid_file, state_dir=None, args=(), env=None, stdin=subprocess.DEVNULL, name="root-start",
           wait=True):
    """Starts `s7commd run` as root, its stdout and stderr in NAME.log; waits until the worker serves."""
    cfg_path = write_config(tmp_path, cfg, name)
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command(cfg_path, pid_file, state_dir or tmp_path / "state", args),
                                stdin=stdin, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))
    h = ServerHandle(HOST, cfg["server"]["port"], proc, log_path, cfg)
    if wait:
        try:
            _wait_started(h, 15, single_process=False)
        except BaseException:
            stop(h)
            raise
    return h


def refused(tmp_path, cfg, pid_file, state_dir=None, args=(), name="refused"):
    """Runs a start that must be refused; returns the CompletedProcess (stdout and stderr apart)."""
    cfg_path = write_config(tmp_path, cfg, name)
    return subprocess.run(command(cfg_path, pid_file, state_dir or tmp_path / "state", args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=REFUSAL_TIMEOUT_S)


def shown(r):
    return f"exit status {r.returncode}\nstderr:\n{r.stderr}\nstdout:\n{r.stdout}"


def stop(h, timeout=15):
    """SIGTERMs the supervisor and waits; returns its exit status (None: it had to be SIGKILLed)."""
    if h.process.poll() is not None:
        return h.process.returncode
    h.process.send_signal(signal.SIGTERM)
    try:
        return h.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        h.process.kill()
        h.process.wait(timeout=5)
        return None


def identity(path):
    """What must not change about a file or directory s7commd was not allowed to touch."""
    st = os.lstat(path)
    content = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) else None
    return {"uid": st.st_uid, "gid": st.st_gid, "mode": oct(st.st_mode), "nlink": st.st_nlink, "ino": st.st_ino,
            "content": content}


def root_dir(path, mode):
    path.mkdir()
    os.chown(path, 0, 0)
    path.chmod(mode)
    return path


def precious_file(path):
    """A root-owned 0600 file with known content: what a planted link would make s7commd overwrite."""
    path.write_bytes(b"precious: must never be overwritten\n")
    os.chown(path, 0, 0)
    path.chmod(0o600)
    return path


def gone(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- 1. the service user -------------------------------------------------------------------

def test_missing_service_user_starts_nothing(tmp_path):
    """As root with --user naming no existing user: exit status 6, the fix (the adduser
    command for that name) and "Nothing was started" on stderr, and no listener is left."""
    cfg = make_config(free_port())
    r = refused(tmp_path, cfg, tmp_path / "run" / "x.pid", args=("--user", "s7nosuchuser"))
    assert r.returncode == 6, shown(r)
    assert "adduser --system --group --no-create-home s7nosuchuser" in r.stderr, shown(r)
    assert "Nothing was started" in r.stderr, shown(r)
    assert listening_inode(cfg["server"]["port"]) is None, "something listens on the port after the refusal"
    assert not (tmp_path / "run").exists(), "the runtime directory was created although nothing was started"


def test_user_root_is_refused(tmp_path):
    """--user root is no unprivileged service user: exit status 6, nothing listens."""
    cfg = make_config(free_port())
    r = refused(tmp_path, cfg, tmp_path / "run" / "x.pid", args=("--user", "root"))
    assert r.returncode == 6, shown(r)
    assert "Nothing was started" in r.stderr, shown(r)
    assert listening_inode(cfg["server"]["port"]) is None


# --- 2. the runtime directory ----------------------------------------------------------------

def test_missing_runtime_leaf_is_created_for_the_service_user(tmp_path):
    """A missing runtime directory (its parent exists) is created owned by the service user,
    mode 0755, and the pid file in it holds the supervisor's pid."""
    uid, gid = service_ids()
    rundir = tmp_path / "run"
    h = launch(tmp_path, make_config(free_port()), rundir / "x.pid")
    try:
        st = os.stat(rundir)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o755), (
            f"{rundir}: uid {st.st_uid} gid {st.st_gid} mode {oct(st.st_mode)}; log:\n{h.log()}")
        assert (rundir / "x.pid").read_text().strip() == str(h.process.pid), h.log()
    finally:
        rc = stop(h)
    assert rc == 0, f"exit status {rc} after SIGTERM; log:\n{h.log()}"


def test_missing_runtime_parent_is_refused(tmp_path):
    """Only the leaf is ever created: a runtime directory whose parent is missing is refused
    with exit status 10, the parent is not created, and nothing listens."""
    cfg = make_config(free_port())
    rundir = tmp_path / "missing-parent" / "run"
    r = refused(tmp_path, cfg, rundir / "x.pid")
    assert r.returncode == 10, shown(r)
    assert str(rundir) in r.stderr and "Nothing was started" in r.stderr, shown(r)
    assert not (tmp_path / "missing-parent").exists(), "s7commd created the parent of the runtime directory"
    assert listening_inode(cfg["server"]["port"]) is None


@pytest.mark.parametrize("mode", [0o755, 0o700])
def test_existing_root_runtime_directory_is_used_unchanged(tmp_path, mode):
    """An existing root-owned runtime directory (0755 or 0700) is used as it is: the pid file,
    the state file and both sockets are created there as root (the sockets root:s7commd 0660),
    and after a full start and stop the directory's owner, group and mode are unchanged."""
    _, gid = service_ids()
    rundir = root_dir(tmp_path / "rt", mode)
    before = identity(rundir)
    h = launch(tmp_path, make_config(free_port()), rundir / "x.pid")
    try:
        pid_st = os.lstat(rundir / "x.pid")
        assert stat.S_ISREG(pid_st.st_mode) and pid_st.st_uid == 0, (oct(pid_st.st_mode), pid_st.st_uid, h.log())
        assert (rundir / "x.pid").read_text().strip() == str(h.process.pid), h.log()
        state_st = os.lstat(rundir / "x.state.json")
        assert stat.S_ISREG(state_st.st_mode) and state_st.st_uid == 0, (oct(state_st.st_mode), state_st.st_uid, h.log())
        for name in ("control.sock", "memory.sock"):
            st = os.lstat(rundir / name)
            assert stat.S_ISSOCK(st.st_mode), f"{name}: mode {oct(st.st_mode)}; log:\n{h.log()}"
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, 0o660), (
                f"{name}: uid {st.st_uid} gid {st.st_gid} mode {oct(st.st_mode)}, expected root:{SERVICE_USER} 0660; log:\n{h.log()}")
        assert identity(rundir) == before, f"{rundir} changed while running; log:\n{h.log()}"
    finally:
        rc = stop(h)
    assert rc == 0, f"exit status {rc} after SIGTERM; log:\n{h.log()}"
    after = identity(rundir)
    assert (after["uid"], after["gid"], after["mode"]) == (before["uid"], before["gid"], before["mode"]), (
        f"{rundir} was chowned or chmodded: before {before}, after {after}; log:\n{h.log()}")


def test_world_writable_runtime_directory_is_refused(tmp_path):
    """A runtime directory writable by others (0777) is refused with exit status 10 and the fix
    (chmod go-w DIR), is not chmodded, and nothing listens."""
    cfg = make_config(free_port())
    rundir = root_dir(tmp_path / "rt", 0o777)
    before = identity(rundir)
    r = refused(tmp_path, cfg, rundir / "x.pid")
    assert r.returncode == 10, shown(r)
    assert str(rundir) in r.stderr and f"chmod go-w {rundir}" in r.stderr, shown(r)
    assert identity(rundir) == before, f"{rundir} was changed: {before} -> {identity(rundir)}"
    assert listening_inode(cfg["server"]["port"]) is None
    assert not (rundir / "x.pid").exists(), "a pid file was written into the refused directory"


def test_runtime_directory_of_another_user_is_refused(tmp_path):
    """A runtime directory owned by neither root nor the service user (here nobody, 0755) is
    refused with exit status 10, the message names the directory and its owner, and it is not
    chowned."""
    nobody = pwd.getpwnam("nobody")
    cfg = make_config(free_port())
    rundir = root_dir(tmp_path / "rt", 0o755)
    os.chown(rundir, nobody.pw_uid, nobody.pw_gid)
    before = identity(rundir)
    r = refused(tmp_path, cfg, rundir / "x.pid")
    assert r.returncode == 10, shown(r)
    assert str(rundir) in r.stderr and f"uid {nobody.pw_uid}" in r.stderr, shown(r)
    assert identity(rundir) == before, f"{rundir} was changed: {before} -> {identity(rundir)}"
    assert listening_inode(cfg["server"]["port"]) is None


# --- 3. the pid file and the state file --------------------------------------------------------

@pytest.mark.parametrize("name", ["x.pid", "x.state.json"])
def test_planted_symlink_is_refused_and_its_target_untouched(tmp_path, name):
    """A symlink planted at the pid file's or the state file's path, pointing at a root-owned
    0600 file, is refused (O_EXCL|O_NOFOLLOW): exit status 10, the message names the path, and
    the target's content, mode and owner are unchanged."""
    cfg = make_config(free_port())
    rundir = root_dir(tmp_path / "rt", 0o755)
    target = precious_file(tmp_path / "precious")
    os.symlink(target, rundir / name)
    before = identity(target)
    r = refused(tmp_path, cfg, rundir / "x.pid")
    assert r.returncode == 10, shown(r)
    assert str(rundir / name) in r.stderr, shown(r)
    assert identity(target) == before, f"the link's target was changed: {before} -> {identity(target)}; {shown(r)}"
    assert os.readlink(rundir / name) == str(target), "the planted link was replaced"
    assert listening_inode(cfg["server"]["port"]) is None


def test_planted_hard_link_is_refused_and_its_target_untouched(tmp_path):
    """A hard link planted at the pid file's path to another root-owned file is refused: exit
    status 10, the message names the path, and the file's content, mode and owner are unchanged."""
    cfg = make_config(free_port())
    rundir = root_dir(tmp_path / "rt", 0o755)
    target = precious_file(tmp_path / "precious")
    os.link(target, rundir / "x.pid")
    before = identity(target)
    r = refused(tmp_path, cfg, rundir / "x.pid")
    assert r.returncode == 10, shown(r)
    assert str(rundir / "x.pid") in r.stderr, shown(r)
    assert identity(target) == before, f"the hard-linked file was changed: {before} -> {identity(target)}; {shown(r)}"
    assert listening_inode(cfg["server"]["port"]) is None


def test_stale_pid_file_of_a_killed_run_is_replaced(tmp_path):
    """A run killed with SIGKILL (supervisor and children) leaves its root-owned pid file in a
    root-owned directory; the next start replaces it and serves, the pid file naming the new pid."""
    rundir = root_dir(tmp_path / "rt", 0o755)
    pid_file = rundir / "x.pid"
    first = launch(tmp_path, make_config(free_port()), pid_file, name="killed")
    try:
        kids = roles(first.process.pid)
        for pid in [first.process.pid, *kids.values()]:
            os.kill(pid, signal.SIGKILL)
        first.process.wait(timeout=10)
        for pid in kids.values():
            assert gone(pid), f"child {pid} outlived the killed supervisor"
    finally:
        stop(first)
    st = os.lstat(pid_file)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == 0 and pid_file.read_text().strip() == str(first.process.pid), (
        "the killed run left no pid file to replace")
    h = launch(tmp_path, make_config(free_port()), pid_file, name="after-kill")
    try:
        assert pid_file.read_text().strip() == str(h.process.pid), h.log()
        assert os.lstat(pid_file).st_uid == 0
    finally:
        rc = stop(h)
    assert rc == 0, f"exit status {rc} after SIGTERM; log:\n{h.log()}"


def test_second_instance_with_the_same_pid_file_is_refused(tmp_path):
    """While an s7commd runs with a pid file, a second start with the same pid file exits with
    status 10 naming the running one's pid; the first keeps serving and its pid file is kept."""
    rundir = root_dir(tmp_path / "rt", 0o755)
    pid_file = rundir / "x.pid"
    h = launch(tmp_path, make_config(free_port()), pid_file, name="first")
    try:
        cfg = make_config(free_port())
        r = refused(tmp_path, cfg, pid_file, name="second")
        assert r.returncode == 10, shown(r)
        assert f"another s7commd (pid {h.process.pid}) runs with the pid file" in r.stderr, shown(r)
        assert listening_inode(cfg["server"]["port"]) is None
        h.assert_alive()
        assert pid_file.read_text().strip() == str(h.process.pid), "the refused start changed the pid file"
        with socket.create_connection((h.host, h.port), timeout=2):
            pass
    finally:
        rc = stop(h)
    assert rc == 0, f"exit status {rc} after SIGTERM; log:\n{h.log()}"


# --- 4. the state directory ------------------------------------------------------------------

def retained_config():
    cfg = make_config(free_port())
    cfg["data_blocks"].append({"db_number": 7, "size_bytes": 16, "retain": True})
    return cfg


def test_missing_state_leaf_is_created_private_to_the_service_user(tmp_path):
    """With a retained data block, a missing --state-dir leaf is created 0700, owned by the
    service user."""
    uid, gid = service_ids()
    state = tmp_path / "state"
    h = launch(tmp_path, retained_config(), tmp_path / "run" / "x.pid", state_dir=state)
    try:
        st = os.stat(state)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o700), (
            f"{state}: uid {st.st_uid} gid {st.st_gid} mode {oct(st.st_mode)}; log:\n{h.log()}")
    finally:
        rc = stop(h)
    assert rc == 0, f"exit status {rc} after SIGTERM; log:\n{h.log()}"


def test_root_owned_state_directory_is_refused_not_chowned(tmp_path):
    """An existing --state-dir owned by root is refused with exit status 7 and the fix
    (chown s7commd: DIR); its owner and mode are unchanged, and nothing listens."""
    cfg = retained_config()
    state = root_dir(tmp_path / "state", 0o700)
    before = identity(state)
    r = refused(tmp_path, cfg, tmp_path / "run" / "x.pid", state_dir=state)
    assert r.returncode == 7, shown(r)
    assert f"chown {SERVICE_USER}:" in r.stderr and str(state) in r.stderr, shown(r)
    assert identity(state) == before, f"{state} was changed: {before} -> {identity(state)}"
    assert listening_inode(cfg["server"]["port"]) is None


# --- 5. the children start detached ------------------------------------------------------------

def descriptors(pid):
    out = {}
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out[int(entry.name)] = os.readlink(entry)
        except OSError:
            continue
    return out


def unix_sockets():
    """/proc/net/unix: inode -> (path, listening)."""
    out = {}
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 8:
            out[cols[6]] = (cols[7], int(cols[3], 16) & 0x10000 != 0)
    return out


def session_of(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[3])  # state(3) ppid(4) pgrp(5) session(6): the 4th field after the comm


def environment_of(pid):
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode(errors="replace").partition("=")[::2] for e in entries if e)


def test_children_hold_no_terminal_no_inherited_environment_and_only_their_descriptors(tmp_path):
    """Started from a pseudo-terminal (stdin the pty) with secrets and systemd variables in the
    environment: each child has stdin /dev/null, a session of its own (neither the test's nor
    the supervisor's), only the allowed environment variables (LANG kept, SECRET_TOKEN,
    LISTEN_FDS and NOTIFY_SOCKET gone), and only the descriptors it needs: no tty, no regular
    file, and in the worker no control.sock or memory.sock socket."""
    master, slave = pty.openpty()
    rundir = tmp_path / "run"
    extra = {"SECRET_TOKEN": "x", "LISTEN_FDS": "1", "NOTIFY_SOCKET": "/x", "LANG": "C.UTF-8"}
    try:
        h = launch(tmp_path, make_config(free_port()), rundir / "x.pid", env=extra, stdin=slave)
    finally:
        os.close(slave)
    try:
        sup = h.process.pid
        sup_fds = descriptors(sup)
        assert sup_fds[0].startswith("/dev/pts/"), f"the supervisor's stdin is {sup_fds[0]}, not the pty: the tty check would prove nothing"
        kids = roles(sup)
        listener = listening_inode(h.port)
        assert listener is not None, h.log()
        # The worker has received the listener when it serves (the log said so); the sockets exist.
        unix = unix_sockets()
        control = {i for i, (p, listening) in unix.items() if p == str(rundir / "control.sock")}
        memory = {i for i, (p, listening) in unix.items() if p == str(rundir / "memory.sock")}
        memory_listener = {i for i, (p, listening) in unix.items() if p == str(rundir / "memory.sock") and listening}
        assert control and memory_listener, (unix, h.log())
        my_session = os.getsid(0)
        sup_session = session_of(sup)
        report = {}
        for role, pid in kids.items():
            fds = descriptors(pid)
            report[role] = fds
            context = f"{role} (pid {pid}) descriptors {fds}; log:\n{h.log()}"
            assert fds.get(0) == "/dev/null", context
            assert fds.get(1, "").startswith("pipe:[") and fds.get(2, "").startswith("pipe:["), context
            assert fds.get(3, "").startswith("socket:["), context
            for fd, target in fds.items():
                assert not target.startswith(("/dev/pts/", "/dev/tty", "/dev/console", "/dev/ptmx")), f"fd {fd} -> {target}: {context}"
                if target not in (MEMFD, READ_ONLY_MEMFD):
                    try:
                        st = os.stat(f"/proc/{pid}/fd/{fd}")
                    except OSError:
                        continue
                    assert not stat.S_ISREG(st.st_mode), f"fd {fd} -> {target} is a regular file: {context}"
            extra_fds = {fd: t for fd, t in fds.items() if fd > 3}
            sockets = {t[8:-1] for t in extra_fds.values() if t.startswith("socket:[")}
            if role == "__worker":
                unexpected = {fd: t for fd, t in extra_fds.items() if t not in NIO_DESCRIPTORS and not t.startswith("socket:[")}
                assert not unexpected, f"unexpected descriptors {unexpected}: {context}"
                assert sockets == {listener}, f"the worker's sockets beyond fd 3 are {sockets}, expected only the listener {listener}: {context}"
                channel = fds[3][8:-1]
                assert channel not in control | memory, f"the worker's fd 3 is control.sock or memory.sock: {context}"
            else:
                unexpected = {fd: t for fd, t in extra_fds.items() if t not in NIO_DESCRIPTORS | {MEMFD, READ_ONLY_MEMFD} and not t.startswith("socket:[")}
                assert not unexpected, f"unexpected descriptors {unexpected}: {context}"
                assert memory_listener <= sockets, f"the memory process does not hold memory.sock's listener: {context}"
                assert not sockets & control, f"the memory process holds control.sock: {context}"
                assert listener not in sockets, f"the memory process holds the S7 listener: {context}"
                assert MEMFD in extra_fds.values(), f"the memory process holds no memfd: {context}"
                assert READ_ONLY_MEMFD in extra_fds.values(), f"the memory process holds no read-only memfd: {context}"
            session = session_of(pid)
            assert session not in (my_session, sup_session), (
                f"{role} (pid {pid}) is in session {session}; the test's is {my_session}, the supervisor's {sup_session}")
            env = environment_of(pid)
            assert set(env) <= CHILD_ENVIRONMENT, f"{role} inherited {sorted(set(env) - CHILD_ENVIRONMENT)}: {env}"
            for secret in ("SECRET_TOKEN", "LISTEN_FDS", "NOTIFY_SOCKET"):
                assert secret not in env, f"{role} inherited {secret}: {env}"
            assert env.get("LANG") == "C.UTF-8", f"{role} lost LANG: {env}"
        print(json.dumps(report, indent=1, sort_keys=True))
    finally:
        rc = stop(h)
        os.close(master)
    assert rc == 0, f"exit status {rc} after SIGTERM; log:\n{h.log()}"


# --- 6. a child that breaks the protocol -----------------------------------------------------

FAKE_WORKER = r'''#!/usr/bin/env python3
"""A fake S7 worker: records itself, takes `serve`, says "serving", then (the first two
started) breaks the protocol; the third keeps quiet and never answers `stop`."""
import array, json, os, socket, struct, sys, time

RECORD = {record!r}
CASE = {case!r}

def note(**what):
    with open(RECORD, "a") as f:
        f.write(json.dumps(dict(pid=os.getpid(), **what)) + "\n")

# Like the real worker, first even the gids the secure exec left apart (real: the service
# group); the supervisor checks them at the first message.
os.setresgid(os.getegid(), os.getegid(), os.getegid())
note(event="started", argv1=sys.argv[1] if len(sys.argv) > 1 else None)
channel = socket.socket(fileno=3)
data, ancillary, flags, _ = channel.recvmsg(300000, socket.CMSG_SPACE(16))
fds = []
for level, kind, payload in ancillary:
    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
        fds += array.array("i", payload[: len(payload) - len(payload) % 4]).tolist()
note(event="received", tag=data[:1].hex(), descriptors=len(fds), seqpacket=channel.type == socket.SOCK_SEQPACKET)

def text(value):
    return struct.pack("<I", len(value)) + value

# "serving" with its sandbox report: uid, gid, seccomp mode, filters, NoNewPrivs, dumpable, Landlock, limits.
SERVING = struct.pack("<BIIBIBB", 0x20, os.getuid(), os.getgid(), 0, 0, 1, 0) + text(b"not used") + text(b"none")
channel.send(SERVING)
time.sleep(0.05)
with open(RECORD) as f:
    earlier = sum(1 for line in f if '"misbehaving"' in line)
if earlier >= 2:
    note(event="quiet")
    time.sleep(30)
note(event="misbehaving")
# Last words on stderr, which the supervisor relays into its log: control bytes and an
# overlong line.
sys.stderr.write("fake worker {{}} says \x1b[31mred\x07 and\ttab\n".format(os.getpid()))
sys.stderr.write("L" * 5000 + "\n")
sys.stderr.flush()
if CASE == "serving-twice":
    channel.send(SERVING)
elif CASE == "unknown-tag":
    channel.send(b'{{"serving":{{}}}}')
elif CASE == "truncated-status":
    channel.send(b"\x22\x01")
elif CASE == "descriptor-attached":
    fd = os.open("/dev/null", os.O_RDONLY)
    channel.sendmsg([b"\x21"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
time.sleep(30)
'''


def records(path):
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def fake_cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def started_pids(path):
    return [r["pid"] for r in records(path) if r["event"] == "started"]


@pytest.mark.parametrize("case", ["serving-twice", "unknown-tag", "truncated-status", "descriptor-attached"])
def test_worker_breaking_the_protocol_is_killed_and_restarted(tmp_path, case):
    """A fake worker (--worker-program) gets the worker's argv and channel (fd 3, SOCK_SEQPACKET,
    `serve` first with the listener and segment attached), says "serving" and then sends
    something outside the protocol: the supervisor SIGKILLs it, forgets it, restarts it with
    growing back-off (0.1 s, then 0.2 s), and stays alive. The third fake keeps quiet and never
    answers `stop`: SIGTERM then ends the supervisor after it has killed that fake (5 s grace),
    within 15 s."""
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    fake_dir.chmod(0o755)
    record = fake_dir / "pids"
    record.touch()
    record.chmod(0o666)
    program = fake_dir / "worker.py"
    program.write_text(FAKE_WORKER.format(record=str(record), case=case))
    program.chmod(0o755)
    h = launch(tmp_path, make_config(free_port()), tmp_path / "run" / "x.pid", args=("--worker-program", str(program)),
               wait=False)
    began = None
    try:
        _wait_until(h, 10, lambda: len(started_pids(record)) >= 1, "the fake worker was not started")
        first = started_pids(record)[0]
        line = lambda: [ln for ln in h.log().splitlines()  # noqa: E731
                        if f"S7 worker (pid {first}) " in ln and "killed it (SIGKILL) and forgot it; restarting it in" in ln]
        _wait_until(h, 5, lambda: bool(line()), f"the supervisor did not kill the misbehaving fake worker (pid {first})")
        assert "restarting it in 0.1 s" in line()[0], line()
        if case == "descriptor-attached":
            assert "descriptor" in line()[0], f"the reason does not name the stray descriptor: {line()}"
        assert gone(first), f"the killed fake worker (pid {first}) is still in /proc; log:\n{h.log()}"
        # Its stderr reached the log through the supervisor: control bytes but tab as '?',
        # a line cut at 4096 bytes.
        _wait_until(h, 5, lambda: f"fake worker {first} says ?[31mred? and\ttab" in h.log(), "the fake's stderr was not relayed")
        assert "L" * 4096 + "\n" in h.log() and "L" * 4097 not in h.log(), "an overlong line is not cut at 4096 bytes"
        received = [r for r in records(record) if r["pid"] == first and r["event"] == "received"]
        assert received, f"the fake worker received nothing: {records(record)}"
        assert received[0]["tag"] == "10" and received[0]["descriptors"] >= 2 and received[0]["seqpacket"], (
            f"the first message is not `serve` (0x10) with the listener and segment on a SOCK_SEQPACKET fd 3: {received[0]}")
        assert [r["argv1"] for r in records(record) if r["event"] == "started"][0] == "__worker", records(record)
        _wait_until(h, 5, lambda: len(started_pids(record)) >= 2, "the fake worker was not restarted")
        _wait_until(h, 5, lambda: len(started_pids(record)) >= 3, "the fake worker was not restarted a second time")
        second = started_pids(record)[1]
        _wait_until(h, 5, lambda: f"S7 worker (pid {second}) " in h.log() and "restarting it in 0.2 s" in h.log(),
                    f"the second fake worker (pid {second}) was not killed and restarted after 0.2 s")
        third = started_pids(record)[2]
        _wait_until(h, 5, lambda: any(r["pid"] == third and r["event"] == "quiet" for r in records(record)),
                    f"the third fake worker (pid {third}) did not get going")
        time.sleep(0.3)
        h.assert_alive()
        assert Path(f"/proc/{third}").exists(), f"the quiet third fake worker (pid {third}) was killed; log:\n{h.log()}"
        assert h.log().count("killed it (SIGKILL) and forgot it") == 2, h.log()
        began = time.monotonic()
    finally:
        rc = stop(h, timeout=15)
        took = time.monotonic() - began if began else None
        # A fake the supervisor failed to kill would sleep on: end it here, and fail below.
        time.sleep(0.1)
        leftover = [pid for pid in started_pids(record) if str(program).encode() in fake_cmdline(pid)]
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
    assert rc == 0, f"exit status {rc} after SIGTERM (None: still running after 15 s); log:\n{h.log()}"
    assert 4.0 <= took < 15, f"the supervisor took {took:.1f} s to stop a worker that never answers `stop` (it waits 5 s); log:\n{h.log()}"
    assert any(f"S7 worker (pid {third})" in ln and "did not stop" in ln for ln in h.log().splitlines()), h.log()
    assert not leftover, f"fake workers {leftover} outlived the supervisor; log:\n{h.log()}"


# --- 7. a child told something outside the protocol ---------------------------------------------

CHILD_HELPER = r'''
"""Runs `BINARY __worker` with one end of a SOCK_SEQPACKET socketpair as its fd 3, sends it
the bytes given (hex), and prints its exit status and stderr as JSON."""
import fcntl, json, os, socket, subprocess, sys

binary, message = sys.argv[1], bytes.fromhex(sys.argv[2])
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
keep = fcntl.fcntl(ours.fileno(), fcntl.F_DUPFD_CLOEXEC, 10)
ours.close()
if theirs.fileno() != 3:
    os.dup2(theirs.fileno(), 3)
    theirs.close()
child = subprocess.Popen([binary, "__worker", "--log-level", "info"], pass_fds=(3,), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
os.close(3)
channel = socket.socket(fileno=keep)
channel.send(message)
try:
    out, err = child.communicate(timeout=10)
    status = child.returncode
except subprocess.TimeoutExpired:
    child.kill()
    out, err = child.communicate()
    status = "timeout"
print(json.dumps({"status": status, "stderr": err.decode(errors="replace"), "stdout": out.decode(errors="replace")}))
'''


@pytest.mark.parametrize("message, expected", [(b"\x7f", 70), (b"\x14", 0), (b"\x11", 70)],
                         ids=["garbage", "stop-first", "reload-before-serve"])
def test_worker_told_something_outside_the_protocol_exits_70(tmp_path, message, expected):
    """`s7commd __worker` run as the service user with its channel on fd 3: a message outside
    the protocol (an unknown tag, or a reload before `serve`) ends it with status 70 and
    "outside the protocol" on stderr; `stop` first ends it with status 0."""
    helper = tmp_path / "child_helper.py"
    helper.write_text(CHILD_HELPER)
    helper.chmod(0o644)
    r = subprocess.run(["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--clear-groups",
                        sys.executable, str(helper), str(server_binary()), message.hex()],
                       capture_output=True, text=True, timeout=20, cwd=str(tmp_path))
    assert r.returncode == 0, f"the helper failed: {r.returncode}\n{r.stdout}\n{r.stderr}"
    result = json.loads(r.stdout)
    assert result["status"] == expected, f"the worker exited with {result['status']}, expected {expected}:\n{result['stderr']}"
    if expected == 70:
        assert "outside the protocol" in result["stderr"], result["stderr"]
