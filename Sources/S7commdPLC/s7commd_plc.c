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
#include <pthread.h>
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
/* The answer's tag (MemoryClientReply.attached); the memory layout follows, which this
 * library does not need: the image tables sit at fixed offsets. */
static const char attached_prefix[] = {0x41};
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

int s7commd_attach(const char *socket_path, struct s7commd_segment *out) {
    if (out == NULL) return -EINVAL;
    out->base = NULL;
    out->size = 0;
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
    struct timeval timeout = {S7_ANSWER_TIMEOUT_S, 0};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);

    if (send(sock, attach_request, sizeof attach_request, MSG_NOSIGNAL) != (ssize_t)(sizeof attach_request)) {
        int e = errno;
        close(sock);
        return e == EPIPE || e == ECONNRESET ? -S7_E_CLOSED : -e;
    }

    /* One packet: the answer, with the segment's descriptor. */
    char *text = malloc(S7_MAX_MESSAGE + 1);
    if (text == NULL) {
        close(sock);
        return -ENOMEM;
    }
    union {
        struct cmsghdr align;
        char buffer[CMSG_SPACE(sizeof(int) * 4)];
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
    int fd = -1, extra = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); received >= 0 && c != NULL; c = CMSG_NXTHDR(&message, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int d;
            memcpy(&d, CMSG_DATA(c) + i * sizeof(int), sizeof d);
            if (fd < 0) fd = d;
            else { close(d); extra++; }
        }
    }
    int result = 0;
    if (received < 0) {
        result = receive_error == EAGAIN || receive_error == EWOULDBLOCK ? -ETIMEDOUT : -receive_error;
    } else if (received == 0 && fd < 0) {
        result = -S7_E_CLOSED;
    } else if ((message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 || fd < 0 || extra != 0
               || (size_t)received < sizeof attached_prefix
               || memcmp(text, attached_prefix, sizeof attached_prefix) != 0) {
        result = -S7_E_ANSWER;
    }
    free(text);
    if (result != 0) {
        if (fd >= 0) close(fd);
        return result;
    }

    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (st.st_size < (off_t)S7COMMD_TABLES_END) {
        close(fd);
        return -S7_E_HEADER;
    }
    size_t size = (size_t)st.st_size;
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int map_error = errno;
    close(fd);
    if (base == MAP_FAILED) return -map_error;

    const unsigned char *header = base;
    if (memcmp(header, S7COMMD_MAGIC, 8) != 0) result = -S7_E_HEADER;
    else if (load_le(header + 8, 4) != S7COMMD_VERSION) result = -S7_E_VERSION;
    else if (load_le(header + S7COMMD_SIZE_OFFSET, 8) != (uint64_t)size) result = -S7_E_HEADER;
    if (result != 0) {
        munmap(base, size);
        return result;
    }
    out->base = base;
    out->size = size;
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

/* Copies n bytes at `at` into dst, retrying until the copy overlapped no write. */
static int consistent_read(const struct s7commd_segment *s, size_t at, void *dst, size_t n) {
    const uint64_t *sequence = seqlock_of(s);
    uint64_t stuck = 0;
    unsigned stuck_for = 0;
    for (unsigned attempts = 1;; attempts++) {
        uint64_t start = seqlock_read_begin(sequence);
        if ((start & 1) == 0) {
            load_bytes(dst, s->base + at, n);
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
    return consistent_read(segment, at, dst, bytes);
}

int s7commd_write_table(const struct s7commd_segment *segment, enum s7commd_table table,
                        size_t first_element, const void *src, size_t bytes) {
    size_t at;
    int r = check_range(segment, table, first_element, bytes, &at);
    if (r != 0) return r;
    if (bytes == 0) return 0;
    if (src == NULL) return -EINVAL;
    r = lock_writers(segment);
    if (r != 0) return r;
    uint64_t *sequence = seqlock_of(segment);
    seqlock_write_begin(sequence);
    store_bytes(segment->base + at, src, bytes);
    seqlock_write_end(sequence);
    unlock_writers(segment);
    return 0;
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
        return "the received memory is not an s7commd PLC memory segment (wrong magic or size): "
               "is that s7commd's memory.sock?";
    case S7_E_VERSION:
        return "the PLC memory segment has another layout version than this library (1): "
               "rebuild the PLC program against the s7commd_plc.h of the installed s7commd";
    case EBADF:
        return "the segment is not attached: call s7commd_attach first and check its result";
    case ERANGE:
        return "the element or byte range reaches past the end of the image table (1024 elements)";
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
