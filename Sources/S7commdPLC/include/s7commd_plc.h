/*
 * s7commd_plc.h - attach a PLC program to the PLC memory of a running s7commd on the same host.
 *
 * Plain C99, self-contained: build with any C compiler, with or without SwiftPM, e.g.
 *
 *     gcc -O2 -I Sources/S7commdPLC/include prog.c Sources/S7commdPLC/s7commd_plc.c -o prog
 *
 * HOW IT WORKS
 *   s7commd's memory process keeps the PLC memory in one shared-memory segment (a sealed memfd)
 *   and hands it to local programs over a SOCK_SEQPACKET Unix socket, <runtime dir>/memory.sock:
 *   /run/s7commd/memory.sock when s7commd was started as root (the systemd unit), otherwise the
 *   directory of the --pid-file. Only root, the service user (s7commd), or a process whose
 *   effective group is the service group (`sg s7commd -c prog`, Group=s7commd) may attach.
 *   s7commd_attach() connects, receives the segment, maps it and checks its header; from then
 *   on every access is a plain memory access: no system call, no copy through s7commd.
 *
 * SEGMENT LAYOUT (byte offsets from the start of the segment)
 *   Header, 256 bytes, LITTLE-endian:
 *       0-7   magic "S7CMDSHM"            24-31  CPU clock offset, ms (int64)
 *       8-11  version (1)                 32-39  total size of the segment (uint64)
 *       16    operating mode (RUN/STOP)   40-47  layout fingerprint (uint64)
 *       64-71 seqlock counter (readers)   128-   robust process-shared pthread mutex (writers)
 *   Then the 15 image tables, 1024 elements each, in the order of enum s7commd_table (offsets
 *   below, S7COMMD_OFFSET_*). Then the data blocks and areas that have storage of their own.
 *
 * BYTE ORDER OF THE TABLES
 *   Elements are stored BIG-endian (S7 byte order), so that an S7 client reading a data block
 *   mapped onto a table sees them as on a real PLC. read_table/write_table move those raw bytes;
 *   the typed helpers (get_int16, set_int32, ...) take and return host byte order.
 *   A bool element is one byte of eight packed bits: %IX n.b is bit b (0 = least significant)
 *   of element n of bool_input; %QX n.b of bool_output, %MX n.b of bool_memory.
 *   OpenPLC's names: %IW/%QW/%MW n = element n of int_input/int_output/int_memory,
 *   %ID/%QD/%MD = dint_*, %IL/%QL/%ML = lint_*, %IB/%QB/%MB = byte_*.
 *
 * WHAT A PLC PROGRAM SEES
 *   A PLC program exchanges data with S7 clients through the image tables only. A data block
 *   or the I/Q/M area that the configuration maps onto a table ("mapping": {"type":
 *   "int_memory", "start_buffer": 0}) is a view of those same bytes: DB5.DBW0 mapped onto
 *   int_memory from element 0 is element 0. Data blocks with storage of their own (no
 *   "mapping") are for S7 clients only; this library offers no access to them.
 *
 * CONSISTENCY
 *   Writers (s7commd's worker, `s7commd mem`, this library) take the robust mutex and bump the
 *   seqlock counter around their stores; readers never block and retry a copy that overlapped
 *   a write. One s7commd_write_table / s7commd_read_table call is therefore consistent as a
 *   whole (use one call for several elements that belong together). A writer that died holding
 *   the mutex is recovered by the next writer (EOWNERDEAD, pthread_mutex_consistent).
 *
 * LIFETIME OF THE MAPPING
 *   Keep the segment mapped for the whole life of the process: the robust mutex lives inside
 *   it, and a process that unmaps the segment while one of its threads holds (or is taking)
 *   that mutex, and then exits, leaves every other process - s7commd included - waiting for
 *   ever. Exiting, or being killed, while attached is safe: the kernel releases the mapping and
 *   recovers the mutex. Call s7commd_detach() only at the very end, when no other thread of
 *   the process can be inside an s7commd_* call; never from a signal handler.
 *
 * ERRORS
 *   Every function that can fail returns 0 (or a non-negative value) on success and a negative
 *   errno value on failure; s7commd_strerror() says what happened and what to do.
 *
 * THREADS
 *   All accessors may be called from several threads at once on the same segment.
 */
