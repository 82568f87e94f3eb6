"""A PLC program in C attaches to s7commd's shared PLC memory with the S7commdPLC library
(Sources/S7commdPLC, docs/plc-programs.md), compiled with plain gcc as a user would: what it
writes into the image tables, S7 clients see through the data blocks mapped onto them, and
the other way round. Runs as root, as CI does: s7commd drops to its service user, and the
program attaches as root."""
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
import snap7

from conftest import HOST, REPO, ServerHandle, _wait_accepting, free_port, make_config, server_binary

INCLUDE = REPO / "Sources" / "S7commdPLC" / "include"
LIBRARY = REPO / "Sources" / "S7commdPLC" / "s7commd_plc.c"
COUNTER = REPO / "examples" / "plc_counter.c"

# A second program for the typed helpers the counter does not use: dint, lint, bool, the
# table constants and the bounds checks.
TYPES_PROGRAM = r"""
#include <stdio.h>
#include <string.h>
#include "s7commd_plc.h"

#define CHECK(call) do { int r_ = (call); if (r_ != 0) { fprintf(stderr, "%s: %s\n", #call, s7commd_strerror(r_)); return 1; } } while (0)

int main(int argc, char **argv) {
    struct s7commd_segment plc;
    if (argc != 2) return 2;
    CHECK(s7commd_attach(argv[1], &plc));
    if (s7commd_table_offset(S7COMMD_INT_MEMORY) != S7COMMD_OFFSET_INT_MEMORY
        || s7commd_table_offset(S7COMMD_LINT_MEMORY) != S7COMMD_OFFSET_LINT_MEMORY
        || s7commd_element_size(S7COMMD_DINT_OUTPUT) != 4
        || strcmp(s7commd_table_name(S7COMMD_BOOL_OUTPUT), "bool_output") != 0) {
        fprintf(stderr, "table constants disagree\n");
        return 1;
    }
    CHECK(s7commd_set_int32(&plc, S7COMMD_DINT_MEMORY, 1, -123456789));
    CHECK(s7commd_set_int64(&plc, S7COMMD_LINT_MEMORY, 0, 0x0102030405060708LL));
    CHECK(s7commd_set_bool(&plc, S7COMMD_BOOL_OUTPUT, 2, 5, true));
    int32_t d; int64_t l; bool b0, b3;
    CHECK(s7commd_get_int32(&plc, S7COMMD_DINT_MEMORY, 0, &d));
    CHECK(s7commd_get_int64(&plc, S7COMMD_LINT_MEMORY, 1, &l));
    CHECK(s7commd_get_bool(&plc, S7COMMD_BOOL_OUTPUT, 0, 0, &b0));
    CHECK(s7commd_get_bool(&plc, S7COMMD_BOOL_OUTPUT, 0, 3, &b3));
    unsigned char raw[4];
    CHECK(s7commd_read_table(&plc, S7COMMD_DINT_MEMORY, 1, raw, 4));
    printf("DINT0=%d LINT1=%lld X0.0=%d X0.3=%d RAW=%02x%02x%02x%02x\n", d, (long long)l, b0, b3,
           raw[0], raw[1], raw[2], raw[3]);
    int16_t w;
    unsigned char big[8];
    printf("RANGE=%d %d %d WRONG=%d %d\n",
           s7commd_get_int16(&plc, S7COMMD_INT_MEMORY, 1024, &w),
           s7commd_read_table(&plc, S7COMMD_INT_MEMORY, 1020, big, 8),
           s7commd_read_table(&plc, S7COMMD_INT_MEMORY, 1020, big, 9),
           s7commd_get_int16(&plc, S7COMMD_DINT_MEMORY, 0, &w),
           s7commd_get_bool(&plc, S7COMMD_BOOL_OUTPUT, 0, 8, &b0));
    printf("MODE=%s\n", s7commd_get_mode(&plc) == S7COMMD_MODE_RUN ? "RUN" : "STOP");
    s7commd_detach(&plc);
    return plc.base == NULL ? 0 : 1;
}
"""


