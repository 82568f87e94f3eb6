#!/usr/bin/env python3
"""Reference S7 server for the s7commd benchmark: the snap7 C server shipped
inside the python-snap7 2.0.2 wheel (libsnap7.so).  Python only sets it up;
every request is served by snap7's own C++ worker threads (one per client).

Usage: snap7_server.py --port PORT [--bind 127.0.0.1] [--max-clients 1024]
                       [--pdu 480] [--db-size 1024]

--max-clients 0 leaves snap7's MaxClients at the library's own default.

Registers DB1 (and PE, PA, MK) of --db-size bytes, starts on --bind:--port,
prints one line "snap7 ready port=... pdu_param=... max_clients=..." on
stdout, and runs until SIGTERM/SIGINT.
"""
import argparse
import signal
import sys
import threading

import snap7
from snap7.type import Parameter, SrvArea, WordLen

if not snap7.__version__.startswith("2."):
    sys.exit(f"snap7_server.py needs python-snap7 2.x (C library), found {snap7.__version__}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--max-clients", type=int, default=1024)
    ap.add_argument("--pdu", type=int, default=480)
    ap.add_argument("--db-size", type=int, default=1024)
    args = ap.parse_args()

    # log=False: no Python event callback, so no GIL is taken on the request path.
    server = snap7.Server(log=False)
    # snap7's default is already MaxClients=1024; set it explicitly anyway unless told 0.
    if args.max_clients:
        server.set_param(Parameter.MaxClients, args.max_clients)
    server.set_param(Parameter.PDURequest, args.pdu)

    # Keep references to the buffers: snap7 serves them in place.
    areas = {}
    for area, index in ((SrvArea.DB, 1), (SrvArea.PE, 0), (SrvArea.PA, 0), (SrvArea.MK, 0)):
        buf = (WordLen.Byte.ctype * args.db_size)()
        server.register_area(area, index, buf)
        areas[(area, index)] = buf

    server.start_to(args.bind, tcp_port=args.port)
    print(
        f"snap7 ready port={args.port} version={snap7.__version__} "
        f"pdu_param={server.get_param(Parameter.PDURequest)} "
        f"max_clients={server.get_param(Parameter.MaxClients)}",
        flush=True,
    )

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    server.stop()
    server.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
