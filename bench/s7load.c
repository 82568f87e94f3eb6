/*
 * s7load - closed-loop S7comm (ISO-on-TCP, RFC1006) load generator.
 *
 *   s7load -m MODE -H HOST -p PORT [-k K] [-n N] [-d SECONDS] [-w WARMUP] [-T THREADS] [-P]
 *   (-P: busy-poll, the client threads never sleep)
 *
 *   MODE  read   Read Var, 1 item, DB1, byte transport (0x02), N bytes at byte 0
 *         write  Write Var, 1 item, N bytes to DB1 at byte 0
 *         floor  same request bytes as read (meant for floor_server)
 *         idle   open K connections, handshake each, print "ready", sleep until killed
 *
 * Every connection does the real handshake (COTP CR with TPDU size 1024,
 * src TSAP 0x0100, dst TSAP 0x0101 -> CC; S7 Setup Communication PDU 480 ->
 * ack_data), then runs a closed loop: one outstanding request per
 * connection, next request only after the full response frame arrived.
 * Every response is checked (TPKT, COTP DT, S7 0x32, ROSCTR 3, PDU ref,
 * error class/code 0, function, item count 1, item return code 0xFF, data
 * length for reads).  Latency per request (CLOCK_MONOTONIC) goes into a
 * histogram.  After a warm-up (default 0.5 s, not counted) it measures for
 * SECONDS and prints one JSON line:
 *   {"mode","k","n","seconds","requests","rps","p50_us","p99_us","errors",...}
 *
 * Only libc + pthreads.  Build: gcc -O2 -pthread -o s7load s7load.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXFRAME 65536
#define HS_TIMEOUT_MS 5000

/* Histogram: 100 ns buckets up to 20 ms, then 100 us buckets up to 20 s. */
#define FINE_NS 100ULL
#define FINE_N 200000ULL /* 20 ms */
#define COARSE_NS 100000ULL
#define COARSE_N 200000ULL /* 20 s */

enum mode { M_READ, M_WRITE, M_FLOOR, M_IDLE };

static const char *g_host = "127.0.0.1";
static int g_port = 102;
static int g_k = 1;
static int g_n = 4;
static double g_seconds = 5.0;
static double g_warmup = 0.5;
static int g_threads = 1;
static enum mode g_mode = M_READ;
static const char *g_mode_name = "read";
static int g_verbose = 0;
static int g_spin = 0; /* -P: busy-poll (epoll_wait timeout 0) instead of sleeping */

static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;

static uint8_t g_req[MAXFRAME];
static int g_reqlen;
static int g_func; /* 0x04 or 0x05 */
static int g_pdu_min = 1 << 30, g_pdu_max = 0;
static pthread_mutex_t g_pdu_mu = PTHREAD_MUTEX_INITIALIZER;

static volatile int g_phase; /* 0 warmup, 1 measuring, 2 done */

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#include <stdarg.h>
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "s7load: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* ------------------------------------------------------------------ frames */

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

static void put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static unsigned get16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }

static void build_request(void) {
    uint8_t *p = g_req;
    int plen = 14, dlen = 0;
    g_func = (g_mode == M_WRITE) ? 0x05 : 0x04;
    if (g_mode == M_WRITE) dlen = 4 + g_n;
    g_reqlen = 4 + 3 + 10 + plen + dlen;
    if (g_reqlen > MAXFRAME) die("request too large");
    p[0] = 0x03; p[1] = 0x00; put16(p + 2, (unsigned)g_reqlen);
    p[4] = 0x02; p[5] = 0xF0; p[6] = 0x80;
    uint8_t *h = p + 7;
    h[0] = 0x32; h[1] = 0x01; h[2] = 0; h[3] = 0;
    put16(h + 4, 0); /* PDU ref, patched per request */
    put16(h + 6, (unsigned)plen);
    put16(h + 8, (unsigned)dlen);
    uint8_t *a = h + 10;
    a[0] = (uint8_t)g_func; a[1] = 0x01;
    /* S7ANY item: 12 0A 10 02 len16 db16 84 addr24 (addr = byte*8) */
    a[2] = 0x12; a[3] = 0x0A; a[4] = 0x10; a[5] = 0x02;
    put16(a + 6, (unsigned)g_n);
    put16(a + 8, 1);
    a[10] = 0x84;
    a[11] = 0; a[12] = 0; a[13] = 0; /* byte 0 */
    if (g_mode == M_WRITE) {
        uint8_t *d = a + plen;
        d[0] = 0x00; d[1] = 0x04; put16(d + 2, (unsigned)g_n * 8);
        for (int i = 0; i < g_n; i++) d[4 + i] = (uint8_t)(i * 7 + 1);
    }
}