@pytest.fixture(autouse=True)
def as_root():
    if os.geteuid() != 0:
        pytest.fail("these tests start s7commd as root (it runs as its service user) and attach as root: run them as root, as CI does")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("plc-program")
    path.chmod(0o755)
    return path


def compile_c(build_dir, sources, name):
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build a PLC program in C (apt-get install gcc)"
    out = build_dir / name
    r = subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(INCLUDE), *map(str, sources), str(LIBRARY), "-o", str(out)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, f"gcc failed:\n{r.stdout}{r.stderr}"
    out.chmod(0o755)
    return out


@pytest.fixture(scope="module")
def plc_counter(build_dir):
    return compile_c(build_dir, [COUNTER], "plc_counter")


def plc_config():
    cfg = make_config(free_port())
    cfg["data_blocks"] += [
        {"db_number": 5, "description": "%MW0..%MW9", "size_bytes": 20, "mapping": {"type": "int_memory", "start_buffer": 0}},
        {"db_number": 6, "description": "%MD0..%MD3", "size_bytes": 16, "mapping": {"type": "dint_memory", "start_buffer": 0}},
        {"db_number": 7, "description": "%ML0..%ML1", "size_bytes": 16, "mapping": {"type": "lint_memory", "start_buffer": 0}},
        {"db_number": 8, "description": "%QX0.0..%QX3.7", "size_bytes": 4, "mapping": {"type": "bool_output", "start_buffer": 0}},
    ]
    return cfg


def start(tmp_path, cfg):
    """As test_privsep.start: s7commd started as root, runtime files in tmp_path."""
    binary = server_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"s7commd binary not found at {binary}: build it with `swift build --product s7commd` in {REPO}", pytrace=False)
    tmp_path.chmod(0o755)
    cfg_path = tmp_path / "plc.json"
    cfg_path.write_text(json.dumps(cfg))
    cfg_path.chmod(0o644)
    log_path = tmp_path / "plc.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(binary), "run", "--config", str(cfg_path),
                                 "--pid-file", str(tmp_path / "s7commd.pid"), "--state-dir", str(tmp_path / "state")],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    h = ServerHandle(HOST, cfg["server"]["port"], proc, log_path, cfg)
    _wait_accepting(h, 15)
    sock = tmp_path / "memory.sock"
    deadline = time.monotonic() + 5
    while not sock.exists():
        assert time.monotonic() < deadline, f"no memory socket at {sock}:\n{h.log()}"
        time.sleep(0.05)
    return h, sock


def stop(h):
    h.process.send_signal(signal.SIGTERM)
    assert h.process.wait(timeout=15) == 0, h.log()


def client(h):
    c = snap7.client.Client()
    c.connect(h.host, 0, 1, tcp_port=h.port)
    return c


def run(program, *args, user=None, group=None):
    prefix = ["setpriv", "--reuid", user, "--regid", group, "--clear-groups"] if user else []
    return subprocess.run([*prefix, str(program), *map(str, args)], capture_output=True, text=True, timeout=30)


