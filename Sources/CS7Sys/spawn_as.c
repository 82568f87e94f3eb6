// cs7_spawn_as: fork, switch the child to another uid and gid with no capability, exec.
// See cs7sys_spawn.h for the contract.
//
// Between fork and execve the child makes async-signal-safe calls only: the caller may have
// other threads, and any lock one of them held at the fork stays held for ever in the child.
// The id changes are raw system calls, not glibc's setresuid and friends: those broadcast the
// change to every thread glibc believes the process has (SIGSETXID), state the child must not
// touch; the child has one thread, and a raw call changes exactly that one.

// Only here, never in a header Swift imports (see CS7Sys.h).
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

#include "cs7sys_spawn.h"

// The 32-bit-id calls where the plain ones take 16-bit ids (i386, arm).
#ifdef SYS_setresuid32
#define CS7_NR_SETRESUID SYS_setresuid32
#define CS7_NR_SETRESGID SYS_setresgid32
#define CS7_NR_SETREGID SYS_setregid32
#define CS7_NR_SETGROUPS SYS_setgroups32
#else
#define CS7_NR_SETRESUID SYS_setresuid
#define CS7_NR_SETRESGID SYS_setresgid
#define CS7_NR_SETREGID SYS_setregid
#define CS7_NR_SETGROUPS SYS_setgroups
#endif

// <linux/close_range.h> (Linux 5.11); glibc defines it too, in newer <unistd.h>.
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

// Reports (step, errno, detail) on the close-on-exec pipe and ends the child.
__attribute__((noreturn)) static void child_failed(int report, int step, int error_number, int detail) {
    struct cs7_spawn_as_failure failure = {step, error_number, detail};
    const char *bytes = (const char *)&failure;
    size_t written = 0;
    // Far below PIPE_BUF: one write, which the parent reads whole (or not at all).
    while (written < sizeof(failure)) {
        ssize_t count = write(report, bytes + written, sizeof(failure) - written);
        if (count > 0) {
            written += (size_t)count;
        } else if (count == -1 && errno == EINTR) {
            continue;
        } else {
            break;
        }
    }
    _exit(127);
}

static int dup2_retrying(int source, int target) {
    int result;
    do {
        result = dup2(source, target);
    } while (result == -1 && errno == EINTR);
    return result;
}

