// Starting a child program as another user: fork, switch ids in the child, exec.
//
// posix_spawn cannot change a child's uid or gid, and Swift cannot call fork (only
// async-signal-safe calls are allowed between fork and exec, which Swift code cannot
// promise), so this path is C (spawn_as.c). Spawn.run in S7Sys prepares everything that
// needs memory or can fail slowly (the descriptor temporaries, argv, envp) before calling it.
//
// `_GNU_SOURCE` is defined inside spawn_as.c and never here (see CS7Sys.h).
#ifndef CS7SYS_SPAWN_H
#define CS7SYS_SPAWN_H

#include <stdbool.h>
#include <sys/types.h>

// Where cs7_spawn_as failed (cs7_spawn_as_failure.step). The parent's own steps first, then
// the child's in the order it takes them.
#define CS7_SPAWN_STEP_NONE 0
// In the parent: pipe2 for the report pipe, moving its write end above the temporaries
// (fcntl F_DUPFD_CLOEXEC), fork, reading the report (read; EIO for a short report).
#define CS7_SPAWN_STEP_PIPE 1
#define CS7_SPAWN_STEP_MOVE_PIPE 2
#define CS7_SPAWN_STEP_FORK 3
#define CS7_SPAWN_STEP_READ 4
// In the child.
#define CS7_SPAWN_STEP_SIGACTION 10
#define CS7_SPAWN_STEP_SIGMASK 11
#define CS7_SPAWN_STEP_SETSID 12
#define CS7_SPAWN_STEP_SETGROUPS 13
#define CS7_SPAWN_STEP_SETRESGID 14
// setregid(exec_real_gid, -1) for a secure exec (after setresgid).
#define CS7_SPAWN_STEP_SETREGID 23
#define CS7_SPAWN_STEP_SETRESUID 15
// Emptying the permitted, effective and inheritable sets (capset) and the ambient set (prctl).
#define CS7_SPAWN_STEP_CAPSET 16
#define CS7_SPAWN_STEP_AMBIENT 17
// Reading back: getresuid, getresgid, getgroups or capget failed (their errno), or the
// ids, groups or capabilities are not what was set (errno EPERM). The detail says which.
#define CS7_SPAWN_STEP_VERIFY 18
#define CS7_SPAWN_VERIFY_UIDS 1
#define CS7_SPAWN_VERIFY_GIDS 2
#define CS7_SPAWN_VERIFY_GROUPS 3
#define CS7_SPAWN_VERIFY_CAPABILITIES 4
// dup2 of a temporary to its target (detail: the target number).
#define CS7_SPAWN_STEP_DUP2 19
// Opening /dev/null as descriptor 0 (open, then dup2 to 0 when it did not land there).
#define CS7_SPAWN_STEP_DEV_NULL 20
// close_range(lowest temporary, ~0U, CLOSE_RANGE_CLOEXEC) (detail: the lowest temporary).
#define CS7_SPAWN_STEP_CLOSE_RANGE 21
#define CS7_SPAWN_STEP_EXECVE 22

// What to start. Every pointer stays valid for the duration of the call.
struct cs7_spawn_as_request {
    // An absolute path, passed to execve as it is.
    const char *path;
    // NULL-terminated, as execve takes them.
    char *const *argv;
    char *const *envp;
    // sources[i] becomes descriptor targets[i] in the child (dup2). Each source must be
    // close-on-exec and at least lowest_temporary; each target below it; targets distinct.
    const int *sources;
    const int *targets;
    int count;
    // Above every target and at least 3. Descriptors 3 up to it that are not targets are
    // closed in the child; every descriptor from it up is marked close-on-exec.
    int lowest_temporary;
    // Open /dev/null read-only as descriptor 0 (after the dup2s; no target may then be 0).
    bool standard_input_dev_null;
    // Call setsid in the child.
    bool new_session;
    // The real, effective and saved uid and gid of the child; it gets no supplementary group.
    uid_t uid;
    gid_t gid;
    // When secure_exec: the child's real gid at exec (its effective and saved gid stay gid).
    // An exec whose effective gid is not the real one is a secure exec: the kernel makes the
    // process non-dumpable from its first instruction (fs.suid_dumpable) and ld.so ignores
    // LD_* variables. The child evens its gids itself (setresgid to gid) once it runs.
    bool secure_exec;
    gid_t exec_real_gid;
};

// Why cs7_spawn_as failed.
struct cs7_spawn_as_failure {
    // One of CS7_SPAWN_STEP_*.
    int step;
    // The errno the step failed with.
    int error_number;
    // The target (CS7_SPAWN_STEP_DUP2), the lowest temporary (CS7_SPAWN_STEP_CLOSE_RANGE), the
    // signal (CS7_SPAWN_STEP_SIGACTION), what was checked (CS7_SPAWN_STEP_VERIFY), else 0.
    int detail;
};

// Starts request->path as a child that runs as request->uid and request->gid and holds no
// capability, and returns its pid once it has called execve successfully.
//
// The child, with async-signal-safe calls only: sets every signal to SIG_DFL, empties its
// signal mask, calls setsid (new_session), clears its supplementary groups, sets its real,
// effective and saved gid then uid, empties every capability set, checks all of that, makes
// the descriptor moves, opens /dev/null as 0 (standard_input_dev_null), closes 3 up to
// lowest_temporary except the targets, marks every descriptor from lowest_temporary
// close-on-exec, and calls execve. It reports a failed step to the parent as
// (step, errno, detail) on a close-on-exec pipe and exits with status 127; end of file on
// that pipe means execve succeeded.
//
// Returns the pid, or -1 with *failure filled in; a child that reported a failure has been
// reaped. Every signal is blocked in the calling thread from fork until the child has
// reset its handlers, so no handler of the caller runs in the child.
//
// Needs CAP_SETGID (setgroups always does) and, for ids other than the caller's, CAP_SETUID.
pid_t cs7_spawn_as(const struct cs7_spawn_as_request *request, struct cs7_spawn_as_failure *failure);

#endif
