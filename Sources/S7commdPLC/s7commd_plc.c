/*
 * s7commd_plc.c - see include/s7commd_plc.h.
 *
 * The synchronisation is the one s7commd itself uses (Sources/CS7Sys/include/CS7Sys.h and
 * Sources/S7Runtime/SharedRegion.swift): writers take the robust process-shared mutex in the
 * header, make the seqlock counter odd, store, make it even; readers copy between two reads of
 * the counter and retry when it was odd or changed. Data bytes are moved with relaxed atomic
 * accesses so that the racing copy a reader may discard is well defined in C11 (Boehm, "Can
 * seqlocks get along with programming language memory models?").
 */
#define _GNU_SOURCE
#include "s7commd_plc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* The layout must match PLCMemory's (Sources/PLCMemory/Layout.swift, Definition.swift). */
#define S7_TABLE_BYTES(size) ((size) * S7COMMD_TABLE_ELEMENTS)
_Static_assert(S7COMMD_OFFSET_BOOL_INPUT == S7COMMD_HEADER_SIZE, "tables follow the header");
_Static_assert(S7COMMD_OFFSET_BYTE_INPUT == S7COMMD_OFFSET_BOOL_INPUT + 3 * S7_TABLE_BYTES(1), "byte tables");
_Static_assert(S7COMMD_OFFSET_INT_INPUT == S7COMMD_OFFSET_BYTE_INPUT + 3 * S7_TABLE_BYTES(1), "int tables");
_Static_assert(S7COMMD_OFFSET_DINT_INPUT == S7COMMD_OFFSET_INT_INPUT + 3 * S7_TABLE_BYTES(2), "dint tables");
_Static_assert(S7COMMD_OFFSET_LINT_INPUT == S7COMMD_OFFSET_DINT_INPUT + 3 * S7_TABLE_BYTES(4), "lint tables");
_Static_assert(S7COMMD_TABLES_END == S7COMMD_OFFSET_LINT_INPUT + 3 * S7_TABLE_BYTES(8), "end of the tables");
_Static_assert(S7COMMD_MUTEX_OFFSET + sizeof(pthread_mutex_t) <= S7COMMD_HEADER_SIZE, "the mutex fits the header");

/* The request s7commd's memory process accepts: the tag of MemoryClientRequest.attach
 * (Sources/S7IPC/Messages.swift), a message of one byte. */
static const char attach_request[] = {0x40};
/* The answer's tag (MemoryClientReply.attached); the memory layout follows (read_layout). */
static const char attached_prefix[] = {0x41};
/* Descriptors taken from the answer: the two segments, and room to see (and close) more. */
#define S7_MAX_DESCRIPTORS 4
/* IPCLimits.messageSize. */
#define S7_MAX_MESSAGE 200000
#define S7_ANSWER_TIMEOUT_S 5

/* Errors of our own, as negative errno values with a specific meaning here. */
#define S7_E_CLOSED ECONNABORTED    /* the memory process closed without answering */
#define S7_E_ANSWER EPROTO          /* the answer was not the segment */
#define S7_E_HEADER EBADMSG         /* no s7commd header, or sizes disagree */
#define S7_E_VERSION EPROTONOSUPPORT /* another header version */

static const size_t element_sizes[S7COMMD_TABLE_COUNT] = {1, 1, 1, 1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8};
static const char *const table_names[S7COMMD_TABLE_COUNT] = {
    "bool_input", "bool_output", "bool_memory", "byte_input", "byte_output", "byte_memory",
    "int_input",  "int_output",  "int_memory",  "dint_input", "dint_output", "dint_memory",
    "lint_input", "lint_output", "lint_memory",
};

static bool valid_table(enum s7commd_table table) {
    return (int)table >= 0 && table < S7COMMD_TABLE_COUNT;
}

size_t s7commd_element_size(enum s7commd_table table) {
    return valid_table(table) ? element_sizes[table] : 0;
}

size_t s7commd_table_offset(enum s7commd_table table) {
    if (!valid_table(table)) return 0;
    size_t offset = S7COMMD_HEADER_SIZE;
    for (int t = 0; t < (int)table; t++) offset += element_sizes[t] * S7COMMD_TABLE_ELEMENTS;
    return offset;
}

const char *s7commd_table_name(enum s7commd_table table) {
    return valid_table(table) ? table_names[table] : NULL;
}

/* ---- attaching ---- */