def test_counter_increments_what_clients_see(tmp_path, plc_counter):
    h, sock = start(tmp_path, plc_config())
    try:
        c = client(h)
        c.db_write(5, 0, bytearray(struct.pack(">h", 41)))
        c.db_write(5, 2, bytearray(struct.pack(">h", -1234)))  # %MW1, as a client writes it
        r = run(plc_counter, sock, 3)
        assert r.returncode == 0, r.stdout + r.stderr + h.log()
        lines = r.stdout.splitlines()
        assert lines[0].startswith(f"attached to {sock}: ") and lines[0].endswith("CPU in RUN"), r.stdout
        assert lines[1:4] == ["%MW0: 41 -> 42", "%MW0: 42 -> 43", "%MW0: 43 -> 44"], r.stdout
        assert lines[4] == "%MW1 = -1234", r.stdout
        # Big-endian, as S7 clients see it, in every block mapped there (DB3 maps int_memory too).
        assert c.db_read(5, 0, 2) == bytearray(struct.pack(">h", 44))
        assert c.db_read(3, 0, 4) == bytearray(struct.pack(">hh", 44, -1234))
        # Wrapping at the int16 limit.
        c.db_write(5, 0, bytearray(struct.pack(">h", 32767)))
        r = run(plc_counter, sock, 1)
        assert "%MW0: 32767 -> -32768" in r.stdout, r.stdout + r.stderr
        assert c.db_read(5, 0, 2) == bytearray(b"\x80\x00")
        c.disconnect()
        assert "attached to the PLC memory" in h.log()
    finally:
        stop(h)


def test_typed_helpers_and_byte_order(tmp_path, build_dir):
    source = build_dir / "plc_types.c"
    source.write_text(TYPES_PROGRAM)
    program = compile_c(build_dir, [source], "plc_types")
    cfg = plc_config()
    cfg["server"]["allow_plc_control"] = True
    h, sock = start(tmp_path, cfg)
    try:
        c = client(h)
        c.db_write(6, 0, bytearray(struct.pack(">i", -2_000_000_000)))   # %MD0
        c.db_write(7, 8, bytearray(struct.pack(">q", -(1 << 40) - 5)))   # %ML1
        c.db_write(8, 0, bytearray([0b0000_1000]))                        # %QX0.3
        r = run(program, sock)
        assert r.returncode == 0, r.stdout + r.stderr + h.log()
        first, ranges, mode = r.stdout.splitlines()
        assert first == f"DINT0=-2000000000 LINT1={-(1 << 40) - 5} X0.0=0 X0.3=1 RAW={struct.pack('>i', -123456789).hex()}", r.stdout
        e = {"ERANGE": 34, "EINVAL": 22}
        assert ranges == f"RANGE=-{e['ERANGE']} 0 -{e['ERANGE']} WRONG=-{e['EINVAL']} -{e['EINVAL']}", r.stdout
        assert mode == "MODE=RUN"
        assert c.db_read(6, 4, 4) == bytearray(struct.pack(">i", -123456789))
        assert c.db_read(7, 0, 8) == bytearray(bytes(range(1, 9)))
        assert c.db_read(8, 0, 4) == bytearray([0b0000_1000, 0, 0b0010_0000, 0])  # %QX2.5 set, %QX0.3 kept
        # STOP from a client shows in the header byte the program reads.
        assert c.plc_stop() == 0
        r = run(program, sock)
        assert r.returncode == 0 and "MODE=STOP" in r.stdout, r.stdout + r.stderr
        assert c.plc_hot_start() == 0
        c.disconnect()
    finally:
        stop(h)


def test_strerror_explains_what_to_do(tmp_path, plc_counter):
    wrong = tmp_path / "nowhere" / "memory.sock"
    r = run(plc_counter, wrong)
    assert r.returncode == 1
    assert f"cannot attach to {wrong}" in r.stderr, r.stderr
    assert "is s7commd running?" in r.stderr and "<runtime dir>/memory.sock" in r.stderr, r.stderr
    assert "/run/s7commd/memory.sock" in r.stderr, r.stderr

    not_a_socket = tmp_path / "plain-file"
    not_a_socket.write_text("")
    r = run(plc_counter, not_a_socket)
    assert r.returncode == 1 and "memory.sock" in r.stderr, r.stderr

    h, sock = start(tmp_path, plc_config())
    try:
        # Another user than root, the service user or its group: the socket's mode refuses it.
        r = run(plc_counter, sock, user="nobody", group="nogroup")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "run the PLC program as root, as the service user" in r.stderr, r.stderr
    finally:
        stop(h)


