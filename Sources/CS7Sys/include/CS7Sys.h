// C shims for S7Sys: Linux calls and macros that Swift's Glibc module does not import.
//
// Prototypes and constants only. `_GNU_SOURCE` is defined inside shim.c and never here: a
// header that Swift imports must not change glibc's feature macros (that breaks the build
// with a module conflict). The constants below are Linux ABI values; shim.c checks each one
// against the system headers at compile time.
#ifndef CS7SYS_H
#define CS7SYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/types.h>


// memfd_create(2) flags.
#define CS7_MFD_CLOEXEC 1U
#define CS7_MFD_ALLOW_SEALING 2U

// File seals, fcntl(2) F_ADD_SEALS / F_GET_SEALS.
#define CS7_F_SEAL_SEAL 1
#define CS7_F_SEAL_SHRINK 2
#define CS7_F_SEAL_GROW 4
#define CS7_F_SEAL_WRITE 8
#define CS7_F_SEAL_FUTURE_WRITE 16

// prctl(2) options.
#define CS7_PR_CAPBSET_READ 23
#define CS7_PR_CAPBSET_DROP 24
#define CS7_PR_SET_NO_NEW_PRIVS 38
#define CS7_PR_GET_NO_NEW_PRIVS 39
#define CS7_PR_CAP_AMBIENT 47
#define CS7_PR_CAP_AMBIENT_CLEAR_ALL 4

// posix_spawnattr_setflags(3) flag (glibc 2.26, a GNU extension): the child calls setsid.
#define CS7_POSIX_SPAWN_SETSID 0x80

// signalfd(2) flags.
#define CS7_SFD_CLOEXEC 02000000
#define CS7_SFD_NONBLOCK 04000

// Capability numbers used by S7Sys.
#define CS7_CAP_KILL 5
#define CS7_CAP_SETGID 6
#define CS7_CAP_SETUID 7
#define CS7_CAP_SETPCAP 8

// Thin syscall wrappers: they return what the call returns and leave errno set.
int cs7_memfd_create(const char *name, unsigned int flags);
int cs7_add_seals(int fd, int seals);
int cs7_get_seals(int fd);
int cs7_prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
              unsigned long arg5);
int cs7_setresuid(uid_t ruid, uid_t euid, uid_t suid);
int cs7_setresgid(gid_t rgid, gid_t egid, gid_t sgid);
int cs7_getresuid(uid_t *ruid, uid_t *euid, uid_t *suid);
int cs7_getresgid(gid_t *rgid, gid_t *egid, gid_t *sgid);
int cs7_setgroups_none(void);
int cs7_pipe_cloexec(int fds[2]);
// posix_spawn_file_actions_addclosefrom_np (glibc 2.34): returns 0 or an error number.
int cs7_spawn_file_actions_addclosefrom(posix_spawn_file_actions_t *actions, int from);
int cs7_socketpair_seqpacket_cloexec(int fds[2]);
int cs7_peercred(int fd, pid_t *pid, uid_t *uid, gid_t *gid);
ssize_t cs7_recvmsg_cloexec(int fd, struct msghdr *message);
ssize_t cs7_sendmsg_nosignal(int fd, const struct msghdr *message);
// accept4(fd, NULL, NULL, SOCK_CLOEXEC).
int cs7_accept4_cloexec(int fd);
// fchmodat(AT_FDCWD, path, mode, AT_SYMLINK_NOFOLLOW): fails (EOPNOTSUPP) on a symbolic link
// instead of changing what it points to.
int cs7_chmod_nofollow(const char *path, mode_t mode);
// signalfd(2) on a new descriptor (fd -1).
int cs7_signalfd(const sigset_t *mask, int flags);
// Reads one struct signalfd_siginfo and returns its ssi_signo; -1 with errno set on failure
// (EAGAIN when nothing is pending on a non-blocking descriptor, EIO on a short read).
int cs7_signalfd_read_one(int fd);

// Control-message macros of <sys/socket.h> as functions.
struct cmsghdr *cs7_cmsg_firsthdr(struct msghdr *message);
struct cmsghdr *cs7_cmsg_nxthdr(struct msghdr *message, struct cmsghdr *header);
unsigned char *cs7_cmsg_data(struct cmsghdr *header);
size_t cs7_cmsg_len(size_t payload);
size_t cs7_cmsg_space(size_t payload);
int cs7_scm_rights(void);
int cs7_msg_ctrunc(void);
int cs7_msg_trunc(void);

// waitpid(2) status macros as functions.
bool cs7_wifexited(int status);
int cs7_wexitstatus(int status);
bool cs7_wifsignaled(int status);
int cs7_wtermsig(int status);

// A robust, process-shared pthread mutex placed in shared memory.
// Each returns 0 or an error number (pthread convention; errno is not used).
size_t cs7_robust_mutex_size(void);
size_t cs7_robust_mutex_alignment(void);
int cs7_robust_mutex_init(void *mutex);
// Locks; when the previous owner died holding the mutex (EOWNERDEAD), marks it consistent
// with pthread_mutex_consistent, sets *recovered to true and returns 0.
int cs7_robust_mutex_lock(void *mutex, bool *recovered);
int cs7_robust_mutex_unlock(void *mutex);

// A seqlock: one 64-bit counter in shared memory, odd while a write is in progress.
// Writers must be serialised by the caller (one writer at a time, e.g. under the mutex).
// The fences follow Boehm, "Can seqlocks get along with programming language memory models?".

/// Starts a write: makes the counter odd; later data stores are ordered after it.
static inline void cs7_seqlock_write_begin(uint64_t *sequence) {
    uint64_t value = __atomic_load_n(sequence, __ATOMIC_RELAXED);
    __atomic_store_n(sequence, value + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

/// Ends a write: makes the counter even again, ordered after the data stores.
static inline void cs7_seqlock_write_end(uint64_t *sequence) {
    uint64_t value = __atomic_load_n(sequence, __ATOMIC_RELAXED);
    __atomic_store_n(sequence, value + 1, __ATOMIC_RELEASE);
}

/// Starts a read: returns the counter (odd means a write is in progress).
static inline uint64_t cs7_seqlock_read_begin(const uint64_t *sequence) {
    return __atomic_load_n(sequence, __ATOMIC_ACQUIRE);
}

/// Ends a read: true when the data read since `start` may be torn and must be read again.
static inline bool cs7_seqlock_read_retry(const uint64_t *sequence, uint64_t start) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return (start & 1) != 0 || __atomic_load_n(sequence, __ATOMIC_RELAXED) != start;
}

#endif
