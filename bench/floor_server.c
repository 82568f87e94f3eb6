/*
 * floor_server - bare loopback request/response server for the s7commd
 * benchmark ("the floor").  Single thread, epoll, non-blocking sockets.
 *
 *   floor_server [-b 127.0.0.1] -p PORT
 *
 * It reads TPKT frames and answers each with a frame of exactly the size the
 * real server would send:
 *   COTP CR (0xE0)          -> COTP CC (0xD0), 22 bytes
 *   S7 Setup Communication  -> 27-byte ack_data, PDU = min(requested, 480)
 *   S7 Read Var of N bytes  -> 4 + 3 + 12 + 2 + 4 + N bytes
 *   S7 Write Var            -> 4 + 3 + 12 + 2 + 1 = 22 bytes
 * The replies are well-formed (PDU ref echoed, item code 0xFF) so s7load's
 * checks pass, but nothing is parsed beyond what picks the reply size and no
 * memory area exists: the data bytes are zeros.  It measures the cost of a
 * loopback round trip of the same sizes through the same client.
 *
 * Only libc.  Build: gcc -O2 -o floor_server floor_server.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFSZ 70000
#define OUTSZ 140000

struct conn {
    int fd;
    int have;
    uint8_t in[BUFSZ];
    int olen, ooff;
    uint8_t out[OUTSZ];
};

static void put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static unsigned get16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }

static uint8_t *reserve(struct conn *c, int n) {
    if (c->olen + n > OUTSZ) return NULL;
    uint8_t *p = c->out + c->olen;
    c->olen += n;
    return p;
}

static void s7_ack_header(uint8_t *f, int total, const uint8_t *req_s7, int plen, int dlen) {
    memset(f, 0, (size_t)total);
    f[0] = 0x03; f[1] = 0x00; put16(f + 2, (unsigned)total);
    f[4] = 0x02; f[5] = 0xF0; f[6] = 0x80;
    uint8_t *h = f + 7;
    h[0] = 0x32; h[1] = 0x03;
    h[4] = req_s7[4]; h[5] = req_s7[5]; /* PDU ref */
    put16(h + 6, (unsigned)plen);
    put16(h + 8, (unsigned)dlen);
    /* h[10], h[11]: error class/code 0 */
}

/* Build the answer for one complete frame; returns 0, or -1 to drop the client. */
static int answer(struct conn *c, const uint8_t *f, int len) {
    if (len < 7) return -1;
    uint8_t cotp = f[5] & 0xF0;
    if (cotp == 0xE0) { /* Connection Request -> Connection Confirm */
        uint8_t *o = reserve(c, 22);
        if (!o) return -1;
        static const uint8_t cc[22] = {0x03, 0x00, 0x00, 0x16, 0x11, 0xD0, 0x00, 0x01, 0x00, 0x01, 0x00,
                                       0xC0, 0x01, 0x0A, 0xC1, 0x02, 0x01, 0x00, 0xC2, 0x02, 0x01, 0x01};
        memcpy(o, cc, sizeof cc);
        o[6] = f[8]; o[7] = f[9]; /* dst ref = client's src ref */
        return 0;
    }
    if (cotp != 0xF0 || len < 7 + 10 + 1) return -1;
    const uint8_t *s7 = f + 7;
    const uint8_t *par = s7 + 10; /* job header is 10 bytes */
    switch (par[0]) {
    case 0xF0: { /* Setup Communication */
        if (len < 25) return -1;
        unsigned pdu = get16(par + 6);
        if (pdu > 480) pdu = 480;
        uint8_t *o = reserve(c, 27);
        if (!o) return -1;
        s7_ack_header(o, 27, s7, 8, 0);
        uint8_t *a = o + 19;
        a[0] = 0xF0; a[1] = 0x00; a[2] = 0x00; a[3] = 0x01; a[4] = 0x00; a[5] = 0x01;
        put16(a + 6, pdu);
        return 0;
    }
    case 0x04: { /* Read Var: one item, N = length field of the S7ANY item */
        if (len < 7 + 10 + 14) return -1;
        int n = (int)get16(par + 6);
        int total = 4 + 3 + 12 + 2 + 4 + n;
        uint8_t *o = reserve(c, total);
        if (!o) return -1;
        s7_ack_header(o, total, s7, 2, 4 + n);
        uint8_t *a = o + 19;
        a[0] = 0x04; a[1] = 0x01;
        a[2] = 0xFF; a[3] = 0x04; put16(a + 4, (unsigned)n * 8);
        return 0;
    }
    case 0x05: { /* Write Var */
        uint8_t *o = reserve(c, 22);
        if (!o) return -1;
        s7_ack_header(o, 22, s7, 2, 1);
        o[19] = 0x05; o[20] = 0x01; o[21] = 0xFF;
        return 0;
    }
    default:
        return -1;
    }
}