#ifndef S7COMMD_PLC_H
#define S7COMMD_PLC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The socket s7commd listens on when started as root (systemd). */
#define S7COMMD_DEFAULT_SOCKET "/run/s7commd/memory.sock"

/* Segment header. */
#define S7COMMD_MAGIC "S7CMDSHM"
#define S7COMMD_VERSION 1u
#define S7COMMD_HEADER_SIZE 256u
#define S7COMMD_MODE_OFFSET 16u
#define S7COMMD_CLOCK_OFFSET_OFFSET 24u
#define S7COMMD_SIZE_OFFSET 32u
#define S7COMMD_FINGERPRINT_OFFSET 40u
#define S7COMMD_SEQLOCK_OFFSET 64u
#define S7COMMD_MUTEX_OFFSET 128u

/* Elements in every image table. */
#define S7COMMD_TABLE_ELEMENTS 1024u

/* The image tables, in segment order. */
enum s7commd_table {
    S7COMMD_BOOL_INPUT = 0, /* %IX, 1 byte (8 bits) per element */
    S7COMMD_BOOL_OUTPUT,    /* %QX */
    S7COMMD_BOOL_MEMORY,    /* %MX */
    S7COMMD_BYTE_INPUT,     /* %IB, 1 byte */
    S7COMMD_BYTE_OUTPUT,    /* %QB */
    S7COMMD_BYTE_MEMORY,    /* %MB */
    S7COMMD_INT_INPUT,      /* %IW, 2 bytes, big-endian */
    S7COMMD_INT_OUTPUT,     /* %QW */
    S7COMMD_INT_MEMORY,     /* %MW */
    S7COMMD_DINT_INPUT,     /* %ID, 4 bytes, big-endian */
    S7COMMD_DINT_OUTPUT,    /* %QD */
    S7COMMD_DINT_MEMORY,    /* %MD */
    S7COMMD_LINT_INPUT,     /* %IL, 8 bytes, big-endian */
    S7COMMD_LINT_OUTPUT,    /* %QL */
    S7COMMD_LINT_MEMORY,    /* %ML */
    S7COMMD_TABLE_COUNT
};

/* Bytes per element of each kind of table. */
#define S7COMMD_BOOL_ELEMENT_SIZE 1u
#define S7COMMD_BYTE_ELEMENT_SIZE 1u
#define S7COMMD_INT_ELEMENT_SIZE 2u
#define S7COMMD_DINT_ELEMENT_SIZE 4u
#define S7COMMD_LINT_ELEMENT_SIZE 8u

/* Offset of each table from the start of the segment (what s7commd_table_offset returns). */
#define S7COMMD_OFFSET_BOOL_INPUT 256u
#define S7COMMD_OFFSET_BOOL_OUTPUT 1280u
#define S7COMMD_OFFSET_BOOL_MEMORY 2304u
#define S7COMMD_OFFSET_BYTE_INPUT 3328u
#define S7COMMD_OFFSET_BYTE_OUTPUT 4352u
#define S7COMMD_OFFSET_BYTE_MEMORY 5376u
#define S7COMMD_OFFSET_INT_INPUT 6400u
#define S7COMMD_OFFSET_INT_OUTPUT 8448u
#define S7COMMD_OFFSET_INT_MEMORY 10496u
#define S7COMMD_OFFSET_DINT_INPUT 12544u
#define S7COMMD_OFFSET_DINT_OUTPUT 16640u
#define S7COMMD_OFFSET_DINT_MEMORY 20736u
#define S7COMMD_OFFSET_LINT_INPUT 24832u
#define S7COMMD_OFFSET_LINT_OUTPUT 33024u
#define S7COMMD_OFFSET_LINT_MEMORY 41216u
/* End of the tables: the smallest possible segment. */
#define S7COMMD_TABLES_END 49408u