HAMMER_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include "s7commd_plc.h"

/* For argv[2] seconds: writes %MD0 with four equal bytes, reads %MD1 (which a client writes
 * the same way) and counts reads whose bytes differ. */
int main(int argc, char **argv) {
    struct s7commd_segment plc;
    if (argc != 3 || s7commd_attach(argv[1], &plc) != 0) return 2;
    long rounds = atol(argv[2]), torn = 0, reads = 0;
    for (long i = 0; i < rounds; i++) {
        unsigned char b = (unsigned char)(i % 250 + 1), w[4] = {b, b, b, b}, r[4];
        if (s7commd_write_table(&plc, S7COMMD_DINT_MEMORY, 0, w, 4) != 0) return 3;
        if (s7commd_read_table(&plc, S7COMMD_DINT_MEMORY, 1, r, 4) != 0) return 3;
        reads++;
        if (r[0] != r[1] || r[1] != r[2] || r[2] != r[3]) torn++;
    }
    printf("reads=%ld torn=%ld\n", reads, torn);
    return 0;
}
"""


def test_no_torn_values_between_the_program_and_clients(tmp_path, build_dir):
    """The program and two S7 clients write and read the same DINTs; every value written has
    four equal bytes, so a torn read shows mixed bytes on either side."""
    import threading
    source = build_dir / "plc_hammer.c"
    source.write_text(HAMMER_PROGRAM)
    program = compile_c(build_dir, [source], "plc_hammer")
    h, sock = start(tmp_path, plc_config())
    done, torn, errors = threading.Event(), [], []

    def hammer(n):
        try:
            c = client(h)
            i = 0
            while not done.is_set():
                b = (n * 64 + i) % 250 + 1
                c.db_write(6, 4, bytearray([b] * 4))
                got = c.db_read(6, 0, 4)
                if len(set(got)) != 1:
                    torn.append(bytes(got))
                i += 1
            c.disconnect()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(2)]
    try:
        for t in threads:
            t.start()
        r = run(program, sock, 300_000)
        done.set()
        for t in threads:
            t.join(10)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not errors, errors
        assert r.stdout.strip() == "reads=300000 torn=0", r.stdout
        assert not torn, torn[:5]
    finally:
        done.set()
        stop(h)


# API 2: both segments, data blocks and areas by S7 area and number, the attach checks.
REGION_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "s7commd_plc.h"

/* attach SOCKET: prints the attach result (and the detail on failure).
 * write SOCKET DB OFFSET HEX: writes the bytes into the data block, then prints them read back.
 * read SOCKET DB OFFSET N: prints N bytes of the data block. */
int main(int argc, char **argv) {
    struct s7commd_memory m;
    if (argc < 3) return 2;
    int r = s7commd_attach_memory(argv[2], &m);
    if (r != 0) {
        printf("ATTACH=%d\nERROR=%s\nDETAIL=%s\n", r, s7commd_strerror(r), s7commd_attach_detail());
        return 1;
    }
    printf("ATTACH=0 SIZES=%zu,%zu REGIONS=%zu\n", m.segment.size, m.read_only_size, m.region_count);
    if (strcmp(argv[1], "attach") == 0) return 0;
    unsigned db = (unsigned)atoi(argv[3]);
    size_t offset = (size_t)atol(argv[4]);
    const struct s7commd_region *region = s7commd_find_region(&m, S7COMMD_AREA_DB, db);
    if (region == NULL) { printf("NO DB%u: %s\n", db, s7commd_strerror(S7COMMD_E_NO_REGION)); return 1; }
    printf("DB%u size=%zu segment=%u read_only=%d retain=%d\n", db, region->size, region->segment, region->read_only, region->retain);
    unsigned char bytes[64];
    size_t n;
    if (strcmp(argv[1], "write") == 0) {
        n = strlen(argv[5]) / 2;
        for (size_t i = 0; i < n; i++) sscanf(argv[5] + 2 * i, "%2hhx", &bytes[i]);
        r = s7commd_write_region(&m, S7COMMD_AREA_DB, db, offset, bytes, n);
        if (r != 0) { printf("WRITE=%d %s\n", r, s7commd_strerror(r)); return 1; }
    } else {
        n = (size_t)atol(argv[5]);
    }
    memset(bytes, 0, sizeof bytes);
    r = s7commd_read_region(&m, S7COMMD_AREA_DB, db, offset, bytes, n);
    if (r != 0) { printf("READ=%d %s\n", r, s7commd_strerror(r)); return 1; }
    printf("BYTES=");
    for (size_t i = 0; i < n; i++) printf("%02x", bytes[i]);
    printf("\nPAST=%d\n", s7commd_read_region(&m, S7COMMD_AREA_DB, db, region->size, bytes, 1));
    s7commd_detach_memory(&m);
    return m.regions == NULL && m.segment.base == NULL ? 0 : 1;
}
"""


