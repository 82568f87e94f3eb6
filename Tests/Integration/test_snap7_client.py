"""s7commd driven by python-snap7 2.0.2's Client (the snap7 C library)."""
import datetime
import struct
import threading

import pytest
import snap7
from snap7.type import Area, Block, Parameter, WordLen
from snap7.util import get_bool, get_dword, get_int, get_real

from conftest import PLC_IDENTITY
from s7helpers import (
    connect,
    read_bit,
    read_multi,
    write_bit,
    write_multi,
    write_multi_raw,
)

# snap7 client error codes (per-item Result codes / exception texts)
ERR_ADDRESS_OUT_OF_RANGE = 0x00900000
ERR_ITEM_NOT_AVAILABLE = 0x00C00000

# (area, db number, size in bytes) of the byte-addressable areas of the config
BYTE_AREAS = [
    pytest.param(Area.DB, 1, 1024, id="DB1"),
    pytest.param(Area.DB, 3, 40, id="DB3-mapped"),
    pytest.param(Area.PE, 0, 256, id="I"),
    pytest.param(Area.PA, 0, 256, id="Q"),
    pytest.param(Area.MK, 0, 256, id="M"),
]


def pattern(n, seed=0):
    return bytes(((i * 37 + seed * 11 + 5) & 0xFF) for i in range(n))


@pytest.fixture
def client(server):
    c = connect(server)
    yield c
    c.disconnect()
    c.destroy()


def assert_still_works(server, c=None):
    """The connection (if given) and the server are still usable."""
    server.assert_alive()
    if c is not None:
        c.db_write(1, 500, bytearray(b"\xa5\x5a"))
        assert c.db_read(1, 500, 2) == bytearray(b"\xa5\x5a")
    fresh = connect(server)
    try:
        assert fresh.get_connected()
        fresh.db_read(1, 0, 4)
    finally:
        fresh.disconnect()
        fresh.destroy()


# ---------------------------------------------------------------- connection


@pytest.mark.parametrize("rack,slot", [(0, 1), (0, 2)])
def test_connect_rack_slot(server, rack, slot):
    c = connect(server, rack, slot)
    try:
        assert c.get_connected()
        c.db_write(1, 0, bytearray(b"\x01\x02"))
        assert c.db_read(1, 0, 2) == bytearray(b"\x01\x02")
    finally:
        c.disconnect()
        c.destroy()


@pytest.mark.parametrize("server_pdu", [240, 480, 960])
@pytest.mark.parametrize("client_pdu", [240, 480, 960])
def test_pdu_negotiation(start_server, server_pdu, client_pdu):
    srv = start_server(pdu_size=server_pdu)
    c = snap7.client.Client()
    c.set_param(Parameter.PDURequest, client_pdu)
    c.connect(srv.host, 0, 1, tcp_port=srv.port)
    try:
        assert c.get_pdu_length() == min(server_pdu, client_pdu)
        # a transfer larger than the PDU still works (the client splits it)
        data = pattern(1024, seed=server_pdu + client_pdu)
        c.db_write(1, 0, bytearray(data))
        assert bytes(c.db_read(1, 0, 1024)) == data
    finally:
        c.disconnect()
        c.destroy()


def test_default_client_pdu_is_480(server, client):
    assert client.get_pdu_length() == 480


def test_reconnect_many_times(server):
    for i in range(30):
        c = connect(server)
        c.db_write(1, 2 * i, bytearray([i, i]))
        c.disconnect()
        c.destroy()
    c = connect(server)
    try:
        data = bytes(c.db_read(1, 0, 60))
        assert data == bytes(v for i in range(30) for v in (i, i))
    finally:
        c.disconnect()
        c.destroy()


# ---------------------------------------------------------------- data access


def test_db_read_write_bytes(client):
    assert client.db_read(1, 0, 16) == bytearray(16), "DB1 must start zeroed"
    client.db_write(1, 3, bytearray(b"\xde\xad\xbe\xef\x01"))
    assert client.db_read(1, 3, 5) == bytearray(b"\xde\xad\xbe\xef\x01")
    assert client.db_read(1, 0, 10) == bytearray(b"\x00\x00\x00\xde\xad\xbe\xef\x01\x00\x00")
    # last bytes of the DB
    client.db_write(1, 1020, bytearray(b"WXYZ"))
    assert client.db_read(1, 1020, 4) == bytearray(b"WXYZ")
    assert client.db_read(1, 1023, 1) == bytearray(b"Z")