/* The CPU's operating mode (header byte 16), as S7 clients see it. */
enum s7commd_mode {
    S7COMMD_MODE_STOP = 0x04,
    S7COMMD_MODE_RUN = 0x08
};

/* An attached segment. Treat the fields as read-only. */
struct s7commd_segment {
    unsigned char *base; /* start of the mapping; NULL when not attached */
    size_t size;         /* bytes mapped (the whole segment) */
};

/* Attaches to s7commd's PLC memory through its memory socket (NULL: S7COMMD_DEFAULT_SOCKET).
 * Returns 0 and fills *out, or a negative errno (see s7commd_strerror). Waits at most 5 s for
 * the answer. The descriptor of the segment is closed again; only the mapping is kept. */
int s7commd_attach(const char *socket_path, struct s7commd_segment *out);

/* Unmaps the segment and clears *segment. Optional: see LIFETIME OF THE MAPPING above. */
void s7commd_detach(struct s7commd_segment *segment);

/* A sentence for a negative value returned by this library: what happened, what to do.
 * Never NULL; the text is static. */
const char *s7commd_strerror(int error);

/* Offset of `table` from the start of the segment; 0 for a value that is not a table. */
size_t s7commd_table_offset(enum s7commd_table table);
/* Bytes per element of `table` (1, 2, 4 or 8); 0 for a value that is not a table. */
size_t s7commd_element_size(enum s7commd_table table);
/* The table's name as in s7commd's configuration ("int_memory", ...); NULL if none. */
const char *s7commd_table_name(enum s7commd_table table);

/* Copies `bytes` raw (big-endian) bytes of `table`, from element `first_element` on, into dst,
 * consistently: never half of a concurrent write. -ERANGE when the range leaves the table. */
int s7commd_read_table(const struct s7commd_segment *segment, enum s7commd_table table,
                       size_t first_element, void *dst, size_t bytes);

/* Stores `bytes` raw (big-endian) bytes from src into `table` from element `first_element` on,
 * under the writers' mutex and the seqlock. -ERANGE when the range leaves the table. */
int s7commd_write_table(const struct s7commd_segment *segment, enum s7commd_table table,
                        size_t first_element, const void *src, size_t bytes);

/* Typed access to one element, in host byte order. The table must have the matching element
 * size (int16: int_*, int32: dint_*, int64: lint_*), else -EINVAL; -ERANGE for an element
 * >= S7COMMD_TABLE_ELEMENTS. */
int s7commd_get_int16(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int16_t *value);
int s7commd_set_int16(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int16_t value);
int s7commd_get_int32(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int32_t *value);
int s7commd_set_int32(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int32_t value);
int s7commd_get_int64(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int64_t *value);
int s7commd_set_int64(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int64_t value);

/* Bit `bit` (0-7) of element `byte` of a bool table (%IX byte.bit ...). set_bool changes that
 * one bit under the writers' mutex, leaving the other seven as they are. */
int s7commd_get_bool(const struct s7commd_segment *segment, enum s7commd_table table, size_t byte, unsigned bit, bool *value);
int s7commd_set_bool(const struct s7commd_segment *segment, enum s7commd_table table, size_t byte, unsigned bit, bool value);

/* The operating mode: S7COMMD_MODE_RUN or S7COMMD_MODE_STOP (a client's PLC stop / hot
 * start), or a negative errno. A PLC program should not drive outputs while it is STOP. */
int s7commd_get_mode(const struct s7commd_segment *segment);

#ifdef __cplusplus
}
#endif

#endif /* S7COMMD_PLC_H */
