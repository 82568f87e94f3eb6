"""Fixtures for the s7commd integration tests.

The tests run the real server binary: `$S7COMMD_BIN run --config FILE`
(default: <repo>/.build/debug/s7commd). A missing binary is a test failure,
never a skip.
"""
import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / ".build" / "debug" / "s7commd"

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 10.0

PLC_IDENTITY = {
    "name": "TestPLC",
    "module_type": "CPU 315-2 PN/DP",
    "serial_number": "S C-X4U421302009",
    "copyright": "Original Siemens Equipment",
    "module_name": "CPU 315-2 PN/DP",
    "order_code": "6ES7 315-2EH14-0AB0",
    "firmware_version": "V3.2.6",
    "plant_identification": "Plant 1",
}

BASE_CONFIG = {
    "server": {
        "enabled": True,
        "bind_address": HOST,
        "port": 0,  # replaced by a free port
        "max_clients": 32,
        "pdu_size": 480,
        "send_timeout_ms": 3000,
        "recv_timeout_ms": 3000,
        "ping_timeout_ms": 10000,
    },
    "plc_identity": PLC_IDENTITY,
    "data_blocks": [
        {"db_number": 1, "description": "own storage", "size_bytes": 1024},
        {"db_number": 2, "description": "read only", "size_bytes": 64, "read_only": True},
        {
            "db_number": 3,
            "description": "mapped",
            "size_bytes": 40,
            "mapping": {"type": "int_memory", "start_buffer": 0, "bit_addressing": False},
        },
    ],
    "system_areas": {
        "pe_area": {"enabled": True, "size_bytes": 256},
        "pa_area": {"enabled": True, "size_bytes": 256},
        "mk_area": {"enabled": True, "size_bytes": 256},
        "tm_area": {"enabled": True, "count": 64},
        "ct_area": {"enabled": True, "count": 64},
    },
    "logging": {"log_connections": True, "log_data_access": False, "log_errors": True},
}

# Exit statuses accepted after SIGTERM: a clean exit(0), or death by the
# SIGTERM we sent (default disposition). Anything else (SIGABRT from a Swift
# runtime trap, SIGSEGV, SIGILL, SIGKILL, non-zero exit) is a failure.
ACCEPTED_EXIT_CODES = (0, -signal.SIGTERM)


