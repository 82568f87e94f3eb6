/*
 * s7commd_plc.h - attach a PLC program to the PLC memory of a running s7commd on the same host.
 *
 * Plain C99, self-contained: build with any C compiler, with or without SwiftPM, e.g.
 *
 *     gcc -O2 -I Sources/S7commdPLC/include prog.c Sources/S7commdPLC/s7commd_plc.c -o prog
 *
 * HOW IT WORKS
 *   s7commd's memory process keeps the PLC memory in a shared-memory segment (a sealed memfd),
 *   and the data blocks and areas that are read_only and have storage of their own in a second
 *   one (only when there is at least one such region), and hands both to local programs over a
 *   SOCK_SEQPACKET Unix socket, <runtime dir>/memory.sock: /run/s7commd/memory.sock when
 *   s7commd was started as root (the systemd unit), otherwise the directory of the --pid-file.
 *   Only root, the service user (s7commd), or a process whose effective group is the service
 *   group (`sg s7commd -c prog`, Group=s7commd) may attach. s7commd's S7 worker maps the
 *   second segment read-only from a read-only descriptor, so the kernel keeps S7 clients (and
 *   a compromised worker) from writing read_only data; a PLC program gets both read-write.
 *   s7commd_attach_memory() connects, checks who serves the socket, receives the segments and
 *   the layout, checks them, maps them and checks the header; from then on every access is a
 *   plain memory access: no system call, no copy through s7commd.
 *
 * ATTACH CHECKS (before anything is mapped; a failure maps nothing)
 *   - The socket's peer (SO_PEERCRED: whoever called listen(2) on it, s7commd's supervisor
 *     before it dropped privileges) must be root or the user that owns the directory holding
 *     memory.sock (the runtime directory, writable only by root and the service user):
 *     otherwise S7COMMD_E_PEER.
 *   - Each segment must carry F_SEAL_SHRINK and F_SEAL_GROW (F_GET_SEALS), so that no one can
 *     make the mapping fault by resizing it, and be exactly the size the layout needs (fstat):
 *     otherwise S7COMMD_E_SEGMENT.
 *   - Then the header: magic, version, both sizes, and the layout fingerprint, which this
 *     library computes from the layout it received the way s7commd does (S7_E_HEADER-type
 *     errors: s7commd_strerror explains).
 *   s7commd_attach_detail() gives the sentence of the last failure in the calling thread, with
 *   the uids, seals or sizes it found.
 *
 * SEGMENT LAYOUT (byte offsets from the start of segment 0)
 *   Header, 256 bytes, LITTLE-endian:
 *       0-7   magic "S7CMDSHM"            24-31  CPU clock offset, ms (int64)
 *       8-11  version (1)                 32-39  size of segment 0 (uint64)
 *       16    operating mode (RUN/STOP)   40-47  layout fingerprint (uint64), of both segments
 *       48-55 size of segment 1 (uint64; 0: there is none)
 *       64-71 seqlock counter (readers)   128-   robust process-shared pthread mutex (writers)
 *   The seqlock and the mutex cover both segments. Then the 15 image tables, 1024 elements
 *   each, in the order of enum s7commd_table (offsets below, S7COMMD_OFFSET_*). Then the
 *   writable data blocks and areas that have storage of their own (by ascending DB number,
 *   then I, Q, M, T, C; each rounded up to 8 bytes). Segment 1 has no header: the read-only
 *   ones with storage of their own, in the same order, from offset 0. A data block or area
 *   mapped onto an image table is a window into segment 0, read_only or not.
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
 *   int_memory from element 0 is element 0. Data blocks and areas with storage of their own
 *   (no "mapping") are reached with s7commd_read_region / s7commd_write_region, by S7 area
 *   and DB number, in S7 byte order; read_only ones too: read_only restricts S7 clients only.
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
 * VERSIONS
 *   S7COMMD_VERSION is the segment header's version; S7COMMD_PLC_API says what this header
 *   offers (2: struct s7commd_memory, the region accessors, the attach checks and their error
 *   codes). struct s7commd_segment and every function of API 1 are unchanged; a program built
 *   against API 1 attaches as before (s7commd_attach checks and maps both segments, keeps
 *   segment 0 and unmaps segment 1).
 *
 * THREADS
 *   All accessors may be called from several threads at once on the same segment.
 */
#ifndef S7COMMD_PLC_H
#define S7COMMD_PLC_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The socket s7commd listens on when started as root (systemd). */
#define S7COMMD_DEFAULT_SOCKET "/run/s7commd/memory.sock"

/* What this header offers (see VERSIONS). */
#define S7COMMD_PLC_API 2

