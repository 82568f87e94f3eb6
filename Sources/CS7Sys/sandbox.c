// The SIGSYS reporter of a seccomp sandbox: see include/cs7sys_sandbox.h.
#define _GNU_SOURCE
#include "cs7sys_sandbox.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static char reporter_prefix[96];
static size_t reporter_prefix_length;

/// Appends the decimal (or, with base 16, hex) digits of `value` to `out` at `*at`.
static void append_number(char *out, size_t *at, size_t size, unsigned long value, unsigned base) {
    char digits[24];
    size_t count = 0;
    do {
        digits[count++] = "0123456789abcdef"[value % base];
        value /= base;
    } while (value != 0 && count < sizeof digits);
    while (count > 0 && *at < size) out[(*at)++] = digits[--count];
}

static void append_text(char *out, size_t *at, size_t size, const char *text, size_t length) {
    for (size_t i = 0; i < length && *at < size; i++) out[(*at)++] = text[i];
}

static void report_and_die(int signal_number, siginfo_t *info, void *context) {
    (void)context;
    int saved = errno;
    char line[256];
    size_t at = 0;
    append_text(line, &at, sizeof line, reporter_prefix, reporter_prefix_length);
    static const char what[] = "sandbox violation: system call ";
    append_text(line, &at, sizeof line, what, sizeof what - 1);
    int number = info->si_syscall;
    if (number < 0) {
        append_text(line, &at, sizeof line, "-", 1);
        append_number(line, &at, sizeof line, (unsigned long)(-(long)number), 10);
    } else {
        append_number(line, &at, sizeof line, (unsigned long)number, 10);
    }
    static const char arch[] = " (arch 0x";
    append_text(line, &at, sizeof line, arch, sizeof arch - 1);
    append_number(line, &at, sizeof line, (unsigned long)info->si_arch, 16);
    append_text(line, &at, sizeof line, ")\n", 2);
    size_t written = 0;
    while (written < at) {
        ssize_t n = write(STDERR_FILENO, line + written, at - written);
        if (n > 0) written += (size_t)n;
        else if (n < 0 && errno == EINTR) continue;
        else break;
    }
    // Die of the same signal, so the parent's waitpid reports SIGSYS.
    struct sigaction fallback;
    memset(&fallback, 0, sizeof fallback);
    fallback.sa_handler = SIG_DFL;
    sigemptyset(&fallback.sa_mask);
    sigaction(signal_number, &fallback, NULL);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, signal_number);
    sigprocmask(SIG_UNBLOCK, &only, NULL);
    syscall(SYS_tgkill, getpid(), gettid(), signal_number);
    errno = saved;
    _exit(128 + signal_number);  // not reached: the signal ends the process
}

int cs7_install_sandbox_reporter(const char *prefix) {
    size_t length = strlen(prefix);
    if (length >= sizeof reporter_prefix) length = sizeof reporter_prefix - 1;
    memcpy(reporter_prefix, prefix, length);
    reporter_prefix[length] = '\0';
    reporter_prefix_length = length;

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = report_and_die;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGSYS, &action, NULL);
}