static int expected_resp_len(void) {
    if (g_func == 0x04) return 4 + 3 + 12 + 2 + 4 + g_n;
    return 4 + 3 + 12 + 2 + 1;
}

/* Returns NULL if OK, else a reason. */
static const char *check_response(const uint8_t *f, int len, unsigned ref) {
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
    if (a[0] != g_func || a[1] != 1) return "function/item count";
    const uint8_t *d = a + plen;
    if (dlen < 1) return "no data";
    if (d[0] != 0xFF) return "item return code != 0xFF";
    if (g_func == 0x04) {
        if (dlen < 4) return "read data too short";
        unsigned ts = d[1], l = get16(d + 2);
        unsigned nbytes = (ts == 0x03 || ts == 0x04 || ts == 0x05) ? (l + 7) / 8 : l;
        if ((int)nbytes != g_n || (int)dlen < 4 + g_n) return "read data length";
    }
    return NULL;
}

/* ------------------------------------------------------------- handshake */

static int wait_fd(int fd, short ev, int ms) {
    struct pollfd p = {.fd = fd, .events = ev};
    int r;
    do r = poll(&p, 1, ms); while (r < 0 && errno == EINTR);
    return r;
}

static int send_all(int fd, const uint8_t *b, int n) {
    while (n > 0) {
        ssize_t w = send(fd, b, (size_t)n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (wait_fd(fd, POLLOUT, HS_TIMEOUT_MS) <= 0) return -1;
                continue;
            }
            return -1;
        }
        b += w; n -= (int)w;
    }
    return 0;
}

/* Read one whole TPKT frame (blocking with timeout). Returns length or -1. */
static int recv_frame(int fd, uint8_t *buf, int cap) {
    int have = 0, need = 4;
    while (have < need) {
        if (wait_fd(fd, POLLIN, HS_TIMEOUT_MS) <= 0) return -1;
        ssize_t r = recv(fd, buf + have, (size_t)(need - have), 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r <= 0) return -1;
        have += (int)r;
        if (have == 4) {
            if (buf[0] != 0x03) return -1;
            need = (int)get16(buf + 2);
            if (need < 7 || need > cap) return -1;
        }
    }
    return have;
}

static int connect_and_handshake(int idx) {
    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s (raise ulimit -n?)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) < 0)
        die("conn %d: connect %s:%d: %s", idx, g_host, g_port, strerror(errno));
    uint8_t buf[4096];
    if (send_all(fd, COTP_CR, sizeof COTP_CR) < 0) die("conn %d: send COTP CR failed", idx);
    int n = recv_frame(fd, buf, sizeof buf);
    if (n < 7) die("conn %d: no COTP CC (server closed or timed out)", idx);
    if ((buf[5] & 0xF0) != 0xD0) die("conn %d: expected COTP CC 0xD0, got 0x%02X", idx, buf[5]);
    if (send_all(fd, S7_SETUP, sizeof S7_SETUP) < 0) die("conn %d: send setup failed", idx);
    n = recv_frame(fd, buf, sizeof buf);
    if (n < 27) die("conn %d: no/short S7 setup ack (%d bytes)", idx, n);
    if (buf[7] != 0x32 || buf[8] != 0x03) die("conn %d: setup reply not ack_data (ROSCTR %u)", idx, buf[8]);
    if (buf[17] != 0 || buf[18] != 0) die("conn %d: setup error class 0x%02X code 0x%02X", idx, buf[17], buf[18]);
    if (buf[19] != 0xF0) die("conn %d: setup ack function 0x%02X", idx, buf[19]);
    int pdu = (int)get16(buf + 25);
    pthread_mutex_lock(&g_pdu_mu);
    if (pdu < g_pdu_min) g_pdu_min = pdu;
    if (pdu > g_pdu_max) g_pdu_max = pdu;
    pthread_mutex_unlock(&g_pdu_mu);
    return fd;
}

