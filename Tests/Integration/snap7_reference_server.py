#!/usr/bin/env python3
"""Development aid ONLY: a stand-in for `s7commd run --config FILE` built on the
snap7 reference server bundled with python-snap7 2.0.2.

It is used to check that the test suite drives python-snap7's client API
correctly before/independently of s7commd:

    S7COMMD_BIN=Tests/Integration/snap7_reference_server.py python3 -m pytest -q Tests/Integration

The snap7 reference server knows nothing about read-only DBs, the configured
PDU size or the PLC identity (it reports its own "SNAP7-SERVER" identity), so
the tests of those features are expected to fail against it. The default (and
only meaningful) target of the suite is the real s7commd binary.
"""
import json
import signal
import sys
import time

import snap7
from snap7.type import SrvArea, WordLen


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] != "run" or sys.argv[2] != "--config":
        print("usage: snap7_reference_server.py run --config FILE", file=sys.stderr)
        return 2
    with open(sys.argv[3]) as f:
        cfg = json.load(f)
    srv = snap7.server.Server(log=False)
    keep = []

    def reg(area, index, size):
        buf = (WordLen.Byte.ctype * size)()
        keep.append(buf)
        srv.register_area(area, index, buf)

    for db in cfg.get("data_blocks", []):
        reg(SrvArea.DB, db["db_number"], db["size_bytes"])
    sa = cfg.get("system_areas", {})
    if sa.get("pe_area", {}).get("enabled"):
        reg(SrvArea.PE, 0, sa["pe_area"]["size_bytes"])
    if sa.get("pa_area", {}).get("enabled"):
        reg(SrvArea.PA, 0, sa["pa_area"]["size_bytes"])
    if sa.get("mk_area", {}).get("enabled"):
        reg(SrvArea.MK, 0, sa["mk_area"]["size_bytes"])
    if sa.get("tm_area", {}).get("enabled"):
        reg(SrvArea.TM, 0, 2 * sa["tm_area"]["count"])
    if sa.get("ct_area", {}).get("enabled"):
        reg(SrvArea.CT, 0, 2 * sa["ct_area"]["count"])

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    port = cfg["server"]["port"]
    srv.start(tcp_port=port)
    print(f"snap7 reference server listening on port {port}", file=sys.stderr, flush=True)
    while not stop:
        ev = srv.pick_event()
        if ev:
            print(srv.event_text(ev), file=sys.stderr, flush=True)
        else:
            time.sleep(0.05)
    srv.stop()
    srv.destroy()
    print("stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
