#!/usr/bin/env python3
"""Writes the byte fixtures under frames/ and the fuzz seeds under corpus/.

The expected answers are computed here from the protocol notes (docs: /work/notes/s7-facts.md),
independently of the Swift encoder, so FrameFixtureTests compares the server against a second
implementation of the rules and not against its own output.

frames/*.hex format (read by FrameFixtureTests and the tshark test):
  # text          a comment naming the next frame
  ! pdu N         configured server.pdu_size for this session (default 480)
  > hex bytes     one frame the client sends
  < hex bytes     one frame the server must answer (zero or more after each '>')
  ! closes        the request above must end the connection

The memory the sessions run against is FixtureMemory.make() in Support.swift; memory() below
is its model.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- memory model (must match FixtureMemory.make()) -------------------------------------
def memory():
    return {
        ("I", 0): bytearray((0x10 + i) & 0xFF for i in range(16)),
        ("Q", 0): bytearray((0x20 + i) & 0xFF for i in range(16)),
        ("M", 0): bytearray((0x80 + i) & 0xFF for i in range(32)),
        ("DB", 1): bytearray((i * 7 + 1) & 0xFF for i in range(1024)),
        ("DB", 2): bytearray((0xA0 + i) & 0xFF for i in range(16)),  # read-only, mapped to byte_input 0
        ("DB", 3): bytearray([0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0]),  # int_memory from element 10
        ("T", 0): bytearray((0x40 + i) & 0xFF for i in range(32)),
        ("C", 0): bytearray((0x60 + i) & 0xFF for i in range(32)),
    }


AREA = {"I": 0x81, "Q": 0x82, "M": 0x83, "DB": 0x84, "T": 0x1D, "C": 0x1C}
TS = {"bit": 1, "byte": 2, "char": 3, "word": 4, "int": 5, "dword": 6, "dint": 7, "real": 8, "counter": 0x1C, "timer": 0x1D}
SIZE = {"bit": 1, "byte": 1, "char": 1, "word": 2, "int": 2, "dword": 4, "dint": 4, "real": 4, "counter": 2, "timer": 2}
# response data transport size and whether its length counts bits
RTS = {"bit": (0x03, False), "byte": (0x04, True), "word": (0x04, True), "dword": (0x04, True),
       "int": (0x05, True), "dint": (0x05, True), "real": (0x07, False),
       "char": (0x09, False), "counter": (0x09, False), "timer": (0x09, False)}

CLOCK = bytes([0x00, 0x20, 0x24, 0x03, 0x15, 0x13, 0x45, 0x56, 0x78, 0x96])  # 2024-03-15 13:45:56.789, Friday (6)


def h(b):
    return " ".join("%02X" % x for x in b)


def u16(v):
    return struct.pack(">H", v & 0xFFFF)


def tpkt(payload):
    return bytes([3, 0]) + u16(len(payload) + 4) + payload


def dt(s7, eot=True):
    return tpkt(bytes([2, 0xF0, 0x80 if eot else 0x00]) + s7)


def job(ref, params, data=b""):
    return dt(bytes([0x32, 1, 0, 0]) + u16(ref) + u16(len(params)) + u16(len(data)) + params + data)


def ack(ref, params, data=b"", err=0):
    return dt(bytes([0x32, 3, 0, 0]) + u16(ref) + u16(len(params)) + u16(len(data)) + u16(err) + params + data)


def ud(ref, params, data):
    return dt(bytes([0x32, 7, 0, 0]) + u16(ref) + u16(len(params)) + u16(len(data)) + params + data)


def cr(tsap_hi, tsap_lo):
    # snap7's exact 22-byte connection request
    return bytes([0x03, 0x00, 0x00, 0x16, 0x11, 0xE0, 0x00, 0x00, 0x00, 0x01, 0x00,
                  0xC0, 0x01, 0x0A, 0xC1, 0x02, 0x01, 0x00, 0xC2, 0x02, tsap_hi, tsap_lo])


def cc(tsap_hi, tsap_lo):
    return bytes([0x03, 0x00, 0x00, 0x16, 0x11, 0xD0, 0x00, 0x01, 0x00, 0x01, 0x00,
                  0xC0, 0x01, 0x0A, 0xC1, 0x02, 0x01, 0x00, 0xC2, 0x02, tsap_hi, tsap_lo])


def setup_req(ref, pdu):
    return job(ref, bytes([0xF0, 0, 0, 1, 0, 1]) + u16(pdu))


def setup_ok(ref, pdu):
    return ack(ref, bytes([0xF0, 0, 0, 1, 0, 1]) + u16(pdu))


def item(ts, count, db, area, addr, syntax=0x10):
    return bytes([0x12, 0x0A, syntax, ts]) + u16(count) + u16(db) + bytes([area]) + struct.pack(">I", addr)[1:]


class Session:
    def __init__(self, name, pdu=480):
        self.lines = []
        self.ref = 0
        self.mem = memory()
        if pdu != 480:
            self.lines.append("! pdu %d" % pdu)
        self.name = name

    def comment(self, text):
        self.lines.append("# " + text)

    def send(self, what, frame, answers, closes=False):
        self.lines.append("# " + what)
        self.lines.append("> " + h(frame))
        for a in answers:
            self.lines.append("< " + h(a))
        if closes:
            self.lines.append("! closes")

    def next_ref(self):
        self.ref += 1
        return self.ref

    def connect(self, pdu=480, tsap=(0x01, 0x01), agreed=None):
        self.send("COTP CR rack %d slot %d (snap7, TSAP %02X %02X) -> CC" % (tsap[1] >> 5, tsap[1] & 0x1F, tsap[0], tsap[1]),
                  cr(*tsap), [cc(*tsap)])
        r = self.next_ref()
        self.send("Setup Communication PDU %d -> %d" % (pdu, agreed or pdu), setup_req(r, pdu), [setup_ok(r, agreed or pdu)])

    def disconnect(self):
        self.send("COTP DR -> DC", tpkt(bytes([6, 0x80, 0x00, 0x01, 0x00, 0x03, 0x00])),
                  [tpkt(bytes([5, 0xC0, 0x00, 0x03, 0x00, 0x01]))], closes=True)

    # memory model helpers
    def region(self, area, db):
        return self.mem[(area, db if area == "DB" else 0)]

    def read_item_answer(self, kind, area, db, start, count, last, bit=0):
        """start: byte offset (element for T/C); returns the expected data item bytes."""
        reg = self.region(area, db)
        rts, bits = RTS[kind]
        if kind == "bit":
            data = bytes([(reg[start] >> bit) & 1])
            length = 1
        else:
            off = start * 2 if area in ("T", "C") else start
            n = count * SIZE[kind]
            assert off + n <= len(reg), "fixture reads past the region"
            data = bytes(reg[off:off + n])
            length = n * 8 if bits else n
        out = bytes([0xFF, rts]) + u16(length) + data
        if len(data) % 2 == 1 and not last:
            out += b"\x00"
        return out

    def write(self):
        path = os.path.join(HERE, "frames", self.name + ".hex")
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        return self


def address(kind, area, start, bit=0):
    if area in ("T", "C"):
        return start
    if kind == "bit":
        return start * 8 + bit
    return start * 8


def read_req(ref, items):
    return job(ref, bytes([0x04, len(items)]) + b"".join(items))


def read_ans(ref, parts):
    return ack(ref, bytes([0x04, len(parts)]), b"".join(parts))


sessions = []

# ---- COTP ---------------------------------------------------------------------------------
s = Session("cotp_pg_slot1")
s.comment("snap7 PG connection to rack 0 slot 1, one read in a DT, then DR -> DC")
s.connect()
r = s.next_ref()
s.send("COTP DT: Read Var MB0", read_req(r, [item(2, 1, 0, 0x83, 0)]), [read_ans(r, [s.read_item_answer("byte", "M", 0, 0, 1, True)])])
s.disconnect()
sessions.append(s.write())

for name, tsap in [("cotp_pg_slot2", (0x01, 0x02)), ("cotp_op_slot1", (0x02, 0x01)), ("cotp_basic_rack1_slot3", (0x03, 0x23))]:
    s = Session(name)
    s.connect(tsap=tsap)
    s.disconnect()
    sessions.append(s.write())

s = Session("cotp_segmented")
s.comment("a Read Var split over two DT TPDUs: the first without EOT gets no answer")
s.connect()
r = s.next_ref()
whole = read_req(r, [item(2, 4, 1, 0x84, 0)])[7:]
s.send("COTP DT without EOT (first 9 bytes of the S7 PDU)", dt(whole[:9], eot=False), [])
s.send("COTP DT with EOT (the rest) -> one answer", dt(whole[9:]), [read_ans(r, [s.read_item_answer("byte", "DB", 1, 0, 4, True)])])
sessions.append(s.write())

# ---- Setup Communication --------------------------------------------------------------------
for configured in (240, 480, 960):
    s = Session("setup_pdu%d" % configured, pdu=configured)
    s.send("COTP CR", cr(1, 1), [cc(1, 1)])
    for proposal in (63,):
        r = s.next_ref()
        s.send("Setup Communication PDU %d (below the minimum 64) -> error 0x8500" % proposal, setup_req(r, proposal),
               [ack(r, bytes([0xF0, 0, 0, 1, 0, 1]) + u16(configured), err=0x8500)])
    for proposal in (64, 240, 480, 960, 1000):
        r = s.next_ref()
        agreed = min(proposal, configured)
        s.send("Setup Communication PDU %d, configured %d -> %d" % (proposal, configured, agreed), setup_req(r, proposal), [setup_ok(r, agreed)])
    sessions.append(s.write())

s = Session("setup_amq")
s.send("COTP CR", cr(1, 1), [cc(1, 1)])
s.send("Setup Communication AmQ 0/20 -> clamped to 1/8", job(1, bytes([0xF0, 0, 0, 0, 0, 20]) + u16(480)),
       [ack(1, bytes([0xF0, 0, 0, 1, 0, 8]) + u16(480))])
sessions.append(s.write())

# ---- Read Var: every type in every area ---------------------------------------------------------
s = Session("read_types")
s.connect()
for area in ("I", "Q", "M", "DB"):
    db = 1 if area == "DB" else 0
    for kind in ("bit", "byte", "char", "word", "int", "dword", "dint", "real"):
        for (start, count, bit) in ([(2, 1, 4), (3, 1, 0)] if kind == "bit" else [(4, 1, 0), (2, 3, 0)]):
            r = s.next_ref()
            it = item(TS[kind], count, db, AREA[area], address(kind, area, start, bit))
            label = "%s%s.%d%s" % (area, db if area == "DB" else "", start, (".%d" % bit) if kind == "bit" else "")
            s.send("Read Var %s %s x%d" % (kind, label, count), read_req(r, [it]),
                   [read_ans(r, [s.read_item_answer(kind, area, db, start, count, True, bit)])])
for area, kind in (("T", "timer"), ("C", "counter")):
    for (start, count) in ((0, 1), (3, 2), (15, 1)):
        r = s.next_ref()
        s.send("Read Var %s %s%d x%d" % (kind, area, start, count), read_req(r, [item(TS[kind], count, 0, AREA[area], start)]),
               [read_ans(r, [s.read_item_answer(kind, area, 0, start, count, True)])])
r = s.next_ref()
s.send("Read Var DB3 (view of int_memory from element 10) words", read_req(r, [item(4, 4, 3, 0x84, 0)]),
       [read_ans(r, [s.read_item_answer("word", "DB", 3, 0, 4, True)])])
r = s.next_ref()
s.send("Read Var read-only DB2 reads fine (0x03 is never a read answer)", read_req(r, [item(2, 16, 2, 0x84, 0)]),
       [read_ans(r, [s.read_item_answer("byte", "DB", 2, 0, 16, True)])])
sessions.append(s.write())

# ---- Read Var: many items, fill bytes, per-item errors -----------------------------------------
s = Session("read_multi")
s.connect()
r = s.next_ref()
items = [
    (item(2, 1, 0, 0x83, 0), s.read_item_answer("byte", "M", 0, 0, 1, False)),
    (item(2, 3, 1, 0x84, 8 * 10), s.read_item_answer("byte", "DB", 1, 10, 3, False)),
    (item(4, 1, 0, 0x81, 8 * 2), s.read_item_answer("word", "I", 0, 2, 1, False)),
    (item(1, 1, 0, 0x82, 8 * 1 + 1), s.read_item_answer("bit", "Q", 0, 1, 1, False, bit=1)),
    (item(3, 5, 0, 0x83, 8 * 3), s.read_item_answer("char", "M", 0, 3, 5, True)),
]
s.send("Read Var 5 items of 1, 3, 2, 1, 5 bytes: fill after odd items except the last", read_req(r, [i for i, _ in items]),
       [read_ans(r, [a for _, a in items])])
r = s.next_ref()
items = [
    (item(2, 2, 1, 0x84, 8 * 1023), bytes([0x05, 0, 0, 0])),  # DB1 is 1024 bytes: 1023 + 2 is out of range
    (item(2, 1, 1, 0x84, 8 * 1023), s.read_item_answer("byte", "DB", 1, 1023, 1, False)),  # last byte: in range
    (item(2, 1, 99, 0x84, 0), bytes([0x0A, 0, 0, 0])),  # DB99 missing
    (item(0x1D, 1, 0, 0x83, 0), bytes([0x06, 0, 0, 0])),  # timer type on M
    (item(2, 1, 0, 0x1D, 0), bytes([0x06, 0, 0, 0])),  # byte type on T
    (item(2, 1, 0, 0x83, 8 * 32), bytes([0x05, 0, 0, 0])),  # M has 32 bytes
    (item(2, 1, 0, 0x83, 8 * 31), s.read_item_answer("byte", "M", 0, 31, 1, False)),
    (item(2, 1, 0, 0x83, 8 * 2 + 3), bytes([0x05, 0, 0, 0])),  # byte access with a bit offset
    (item(2, 0, 0, 0x83, 0), bytes([0x05, 0, 0, 0])),  # zero elements
    (item(0x09, 1, 0, 0x83, 0), bytes([0x06, 0, 0, 0])),  # transport size DATE: not supported
    (item(2, 1, 0, 0x85, 0), bytes([0x0A, 0, 0, 0])),  # area DI: not served
    (item(0x1C, 1, 0, 0x1C, 16), bytes([0x05, 0, 0, 0])),  # C16: there are 16 counters (0-15)
    (item(2, 1, 0, 0x83, 0, syntax=0xB0), bytes([0x05, 0, 0, 0])),  # not S7ANY
    (item(2, 16, 2, 0x84, 0), s.read_item_answer("byte", "DB", 2, 0, 16, True)),
]
s.send("Read Var 14 items with per-item errors (RC 00 00 00)", read_req(r, [i for i, _ in items]), [read_ans(r, [a for _, a in items])])
sessions.append(s.write())

# ---- Write Var ------------------------------------------------------------------------------------
def wdata(ts, length, data, last):
    out = bytes([0x00, ts]) + u16(length) + data
    if len(data) % 2 == 1 and not last:
        out += b"\x00"
    return out


s = Session("write_multi")
s.connect()
r = s.next_ref()
writes = [
    (item(2, 1, 0, 0x83, 0), 0x04, 8, b"\xAA", 0xFF),  # MB0 = AA
    (item(1, 1, 0, 0x83, 8 * 1 + 3), 0x03, 1, b"\x01", 0xFF),  # M1.3 = 1
    (item(1, 1, 0, 0x83, 8 * 1 + 1), 0x03, 1, b"\x00", 0xFF),  # M1.1 = 0 (0x81 -> bit 0 stays)
    (item(4, 1, 1, 0x84, 8 * 30), 0x04, 16, b"\x12\x34", 0xFF),  # DB1.DBW30
    (item(5, 1, 1, 0x84, 8 * 32), 0x05, 16, b"\xFF\xFE", 0xFF),  # DB1.DBW32 as int
    (item(8, 1, 1, 0x84, 8 * 36), 0x07, 4, b"\x40\x49\x0F\xDB", 0xFF),  # DB1.DBD36 real (length in bytes)
    (item(3, 3, 0, 0x82, 8 * 4), 0x09, 3, b"abc", 0xFF),  # QB4..6 chars
    (item(0x1C, 1, 0, 0x1C, 2), 0x09, 2, b"\x01\x23", 0xFF),  # C2
    (item(0x1D, 1, 0, 0x1D, 5), 0x09, 2, b"\x45\x67", 0xFF),  # T5
    (item(2, 1, 2, 0x84, 0), 0x04, 8, b"\x55", 0x03),  # read-only DB2
    (item(2, 2, 1, 0x84, 8 * 40), 0x04, 24, b"\x01\x02\x03", 0x07),  # 3 bytes for 2
    (item(2, 1, 99, 0x84, 0), 0x04, 8, b"\x01", 0x0A),  # DB99 missing
    (item(2, 2, 1, 0x84, 8 * 1023), 0x04, 16, b"\x01\x02", 0x05),  # past the end of DB1
    (item(1, 1, 0, 0x83, 8 * 2), 0x04, 8, b"\x01", 0x07),  # bit item with byte data
    (item(2, 1, 0, 0x83, 8 * 3), 0x00, 0, b"", 0x06),  # data transport size NULL
    (item(2, 1, 0, 0x81, 8 * 15), 0x04, 8, b"\x99", 0xFF),  # IB15, last item odd: no fill
]
data = b"".join(wdata(ts, ln, d, i == len(writes) - 1) for i, (_, ts, ln, d, _) in enumerate(writes))
s.send("Write Var 16 items incl. bit writes, read-only DB, length mismatch", job(r, bytes([0x05, len(writes)]) + b"".join(w[0] for w in writes), data),
       [ack(r, bytes([0x05, len(writes)]), bytes(w[4] for w in writes))])
mem = s.mem
mem[("M", 0)][0] = 0xAA
mem[("M", 0)][1] = (mem[("M", 0)][1] | 0x08) & ~0x02 & 0xFF
mem[("DB", 1)][30:32] = b"\x12\x34"
mem[("DB", 1)][32:34] = b"\xFF\xFE"
mem[("DB", 1)][36:40] = b"\x40\x49\x0F\xDB"
mem[("Q", 0)][4:7] = b"abc"
mem[("C", 0)][4:6] = b"\x01\x23"
mem[("T", 0)][10:12] = b"\x45\x67"
mem[("I", 0)][15] = 0x99
r = s.next_ref()
items = [
    (item(2, 2, 0, 0x83, 0), s.read_item_answer("byte", "M", 0, 0, 2, False)),
    (item(2, 12, 1, 0x84, 8 * 28), s.read_item_answer("byte", "DB", 1, 28, 12, False)),
    (item(2, 4, 0, 0x82, 8 * 3), s.read_item_answer("byte", "Q", 0, 3, 4, False)),
    (item(0x1C, 1, 0, 0x1C, 2), s.read_item_answer("counter", "C", 0, 2, 1, False)),
    (item(0x1D, 1, 0, 0x1D, 5), s.read_item_answer("timer", "T", 0, 5, 1, False)),
    (item(2, 3, 2, 0x84, 0), s.read_item_answer("byte", "DB", 2, 0, 3, False)),
    (item(2, 1, 0, 0x81, 8 * 15), s.read_item_answer("byte", "I", 0, 15, 1, True)),
]
s.send("Read Var back what was written (DB2 unchanged)", read_req(r, [i for i, _ in items]), [read_ans(r, [a for _, a in items])])
r = s.next_ref()
s.send("Write Var DB3 (mapped) word", job(r, bytes([0x05, 1]) + item(4, 1, 3, 0x84, 8 * 2), wdata(0x04, 16, b"\xCA\xFE", True)),
       [ack(r, bytes([0x05, 1]), b"\xFF")])
mem[("DB", 3)][2:4] = b"\xCA\xFE"
sessions.append(s.write())

# ---- PDU limits (agreed 240) -----------------------------------------------------------------------
s = Session("pdu_limits", pdu=240)
s.connect(pdu=480, agreed=240)
r = s.next_ref()
n = 19  # 10 + 2 + 19 * 12 = 240: exactly the PDU
its = [item(2, 1, 0, 0x83, 8 * i) for i in range(n)]
s.send("Read Var of 19 items: request of exactly 240 bytes is served", read_req(r, its),
       [read_ans(r, [s.read_item_answer("byte", "M", 0, i, 1, i == n - 1) for i in range(n)])])
r = s.next_ref()
its = [item(2, 1, 0, 0x83, 8 * i) for i in range(20)]
s.send("Read Var of 20 items: request of 252 bytes > PDU 240 -> 0x8500", read_req(r, its), [ack(r, bytes([0x04, 0]), err=0x8500)])
r = s.next_ref()
s.send("Read Var of 222 bytes: answer of exactly 240 bytes", read_req(r, [item(2, 222, 1, 0x84, 0)]),
       [read_ans(r, [s.read_item_answer("byte", "DB", 1, 0, 222, True)])])
r = s.next_ref()
s.send("Read Var of 223 bytes: answer of 241 bytes > PDU 240 -> 0x8500", read_req(r, [item(2, 223, 1, 0x84, 0)]),
       [ack(r, bytes([0x04, 0]), err=0x8500)])
r = s.next_ref()
s.send("Write Var of 212 bytes: request of exactly 240 bytes", job(r, bytes([0x05, 1]) + item(2, 212, 1, 0x84, 8 * 500), wdata(0x04, 212 * 8, bytes(range(212)), True)),
       [ack(r, bytes([0x05, 1]), b"\xFF")])
r = s.next_ref()
s.send("Write Var of 213 bytes: request of 241 bytes -> 0x8500", job(r, bytes([0x05, 1]) + item(2, 213, 1, 0x84, 8 * 500), wdata(0x04, 213 * 8, bytes(213), True)),
       [ack(r, bytes([0x05, 0]), err=0x8500)])
r = s.next_ref()
s.send("connection still serves: Read Var MB5", read_req(r, [item(2, 1, 0, 0x83, 8 * 5)]), [read_ans(r, [s.read_item_answer("byte", "M", 0, 5, 1, True)])])
sessions.append(s.write())

# ---- Unsupported jobs ---------------------------------------------------------------------------------
s = Session("jobs_refused")
s.connect()
for what, params, err in [
    ("PLC stop (0x29) -> 0xD241", bytes([0x29, 0, 0, 0, 0, 0, 9]) + b"P_PROGRAM", 0xD241),
    ("PI service hot start (0x28) -> 0xD241", bytes([0x28, 0, 0, 0, 0, 0, 0, 0xFD, 0, 0, 9]) + b"P_PROGRAM", 0xD241),
    ("start upload (0x1D) -> 0xD241", bytes([0x1D, 0, 0, 0, 0, 0, 0, 0, 9]) + b"_0A00001P", 0xD241),
    ("request download (0x1A) -> 0xD241", bytes([0x1A, 0, 0, 0, 0, 0, 0, 0, 9]) + b"_0A00001P", 0xD241),
    ("unknown function 0x77 -> 0x8104", bytes([0x77, 0, 0, 0]), 0x8104),
]:
    r = s.next_ref()
    # Start Upload's answer carries status, 2 reserved bytes and an upload id (Wireshark reads all 8).
    answer = params[:1] + (bytes(7) if params[0] == 0x1D else b"")
    s.send(what, job(r, params), [ack(r, answer, err=err)])
r = s.next_ref()
s.send("the connection stays open: Read Var MB1", read_req(r, [item(2, 1, 0, 0x83, 8)]), [read_ans(r, [s.read_item_answer("byte", "M", 0, 1, 1, True)])])
sessions.append(s.write())

# ---- Userdata -----------------------------------------------------------------------------------------
def ud_req(group, sub, seq, data):
    return bytes([0x00, 0x01, 0x12, 0x04, 0x11, 0x40 | group, sub, seq]), data


def ud_ans(group, sub, seq, payload, du=0, last=0, err=0):
    params = bytes([0x00, 0x01, 0x12, 0x08, 0x12, 0x80 | group, sub, seq, du, last]) + u16(err)
    if err:
        return params, bytes([0x0A, 0x00, 0x00, 0x00])
    return params, bytes([0xFF, 0x09]) + u16(len(payload)) + payload


def text(t, n):
    b = t.encode()[:n]
    return b + bytes(n - len(b))


def spaced(t, n):
    b = t.encode()[:n]
    return b + b" " * (n - len(b))


IDENT = dict(name="s7commd fixture", module_name="fixture CPU", plant="Plant 1", copyright="Original Siemens Equipment",
             serial="S C-FIXTURE0001", module_type="CPU 315-2 PN/DP", order="6ES7 315-2EH14-0AB0", fw=(3, 2, 6))


def szl(sid, idx, reclen, records):
    return u16(sid) + u16(idx) + u16(reclen) + u16(len(records)) + b"".join(records)


def rec0011(i):
    if i == 7:
        return u16(7) + b" " * 20 + bytes([0x00, 0xC0, 0x56]) + bytes(IDENT["fw"])
    return u16(i) + spaced(IDENT["order"], 20) + bytes([0x00, 0xC0, 0x00, 0x04, 0x00, 0x01])


def rec001c(i):
    body = {1: text(IDENT["name"], 24) + bytes(8), 2: text(IDENT["module_name"], 24) + bytes(8), 3: text(IDENT["plant"], 32),
            4: text(IDENT["copyright"], 26) + bytes(6), 5: text(IDENT["serial"], 24) + bytes(8), 7: text(IDENT["module_type"], 32),
            8: bytes(32), 9: bytes([0x00, 0x2A, 0xF6, 0x00, 0x00, 0x01]) + bytes(26)}[i]
    return u16(i) + body


SZL_0000 = szl(0x0000, 0, 2, [u16(x) for x in (0x0000, 0x0011, 0x0111, 0x001C, 0x011C, 0x0131, 0x0232, 0x0424)])
SZL_0011 = szl(0x0011, 0, 28, [rec0011(i) for i in (1, 6, 7)])
SZL_001C = szl(0x001C, 0, 34, [rec001c(i) for i in (1, 2, 3, 4, 5, 7, 8, 9)])


def pdu_records(pdu, maxclients):
    return u16(1) + u16(pdu) + u16(maxclients) + struct.pack(">I", 187500) + struct.pack(">I", 1500000) + bytes(26)


def userdata_session(name, pdu):
    s = Session(name, pdu=pdu)
    s.connect(pdu=pdu)
    cases = [
        ("SZL 0x0000 (list of SZL IDs)", 4, 1, (0x0000, 0x0000), SZL_0000),
        ("SZL 0x0011 (module identification, index 7 last)", 4, 1, (0x0011, 0x0000), SZL_0011),
        ("SZL 0x0111 index 1", 4, 1, (0x0111, 0x0001), szl(0x0111, 1, 28, [rec0011(1)])),
        ("SZL 0x0111 index 7", 4, 1, (0x0111, 0x0007), szl(0x0111, 7, 28, [rec0011(7)])),
        ("SZL 0x011C index 5 (serial number)", 4, 1, (0x011C, 0x0005), szl(0x011C, 5, 34, [rec001c(5)])),
        ("SZL 0x0131 index 1 (communication: PDU, connections)", 4, 1, (0x0131, 0x0001), szl(0x0131, 1, 40, [pdu_records(pdu, 7)])),
        ("SZL 0x0232 index 4 (protection)", 4, 1, (0x0232, 0x0004),
         szl(0x0232, 4, 40, [u16(4) + u16(1) + u16(0) + u16(1) + u16(1) + u16(0) + bytes(28)])),
        ("SZL 0x0424 (mode: byte 3 = 0x08 RUN, BCD time)", 4, 1, (0x0424, 0x0000),
         szl(0x0424, 0, 20, [bytes([0x43, 0x02, 0xFF, 0x08]) + bytes(8) + CLOCK[2:]])),
    ]
    if pdu >= 480:
        cases.insert(2, ("SZL 0x001C (component identification, 8 records of 34 bytes)", 4, 1, (0x001C, 0x0000), SZL_001C))
    for what, group, sub, (sid, idx), payload in cases:
        r = s.next_ref()
        p, d = ud_req(group, sub, 0, bytes([0xFF, 0x09, 0x00, 0x04]) + u16(sid) + u16(idx))
        ap, ad = ud_ans(group, sub, 0, payload)
        s.send(what, ud(r, p, d), [ud(r, ap, ad)])
    for what, sid, idx, err in [("unknown SZL 0x0F99 -> 0xD401", 0x0F99, 0, 0xD401), ("SZL 0x0111 index 9 -> 0xD402", 0x0111, 9, 0xD402)]:
        r = s.next_ref()
        p, d = ud_req(4, 1, 0, bytes([0xFF, 0x09, 0x00, 0x04]) + u16(sid) + u16(idx))
        ap, ad = ud_ans(4, 1, 0, b"", err=err)
        s.send(what, ud(r, p, d), [ud(r, ap, ad)])
    return s


s = userdata_session("userdata_szl", 480)
# blocks
r = s.next_ref()
p, d = ud_req(3, 1, 0, bytes([0x0A, 0, 0, 0]))
entries = b"".join(bytes([0x30, t]) + u16(3 if t == 0x41 else 0) for t in (0x38, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46))
ap, ad = ud_ans(3, 1, 0, entries)
s.send("list blocks: data length 28, 7 entries, 3 DBs", ud(r, p, d), [ud(r, ap, ad)])
r = s.next_ref()
p, d = ud_req(3, 2, 0, bytes([0xFF, 0x09, 0x00, 0x02, 0x30, 0x41]))
ap, ad = ud_ans(3, 2, 0, bytes([0, 1, 0x22, 5, 0, 2, 0x22, 5, 0, 3, 0x22, 5]))
s.send("list blocks of type DB", ud(r, p, d), [ud(r, ap, ad)])
r = s.next_ref()
p, d = ud_req(3, 2, 0, bytes([0xFF, 0x09, 0x00, 0x02, 0x30, 0x38]))
ap, ad = ud_ans(3, 2, 0, b"", err=0xD20E)
s.send("list blocks of type OB: none -> 0xD20E", ud(r, p, d), [ud(r, ap, ad)])
r = s.next_ref()
p, d = ud_req(3, 3, 0, bytes([0xFF, 0x09, 0x00, 0x08, 0x30, 0x41]) + b"00001A")
info = (bytes([0x01, 0x00, 0x00, 0x4A, 0x00, 0x22, 0x70, 0x70, 0x01, 0x01, 0x05, 0x0A]) + u16(1) + struct.pack(">I", 1024 + 92)
        + bytes(4) + bytes(4) + u16(0x2E3C) + bytes(4) + u16(0x2E3C) + u16(0x14) + u16(0) + u16(0) + u16(1024)
        + spaced("S7COMMD", 8) + spaced("DB", 8) + spaced("DB1", 8) + bytes([0x01, 0x00]) + u16(0) + bytes(8))
assert len(info) == 78
ap, ad = ud_ans(3, 3, 0, info)
s.send("block info DB1 (78 bytes)", ud(r, p, d), [ud(r, ap, ad)])
r = s.next_ref()
p, d = ud_req(3, 3, 0, bytes([0xFF, 0x09, 0x00, 0x08, 0x30, 0x41]) + b"00099A")
ap, ad = ud_ans(3, 3, 0, b"", err=0xD209)
s.send("block info DB99 (missing) -> 0xD209", ud(r, p, d), [ud(r, ap, ad)])
# clock, password
r = s.next_ref()
p, d = ud_req(7, 1, 0, bytes([0x0A, 0, 0, 0]))
ap, ad = ud_ans(7, 1, 0, CLOCK)
s.send("read clock (BCD, injected clock 2024-03-15 13:45:56.789 Friday)", ud(r, p, d), [ud(r, ap, ad)])
r = s.next_ref()
p, d = ud_req(7, 2, 0, bytes([0xFF, 0x09, 0x00, 0x0A, 0x00, 0x19, 0x24, 0x01, 0x02, 0x03, 0x04, 0x05, 0x00, 0x03]))
ap, ad = ud_ans(7, 2, 0, b"", err=0xD241)
s.send("set clock -> refused 0xD241", ud(r, p, d), [ud(r, ap, ad)])
r = s.next_ref()
p, d = ud_req(5, 1, 0, bytes([0xFF, 0x09, 0x00, 0x08]) + bytes([0x55 ^ 0x41] * 8))
ap, ad = ud_ans(5, 1, 0, b"", err=0xD241)
s.send("set session password -> refused 0xD241", ud(r, p, d), [ud(r, ap, ad)])
r = s.next_ref()
p, d = ud_req(5, 2, 0, bytes([0x0A, 0, 0, 0]))
ap, ad = ud_ans(5, 2, 0, b"", err=0xD241)
s.send("clear session password -> refused 0xD241", ud(r, p, d), [ud(r, ap, ad)])
sessions.append(s.write())

s = userdata_session("userdata_szl_pdu240", 240)
r = s.next_ref()
p, d = ud_req(4, 1, 0, bytes([0xFF, 0x09, 0x00, 0x04, 0x00, 0x1C, 0x00, 0x00]))
room = 240 - 26
first, rest = SZL_001C[:room], SZL_001C[room:]
ap, ad = ud_ans(4, 1, 1, first, du=1, last=1)
s.send("SZL 0x001C at PDU 240: first fragment (%d bytes, last data unit 0x01)" % len(first), ud(r, p, d), [ud(r, ap, ad)])
r = s.next_ref()
fp = bytes([0x00, 0x01, 0x12, 0x08, 0x12, 0x44, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00])
ap, ad = ud_ans(4, 1, 1, rest, du=0, last=0)
s.send("SZL follow-up request as snap7 sends it -> last fragment (%d bytes, last data unit 0x00)" % len(rest), ud(r, fp, bytes([0x0A, 0, 0, 0])), [ud(r, ap, ad)])
r = s.next_ref()
s.send("a follow-up with nothing pending -> 0x8104", ud(r, fp, bytes([0x0A, 0, 0, 0])), [ud(r, *ud_ans(4, 1, 1, b"", err=0x8104))])
sessions.append(s.write())

# ---- corpus ---------------------------------------------------------------------------------------
def client_stream(session):
    out = b""
    for line in session.lines:
        if line.startswith("> "):
            out += bytes.fromhex(line[2:])
    return out


corpus = os.path.join(HERE, "corpus")
for f in os.listdir(corpus):
    os.remove(os.path.join(corpus, f))
seeds = []
for s in sessions:
    stream = client_stream(s)
    pdu_byte = 80 if "pdu240" not in s.name and "pdu_limits" not in s.name else 0
    seeds.append((s.name, bytes([pdu_byte]) + stream))
    seeds.append((s.name + "_truncated", bytes([pdu_byte]) + stream[: len(stream) * 2 // 3]))
    flipped = bytearray(stream)
    for i in range(40, len(flipped), 97):
        flipped[i] ^= 0x5A
    seeds.append((s.name + "_flipped", bytes([pdu_byte ^ 0xFF]) + bytes(flipped)))
seeds += [
    ("garbage_http", b"\x01GET / HTTP/1.0\r\n\r\n"),
    ("garbage_tpkt_len_max", b"\x00\x03\x00\xFF\xFF" + bytes(64)),
    ("garbage_tpkt_len_6", b"\x00\x03\x00\x00\x06\x02\xF0"),
    ("dt_before_cr", b"\x00" + job(1, bytes([0xF0, 0, 0, 1, 0, 1, 1, 0xE0]))),
    ("segments_unbounded", b"\xFF" + cr(1, 1) + dt(bytes(1000), eot=False) * 3),
    ("cr_long_tsap", b"\x00" + tpkt(bytes([0x1C, 0xE0, 0, 0, 0, 1, 0, 0xC1, 17]) + bytes(17) + bytes([0xC2, 2, 1, 1]))),
    ("empty", b"\x07"),
]
for name, data in seeds:
    with open(os.path.join(corpus, name + ".bin"), "wb") as f:
        f.write(data)
print("%d frame files, %d corpus seeds" % (len(sessions), len(seeds)))