@pytest.fixture(scope="module")
def plc_regions(build_dir):
    source = build_dir / "plc_regions.c"
    source.write_text(REGION_PROGRAM)
    return compile_c(build_dir, [source], "plc_regions")


def test_the_plc_program_writes_a_read_only_db_that_clients_may_only_read(tmp_path, plc_regions):
    """DB2 is read_only with storage of its own: it lives in the second segment, which the S7
    worker maps read-only. A client's write is refused as before; the PLC program writes it
    through the library, and the client reads what it wrote."""
    h, sock = start(tmp_path, plc_config())
    try:
        c = client(h)
        # Refused as before (test_snap7_client.py, test_write_read_only_db2): the item's access denied.
        with pytest.raises(RuntimeError, match="refused by CPU"):
            c.db_write(2, 0, bytearray(b"\x01\x02"))
        assert c.db_read(2, 0, 4) == bytearray(4)
        r = run(plc_regions, "write", sock, 2, 60, "cafebabe")
        assert r.returncode == 0, r.stdout + r.stderr + h.log()
        lines = r.stdout.splitlines()
        # Segment 0: header and tables (49,408), DB1 (1024), I, Q, M (256 each), T, C (128 each);
        # segment 1: DB2. Regions: DB1, DB2, DB3, DB5-DB8; I, Q, M, T, C.
        assert lines[0] == "ATTACH=0 SIZES=51456,64 REGIONS=12", r.stdout
        assert lines[1] == "DB2 size=64 segment=1 read_only=1 retain=0", r.stdout
        assert lines[2:] == ["BYTES=cafebabe", "PAST=-34"], r.stdout  # one byte past the end: -ERANGE
        assert c.db_read(2, 60, 4) == bytearray(b"\xca\xfe\xba\xbe")
        # The other way round: what a client writes into DB1 (segment 0), the program reads.
        c.db_write(1, 1020, bytearray(b"\x11\x22\x33\x44"))
        r = run(plc_regions, "read", sock, 1, 1020, 4)
        assert r.returncode == 0 and "DB1 size=1024 segment=0 read_only=0" in r.stdout and "BYTES=11223344" in r.stdout, r.stdout
        # Bounds and missing blocks.
        r = run(plc_regions, "read", sock, 2, 62, 4)
        assert r.returncode == 1 and f"READ=-{34}" in r.stdout, r.stdout
        r = run(plc_regions, "read", sock, 99, 0, 1)
        assert r.returncode == 1 and "NO DB99: no such data block" in r.stdout, r.stdout
        # Still refused for the client, and the program's bytes are still there.
        with pytest.raises(RuntimeError, match="refused by CPU"):
            c.db_write(2, 60, bytearray(b"\x00"))
        assert c.db_read(2, 60, 4) == bytearray(b"\xca\xfe\xba\xbe")
        c.disconnect()
    finally:
        stop(h)