@pytest.mark.parametrize("area,db,size", BYTE_AREAS)
def test_area_bytes_roundtrip(client, area, db, size):
    assert client.read_area(area, db, 0, size) == bytearray(size), "area must start zeroed"
    data = pattern(size, seed=int(area))
    client.write_area(area, db, 0, bytearray(data))
    assert bytes(client.read_area(area, db, 0, size)) == data
    client.write_area(area, db, size - 3, bytearray(b"\x11\x22\x33"))
    assert bytes(client.read_area(area, db, size - 5, 5)) == data[size - 5 : size - 3] + b"\x11\x22\x33"
    # areas are independent of each other
    if area != Area.DB or db != 1:
        assert client.db_read(1, 0, 8) == bytearray(8)


def test_areas_are_independent(client):
    for i, (area, db) in enumerate([(Area.DB, 1), (Area.DB, 3), (Area.PE, 0), (Area.PA, 0), (Area.MK, 0)]):
        client.write_area(area, db, 4, bytearray([0x10 + i] * 4))
    for i, (area, db) in enumerate([(Area.DB, 1), (Area.DB, 3), (Area.PE, 0), (Area.PA, 0), (Area.MK, 0)]):
        assert client.read_area(area, db, 4, 4) == bytearray([0x10 + i] * 4), (area, db)


@pytest.mark.parametrize("area,db,size", BYTE_AREAS)
def test_bit_access(client, area, db, size):
    byte = 7
    client.write_area(area, db, byte, bytearray(b"\x00"))
    write_bit(client, area, db, byte, 3, True)
    assert client.read_area(area, db, byte, 1) == bytearray(b"\x08")
    assert read_bit(client, area, db, byte, 3) == 1
    assert read_bit(client, area, db, byte, 2) == 0
    write_bit(client, area, db, byte, 7, True)
    write_bit(client, area, db, byte, 0, True)
    b = client.read_area(area, db, byte, 1)
    assert b == bytearray(b"\x89")
    assert [get_bool(b, 0, i) for i in range(8)] == [True, False, False, True, False, False, False, True]
    write_bit(client, area, db, byte, 3, False)
    assert client.read_area(area, db, byte, 1) == bytearray(b"\x81")
    # neighbours untouched
    assert client.read_area(area, db, byte - 1, 3) == bytearray(b"\x00\x81\x00")
    # last bit of the area
    write_bit(client, area, db, size - 1, 7, True)
    assert client.read_area(area, db, size - 1, 1) == bytearray(b"\x80")
    assert read_bit(client, area, db, size - 1, 7) == 1


@pytest.mark.parametrize("area,db,size", BYTE_AREAS)
def test_word_dword_real(client, area, db, size):
    word = struct.pack(">hh", -12345, 321)
    dword = struct.pack(">II", 0xDEADBEEF, 7)
    real = struct.pack(">f", 3.25)
    write_multi(client, [(area, WordLen.Word, db, 2, 2)], [word])
    write_multi(client, [(area, WordLen.DWord, db, 8, 2)], [dword])
    write_multi(client, [(area, WordLen.Real, db, 20, 1)], [real])
    raw = client.read_area(area, db, 0, 24)
    assert get_int(raw, 2) == -12345 and get_int(raw, 4) == 321
    assert get_dword(raw, 8) == 0xDEADBEEF and get_dword(raw, 12) == 7
    assert get_real(raw, 20) == 3.25
    assert raw[0:2] == bytearray(2) and raw[6:8] == bytearray(2) and raw[16:20] == bytearray(4)
    got = read_multi(
        client,
        [
            (area, WordLen.Word, db, 2, 2),
            (area, WordLen.DWord, db, 8, 2),
            (area, WordLen.Real, db, 20, 1),
            (area, WordLen.Int, db, 2, 1),
            (area, WordLen.DInt, db, 8, 1),
        ],
    )
    assert got == [(0, word), (0, dword), (0, real), (0, word[:2]), (0, dword[:4])]
    # byte-wise write, word-wise read
    client.write_area(area, db, size - 4, bytearray(struct.pack(">f", -0.5)))
    assert read_multi(client, [(area, WordLen.Real, db, size - 4, 1)]) == [(0, struct.pack(">f", -0.5))]