__attribute__((noreturn)) static void child(const struct cs7_spawn_as_request *request, int report_read, int report) {
    (void)close(report_read);

    // Every signal to its default action (SIGKILL and SIGSTOP cannot change; glibc refuses
    // its own internal signals with EINVAL, and execve resets their handlers anyway), then
    // an empty mask: the parent blocked every signal around fork, so no handler of the
    // parent has run here.
    struct sigaction default_action = {.sa_handler = SIG_DFL};
    sigemptyset(&default_action.sa_mask);
    for (int signal_number = 1; signal_number < NSIG; signal_number++) {
        if (signal_number == SIGKILL || signal_number == SIGSTOP) {
            continue;
        }
        if (sigaction(signal_number, &default_action, NULL) != 0 && errno != EINVAL) {
            child_failed(report, CS7_SPAWN_STEP_SIGACTION, errno, signal_number);
        }
    }
    sigset_t no_signals;
    sigemptyset(&no_signals);
    if (sigprocmask(SIG_SETMASK, &no_signals, NULL) != 0) {
        child_failed(report, CS7_SPAWN_STEP_SIGMASK, errno, 0);
    }

    if (request->new_session && setsid() == -1) {
        child_failed(report, CS7_SPAWN_STEP_SETSID, errno, 0);
    }

    // Groups first and the uid last: each of these needs a capability the uid change can
    // take away.
    if (syscall(CS7_NR_SETGROUPS, 0, NULL) != 0) {
        child_failed(report, CS7_SPAWN_STEP_SETGROUPS, errno, 0);
    }
    if (syscall(CS7_NR_SETRESGID, request->gid, request->gid, request->gid) != 0) {
        child_failed(report, CS7_SPAWN_STEP_SETRESGID, errno, 0);
    }
    if (request->secure_exec && syscall(CS7_NR_SETREGID, request->exec_real_gid, (gid_t)-1) != 0) {
        child_failed(report, CS7_SPAWN_STEP_SETREGID, errno, 0);
    }
    if (syscall(CS7_NR_SETRESUID, request->uid, request->uid, request->uid) != 0) {
        child_failed(report, CS7_SPAWN_STEP_SETRESUID, errno, 0);
    }

    // A change between two non-zero uids keeps the capabilities the parent held (its
    // CAP_SETUID and CAP_SETGID); empty every set here, so that not even an executable with
    // file capabilities can get one back at execve (under no-new-privileges it keeps at most
    // what the old permitted set had: now nothing). The ambient set is always a subset of
    // permitted and inheritable, so it is empty already; clearing it says so.
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct no_capabilities[_LINUX_CAPABILITY_U32S_3] = {{0}};
    if (syscall(SYS_capset, &header, no_capabilities) != 0) {
        child_failed(report, CS7_SPAWN_STEP_CAPSET, errno, 0);
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
        child_failed(report, CS7_SPAWN_STEP_AMBIENT, errno, 0);
    }

    uid_t real_uid, effective_uid, saved_uid;
    gid_t real_gid, effective_gid, saved_gid;
    if (getresuid(&real_uid, &effective_uid, &saved_uid) != 0) {
        child_failed(report, CS7_SPAWN_STEP_VERIFY, errno, CS7_SPAWN_VERIFY_UIDS);
    }
    if (real_uid != request->uid || effective_uid != request->uid || saved_uid != request->uid) {
        child_failed(report, CS7_SPAWN_STEP_VERIFY, EPERM, CS7_SPAWN_VERIFY_UIDS);
    }
    if (getresgid(&real_gid, &effective_gid, &saved_gid) != 0) {
        child_failed(report, CS7_SPAWN_STEP_VERIFY, errno, CS7_SPAWN_VERIFY_GIDS);
    }
    gid_t expected_real_gid = request->secure_exec ? request->exec_real_gid : request->gid;
    if (real_gid != expected_real_gid || effective_gid != request->gid || saved_gid != request->gid) {
        child_failed(report, CS7_SPAWN_STEP_VERIFY, EPERM, CS7_SPAWN_VERIFY_GIDS);
    }
    int groups = getgroups(0, NULL);
    if (groups != 0) {
        child_failed(report, CS7_SPAWN_STEP_VERIFY, groups == -1 ? errno : EPERM, CS7_SPAWN_VERIFY_GROUPS);
    }
    struct __user_cap_data_struct held[_LINUX_CAPABILITY_U32S_3] = {{0}};
    header.version = _LINUX_CAPABILITY_VERSION_3;
    header.pid = 0;
    if (syscall(SYS_capget, &header, held) != 0) {
        child_failed(report, CS7_SPAWN_STEP_VERIFY, errno, CS7_SPAWN_VERIFY_CAPABILITIES);
    }
    for (int word = 0; word < _LINUX_CAPABILITY_U32S_3; word++) {
        if (held[word].effective != 0 || held[word].permitted != 0 || held[word].inheritable != 0) {
            child_failed(report, CS7_SPAWN_STEP_VERIFY, EPERM, CS7_SPAWN_VERIFY_CAPABILITIES);
        }
    }

    // The moves exactly as the posix_spawn path makes them: every source is a close-on-exec
    // temporary above every target, so no dup2 overwrites a source another one still needs.
    for (int index = 0; index < request->count; index++) {
        if (dup2_retrying(request->sources[index], request->targets[index]) == -1) {
            child_failed(report, CS7_SPAWN_STEP_DUP2, errno, request->targets[index]);
        }
    }
    if (request->standard_input_dev_null) {
        int null_descriptor;
        do {
            null_descriptor = open("/dev/null", O_RDONLY);
        } while (null_descriptor == -1 && errno == EINTR);
        if (null_descriptor == -1) {
            child_failed(report, CS7_SPAWN_STEP_DEV_NULL, errno, 0);
        }
        if (null_descriptor != 0) {
            if (dup2_retrying(null_descriptor, 0) == -1) {
                child_failed(report, CS7_SPAWN_STEP_DEV_NULL, errno, 0);
            }
            (void)close(null_descriptor);
        }
    }

    // Below the temporaries: close what is not a target (EBADF, nothing there, is expected).
    // From the lowest temporary up: close-on-exec, not closed, as the report pipe lives there
    // until execve.
    for (int number = 3; number < request->lowest_temporary; number++) {
        int is_target = 0;
        for (int index = 0; index < request->count; index++) {
            if (request->targets[index] == number) {
                is_target = 1;
            }
        }
        if (!is_target) {
            (void)close(number);
        }
    }
    if (syscall(SYS_close_range, (unsigned int)request->lowest_temporary, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
        child_failed(report, CS7_SPAWN_STEP_CLOSE_RANGE, errno, request->lowest_temporary);
    }

    execve(request->path, request->argv, request->envp);
    child_failed(report, CS7_SPAWN_STEP_EXECVE, errno, 0);
}

static void reap(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) == -1 && errno == EINTR) {
    }
}

