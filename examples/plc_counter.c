/*
 * plc_counter - a minimal PLC program for s7commd: attaches to the PLC memory of the running
 * server, counts %MW0 (element 0 of int_memory) up N times, and prints %MW1.
 *
 * Build (no SwiftPM needed; from the repository root):
 *     gcc -O2 -I Sources/S7commdPLC/include examples/plc_counter.c Sources/S7commdPLC/s7commd_plc.c -o plc_counter
 * Run as root, as the service user (s7commd) or as a member of its group:
 *     ./plc_counter [socket [N]]     socket: default /run/s7commd/memory.sock, N: default 1
 *
 * With a data block mapped onto int_memory, e.g. in the configuration
 *     {"db_number": 5, "size_bytes": 20, "mapping": {"type": "int_memory", "start_buffer": 0}}
 * an S7 client sees the counter as DB5.DBW0 and can set %MW1 by writing DB5.DBW2.
 */
#include <stdio.h>
#include <stdlib.h>

#include "s7commd_plc.h"

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : S7COMMD_DEFAULT_SOCKET;
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 1;
    if (argc > 3 || n < 0) {
        fprintf(stderr, "usage: %s [socket [N]]\n", argv[0]);
        return 2;
    }

    struct s7commd_segment plc;
    int r = s7commd_attach(path, &plc);
    if (r != 0) {
        fprintf(stderr, "plc_counter: cannot attach to %s: %s\n", path, s7commd_strerror(r));
        return 1;
    }
    int mode = s7commd_get_mode(&plc);
    printf("attached to %s: %zu bytes, CPU in %s\n", path, plc.size, mode == S7COMMD_MODE_RUN ? "RUN" : "STOP");

    for (long i = 0; i < n; i++) {
        int16_t value;
        if ((r = s7commd_get_int16(&plc, S7COMMD_INT_MEMORY, 0, &value)) != 0) break;
        /* Read, then write: another writer between the two would be overwritten. A real PLC
         * program owns the elements it writes (its outputs and memory words). */
        int16_t next = (int16_t)(uint16_t)((uint16_t)value + 1u);
        if ((r = s7commd_set_int16(&plc, S7COMMD_INT_MEMORY, 0, next)) != 0) break;
        printf("%%MW0: %d -> %d\n", value, next);
    }
    if (r != 0) {
        fprintf(stderr, "plc_counter: %s\n", s7commd_strerror(r));
        return 1;
    }

    int16_t mw1;
    if ((r = s7commd_get_int16(&plc, S7COMMD_INT_MEMORY, 1, &mw1)) != 0) {
        fprintf(stderr, "plc_counter: %s\n", s7commd_strerror(r));
        return 1;
    }
    printf("%%MW1 = %d\n", mw1);
    /* No s7commd_detach: the mapping goes with the process (see s7commd_plc.h, LIFETIME). */
    return 0;
}