/* ---------------------------------------------------------------- workers */

struct conn {
    int fd;
    int alive;
    unsigned ref;
    uint64_t t0;
    int have, need;
    uint8_t sbuf[MAXFRAME];
    uint8_t rbuf[MAXFRAME];
};

struct worker {
    pthread_t th;
    int first, count;
    struct conn *conns;
    uint64_t *fine, *coarse, over;
    uint64_t requests, errors, warm_requests;
    uint64_t max_ns;
    char first_err[128];
};

static void record(struct worker *w, uint64_t ns) {
    if (ns / FINE_NS < FINE_N) w->fine[ns / FINE_NS]++;
    else if (ns / COARSE_NS < COARSE_N) w->coarse[ns / COARSE_NS]++;
    else w->over++;
    if (ns > w->max_ns) w->max_ns = ns;
}

static void note_err(struct worker *w, int idx, const char *why) {
    if (g_phase == 1 || g_phase == 0) w->errors++;
    if (!w->first_err[0]) snprintf(w->first_err, sizeof w->first_err, "conn %d: %s", idx, why);
    if (g_verbose) fprintf(stderr, "s7load: conn %d: %s\n", idx, why);
}

static int send_request(struct conn *c) {
    c->ref = (c->ref + 1) & 0xFFFF;
    if (c->ref == 0) c->ref = 1;
    memcpy(c->sbuf, g_req, (size_t)g_reqlen);
    put16(c->sbuf + 7 + 4, c->ref);
    c->have = 0;
    c->need = 4;
    c->t0 = now_ns();
    return send_all(c->fd, c->sbuf, g_reqlen);
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1: %s", strerror(errno));
    int alive = 0;
    for (int i = 0; i < w->count; i++) {
        struct conn *c = &w->conns[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
        if (send_request(c) < 0) { note_err(w, w->first + i, "send failed"); c->alive = 0; close(c->fd); continue; }
        alive++;
    }
    struct epoll_event evs[256];
    while (g_phase != 2 && alive > 0) {
        int ne = epoll_wait(ep, evs, 256, g_spin ? 0 : 50);
        if (ne < 0) { if (errno == EINTR) continue; die("epoll_wait: %s", strerror(errno)); }
        for (int e = 0; e < ne; e++) {
            int i = (int)evs[e].data.u32;
            struct conn *c = &w->conns[i];
            if (!c->alive) continue;
            for (;;) {
                ssize_t r = recv(c->fd, c->rbuf + c->have, (size_t)(c->need - c->have), 0);
                if (r < 0) {
                    if (errno == EINTR) continue;
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    r = 0;
                }
                if (r == 0) {
                    note_err(w, w->first + i, "connection closed by server");
                    c->alive = 0; alive--;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    break;
                }
                c->have += (int)r;
                if (c->have == 4) {
                    int l = (int)get16(c->rbuf + 2);
                    if (c->rbuf[0] != 0x03 || l < 7 || l > MAXFRAME) {
                        note_err(w, w->first + i, "bad TPKT header");
                        c->alive = 0; alive--;
                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                        close(c->fd);
                        break;
                    }
                    c->need = l;
                }
                if (c->have < c->need) continue;
                /* full frame */
                uint64_t t1 = now_ns();
                const char *why = check_response(c->rbuf, c->have, c->ref);
                int ph = g_phase;
                if (why) note_err(w, w->first + i, why);
                else if (ph == 1) { w->requests++; record(w, t1 - c->t0); }
                else if (ph == 0) w->warm_requests++;
                if (ph == 2) break;
                if (send_request(c) < 0) {
                    note_err(w, w->first + i, "send failed");
                    c->alive = 0; alive--;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                }
                break; /* closed loop: nothing more can be pending on this conn */
            }
        }
    }
    close(ep);
    return NULL;
}

static double percentile_us(struct worker *ws, int nw, double q, uint64_t total) {
    if (total == 0) return 0.0;
    uint64_t target = (uint64_t)(q * (double)total);
    if (target >= total) target = total - 1;
    uint64_t acc = 0;
    for (uint64_t b = 0; b < FINE_N; b++) {
        for (int i = 0; i < nw; i++) acc += ws[i].fine[b];
        if (acc > target) return (double)(b * FINE_NS + FINE_NS / 2) / 1000.0;
    }
    for (uint64_t b = 0; b < COARSE_N; b++) {
        for (int i = 0; i < nw; i++) acc += ws[i].coarse[b];
        if (acc > target) return (double)(b * COARSE_NS + COARSE_NS / 2) / 1000.0;
    }
    return (double)(COARSE_N * COARSE_NS) / 1000.0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: s7load -m read|write|floor|idle -H host -p port [-k conns] [-n bytes]\n"
            "              [-d seconds] [-w warmup_seconds] [-T threads] [-P] [-v]\n");
    exit(2);
}