def test_timers(client):
    assert client.tm_read(0, 64) == bytearray(128), "timers must start zeroed"
    client.tm_write(2, 3, bytearray(b"\x01\x02\x03\x04\x05\x06"))
    assert client.tm_read(2, 3) == bytearray(b"\x01\x02\x03\x04\x05\x06")
    assert client.read_area(Area.TM, 0, 1, 5) == bytearray(b"\x00\x00\x01\x02\x03\x04\x05\x06\x00\x00")
    client.tm_write(63, 1, bytearray(b"\xab\xcd"))
    assert client.read_area(Area.TM, 0, 63, 1) == bytearray(b"\xab\xcd")
    assert read_multi(client, [(Area.TM, WordLen.Timer, 0, 3, 2)]) == [(0, b"\x03\x04\x05\x06")]
    # timers and counters are separate
    assert client.ct_read(0, 64) == bytearray(128)


def test_counters(client):
    assert client.ct_read(0, 64) == bytearray(128), "counters must start zeroed"
    client.ct_write(10, 4, bytearray(range(1, 9)))
    assert client.ct_read(10, 4) == bytearray(range(1, 9))
    assert client.read_area(Area.CT, 0, 9, 2) == bytearray(b"\x00\x00\x01\x02")
    client.ct_write(63, 1, bytearray(b"\x09\x99"))
    assert client.read_area(Area.CT, 0, 63, 1) == bytearray(b"\x09\x99")
    assert read_multi(client, [(Area.CT, WordLen.Counter, 0, 11, 3)]) == [(0, bytes(range(3, 9)))]
    assert client.tm_read(0, 64) == bytearray(128)


def test_timer_counter_out_of_range(server, client):
    with pytest.raises(RuntimeError):
        client.tm_read(62, 4)
    with pytest.raises(RuntimeError):
        client.ct_read(64, 1)
    assert_still_works(server, client)


MIXED_SPECS = [
    (Area.DB, WordLen.Byte, 1, 100, 3),
    (Area.MK, WordLen.Word, 0, 10, 2),
    (Area.DB, WordLen.Byte, 1, 110, 1),
    (Area.PA, WordLen.Byte, 0, 33, 5),
    (Area.DB, WordLen.Word, 1, 120, 1),
    (Area.PE, WordLen.Byte, 0, 7, 1),
    (Area.DB, WordLen.Byte, 3, 13, 5),
]
MIXED_DATA = [b"abc", b"\x12\x34\x56\x78", b"z", b"hello", b"\xbe\xef", b"!", b"world"]


def test_multi_vars_odd_lengths(client):
    write_multi(client, MIXED_SPECS, MIXED_DATA)
    # read back through single-item reads (catches fill-byte misparsing)
    assert client.db_read(1, 100, 3) == bytearray(b"abc")
    assert client.read_area(Area.MK, 0, 10, 4) == bytearray(b"\x12\x34\x56\x78")
    assert client.db_read(1, 110, 1) == bytearray(b"z")
    assert client.read_area(Area.PA, 0, 33, 5) == bytearray(b"hello")
    assert client.db_read(1, 120, 2) == bytearray(b"\xbe\xef")
    assert client.read_area(Area.PE, 0, 7, 1) == bytearray(b"!")
    assert client.db_read(3, 13, 5) == bytearray(b"world")
    # nothing written next to the items
    assert client.db_read(1, 99, 1) == bytearray(1) and client.db_read(1, 103, 1) == bytearray(1)
    assert client.db_read(1, 111, 1) == bytearray(1)
    assert client.read_area(Area.PA, 0, 38, 1) == bytearray(1)
    # and through one multi read
    got = read_multi(client, MIXED_SPECS)
    assert got == [(0, d) for d in MIXED_DATA]


