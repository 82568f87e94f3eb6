"""A fake s7commd memory.sock for the attach checks (test_plc_program.py): listens at PATH,
answers every connection's attach request with an 'attached' message for an empty layout
(the header and the 15 image tables: 49,408 bytes, one segment) and a memfd that is either
unsealed or of the wrong size, and prints "listening" once it listens. Run it as the user the
test wants memory.sock to be served by.

    python3 fake_memory_socket.py PATH unsealed|wrong-size|none
"""
import array
import fcntl
import os
import socket
import sys

F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW = 1, 2, 4
LAYOUT_SIZE = 49_408
# MemoryClientReply.attached: tag 0x41, no data blocks (u16 0), none of I, Q, M, T, C.
ATTACHED_EMPTY = bytes([0x41, 0, 0]) + bytes(5)


def segment(kind):
    if kind == "unsealed":
        fd = os.memfd_create("fake-plc-memory", os.MFD_CLOEXEC)  # sealing not even allowed
        os.ftruncate(fd, LAYOUT_SIZE)
        return fd
    fd = os.memfd_create("fake-plc-memory", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, LAYOUT_SIZE - 4096 if kind == "wrong-size" else LAYOUT_SIZE)
    fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
    return fd


def main():
    path, kind = sys.argv[1], sys.argv[2]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    os.chmod(path, 0o666)
    listener.listen(8)
    print("listening", flush=True)
    while True:
        peer, _ = listener.accept()
        with peer:
            peer.settimeout(5)
            try:
                if peer.recv(16) != b"\x40":
                    continue
            except OSError:
                continue
            fd = segment(kind)
            peer.sendmsg([ATTACHED_EMPTY], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            os.close(fd)


if __name__ == "__main__":
    main()