static void resolve(void) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", g_port);
    int r = getaddrinfo(g_host, ports, &hints, &res);
    if (r != 0) die("resolve %s: %s", g_host, gai_strerror(r));
    memcpy(&g_addr, res->ai_addr, res->ai_addrlen);
    g_addrlen = res->ai_addrlen;
    freeaddrinfo(res);
}

static void raise_nofile(int want) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)want) {
        rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= (rlim_t)want) ? (rlim_t)want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "m:H:p:k:n:d:w:T:vP")) != -1) {
        switch (opt) {
        case 'm':
            g_mode_name = optarg;
            if (!strcmp(optarg, "read")) g_mode = M_READ;
            else if (!strcmp(optarg, "write")) g_mode = M_WRITE;
            else if (!strcmp(optarg, "floor")) g_mode = M_FLOOR;
            else if (!strcmp(optarg, "idle")) g_mode = M_IDLE;
            else usage();
            break;
        case 'H': g_host = optarg; break;
        case 'p': g_port = atoi(optarg); break;
        case 'k': g_k = atoi(optarg); break;
        case 'n': g_n = atoi(optarg); break;
        case 'd': g_seconds = atof(optarg); break;
        case 'w': g_warmup = atof(optarg); break;
        case 'T': g_threads = atoi(optarg); break;
        case 'v': g_verbose = 1; break;
        case 'P': g_spin = 1; break;
        default: usage();
        }
    }
    if (g_k < 1 || g_n < 1 || g_n > 60000 || g_seconds <= 0 || g_port <= 0) usage();
    if (g_threads < 1) g_threads = 1;
    if (g_threads > g_k) g_threads = g_k;
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(g_k + 64);
    resolve();
    build_request();

    struct conn *conns = calloc((size_t)g_k, sizeof *conns);
    if (!conns) die("out of memory");
    for (int i = 0; i < g_k; i++) {
        conns[i].fd = connect_and_handshake(i);
        conns[i].alive = 1;
    }
    if (g_pdu_min < g_reqlen - 7 || g_pdu_min < expected_resp_len() - 7)
        fprintf(stderr, "s7load: warning: negotiated PDU %d is smaller than the request/response\n", g_pdu_min);

    if (g_mode == M_IDLE) {
        printf("ready k=%d pdu=%d\n", g_k, g_pdu_min);
        fflush(stdout);
        for (;;) pause();
    }

    struct worker *ws = calloc((size_t)g_threads, sizeof *ws);
    int per = g_k / g_threads, extra = g_k % g_threads, at = 0;
    for (int t = 0; t < g_threads; t++) {
        ws[t].first = at;
        ws[t].count = per + (t < extra ? 1 : 0);
        ws[t].conns = conns + at;
        at += ws[t].count;
        ws[t].fine = calloc(FINE_N, sizeof(uint64_t));
        ws[t].coarse = calloc(COARSE_N, sizeof(uint64_t));
        if (!ws[t].fine || !ws[t].coarse) die("out of memory");
    }
    for (int i = 0; i < g_k; i++) { /* non-blocking for the epoll loop */
        int fl = fcntl(conns[i].fd, F_GETFL);
        if (fl < 0 || fcntl(conns[i].fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl: %s", strerror(errno));
    }

    g_phase = 0;
    for (int t = 0; t < g_threads; t++)
        if (pthread_create(&ws[t].th, NULL, worker_main, &ws[t]) != 0) die("pthread_create");

    struct timespec ts;
    uint64_t start = now_ns();
    uint64_t warm_end = start + (uint64_t)(g_warmup * 1e9);
    while (now_ns() < warm_end) {
        ts.tv_sec = 0; ts.tv_nsec = 1000000;
        nanosleep(&ts, NULL);
    }
    uint64_t t_begin = now_ns();
    g_phase = 1;
    uint64_t t_stop = t_begin + (uint64_t)(g_seconds * 1e9);
    for (;;) {
        uint64_t n = now_ns();
        if (n >= t_stop) break;
        uint64_t left = t_stop - n;
        if (left > 10000000) left = 10000000;
        ts.tv_sec = 0; ts.tv_nsec = (long)left;
        nanosleep(&ts, NULL);
    }
    g_phase = 2;
    uint64_t t_end = now_ns();
    for (int t = 0; t < g_threads; t++) pthread_join(ws[t].th, NULL);

    uint64_t total = 0, errors = 0, over = 0, maxns = 0;
    const char *first_err = NULL;
    for (int t = 0; t < g_threads; t++) {
        total += ws[t].requests;
        errors += ws[t].errors;
        over += ws[t].over;
        if (ws[t].max_ns > maxns) maxns = ws[t].max_ns;
        if (!first_err && ws[t].first_err[0]) first_err = ws[t].first_err;
    }
    (void)over;
    double secs = (double)(t_end - t_begin) / 1e9;
    double p50 = percentile_us(ws, g_threads, 0.50, total);
    double p99 = percentile_us(ws, g_threads, 0.99, total);
    printf("{\"mode\":\"%s\",\"k\":%d,\"n\":%d,\"seconds\":%.3f,\"requests\":%llu,\"rps\":%.1f,"
           "\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%llu,\"max_us\":%.1f,\"pdu\":%d,\"threads\":%d,\"spin\":%d",
           g_mode_name, g_k, g_n, secs, (unsigned long long)total, secs > 0 ? (double)total / secs : 0.0, p50, p99,
           (unsigned long long)errors, (double)maxns / 1000.0, g_pdu_min, g_threads, g_spin);
    if (first_err) {
        printf(",\"first_error\":\"");
        for (const char *p = first_err; *p; p++) if (*p != '"' && *p != '\\') putchar(*p);
        putchar('"');
    }
    printf("}\n");
    fflush(stdout);
    for (int i = 0; i < g_k; i++) if (conns[i].alive) close(conns[i].fd);
    return errors ? 1 : 0;
}
