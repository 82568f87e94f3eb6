/*
 * s7proto.h - the S7comm client frames and socket helpers that bench/s7load.c (the load
 * generator) and bench/s7attack.c (the hostile clients and the fresh-connect probe) share.
 * Header only, every function static inline: each tool is still one `gcc file.c`.
 *
 * Handshake: COTP CR with TPDU size 1024, src TSAP 0x0100, dst TSAP 0x0101 -> CC;
 * S7 Setup Communication (AmQ 1/1, PDU 480) -> ack_data.
 * Request: Read Var (0x04) or Write Var (0x05), 1 item, DB1, byte transport, N bytes at 0.
 */
#ifndef S7PROTO_H
#define S7PROTO_H

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#ifndef S7_PROG
#error "define S7_PROG (the program name for error messages) before including s7proto.h"
#endif

static const uint8_t COTP_CR[22] = {
    0x03, 0x00, 0x00, 0x16,                   /* TPKT, len 22 */
    0x11, 0xE0, 0x00, 0x00, 0x00, 0x01, 0x00, /* COTP CR: len 17, dst ref 0, src ref 1, class 0 */
    0xC0, 0x01, 0x0A,                         /* TPDU size 1024 */
    0xC1, 0x02, 0x01, 0x00,                   /* src TSAP 0x0100 */
    0xC2, 0x02, 0x01, 0x01,                   /* dst TSAP 0x0101 (rack 0 slot 1) */
};

static const uint8_t S7_SETUP[25] = {
    0x03, 0x00, 0x00, 0x19,                                     /* TPKT, len 25 */
    0x02, 0xF0, 0x80,                                           /* COTP DT, EOT */
    0x32, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, /* S7 job, ref 0, plen 8, dlen 0 */
    0xF0, 0x00, 0x00, 0x01, 0x00, 0x01, 0x01, 0xE0,             /* setup comm: amq 1/1, PDU 480 */
};

#define S7_REF_OFFSET (7 + 4) /* the PDU reference inside a request frame */

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Prints "S7_PROG: message" on stderr and exits with status 2. */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, S7_PROG ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* host:port -> *addr (the first address getaddrinfo gives); dies when it does not resolve. */
static inline void s7_resolve(const char *host, int port, struct sockaddr_storage *addr, socklen_t *len) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    int r = getaddrinfo(host, ports, &hints, &res);
    if (r != 0) die("resolve %s: %s", host, gai_strerror(r));
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
}

/* Raises the soft RLIMIT_NOFILE to want (or to the hard limit when that is lower). */
static inline void raise_nofile(int want) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)want) {
        rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= (rlim_t)want) ? (rlim_t)want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static inline void put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline unsigned get16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }

/* Builds a Read Var (func 0x04) or Write Var (0x05) request for n bytes of DB1 at byte 0
 * with PDU reference 0 into p (room for 4+3+10+14+4+n bytes); returns its length. */
static inline int s7_build_request(uint8_t *p, int func, int n) {
    int plen = 14, dlen = (func == 0x05) ? 4 + n : 0;
    int len = 4 + 3 + 10 + plen + dlen;
    p[0] = 0x03; p[1] = 0x00; put16(p + 2, (unsigned)len);
    p[4] = 0x02; p[5] = 0xF0; p[6] = 0x80;
    uint8_t *h = p + 7;
    h[0] = 0x32; h[1] = 0x01; h[2] = 0; h[3] = 0;
    put16(h + 4, 0);
    put16(h + 6, (unsigned)plen);
    put16(h + 8, (unsigned)dlen);
    uint8_t *a = h + 10;
    a[0] = (uint8_t)func; a[1] = 0x01;
    /* S7ANY item: 12 0A 10 02 len16 db16 84 addr24 (addr = byte*8) */
    a[2] = 0x12; a[3] = 0x0A; a[4] = 0x10; a[5] = 0x02;
    put16(a + 6, (unsigned)n);
    put16(a + 8, 1);
    a[10] = 0x84;
    a[11] = 0; a[12] = 0; a[13] = 0;
    if (func == 0x05) {
        uint8_t *d = a + plen;
        d[0] = 0x00; d[1] = 0x04; put16(d + 2, (unsigned)n * 8);
        for (int i = 0; i < n; i++) d[4 + i] = (uint8_t)(i * 7 + 1);
    }
    return len;
}

static inline int s7_expected_resp_len(int func, int n) {
    return func == 0x04 ? 4 + 3 + 12 + 2 + 4 + n : 4 + 3 + 12 + 2 + 1;
}