FAKE_SERVER = Path(__file__).parent / "fake_memory_socket.py"
FAKE_USER = "s7commd-fake"


@pytest.fixture(scope="module")
def fake_user():
    """A system user that is neither root nor the owner of the directory memory.sock is in."""
    if subprocess.run(["id", FAKE_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", FAKE_USER],
                       check=True)
    import pwd
    return pwd.getpwnam(FAKE_USER)


def serve_fake(path, kind, user=None):
    """Starts the fake memory.sock at path (as user, else as root); returns the process."""
    import sys
    prefix = ["setpriv", "--reuid", user.pw_name, "--regid", str(user.pw_gid), "--clear-groups"] if user else []
    proc = subprocess.Popen([*prefix, sys.executable, str(FAKE_SERVER), str(path), kind], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening", "the fake memory socket did not start"
    return proc


def mem_read(socket_path):
    return subprocess.run([str(server_binary()), "mem", "read", "DB1.DBW0", "--socket", str(socket_path)],
                          capture_output=True, text=True, timeout=20)


def test_attach_refuses_a_memory_socket_served_by_another_user(tmp_path, plc_regions, plc_counter, fake_user):
    """Another local user plants a memory.sock in a directory that anyone may write (like
    /tmp): the peer is that user, neither root nor the directory's owner (root)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    path = shared / "memory.sock"
    fake = serve_fake(path, "none", user=fake_user)
    try:
        r = run(plc_regions, "attach", path)
        assert r.returncode == 1, r.stdout
        assert "ATTACH=-129" in r.stdout and "neither root nor the owner of the directory" in r.stdout, r.stdout
        assert f"DETAIL=the memory socket {path} is served by uid {fake_user.pw_uid} (pid {fake.pid}), which is neither root " \
               f"nor uid 0, the owner of {shared}" in r.stdout, r.stdout
        # The API 1 entry point runs the same check.
        r = run(plc_counter, path)
        assert r.returncode == 1 and "neither root nor the owner of the directory" in r.stderr, r.stderr
        # The Swift client (s7commd mem).
        r = mem_read(path)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"is served by uid {fake_user.pw_uid} (pid {fake.pid}), which is neither root nor uid 0, the owner of {shared}" in r.stderr, r.stderr
    finally:
        fake.kill()
        fake.wait()
    # The same fake served by root is trusted as far as the peer goes; its memory is not s7commd's.
    os.unlink(path)
    fake = serve_fake(path, "none")
    try:
        r = run(plc_regions, "attach", path)
        assert r.returncode == 1 and "DETAIL=segment 0 has no s7commd header" in r.stdout, r.stdout
        r = mem_read(path)
        assert r.returncode == 1 and "no s7commd header" in r.stderr, r.stderr
    finally:
        fake.kill()
        fake.wait()


@pytest.mark.parametrize("kind, detail, swift", [
    ("unsealed", "DETAIL=segment 0 is not sealed against resizing (seals 0x1, needs F_SEAL_SHRINK and F_SEAL_GROW)",
     "the PLC memory segment is not sealed against resizing (its seals: seal); refusing to map it"),
    ("wrong-size", "DETAIL=segment 0 is 45312 bytes, the layout needs 49408",
     "the PLC memory segment is 45312 bytes, the configuration needs 49408"),
])
def test_attach_refuses_a_segment_without_seals_or_of_the_wrong_size(tmp_path, plc_regions, kind, detail, swift):
    path = tmp_path / "memory.sock"
    fake = serve_fake(path, kind)
    try:
        r = run(plc_regions, "attach", path)
        assert r.returncode == 1, r.stdout
        assert "ATTACH=-124" in r.stdout and "not sealed against resizing, or not the size" in r.stdout, r.stdout
        assert detail in r.stdout, r.stdout
        r = mem_read(path)
        assert r.returncode == 1 and swift in r.stderr, r.stderr
    finally:
        fake.kill()
        fake.wait()