/* returns -1 on fatal error */
static int flush_out(struct conn *c) {
    while (c->ooff < c->olen) {
        ssize_t w = send(c->fd, c->out + c->ooff, (size_t)(c->olen - c->ooff), MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
            return -1;
        }
        c->ooff += (int)w;
    }
    c->olen = c->ooff = 0;
    return 0;
}

static volatile sig_atomic_t g_stop;
static void on_sig(int s) { (void)s; g_stop = 1; }

int main(int argc, char **argv) {
    const char *bind_addr = "127.0.0.1";
    int port = 0, opt;
    while ((opt = getopt(argc, argv, "b:p:")) != -1) {
        if (opt == 'b') bind_addr = optarg;
        else if (opt == 'p') port = atoi(optarg);
        else { fprintf(stderr, "usage: floor_server [-b addr] -p port\n"); return 2; }
    }
    if (port <= 0) { fprintf(stderr, "usage: floor_server [-b addr] -p port\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_sig};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, bind_addr, &sin.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
    if (bind(ls, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(ls, 1024) < 0) {
        perror("floor_server: bind/listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("floor ready port=%d\n", port);
    fflush(stdout);

    struct epoll_event evs[256];
    while (!g_stop) {
        int n = epoll_wait(ep, evs, 256, 500);
        if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = malloc(sizeof *nc);
                    if (!nc) { close(fd); continue; }
                    nc->fd = fd; nc->have = 0; nc->olen = nc->ooff = 0;
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e2);
                }
                continue;
            }
            int dead = 0;
            if (evs[i].events & EPOLLOUT) {
                int r = flush_out(c);
                if (r < 0) dead = 1;
                else if (r == 0) {
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e2);
                }
            }
            if (!dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                for (;;) {
                    size_t want = (size_t)(BUFSZ - c->have);
                    ssize_t r = recv(c->fd, c->in + c->have, want, 0);
                    if (r < 0) {
                        if (errno == EINTR) continue;
                        if (errno != EAGAIN && errno != EWOULDBLOCK) dead = 1;
                        break;
                    }
                    if (r == 0) { dead = 1; break; }
                    c->have += (int)r;
                    int off = 0;
                    while (c->have - off >= 4) {
                        if (c->in[off] != 0x03) { dead = 1; break; }
                        int flen = (int)get16(c->in + off + 2);
                        if (flen < 7 || flen > BUFSZ) { dead = 1; break; }
                        if (c->have - off < flen) break;
                        if (answer(c, c->in + off, flen) < 0) { dead = 1; break; }
                        off += flen;
                    }
                    if (off > 0 && !dead) {
                        memmove(c->in, c->in + off, (size_t)(c->have - off));
                        c->have -= off;
                    }
                    if (dead) break;
                    if (c->olen) {
                        int fr = flush_out(c);
                        if (fr < 0) { dead = 1; break; }
                        if (fr == 1) {
                            struct epoll_event e2 = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e2);
                            break;
                        }
                    }
                    if ((size_t)r < want) break; /* drained: skip the EAGAIN recv */
                }
            }
            if (dead) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                free(c);
            }
        }
    }
    close(ls);
    return 0;
}
