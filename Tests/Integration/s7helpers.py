"""Helpers around python-snap7 2.0.2's client API.

Facts about python-snap7 2.0.2 that these helpers encode:
- `Client.connect(address, rack, slot, tcp_port=102)` (keyword is tcp_port).
- Errors are raised as RuntimeError whose message is the snap7 error text
  as *bytes*, e.g. RuntimeError(b'CPU : Address out of range').
- `read_area`/`write_area`/`db_read`/`db_write` always use WordLen.Byte
  (except TM/CT). A true bit access (transport size BIT, address = byte*8+bit)
  is only reachable through `read_multi_vars`/`write_multi_vars` with an
  S7DataItem whose WordLen is WordLen.Bit and Start = byte*8 + bit.
  Likewise for WORD/DWORD/REAL transport sizes.
- `read_multi_vars(items)` needs a ctypes array of S7DataItem whose pData
  points at caller-owned buffers; each item's Result is filled in (0 = ok).
  `write_multi_vars(list)` copies the items, so per-item Results are lost:
  `write_multi_raw` below calls Cli_WriteMultiVars directly to get them.
- `write_area(Area.TM/CT, ...)` in 2.0.2 passes len(data) as the number of
  timers/counters (2 bytes each) from a len(data)-byte buffer (over-read);
  use `tm_write(start, amount, data)` / `ct_write(...)` instead.
- `plc_stop()`/`plc_cold_start()`/`plc_hot_start()` return the snap7 error
  code instead of raising. `get_cpu_state()` ignores the error code
  (reports "S7CpuStatusUnknown" if the request failed).
- `list_blocks_of_type(block, size)` returns a c_uint16 array of length
  `size` (the count actually received is not returned; unused entries are 0).
"""
import ctypes
from ctypes import POINTER, byref, c_int32, c_uint8, cast

import snap7
from snap7.type import Area, S7DataItem, WordLen

WORDLEN_BYTES = {
    WordLen.Bit: 1,
    WordLen.Byte: 1,
    WordLen.Char: 1,
    WordLen.Word: 2,
    WordLen.Int: 2,
    WordLen.DWord: 4,
    WordLen.DInt: 4,
    WordLen.Real: 4,
    WordLen.Counter: 2,
    WordLen.Timer: 2,
}


def connect(server, rack=0, slot=1):
    c = snap7.client.Client()
    c.connect(server.host, rack, slot, tcp_port=server.port)
    return c


def _items(specs, datas=None):
    """specs: list of (area, wordlen, db, start, amount)."""
    items = (S7DataItem * len(specs))()
    bufs = []
    for i, (area, wl, db, start, amount) in enumerate(specs):
        size = amount * WORDLEN_BYTES[WordLen(wl)]
        if datas is not None:
            d = bytes(datas[i])
            assert len(d) == size, f"item {i}: {len(d)} bytes given, {size} needed"
            buf = (c_uint8 * size).from_buffer_copy(d)
        else:
            buf = (c_uint8 * size)()
        bufs.append(buf)
        it = items[i]
        it.Area = int(area)
        it.WordLen = int(wl)
        it.Result = 0
        it.DBNumber = db
        it.Start = start
        it.Amount = amount
        it.pData = cast(buf, POINTER(c_uint8))
    return items, bufs


def read_multi(client, specs):
    """Read several items in one request through the public read_multi_vars.
    Returns a list of (result_code, bytes)."""
    items, bufs = _items(specs)
    client.read_multi_vars(items)
    return [(items[i].Result, bytes(bufs[i])) for i in range(len(specs))]


def write_multi(client, specs, datas):
    """Write several items via the public write_multi_vars (raises on a
    global error; per-item results are not available through it)."""
    items, bufs = _items(specs, datas)
    client.write_multi_vars(list(items))
    return bufs  # keep buffers alive until here


def write_multi_raw(client, specs, datas):
    """Like write_multi but calls Cli_WriteMultiVars directly so the per-item
    Result codes are returned: (global_code, [item results])."""
    items, bufs = _items(specs, datas)
    code = client._lib.Cli_WriteMultiVars(client._s7_client, byref(items), c_int32(len(specs)))
    return code, [items[i].Result for i in range(len(specs))]


def read_bit(client, area, db, byte, bit):
    [(res, data)] = read_multi(client, [(area, WordLen.Bit, db, byte * 8 + bit, 1)])
    assert res == 0, f"bit read result {res:#x}"
    return data[0]


def write_bit(client, area, db, byte, bit, value):
    write_multi(client, [(area, WordLen.Bit, db, byte * 8 + bit, 1)], [bytes([1 if value else 0])])
