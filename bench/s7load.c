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
 * Only libc + pthreads; the frames and socket helpers are in s7proto.h (shared with
 * s7attack.c).  Build: gcc -O2 -pthread -o s7load s7load.c
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

#define S7_PROG "s7load"
#include "s7proto.h"

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

/* ------------------------------------------------------------------ frames */

static void build_request(void) {
    g_func = (g_mode == M_WRITE) ? 0x05 : 0x04;
    if (4 + 3 + 10 + 14 + 4 + g_n > MAXFRAME) die("request too large");
    g_reqlen = s7_build_request(g_req, g_func, g_n);
}

static int expected_resp_len(void) { return s7_expected_resp_len(g_func, g_n); }

/* Returns NULL if OK, else a reason. */
static const char *check_response(const uint8_t *f, int len, unsigned ref) {
    return s7_check_response(f, len, ref, g_func, g_n);
}

/* ------------------------------------------------------------- handshake */

static int connect_and_handshake(int idx) {
    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s (raise ulimit -n?)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) < 0)
        die("conn %d: connect %s:%d: %s", idx, g_host, g_port, strerror(errno));
    int pdu = 0;
    const char *why = s7_handshake(fd, HS_TIMEOUT_MS, &pdu);
    if (why) die("conn %d: %s", idx, why);
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
    put16(c->sbuf + S7_REF_OFFSET, c->ref);
    c->have = 0;
    c->need = 4;
    c->t0 = now_ns();
    return send_all(c->fd, c->sbuf, g_reqlen, HS_TIMEOUT_MS);
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
    s7_resolve(g_host, g_port, &g_addr, &g_addrlen);
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