def server_binary() -> Path:
    return Path(os.environ.get("S7COMMD_BIN", str(DEFAULT_BIN)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_config(port: int, pdu_size: int = 480) -> dict:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["server"]["port"] = port
    cfg["server"]["pdu_size"] = pdu_size
    return cfg


class ServerHandle:
    def __init__(self, host, port, process, log_path, config):
        self.host = host
        self.port = port
        self.process = process
        self.log_path = log_path
        self.config = config

    # allow `host, port, process, log_path = server`
    def __iter__(self):
        return iter((self.host, self.port, self.process, self.log_path))

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError as e:
            return f"<cannot read log: {e}>"

    def alive(self) -> bool:
        return self.process.poll() is None

    def assert_alive(self):
        rc = self.process.poll()
        assert rc is None, (
            f"s7commd died (exit status {rc}); log:\n{self.log()[-6000:]}"
        )

    def stop(self):
        """SIGTERM the server, wait; return (exit status, problem or None)."""
        if self.process.poll() is not None:
            hint = ""
            if "SIGTERM" in self.log():
                hint = (" (its log reports a SIGTERM the tests did not send: another "
                        "process on this machine killed it, e.g. a `pkill s7commd`)")
            return self.process.returncode, (
                f"s7commd had already exited with status {self.process.returncode} "
                f"before teardown{hint}"
            )
        self.process.send_signal(signal.SIGTERM)
        try:
            rc = self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            return None, f"s7commd did not exit within {SHUTDOWN_TIMEOUT_S}s of SIGTERM"
        if rc not in ACCEPTED_EXIT_CODES:
            return rc, f"s7commd exited with status {rc} after SIGTERM (crash/abort?)"
        return rc, None


def _wait_until(handle: ServerHandle, timeout: float, ready, what: str):
    """Polls `ready()` until it holds; fails at once when s7commd exits, and after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            pytest.fail(
                f"s7commd exited during startup with status {handle.process.returncode}; "
                f"log:\n{handle.log()[-6000:]}"
            )
        if ready():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} within {timeout}s; log:\n{handle.log()[-6000:]}")


def _accepts(handle: ServerHandle) -> bool:
    try:
        with socket.create_connection((handle.host, handle.port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_accepting(handle: ServerHandle, timeout: float):
    _wait_until(handle, timeout, lambda: _accepts(handle),
                f"s7commd did not accept connections on {handle.host}:{handle.port}")


def _wait_started(handle: ServerHandle, timeout: float, single_process: bool):
    """Waits until s7commd accepts and, with a supervisor, until it logs "S7 worker (pid N) is
    serving": the kernel completes TCP handshakes into the listen backlog as soon as the
    supervisor has bound the port, before it has made its control socket or started a child,
    so an accepted connect alone is no sign that the worker (or `s7commd status`) will answer."""
    _wait_accepting(handle, timeout)
    if not single_process:
        _wait_until(handle, timeout, lambda: "is serving" in handle.log(),
                    "the S7 worker did not report serving")


def socket_inodes(pid):
    """The socket inodes among a process's descriptors (/proc/PID/fd)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


@contextlib.contextmanager
def port_held_by_another_process(port):
    """A python3 process listening on 127.0.0.1:port until the block ends; yields it."""
    holder = subprocess.Popen(["python3", "-c", f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); print('ready', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.kill()
        holder.wait()


SERVICE_USER = "s7commd"
WORKER_USER = "s7commd-worker"


@pytest.fixture(scope="session", autouse=True)
def service_user():
    """As root, s7commd runs its supervisor and memory process as the service user and its S7
    worker as a user of its own: create both (system users, like the Debian package does) when
    the tests run as root."""
    for name in (SERVICE_USER, WORKER_USER):
        if os.geteuid() == 0 and subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            "--user-group", name], check=True)
    return SERVICE_USER


@pytest.fixture
def tmp_path(tmp_path_factory):
    """Like pytest's tmp_path, but readable by the service user: the unprivileged supervisor
    re-reads its configuration on reload, as it does from /etc/s7commd in production."""
    import tempfile
    path = Path(tempfile.mkdtemp(prefix="s7commd-it-"))
    path.chmod(0o755)
    yield path
    import shutil
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_server(tmp_path, request):
    """Factory: start_server(pdu_size=480, env=None) -> ServerHandle. All started servers
    are SIGTERMed on teardown and must exit cleanly."""
    binary = server_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"s7commd binary not found or not executable at {binary}. Build it with "
            f"`swift build --product s7commd` in {REPO} or set S7COMMD_BIN.",
            pytrace=False,
        )
    handles = []
    request.node._s7commd_handles = handles

    def _start(pdu_size: int = 480, env=None, server_overrides=None, config_overrides=None, args=()) -> ServerHandle:
        n = len(handles)
        port = free_port()
        cfg = make_config(port, pdu_size)
        cfg["server"].update(server_overrides or {})
        cfg.update(config_overrides or {})
        cfg_path = tmp_path / f"s7commd-{n}.json"
        cfg_path.write_text(json.dumps(cfg, indent=2))
        log_path = tmp_path / f"s7commd-{n}.log"
        logf = open(log_path, "wb")
        proc = subprocess.Popen(
            [str(binary), "run", "--config", str(cfg_path), "--pid-file", str(tmp_path / f"s7commd-{n}.pid"), *args],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, **(env or {})),
        )
        logf.close()
        h = ServerHandle(HOST, port, proc, log_path, cfg)
        handles.append(h)
        _wait_started(h, STARTUP_TIMEOUT_S, single_process="--single-process" in args)
        return h

    yield _start

    problems = []
    for h in handles:
        rc, problem = h.stop()
        if problem:
            problems.append(f"{problem}; log ({h.log_path}):\n{h.log()[-6000:]}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def server(start_server):
    """A running s7commd with the default config (pdu_size 480).
    Unpacks as (host, port, process, log_path)."""
    return start_server()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    handles = getattr(item, "_s7commd_handles", None)
    if handles and report.failed and call.when in ("call", "teardown"):
        for i, h in enumerate(handles):
            report.sections.append((f"s7commd server #{i} log ({h.log_path})", h.log()[-8000:]))
    return report