def test_multi_write_real_then_bytes(client):
    specs = [
        (Area.PA, WordLen.Real, 0, 8, 1),
        (Area.DB, WordLen.Byte, 1, 201, 5),
        (Area.DB, WordLen.DWord, 1, 300, 1),
        (Area.DB, WordLen.Bit, 1, 310 * 8 + 5, 1),
        (Area.MK, WordLen.Byte, 0, 3, 3),
    ]
    data = [struct.pack(">f", 1.5), b"hello", b"\x01\x02\x03\x04", b"\x01", b"xyz"]
    code, results = write_multi_raw(client, specs, data)
    assert (code, results) == (0, [0] * 5)
    assert client.read_area(Area.PA, 0, 8, 4) == bytearray(struct.pack(">f", 1.5))
    assert client.db_read(1, 201, 5) == bytearray(b"hello")
    assert client.db_read(1, 300, 4) == bytearray(b"\x01\x02\x03\x04")
    assert client.db_read(1, 310, 1) == bytearray(b"\x20")
    assert client.read_area(Area.MK, 0, 3, 3) == bytearray(b"xyz")
    assert read_multi(client, specs) == [(0, d) for d in data]


def test_multi_read_with_failing_items(server, client):
    client.db_write(1, 0, bytearray(b"ok"))
    got = read_multi(
        client,
        [
            (Area.DB, WordLen.Byte, 1, 0, 2),
            (Area.DB, WordLen.Byte, 9, 0, 2),  # DB9 does not exist
            (Area.DB, WordLen.Byte, 1, 1023, 3),  # past the end of DB1
            (Area.MK, WordLen.Byte, 0, 0, 1),
        ],
    )
    assert got[0] == (0, b"ok")
    assert got[1][0] == ERR_ITEM_NOT_AVAILABLE, hex(got[1][0])
    assert got[2][0] == ERR_ADDRESS_OUT_OF_RANGE, hex(got[2][0])
    assert got[3] == (0, b"\x00")
    assert_still_works(server, client)


def test_multi_write_with_failing_items(server, client):
    code, results = write_multi_raw(
        client,
        [
            (Area.DB, WordLen.Byte, 1, 0, 2),
            (Area.DB, WordLen.Byte, 9, 0, 2),
            (Area.DB, WordLen.Byte, 2, 0, 2),  # read-only
            (Area.MK, WordLen.Byte, 0, 255, 2),  # crosses the end of M
            (Area.MK, WordLen.Byte, 0, 0, 1),
        ],
        [b"ok", b"no", b"ro", b"xx", b"m"],
    )
    assert code == 0
    assert results[0] == 0 and results[4] == 0
    assert results[1] != 0 and results[2] != 0 and results[3] != 0, [hex(r) for r in results]
    assert client.db_read(1, 0, 2) == bytearray(b"ok")
    assert client.db_read(2, 0, 2) == bytearray(2)
    assert client.read_area(Area.MK, 0, 254, 2) == bytearray(2)
    assert client.read_area(Area.MK, 0, 0, 1) == bytearray(b"m")
    assert_still_works(server, client)


def test_large_db_read(client):
    data = pattern(1024, seed=42)
    client.db_write(1, 0, bytearray(data))
    got = client.db_read(1, 0, 1024)
    assert len(got) == 1024
    assert bytes(got) == data
    # exactly one PDU worth of payload (480 - 18) and one more
    assert bytes(client.db_read(1, 10, 462)) == data[10:472]
    assert bytes(client.db_read(1, 10, 463)) == data[10:473]
    assert bytes(client.read_area(Area.DB, 1, 0, 1024)) == data


def test_large_write_then_small_reads(client):
    data = pattern(1024, seed=7)
    client.write_area(Area.DB, 1, 0, bytearray(data))
    for off in range(0, 1024, 100):
        n = min(100, 1024 - off)
        assert bytes(client.db_read(1, off, n)) == data[off : off + n]


# ---------------------------------------------------------------- errors


def test_read_past_end_of_db(server, client):
    with pytest.raises(RuntimeError) as ei:
        client.db_read(1, 1020, 8)
    assert b"Address out of range" in ei.value.args[0]
    with pytest.raises(RuntimeError) as ei:
        client.db_read(1, 1024, 1)
    assert b"Address out of range" in ei.value.args[0]
    with pytest.raises(RuntimeError) as ei:
        client.db_read(3, 38, 4)
    assert b"Address out of range" in ei.value.args[0]
    with pytest.raises(RuntimeError) as ei:
        client.read_area(Area.MK, 0, 250, 10)
    assert b"Address out of range" in ei.value.args[0]
    # same connection goes on
    client.db_write(1, 1020, bytearray(b"abcd"))
    assert client.db_read(1, 1020, 4) == bytearray(b"abcd")
    assert_still_works(server, client)