/* Checks one whole response frame to the request with reference ref. NULL if OK, else why. */
static inline const char *s7_check_response(const uint8_t *f, int len, unsigned ref, int func, int n) {
    if (len < 4 + 3 + 12 + 2) return "short frame";
    if (f[0] != 0x03 || f[1] != 0x00 || (int)get16(f + 2) != len) return "bad TPKT";
    if (f[4] != 0x02 || f[5] != 0xF0) return "not COTP DT";
    const uint8_t *h = f + 7;
    if (h[0] != 0x32) return "not S7 (0x32)";
    if (h[1] != 0x03) return "ROSCTR != 3";
    if (get16(h + 4) != ref) return "PDU ref mismatch";
    if (h[10] != 0 || h[11] != 0) return "S7 error class/code";
    unsigned plen = get16(h + 6), dlen = get16(h + 8);
    if (7 + 12 + (int)plen + (int)dlen != len) return "S7 lengths vs TPKT";
    if (plen < 2) return "param too short";
    const uint8_t *a = h + 12;
    if (a[0] != func || a[1] != 1) return "function/item count";
    const uint8_t *d = a + plen;
    if (dlen < 1) return "no data";
    if (d[0] != 0xFF) return "item return code != 0xFF";
    if (func == 0x04) {
        if (dlen < 4) return "read data too short";
        unsigned ts = d[1], l = get16(d + 2);
        unsigned nbytes = (ts == 0x03 || ts == 0x04 || ts == 0x05) ? (l + 7) / 8 : l;
        if ((int)nbytes != n || (int)dlen < 4 + n) return "read data length";
    }
    return NULL;
}

static inline int wait_fd(int fd, short ev, int ms) {
    struct pollfd p = {.fd = fd, .events = ev};
    int r;
    do r = poll(&p, 1, ms); while (r < 0 && errno == EINTR);
    return r;
}

/* Sends all n bytes, waiting at most timeout_ms for each chance to send. 0 or -1. */
static inline int send_all(int fd, const uint8_t *b, int n, int timeout_ms) {
    while (n > 0) {
        ssize_t w = send(fd, b, (size_t)n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (wait_fd(fd, POLLOUT, timeout_ms) <= 0) return -1;
                continue;
            }
            return -1;
        }
        b += w; n -= (int)w;
    }
    return 0;
}

/* Reads one whole TPKT frame, waiting at most timeout_ms for each piece. Returns its length,
 * or S7_CLOSED (the peer closed before the first byte), S7_TIMEOUT, S7_RESET (an error such as
 * ECONNRESET, or a close inside the frame) or S7_BAD (not a TPKT header, or larger than cap). */
enum { S7_CLOSED = 0, S7_TIMEOUT = -1, S7_RESET = -2, S7_BAD = -3 };
static inline int recv_frame(int fd, uint8_t *buf, int cap, int timeout_ms) {
    int have = 0, need = 4;
    while (have < need) {
        int w = wait_fd(fd, POLLIN, timeout_ms);
        if (w == 0) return S7_TIMEOUT;
        if (w < 0) return S7_RESET;
        ssize_t r = recv(fd, buf + have, (size_t)(need - have), 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r == 0 && have == 0) return S7_CLOSED;
        if (r <= 0) return S7_RESET;
        have += (int)r;
        if (have == 4) {
            if (buf[0] != 0x03) return S7_BAD;
            need = (int)get16(buf + 2);
            if (need < 7 || need > cap) return S7_BAD;
        }
    }
    return have;
}

/* Why recv_frame(...) returned n <= 0, waiting for what. */
static inline const char *s7_recv_why(int n, const char *what) {
    static __thread char why[96];
    const char *how = n == S7_CLOSED ? "closed by the server before" : n == S7_TIMEOUT ? "timed out waiting for"
                    : n == S7_RESET ? "connection reset or broken before" : "bad TPKT instead of";
    snprintf(why, sizeof why, "%s %s", how, what);
    return why;
}

/* COTP CR -> CC, then S7 Setup Communication -> ack on a connected socket. NULL when it
 * worked (*pdu = the PDU size the server granted), else why (a static buffer). */
static inline const char *s7_handshake(int fd, int timeout_ms, int *pdu) {
    static __thread char why[96];
    uint8_t buf[4096];
    if (send_all(fd, COTP_CR, sizeof COTP_CR, timeout_ms) < 0) return "send COTP CR failed";
    int n = recv_frame(fd, buf, sizeof buf, timeout_ms);
    if (n <= 0) return s7_recv_why(n, "COTP CC");
    if (n < 7) return "short COTP CC";
    if ((buf[5] & 0xF0) != 0xD0) {
        snprintf(why, sizeof why, "expected COTP CC 0xD0, got 0x%02X", buf[5]);
        return why;
    }
    if (send_all(fd, S7_SETUP, sizeof S7_SETUP, timeout_ms) < 0) return "send setup failed";
    n = recv_frame(fd, buf, sizeof buf, timeout_ms);
    if (n <= 0) return s7_recv_why(n, "the S7 setup ack");
    if (n < 27) {
        snprintf(why, sizeof why, "no/short S7 setup ack (%d bytes)", n);
        return why;
    }
    if (buf[7] != 0x32 || buf[8] != 0x03) {
        snprintf(why, sizeof why, "setup reply not ack_data (ROSCTR %u)", buf[8]);
        return why;
    }
    if (buf[17] != 0 || buf[18] != 0) {
        snprintf(why, sizeof why, "setup error class 0x%02X code 0x%02X", buf[17], buf[18]);
        return why;
    }
    if (buf[19] != 0xF0) {
        snprintf(why, sizeof why, "setup ack function 0x%02X", buf[19]);
        return why;
    }
    *pdu = (int)get16(buf + 25);
    return NULL;
}

#endif