/* Segment header. */
#define S7COMMD_MAGIC "S7CMDSHM"
#define S7COMMD_VERSION 1u
#define S7COMMD_HEADER_SIZE 256u
#define S7COMMD_MODE_OFFSET 16u
#define S7COMMD_CLOCK_OFFSET_OFFSET 24u
#define S7COMMD_SIZE_OFFSET 32u
#define S7COMMD_FINGERPRINT_OFFSET 40u
#define S7COMMD_READ_ONLY_SIZE_OFFSET 48u
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
 * the answer. Runs the ATTACH CHECKS of s7commd_attach_memory and keeps segment 0 only (the
 * image tables); the descriptors are closed again, only the mapping is kept. */
int s7commd_attach(const char *socket_path, struct s7commd_segment *out);

/* Unmaps the segment and clears *segment. Optional: see LIFETIME OF THE MAPPING above. */
void s7commd_detach(struct s7commd_segment *segment);

/* Errors of the attach checks (API 2); s7commd_attach_detail() has the particulars. */
#define S7COMMD_E_PEER (-EKEYREJECTED)   /* memory.sock served by neither root nor its directory's owner */
#define S7COMMD_E_SEGMENT (-EMEDIUMTYPE) /* a segment without F_SEAL_SHRINK/F_SEAL_GROW, or of another size */
#define S7COMMD_E_NO_REGION (-ENXIO)     /* no such data block, or the area is disabled */

/* The S7 areas, with the codes S7 (and snap7) use. */
enum s7commd_area {
    S7COMMD_AREA_INPUTS = 0x81,   /* I (PE) */
    S7COMMD_AREA_OUTPUTS = 0x82,  /* Q (PA) */
    S7COMMD_AREA_FLAGS = 0x83,    /* M (MK) */
    S7COMMD_AREA_DB = 0x84,       /* a data block */
    S7COMMD_AREA_COUNTERS = 0x1C, /* C, 2 bytes each */
    S7COMMD_AREA_TIMERS = 0x1D    /* T, 2 bytes each */
};

/* Where one data block or area lives in this process. */
struct s7commd_region {
    unsigned char *base;    /* its first byte, in segment 0 or segment 1 */
    size_t size;            /* bytes */
    unsigned number;        /* the DB number; 0 for an area */
    unsigned char area;     /* enum s7commd_area */
    unsigned char segment;  /* 0, or 1 for a read_only region with storage of its own */
    bool read_only;         /* S7 clients may not write it; this library may */
    bool retain;            /* saved across restarts of s7commd */
    bool mapped;            /* a window into an image table */
};

/* Both segments and the layout (API 2). Treat the fields as read-only. */
struct s7commd_memory {
    struct s7commd_segment segment; /* segment 0: header, image tables (pass &m.segment to the table functions) */
    unsigned char *read_only_base;  /* segment 1; NULL when the layout has none */
    size_t read_only_size;
    struct s7commd_region *regions; /* every data block by ascending number, then I, Q, M, T, C as configured */
    size_t region_count;
};

/* Attaches to both segments through the memory socket (NULL: S7COMMD_DEFAULT_SOCKET), after
 * the ATTACH CHECKS above. Returns 0 and fills *out, or a negative errno. Waits at most 5 s. */
int s7commd_attach_memory(const char *socket_path, struct s7commd_memory *out);

/* Unmaps both segments, frees the regions and clears *memory (see LIFETIME OF THE MAPPING). */
void s7commd_detach_memory(struct s7commd_memory *memory);

/* The sentence of this thread's last failed attach: which uid serves the socket and which
 * may, which seals or size a segment had and needed; "" when the last attach succeeded. */
const char *s7commd_attach_detail(void);

/* The region of `area` (and data block `db` for S7COMMD_AREA_DB; ignored otherwise), or NULL. */
const struct s7commd_region *s7commd_find_region(const struct s7commd_memory *memory, enum s7commd_area area, unsigned db);

/* Copies `bytes` bytes of a data block or area from `offset` on into dst, consistently (never
 * half of a concurrent write). S7 byte order: words big-endian, as S7 clients see them.
 * S7COMMD_E_NO_REGION: no such region; -ERANGE: the range leaves it. */
int s7commd_read_region(const struct s7commd_memory *memory, enum s7commd_area area, unsigned db, size_t offset,
                        void *dst, size_t bytes);

/* Stores `bytes` bytes from src into a data block or area from `offset` on, under the writers'
 * mutex and the seqlock. read_only does not apply: it restricts S7 clients, not the PLC side. */
int s7commd_write_region(const struct s7commd_memory *memory, enum s7commd_area area, unsigned db, size_t offset,
                         const void *src, size_t bytes);

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