def test_read_nonexistent_db(server, client):
    with pytest.raises(RuntimeError) as ei:
        client.db_read(9, 0, 4)
    assert b"Item not available" in ei.value.args[0]
    with pytest.raises(RuntimeError):
        client.db_read(0, 0, 4)
    with pytest.raises(RuntimeError):
        client.db_write(9, 0, bytearray(b"x"))
    assert_still_works(server, client)


def test_write_past_end_of_db(server, client):
    client.db_write(1, 1016, bytearray(b"12345678"))
    with pytest.raises(RuntimeError) as ei:
        client.db_write(1, 1020, bytearray(b"abcdefgh"))
    assert b"Address out of range" in ei.value.args[0]
    assert client.db_read(1, 1016, 8) == bytearray(b"12345678"), "failed write must not be partial"
    assert_still_works(server, client)


def test_write_read_only_db2(server, client):
    before = client.db_read(2, 0, 64)
    assert before == bytearray(64)
    with pytest.raises(RuntimeError):
        client.db_write(2, 0, bytearray(b"\x01\x02\x03\x04"))
    with pytest.raises(RuntimeError):
        client.write_area(Area.DB, 2, 60, bytearray(b"\xff"))
    code, results = write_multi_raw(client, [(Area.DB, WordLen.Bit, 2, 5, 1)], [b"\x01"])
    assert results[0] != 0, "bit write into read-only DB2 must fail"
    assert client.db_read(2, 0, 64) == before
    assert_still_works(server, client)


# ---------------------------------------------------------------- identity


def test_get_cpu_info(client):
    info = client.get_cpu_info()
    assert info.ModuleTypeName.decode() == PLC_IDENTITY["module_type"]
    assert info.SerialNumber.decode() == PLC_IDENTITY["serial_number"]
    assert info.ASName.decode() == PLC_IDENTITY["name"]
    assert info.Copyright.decode() == PLC_IDENTITY["copyright"]
    assert info.ModuleName.decode() == PLC_IDENTITY["module_name"]


def _szl_records(szl):
    n, ln = szl.Header.NDR, szl.Header.LengthDR
    raw = bytes(bytearray(szl.Data)[: n * ln])
    return [raw[i * ln : (i + 1) * ln] for i in range(n)]


def test_szl_001c_component_identification(client):
    szl = client.read_szl(0x001C, 0)
    assert szl.Header.LengthDR == 34
    recs = {int.from_bytes(r[:2], "big"): r[2:].split(b"\x00")[0].rstrip(b" ").decode() for r in _szl_records(szl)}
    expected = {
        1: PLC_IDENTITY["name"],
        2: PLC_IDENTITY["module_name"],
        3: PLC_IDENTITY["plant_identification"],
        4: PLC_IDENTITY["copyright"],
        5: PLC_IDENTITY["serial_number"],
        7: PLC_IDENTITY["module_type"],
    }
    for idx, value in expected.items():
        assert recs.get(idx) == value, f"SZL 0x001C index {idx}: {recs.get(idx)!r} != {value!r}; all: {recs}"


def test_szl_0011_module_identification(client):
    szl = client.read_szl(0x0011, 0)
    assert szl.Header.LengthDR == 28
    recs = {int.from_bytes(r[:2], "big"): r for r in _szl_records(szl)}
    for idx in (1, 6):  # module, basic hardware
        assert idx in recs, f"SZL 0x0011 lacks index {idx}: {sorted(recs)}"
        assert recs[idx][2:22].decode().strip() == PLC_IDENTITY["order_code"]
    assert 7 in recs, f"SZL 0x0011 lacks index 7 (basic firmware): {sorted(recs)}"
    assert tuple(recs[7][25:28]) == (3, 2, 6)


def test_get_order_code(client):
    oc = client.get_order_code()
    assert oc.OrderCode.decode().strip() == PLC_IDENTITY["order_code"]
    assert (oc.V1, oc.V2, oc.V3) == (3, 2, 6)


def test_get_cpu_state(client):
    assert client.get_cpu_state() == "S7CpuStatusRun"


def test_list_blocks(client):
    bl = client.list_blocks()
    assert bl.DBCount == 3
    assert (bl.OBCount, bl.FBCount, bl.FCCount, bl.SFBCount, bl.SFCCount, bl.SDBCount) == (0, 0, 0, 0, 0, 0)