static uint64_t load_le(const unsigned char *p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* The particulars of this thread's last failed attach (s7commd_attach_detail). */
static __thread char attach_detail[320];

const char *s7commd_attach_detail(void) {
    return attach_detail;
}

__attribute__((format(printf, 2, 3))) static int fail(int error, const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(attach_detail, sizeof attach_detail, format, arguments);
    va_end(arguments);
    return error;
}

/* The layout as s7commd computes it (Sources/PLCMemory/Layout.swift) from the definition that
 * comes with the answer (Sources/S7IPC/Values.swift, MemoryDefinition): every number
 * little-endian; u16 count of data blocks, each {u16 number, region}; then I, Q, M, T, C, each
 * an optional region. A region: u32 size, u8 read_only, u8 retain, optional {u8 table, u32
 * start element, u8 bit_addressing}. An optional: u8 0 (absent) or 1, then the value. */
struct reader {
    const unsigned char *p;
    size_t left;
    bool bad;
};

static uint64_t take(struct reader *r, size_t n) {
    if (r->bad || r->left < n) {
        r->bad = true;
        return 0;
    }
    uint64_t v = load_le(r->p, (int)n);
    r->p += n;
    r->left -= n;
    return v;
}

static bool take_bool(struct reader *r) {
    uint64_t v = take(r, 1);
    if (v > 1) r->bad = true;
    return v == 1;
}

#define S7_MAX_REGION (1u << 30) /* IPCLimits.regionSize */

/* Reads one region definition and places it: fills *region (base = offset for now). */
static void place(struct reader *r, uint64_t cursors[2], struct s7commd_region *region, uint64_t *offset) {
    uint64_t size = take(r, 4);
    bool read_only = take_bool(r), retain = take_bool(r), mapped = take_bool(r);
    if (size < 1 || size > S7_MAX_REGION) r->bad = true;
    region->size = (size_t)size;
    region->read_only = read_only;
    region->retain = retain;
    region->mapped = mapped;
    region->segment = 0;
    if (mapped) {
        uint64_t table = take(r, 1), start = take(r, 4);
        (void)take_bool(r);
        if (r->bad || table >= S7COMMD_TABLE_COUNT || start >= S7COMMD_TABLE_ELEMENTS
            || size > (S7COMMD_TABLE_ELEMENTS - start) * element_sizes[table]) {
            r->bad = true;
            return;
        }
        *offset = s7commd_table_offset((enum s7commd_table)table) + start * element_sizes[table];
        return;
    }
    /* Own storage, 8-byte aligned; read-only ones in segment 1. */
    int segment = read_only ? 1 : 0;
    region->segment = (unsigned char)segment;
    *offset = cursors[segment];
    cursors[segment] += (size + 7) & ~(uint64_t)7;
}

/* FNV-1a, as SharedRegion.fingerprint. */
static void mix(uint64_t *hash, uint64_t value) {
    for (int i = 0; i < 8; i++) {
        *hash = (*hash ^ (value & 0xFF)) * 0x00000100000001B3ull;
        value >>= 8;
    }
}

/* PLCArea.allCases order (I, Q, M, DB, T, C), for the fingerprint. */
static int area_index(unsigned char area) {
    switch (area) {
    case S7COMMD_AREA_INPUTS: return 0;
    case S7COMMD_AREA_OUTPUTS: return 1;
    case S7COMMD_AREA_FLAGS: return 2;
    case S7COMMD_AREA_DB: return 3;
    case S7COMMD_AREA_TIMERS: return 4;
    default: return 5;
    }
}

static uint64_t fingerprint(const struct s7commd_memory *m, const uint64_t *offsets, size_t data_blocks,
                            const uint64_t sizes[2]) {
    uint64_t hash = 0xCBF29CE484222325ull;
    bool two = sizes[1] > 0;
    mix(&hash, sizes[0]);
    if (two) mix(&hash, sizes[1]);
    for (size_t i = 0; i < data_blocks; i++) {
        const struct s7commd_region *r = &m->regions[i];
        mix(&hash, r->number);
        mix(&hash, offsets[i]);
        mix(&hash, r->size);
        mix(&hash, r->read_only ? 1 : 0);
        if (two) mix(&hash, r->segment);
    }
    /* Areas by their names' order: C, I, M, Q, T. */
    static const unsigned char by_name[] = {S7COMMD_AREA_COUNTERS, S7COMMD_AREA_INPUTS, S7COMMD_AREA_FLAGS,
                                            S7COMMD_AREA_OUTPUTS, S7COMMD_AREA_TIMERS};
    for (size_t k = 0; k < sizeof by_name; k++) {
        for (size_t i = data_blocks; i < m->region_count; i++) {
            const struct s7commd_region *r = &m->regions[i];
            if (r->area != by_name[k]) continue;
            mix(&hash, (uint64_t)area_index(r->area));
            mix(&hash, offsets[i]);
            mix(&hash, r->size);
            if (two) mix(&hash, r->segment);
        }
    }
    return hash;
}

/* Parses the definition after the answer's tag into m->regions (offsets in *offsets, malloc'd)
 * and the two segment sizes; -S7_E_ANSWER when it is not a layout s7commd would send. */
static int read_layout(const unsigned char *bytes, size_t length, struct s7commd_memory *m, uint64_t **offsets,
                       size_t *data_blocks, uint64_t sizes[2]) {
    struct reader r = {bytes, length, false};
    size_t count = (size_t)take(&r, 2);
    if (r.bad) return fail(-S7_E_ANSWER, "the memory process's answer ends before its layout");
    m->regions = calloc(count + 5, sizeof *m->regions);
    *offsets = calloc(count + 5, sizeof **offsets);
    if (m->regions == NULL || *offsets == NULL) return -ENOMEM;
    uint64_t cursors[2] = {S7COMMD_TABLES_END, 0};
    for (size_t i = 0; i < count && !r.bad; i++) {
        struct s7commd_region *region = &m->regions[i];
        region->number = (unsigned)take(&r, 2);
        region->area = S7COMMD_AREA_DB;
        if (region->number == 0 || (i > 0 && region->number <= m->regions[i - 1].number)) r.bad = true;
        place(&r, cursors, region, &(*offsets)[i]);
    }
    size_t n = count;
    static const unsigned char areas[] = {S7COMMD_AREA_INPUTS, S7COMMD_AREA_OUTPUTS, S7COMMD_AREA_FLAGS,
                                          S7COMMD_AREA_TIMERS, S7COMMD_AREA_COUNTERS};
    for (size_t k = 0; k < sizeof areas && !r.bad; k++) {
        if (!take_bool(&r)) continue;
        m->regions[n].area = areas[k];
        m->regions[n].number = 0;
        place(&r, cursors, &m->regions[n], &(*offsets)[n]);
        n++;
    }
    if (r.bad || r.left != 0) return fail(-S7_E_ANSWER, "the memory process's answer is not a memory layout this library can read");
    m->region_count = n;
    *data_blocks = count;
    sizes[0] = cursors[0];
    sizes[1] = cursors[1];
    return 0;
}

/* The peer of memory.sock must be root or the owner of the directory that holds it. */
static int check_peer(int sock, const char *socket_path) {
    struct ucred peer;
    socklen_t length = sizeof peer;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) return -errno;
    char directory[sizeof ((struct sockaddr_un *)0)->sun_path];
    const char *slash = strrchr(socket_path, '/');
    if (slash == NULL) strcpy(directory, ".");
    else if (slash == socket_path) strcpy(directory, "/");
    else {
        memcpy(directory, socket_path, (size_t)(slash - socket_path));
        directory[slash - socket_path] = '\0';
    }
    struct stat st;
    if (stat(directory, &st) != 0) return -errno;
    if (peer.uid != 0 && peer.uid != st.st_uid) {
        return fail(S7COMMD_E_PEER,
                    "the memory socket %s is served by uid %u (pid %d), which is neither root nor uid %u, the owner of %s",
                    socket_path, (unsigned)peer.uid, (int)peer.pid, (unsigned)st.st_uid, directory);
    }
    return 0;
}