pid_t cs7_spawn_as(const struct cs7_spawn_as_request *request, struct cs7_spawn_as_failure *failure) {
    *failure = (struct cs7_spawn_as_failure){CS7_SPAWN_STEP_NONE, 0, 0};

    int pipe_ends[2];
    if (pipe2(pipe_ends, O_CLOEXEC) != 0) {
        *failure = (struct cs7_spawn_as_failure){CS7_SPAWN_STEP_PIPE, errno, 0};
        return -1;
    }
    int report_read = pipe_ends[0];
    int report = pipe_ends[1];
    // The write end must survive the child's dup2s and closes below the lowest temporary.
    if (report < request->lowest_temporary) {
        int moved = fcntl(report, F_DUPFD_CLOEXEC, request->lowest_temporary);
        if (moved == -1) {
            *failure = (struct cs7_spawn_as_failure){CS7_SPAWN_STEP_MOVE_PIPE, errno, 0};
            (void)close(report_read);
            (void)close(report);
            return -1;
        }
        (void)close(report);
        report = moved;
    }

    sigset_t all_signals, previous;
    sigfillset(&all_signals);
    (void)pthread_sigmask(SIG_SETMASK, &all_signals, &previous);
    pid_t pid = fork();
    if (pid == 0) {
        child(request, report_read, report);
    }
    int fork_error = errno;
    (void)pthread_sigmask(SIG_SETMASK, &previous, NULL);
    (void)close(report);
    if (pid == -1) {
        (void)close(report_read);
        *failure = (struct cs7_spawn_as_failure){CS7_SPAWN_STEP_FORK, fork_error, 0};
        return -1;
    }

    struct cs7_spawn_as_failure reported = {CS7_SPAWN_STEP_NONE, 0, 0};
    char *bytes = (char *)&reported;
    size_t received = 0;
    int read_error = 0;
    while (received < sizeof(reported)) {
        ssize_t count = read(report_read, bytes + received, sizeof(reported) - received);
        if (count > 0) {
            received += (size_t)count;
        } else if (count == 0) {
            break;
        } else if (errno != EINTR) {
            read_error = errno;
            break;
        }
    }
    (void)close(report_read);
    if (received == 0 && read_error == 0) {
        // End of file with nothing written: the write end was closed by a successful execve.
        return pid;
    }
    if (received == sizeof(reported) && reported.step != CS7_SPAWN_STEP_NONE) {
        *failure = reported;
    } else {
        // Whether the child ran the program cannot be known: end it rather than leave a
        // process nobody accounts for.
        (void)kill(pid, SIGKILL);
        *failure = (struct cs7_spawn_as_failure){CS7_SPAWN_STEP_READ, read_error != 0 ? read_error : EIO, 0};
    }
    reap(pid);
    return -1;
}