def test_list_blocks_of_type(client):
    arr = client.list_blocks_of_type(Block.DB, 16)
    assert [n for n in arr if n] == [1, 2, 3]
    assert list(arr)[3:] == [0] * 13
    # no OBs: either an empty list or an error reply (real CPUs answer
    # "object does not exist"; snap7 then raises) is acceptable
    try:
        obs = client.list_blocks_of_type(Block.OB, 16)
    except RuntimeError:
        obs = []
    assert [n for n in obs if n] == []
    assert [n for n in client.list_blocks_of_type(Block.DB, 16) if n] == [1, 2, 3]


@pytest.mark.parametrize("db,size", [(1, 1024), (2, 64), (3, 40)])
def test_get_block_info(client, db, size):
    info = client.get_block_info(Block.DB, db)
    assert info.BlkNumber == db
    assert info.BlkType == 0x0A  # sub-block type DB
    assert info.MC7Size == size
    assert info.LoadSize >= size


def test_get_block_info_missing(server, client):
    with pytest.raises(RuntimeError):
        client.get_block_info(Block.DB, 9)
    assert_still_works(server, client)


def test_get_plc_datetime(client):
    """s7commd reports the server's local time (same TZ as this process)."""
    dt = client.get_plc_datetime()
    assert isinstance(dt, datetime.datetime)
    local = datetime.datetime.now()
    assert abs((dt - local).total_seconds()) < 60, (dt, local)


def test_get_plc_datetime_is_server_local_time(start_server):
    """With TZ=Asia/Kolkata (UTC+05:30, no DST) the PLC clock is UTC+05:30."""
    srv = start_server(env={"TZ": "Asia/Kolkata"})
    c = connect(srv)
    try:
        dt = c.get_plc_datetime()
    finally:
        c.disconnect()
        c.destroy()
    expected = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(hours=5, minutes=30)
    assert abs((dt - expected).total_seconds()) < 60, (dt, expected)


# ---------------------------------------------------------------- unsupported


def test_full_upload_refused(server, client):
    with pytest.raises(RuntimeError):
        client.full_upload(Block.DB, 1)
    assert_still_works(server, client)
    assert client.get_cpu_state() == "S7CpuStatusRun"


def test_upload_refused(server, client):
    with pytest.raises(RuntimeError):
        client.upload(1)
    assert_still_works(server, client)


def test_set_plc_datetime_refused(server, client):
    with pytest.raises(RuntimeError):
        client.set_plc_datetime(datetime.datetime(2001, 2, 3, 4, 5, 6))
    assert_still_works(server, client)
    assert abs((client.get_plc_datetime() - datetime.datetime(2001, 2, 3, 4, 5, 6)).days) > 1


def test_plc_stop_refused(server, client):
    code = client.plc_stop()  # python-snap7 returns the code instead of raising
    assert code != 0, "plc_stop must be refused by the emulator"
    assert client.get_cpu_state() == "S7CpuStatusRun"
    assert_still_works(server, client)


def test_delete_block_refused(server, client):
    code = client.delete(Block.DB, 1)  # python-snap7 returns the code instead of raising
    assert code != 0, "deleting a block must be refused by the emulator"
    assert client.list_blocks().DBCount == 3
    assert_still_works(server, client)


# ---------------------------------------------------------------- concurrency


def test_concurrent_clients(server):
    n_threads, rounds = 4, 200
    errors = []

    def worker(k):
        c = snap7.client.Client()
        try:
            c.connect(server.host, 0, 1 + (k % 2), tcp_port=server.port)
            for i in range(rounds):
                payload = bytearray(struct.pack(">HHI", k, i, (k << 16) ^ i))
                off = 64 * k + (i % 7) * 8
                if i % 2:
                    c.db_write(1, off, payload)
                    got = c.db_read(1, off, 8)
                else:
                    c.write_area(Area.MK, 0, off, payload)
                    got = c.read_area(Area.MK, 0, off, 8)
                if got != payload:
                    errors.append(f"thread {k} round {i}: wrote {payload.hex()} read {bytes(got).hex()}")
                    return
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {k}: {type(e).__name__}: {e}")
        finally:
            c.disconnect()
            c.destroy()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "client threads hung"
    assert errors == []
    server.assert_alive()