/* Each memfd: sealed against shrinking and growing, exactly the size the layout needs. */
static int check_segment(int fd, int index, uint64_t size) {
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) return fail(S7COMMD_E_SEGMENT, "segment %d is no sealable memfd (F_GET_SEALS: %s)", index, strerror(errno));
    if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
        return fail(S7COMMD_E_SEGMENT, "segment %d is not sealed against resizing (seals 0x%x, needs F_SEAL_SHRINK and F_SEAL_GROW)",
                    index, (unsigned)seals);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) return -errno;
    if ((uint64_t)st.st_size != size) {
        return fail(S7COMMD_E_SEGMENT, "segment %d is %lld bytes, the layout needs %llu", index, (long long)st.st_size,
                    (unsigned long long)size);
    }
    return 0;
}

void s7commd_detach_memory(struct s7commd_memory *memory) {
    if (memory == NULL) return;
    s7commd_detach(&memory->segment);
    if (memory->read_only_base != NULL) munmap(memory->read_only_base, memory->read_only_size);
    free(memory->regions);
    memset(memory, 0, sizeof *memory);
}

int s7commd_attach_memory(const char *socket_path, struct s7commd_memory *out) {
    attach_detail[0] = '\0';
    if (out == NULL) return -EINVAL;
    memset(out, 0, sizeof *out);
    if (socket_path == NULL) socket_path = S7COMMD_DEFAULT_SOCKET;

    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    size_t length = strlen(socket_path);
    if (length == 0) return -EINVAL;
    if (length >= sizeof address.sun_path) return -ENAMETOOLONG;
    memcpy(address.sun_path, socket_path, length + 1);

    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0) return -errno;
    if (connect(sock, (const struct sockaddr *)&address, sizeof address) != 0) {
        int e = errno;
        close(sock);
        return -e;
    }
    int result = check_peer(sock, socket_path);
    if (result != 0) {
        close(sock);
        return result;
    }
    struct timeval timeout = {S7_ANSWER_TIMEOUT_S, 0};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);

    if (send(sock, attach_request, sizeof attach_request, MSG_NOSIGNAL) != (ssize_t)(sizeof attach_request)) {
        int e = errno;
        close(sock);
        return e == EPIPE || e == ECONNRESET ? -S7_E_CLOSED : -e;
    }

    /* One packet: the answer (the layout), with the segments' descriptors. */
    unsigned char *text = malloc(S7_MAX_MESSAGE + 1);
    if (text == NULL) {
        close(sock);
        return -ENOMEM;
    }
    union {
        struct cmsghdr align;
        char buffer[CMSG_SPACE(sizeof(int) * S7_MAX_DESCRIPTORS)];
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {text, S7_MAX_MESSAGE};
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    message.msg_controllen = sizeof control.buffer;
    ssize_t received;
    do {
        received = recvmsg(sock, &message, MSG_CMSG_CLOEXEC);
    } while (received < 0 && errno == EINTR);
    int receive_error = errno;
    close(sock);

    /* Collect every descriptor that came, so none leaks whatever happens next. */
    int fds[S7_MAX_DESCRIPTORS];
    int fd_count = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); received >= 0 && c != NULL; c = CMSG_NXTHDR(&message, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count && fd_count < S7_MAX_DESCRIPTORS; i++) {
            memcpy(&fds[fd_count++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    }
    uint64_t *offsets = NULL;
    size_t data_blocks = 0;
    uint64_t sizes[2] = {0, 0};
    if (received < 0) {
        result = receive_error == EAGAIN || receive_error == EWOULDBLOCK ? -ETIMEDOUT : -receive_error;
    } else if (received == 0 && fd_count == 0) {
        result = -S7_E_CLOSED;
    } else if ((message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 || (size_t)received < sizeof attached_prefix
               || memcmp(text, attached_prefix, sizeof attached_prefix) != 0) {
        result = fail(-S7_E_ANSWER, "the answer is not an 'attached' message (%zd bytes, %d descriptors)", received, fd_count);
    } else {
        result = read_layout(text + 1, (size_t)received - 1, out, &offsets, &data_blocks, sizes);
        int expected = sizes[1] > 0 ? 2 : 1;
        if (result == 0 && fd_count != expected) {
            result = fail(-S7_E_ANSWER, "the answer came with %d descriptors, its layout needs %d", fd_count, expected);
        }
    }
    free(text);
    for (int i = 0; result == 0 && i < fd_count; i++) result = check_segment(fds[i], i, sizes[i]);

    void *bases[2] = {NULL, NULL};
    for (int i = 0; result == 0 && i < fd_count; i++) {
        bases[i] = mmap(NULL, (size_t)sizes[i], PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0);
        if (bases[i] == MAP_FAILED) {
            result = -errno;
            bases[i] = NULL;
        }
    }
    for (int i = 0; i < fd_count; i++) close(fds[i]);

    if (result == 0) {
        const unsigned char *header = bases[0];
        if (memcmp(header, S7COMMD_MAGIC, 8) != 0) result = fail(-S7_E_HEADER, "segment 0 has no s7commd header");
        else if (load_le(header + 8, 4) != S7COMMD_VERSION) result = -S7_E_VERSION;
        else if (load_le(header + S7COMMD_SIZE_OFFSET, 8) != sizes[0]
                 || load_le(header + S7COMMD_READ_ONLY_SIZE_OFFSET, 8) != sizes[1]) {
            result = fail(-S7_E_HEADER, "the header's sizes (%llu, %llu) are not the layout's (%llu, %llu)",
                          (unsigned long long)load_le(header + S7COMMD_SIZE_OFFSET, 8),
                          (unsigned long long)load_le(header + S7COMMD_READ_ONLY_SIZE_OFFSET, 8),
                          (unsigned long long)sizes[0], (unsigned long long)sizes[1]);
        } else if (load_le(header + S7COMMD_FINGERPRINT_OFFSET, 8) != fingerprint(out, offsets, data_blocks, sizes)) {
            result = fail(-S7_E_HEADER, "the header's layout fingerprint is not the one of the layout received: this "
                                        "library lays memory out otherwise than the running s7commd");
        }
    }
    if (result != 0) {
        for (int i = 0; i < 2; i++) if (bases[i] != NULL) munmap(bases[i], (size_t)sizes[i]);
        free(out->regions);
        free(offsets);
        memset(out, 0, sizeof *out);
        return result;
    }
    out->segment.base = bases[0];
    out->segment.size = (size_t)sizes[0];
    out->read_only_base = bases[1];
    out->read_only_size = (size_t)sizes[1];
    for (size_t i = 0; i < out->region_count; i++) {
        struct s7commd_region *r = &out->regions[i];
        r->base = (r->segment == 1 ? out->read_only_base : out->segment.base) + offsets[i];
    }
    free(offsets);
    return 0;
}

int s7commd_attach(const char *socket_path, struct s7commd_segment *out) {
    if (out == NULL) return -EINVAL;
    out->base = NULL;
    out->size = 0;
    struct s7commd_memory memory;
    int result = s7commd_attach_memory(socket_path, &memory);
    if (result != 0) return result;
    /* Only the image tables are reached through a segment: segment 1 (no mutex in it) goes. */
    if (memory.read_only_base != NULL) munmap(memory.read_only_base, memory.read_only_size);
    free(memory.regions);
    *out = memory.segment;
    return 0;
}

void s7commd_detach(struct s7commd_segment *segment) {
    if (segment == NULL || segment->base == NULL) return;
    munmap(segment->base, segment->size);
    segment->base = NULL;
    segment->size = 0;
}

/* ---- synchronisation (the algorithms of CS7Sys.h) ---- */

static uint64_t *seqlock_of(const struct s7commd_segment *s) {
    return (uint64_t *)(void *)(s->base + S7COMMD_SEQLOCK_OFFSET);
}

static pthread_mutex_t *mutex_of(const struct s7commd_segment *s) {
    return (pthread_mutex_t *)(void *)(s->base + S7COMMD_MUTEX_OFFSET);
}

static void seqlock_write_begin(uint64_t *sequence) {
    uint64_t value = __atomic_load_n(sequence, __ATOMIC_RELAXED);
    __atomic_store_n(sequence, value + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void seqlock_write_end(uint64_t *sequence) {
    uint64_t value = __atomic_load_n(sequence, __ATOMIC_RELAXED);
    __atomic_store_n(sequence, value + 1, __ATOMIC_RELEASE);
}

static uint64_t seqlock_read_begin(const uint64_t *sequence) {
    return __atomic_load_n(sequence, __ATOMIC_ACQUIRE);
}

static bool seqlock_read_retry(const uint64_t *sequence, uint64_t start) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return (start & 1) != 0 || __atomic_load_n(sequence, __ATOMIC_RELAXED) != start;
}

/* Takes the writers' mutex; recovers it from a dead owner, and then also the seqlock that
 * owner may have left odd (its half-finished store is what a power loss would leave). */
static int lock_writers(const struct s7commd_segment *s) {
    pthread_mutex_t *mutex = mutex_of(s);
    int result = pthread_mutex_lock(mutex);
    if (result == EOWNERDEAD) {
        result = pthread_mutex_consistent(mutex);
        if (result != 0) {
            pthread_mutex_unlock(mutex);
            return -result;
        }
    } else if (result != 0) {
        return -result;
    }
    uint64_t *sequence = seqlock_of(s);
    if ((__atomic_load_n(sequence, __ATOMIC_RELAXED) & 1) != 0) seqlock_write_end(sequence);
    return 0;
}

static void unlock_writers(const struct s7commd_segment *s) {
    pthread_mutex_unlock(mutex_of(s));
}

static void store_bytes(unsigned char *dst, const unsigned char *src, size_t n) {
    for (size_t i = 0; i < n; i++) __atomic_store_n(dst + i, src[i], __ATOMIC_RELAXED);
}

static void load_bytes(unsigned char *dst, const unsigned char *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = __atomic_load_n(src + i, __ATOMIC_RELAXED);
}

/* Copies n bytes from src (in segment 0 or 1 of s) into dst, retrying until the copy
 * overlapped no write. */
static int consistent_read(const struct s7commd_segment *s, const unsigned char *src, void *dst, size_t n) {
    const uint64_t *sequence = seqlock_of(s);
    uint64_t stuck = 0;
    unsigned stuck_for = 0;
    for (unsigned attempts = 1;; attempts++) {
        uint64_t start = seqlock_read_begin(sequence);
        if ((start & 1) == 0) {
            load_bytes(dst, src, n);
            if (!seqlock_read_retry(sequence, start)) return 0;
        } else {
            /* A counter that stays odd for long: a writer may have died mid-write. Taking the
             * mutex waits for a live writer, or recovers a dead one and evens the counter. */
            stuck_for = start == stuck ? stuck_for + 1 : 0;
            stuck = start;
            if (stuck_for >= 10000) {
                int r = lock_writers(s);
                if (r != 0) return r;
                unlock_writers(s);
                stuck_for = 0;
            }
        }
        if (attempts % 64 == 0) sched_yield();
    }
}

/* ---- access ---- */

static int check_range(const struct s7commd_segment *s, enum s7commd_table table, size_t first, size_t bytes,
                        size_t *at) {
    if (s == NULL || s->base == NULL) return -EBADF;
    if (!valid_table(table)) return -EINVAL;
    size_t table_bytes = element_sizes[table] * S7COMMD_TABLE_ELEMENTS;
    if (first >= S7COMMD_TABLE_ELEMENTS) return -ERANGE;
    size_t start = first * element_sizes[table];
    if (bytes > table_bytes - start) return -ERANGE;
    *at = s7commd_table_offset(table) + start;
    return 0;
}

int s7commd_read_table(const struct s7commd_segment *segment, enum s7commd_table table,
                       size_t first_element, void *dst, size_t bytes) {
    size_t at;
    int r = check_range(segment, table, first_element, bytes, &at);
    if (r != 0) return r;
    if (bytes == 0) return 0;
    if (dst == NULL) return -EINVAL;
    return consistent_read(segment, segment->base + at, dst, bytes);
}

/* Stores n bytes at dst (in segment 0 or 1) under the writers' mutex and the seqlock. */
static int locked_store(const struct s7commd_segment *s, unsigned char *dst, const void *src, size_t n) {
    int r = lock_writers(s);
    if (r != 0) return r;
    uint64_t *sequence = seqlock_of(s);
    seqlock_write_begin(sequence);
    store_bytes(dst, src, n);
    seqlock_write_end(sequence);
    unlock_writers(s);
    return 0;
}

int s7commd_write_table(const struct s7commd_segment *segment, enum s7commd_table table,
                        size_t first_element, const void *src, size_t bytes) {
    size_t at;
    int r = check_range(segment, table, first_element, bytes, &at);
    if (r != 0) return r;
    if (bytes == 0) return 0;
    if (src == NULL) return -EINVAL;
    return locked_store(segment, segment->base + at, src, bytes);
}

/* ---- data blocks and areas (API 2) ---- */

const struct s7commd_region *s7commd_find_region(const struct s7commd_memory *memory, enum s7commd_area area, unsigned db) {
    if (memory == NULL || memory->regions == NULL) return NULL;
    if (area == S7COMMD_AREA_DB) {
        /* The data blocks come first, by ascending number. */
        size_t low = 0, high = memory->region_count;
        while (low < high) {
            size_t mid = low + (high - low) / 2;
            const struct s7commd_region *r = &memory->regions[mid];
            if (r->area != S7COMMD_AREA_DB || r->number > db) high = mid;
            else if (r->number < db) low = mid + 1;
            else return r;
        }
        return NULL;
    }
    for (size_t i = 0; i < memory->region_count; i++) {
        if (memory->regions[i].area == (unsigned char)area) return &memory->regions[i];
    }
    return NULL;
}

static int region_range(const struct s7commd_memory *memory, enum s7commd_area area, unsigned db, size_t offset,
                        size_t bytes, unsigned char **at) {
    if (memory == NULL || memory->segment.base == NULL) return -EBADF;
    const struct s7commd_region *r = s7commd_find_region(memory, area, db);
    if (r == NULL) return S7COMMD_E_NO_REGION;
    if (offset > r->size || bytes > r->size - offset) return -ERANGE;
    *at = r->base + offset;
    return 0;
}

int s7commd_read_region(const struct s7commd_memory *memory, enum s7commd_area area, unsigned db, size_t offset,
                        void *dst, size_t bytes) {
    unsigned char *at;
    int r = region_range(memory, area, db, offset, bytes, &at);
    if (r != 0) return r;
    if (bytes == 0) return 0;
    if (dst == NULL) return -EINVAL;
    return consistent_read(&memory->segment, at, dst, bytes);
}

int s7commd_write_region(const struct s7commd_memory *memory, enum s7commd_area area, unsigned db, size_t offset,
                         const void *src, size_t bytes) {
    unsigned char *at;
    int r = region_range(memory, area, db, offset, bytes, &at);
    if (r != 0) return r;
    if (bytes == 0) return 0;
    if (src == NULL) return -EINVAL;
    return locked_store(&memory->segment, at, src, bytes);
}

/* Typed helpers: one element of a table of the matching size, big-endian in the segment. */
static int get_be(const struct s7commd_segment *s, enum s7commd_table table, size_t element, size_t size,
                  uint64_t *value) {
    if (valid_table(table) && element_sizes[table] != size) return -EINVAL;
    unsigned char bytes[8];
    int r = s7commd_read_table(s, table, element, bytes, size);
    if (r != 0) return r;
    uint64_t v = 0;
    for (size_t i = 0; i < size; i++) v = (v << 8) | bytes[i];
    *value = v;
    return 0;
}

static int set_be(const struct s7commd_segment *s, enum s7commd_table table, size_t element, size_t size,
                  uint64_t value) {
    if (valid_table(table) && element_sizes[table] != size) return -EINVAL;
    unsigned char bytes[8];
    for (size_t i = 0; i < size; i++) bytes[i] = (unsigned char)(value >> (8 * (size - 1 - i)));
    return s7commd_write_table(s, table, element, bytes, size);
}

int s7commd_get_int16(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int16_t *value) {
    uint64_t v;
    if (value == NULL) return -EINVAL;
    int r = get_be(segment, table, element, 2, &v);
    if (r == 0) *value = (int16_t)(uint16_t)v;
    return r;
}

int s7commd_set_int16(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int16_t value) {
    return set_be(segment, table, element, 2, (uint16_t)value);
}

int s7commd_get_int32(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int32_t *value) {
    uint64_t v;
    if (value == NULL) return -EINVAL;
    int r = get_be(segment, table, element, 4, &v);
    if (r == 0) *value = (int32_t)(uint32_t)v;
    return r;
}

int s7commd_set_int32(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int32_t value) {
    return set_be(segment, table, element, 4, (uint32_t)value);
}

int s7commd_get_int64(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int64_t *value) {
    uint64_t v;
    if (value == NULL) return -EINVAL;
    int r = get_be(segment, table, element, 8, &v);
    if (r == 0) *value = (int64_t)v;
    return r;
}

int s7commd_set_int64(const struct s7commd_segment *segment, enum s7commd_table table, size_t element, int64_t value) {
    return set_be(segment, table, element, 8, (uint64_t)value);
}

static bool bool_table(enum s7commd_table table) {
    return table == S7COMMD_BOOL_INPUT || table == S7COMMD_BOOL_OUTPUT || table == S7COMMD_BOOL_MEMORY;
}

int s7commd_get_bool(const struct s7commd_segment *segment, enum s7commd_table table, size_t byte, unsigned bit,
                     bool *value) {
    if (!bool_table(table) || bit > 7 || value == NULL) return -EINVAL;
    unsigned char b;
    int r = s7commd_read_table(segment, table, byte, &b, 1);
    if (r == 0) *value = (b >> bit) & 1;
    return r;
}

int s7commd_set_bool(const struct s7commd_segment *segment, enum s7commd_table table, size_t byte, unsigned bit,
                     bool value) {
    if (!bool_table(table) || bit > 7) return -EINVAL;
    size_t at;
    int r = check_range(segment, table, byte, 1, &at);
    if (r != 0) return r;
    r = lock_writers(segment);
    if (r != 0) return r;
    /* Read-modify-write under the mutex: no other writer changes the byte meanwhile. */
    unsigned char *p = segment->base + at;
    unsigned char old = __atomic_load_n(p, __ATOMIC_RELAXED);
    unsigned char updated = value ? (unsigned char)(old | (1u << bit)) : (unsigned char)(old & ~(1u << bit));
    if (updated != old) {
        uint64_t *sequence = seqlock_of(segment);
        seqlock_write_begin(sequence);
        __atomic_store_n(p, updated, __ATOMIC_RELAXED);
        seqlock_write_end(sequence);
    }
    unlock_writers(segment);
    return 0;
}

int s7commd_get_mode(const struct s7commd_segment *segment) {
    if (segment == NULL || segment->base == NULL) return -EBADF;
    unsigned char mode = __atomic_load_n(segment->base + S7COMMD_MODE_OFFSET, __ATOMIC_ACQUIRE);
    /* 0: nobody set it yet, which s7commd reads as RUN. */
    return mode == S7COMMD_MODE_STOP ? S7COMMD_MODE_STOP : S7COMMD_MODE_RUN;
}

/* ---- errors ---- */

const char *s7commd_strerror(int error) {
    switch (-error) {
    case 0:
        return "success";
    case ENOENT:
        return "no s7commd memory socket at that path: is s7commd running? the memory socket is "
               "<runtime dir>/memory.sock - " S7COMMD_DEFAULT_SOCKET " when s7commd runs as root "
               "(systemd), otherwise beside its --pid-file";
    case ECONNREFUSED:
        return "nothing listens on that memory socket (a socket file left behind): is s7commd running? "
               "start it (systemctl start s7commd) or pass the memory.sock beside the running server's --pid-file";
    case ENOTSOCK:
        return "that path is not a socket: pass s7commd's memory socket, <runtime dir>/memory.sock "
               "(" S7COMMD_DEFAULT_SOCKET " when s7commd runs as root)";
    case EACCES:
    case EPERM:
        return "permission denied on the memory socket or its directory: run the PLC program as root, as the "
               "service user (s7commd), or with the service group as its effective group (sg s7commd -c ..., "
               "or Group=s7commd in a systemd unit)";
    case ENAMETOOLONG:
        return "the socket path is longer than a Unix socket address allows (107 bytes): use a shorter path";
    case S7_E_CLOSED:
    case ECONNRESET:
        return "s7commd's memory process closed the connection without handing over the memory: it accepts "
               "only root, the service user (s7commd), or a process whose effective group is the service "
               "group (sg s7commd -c ..., or Group=s7commd in a systemd unit); see s7commd's log";
    case ETIMEDOUT:
        return "s7commd's memory process did not answer within 5 s: check that s7commd is healthy (its log, "
               "`s7commd status`)";
    case S7_E_ANSWER:
        return "the memory socket answered something other than the PLC memory segment: is that s7commd's "
               "memory.sock, and of a matching version?";
    case S7_E_HEADER:
        return "the received memory is not an s7commd PLC memory segment (wrong magic, sizes or layout "
               "fingerprint): is that s7commd's memory.sock, and this library of the installed s7commd?";
    case S7_E_VERSION:
        return "the PLC memory segment has another layout version than this library (1): "
               "rebuild the PLC program against the s7commd_plc.h of the installed s7commd";
    case -S7COMMD_E_PEER:
        return "the memory socket is served by a process that is neither root nor the owner of the directory that "
               "holds it, so it is not s7commd's memory.sock (or that directory is not s7commd's runtime directory): "
               "pass the memory.sock of the running server; s7commd_attach_detail() names the uids";
    case -S7COMMD_E_SEGMENT:
        return "a PLC memory segment that came over the memory socket is not sealed against resizing, or not the size "
               "its layout needs: it is not s7commd's; s7commd_attach_detail() says which and what it found";
    case -S7COMMD_E_NO_REGION:
        return "no such data block in the running configuration, or the area is not enabled";
    case EBADF:
        return "the segment is not attached: call s7commd_attach first and check its result";
    case ERANGE:
        return "the element or byte range reaches past the end of the image table (1024 elements), data block or area";
    case EINVAL:
        return "invalid argument: not an image table, a table whose element size does not fit the typed "
               "accessor (int16: int_*, int32: dint_*, int64: lint_*, bool: bool_*), a bit above 7, or NULL";
    case ENOTRECOVERABLE:
        return "the writers' mutex in the PLC memory is unrecoverable (a recovery was abandoned): restart s7commd";
    case ENOMEM:
        return "out of memory";
    default:
        return error < 0 ? strerror(-error) : "not an s7commd error value (they are negative)";
    }
}
