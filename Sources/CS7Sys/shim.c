// Only here, never in a header Swift imports: memfd_create, struct ucred, setresuid, pipe2,
// accept4, POSIX_SPAWN_SETSID and MSG_CMSG_CLOEXEC are GNU extensions.
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <spawn.h>
#include <stdalign.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

#include "CS7Sys.h"

_Static_assert(CS7_MFD_CLOEXEC == MFD_CLOEXEC, "MFD_CLOEXEC");
_Static_assert(CS7_MFD_ALLOW_SEALING == MFD_ALLOW_SEALING, "MFD_ALLOW_SEALING");
_Static_assert(CS7_F_SEAL_SEAL == F_SEAL_SEAL, "F_SEAL_SEAL");
_Static_assert(CS7_F_SEAL_SHRINK == F_SEAL_SHRINK, "F_SEAL_SHRINK");
_Static_assert(CS7_F_SEAL_GROW == F_SEAL_GROW, "F_SEAL_GROW");
_Static_assert(CS7_F_SEAL_WRITE == F_SEAL_WRITE, "F_SEAL_WRITE");
#ifdef F_SEAL_FUTURE_WRITE
_Static_assert(CS7_F_SEAL_FUTURE_WRITE == F_SEAL_FUTURE_WRITE, "F_SEAL_FUTURE_WRITE");
#endif
_Static_assert(CS7_PR_CAPBSET_READ == PR_CAPBSET_READ, "PR_CAPBSET_READ");
_Static_assert(CS7_PR_CAPBSET_DROP == PR_CAPBSET_DROP, "PR_CAPBSET_DROP");
_Static_assert(CS7_PR_SET_NO_NEW_PRIVS == PR_SET_NO_NEW_PRIVS, "PR_SET_NO_NEW_PRIVS");
_Static_assert(CS7_PR_GET_NO_NEW_PRIVS == PR_GET_NO_NEW_PRIVS, "PR_GET_NO_NEW_PRIVS");
_Static_assert(CS7_PR_CAP_AMBIENT == PR_CAP_AMBIENT, "PR_CAP_AMBIENT");
_Static_assert(CS7_PR_CAP_AMBIENT_CLEAR_ALL == PR_CAP_AMBIENT_CLEAR_ALL, "PR_CAP_AMBIENT_CLEAR_ALL");
_Static_assert(CS7_POSIX_SPAWN_SETSID == POSIX_SPAWN_SETSID, "POSIX_SPAWN_SETSID");
_Static_assert(CS7_SFD_CLOEXEC == SFD_CLOEXEC, "SFD_CLOEXEC");
_Static_assert(CS7_SFD_NONBLOCK == SFD_NONBLOCK, "SFD_NONBLOCK");
_Static_assert(CS7_CAP_KILL == CAP_KILL, "CAP_KILL");
_Static_assert(CS7_CAP_SETGID == CAP_SETGID, "CAP_SETGID");
_Static_assert(CS7_CAP_SETUID == CAP_SETUID, "CAP_SETUID");
_Static_assert(CS7_CAP_SETPCAP == CAP_SETPCAP, "CAP_SETPCAP");

int cs7_memfd_create(const char *name, unsigned int flags) {
    return memfd_create(name, flags);
}

int cs7_add_seals(int fd, int seals) {
    return fcntl(fd, F_ADD_SEALS, seals);
}

int cs7_get_seals(int fd) {
    return fcntl(fd, F_GET_SEALS);
}

int cs7_prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
              unsigned long arg5) {
    return prctl(option, arg2, arg3, arg4, arg5);
}

int cs7_setresuid(uid_t ruid, uid_t euid, uid_t suid) {
    return setresuid(ruid, euid, suid);
}

int cs7_setresgid(gid_t rgid, gid_t egid, gid_t sgid) {
    return setresgid(rgid, egid, sgid);
}

int cs7_getresuid(uid_t *ruid, uid_t *euid, uid_t *suid) {
    return getresuid(ruid, euid, suid);
}

int cs7_getresgid(gid_t *rgid, gid_t *egid, gid_t *sgid) {
    return getresgid(rgid, egid, sgid);
}

int cs7_setgroups_none(void) {
    return setgroups(0, NULL);
}

int cs7_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int cs7_spawn_file_actions_addclosefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

int cs7_socketpair_seqpacket_cloexec(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds);
}

int cs7_peercred(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred credentials;
    socklen_t length = sizeof(credentials);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
        return -1;
    }
    if (length != sizeof(credentials)) {
        errno = EPROTO;
        return -1;
    }
    *pid = credentials.pid;
    *uid = credentials.uid;
    *gid = credentials.gid;
    return 0;
}

ssize_t cs7_recvmsg_cloexec(int fd, struct msghdr *message) {
    return recvmsg(fd, message, MSG_CMSG_CLOEXEC);
}

ssize_t cs7_sendmsg_nosignal(int fd, const struct msghdr *message) {
    return sendmsg(fd, message, MSG_NOSIGNAL);
}

int cs7_accept4_cloexec(int fd) {
    return accept4(fd, NULL, NULL, SOCK_CLOEXEC);
}

int cs7_chmod_nofollow(const char *path, mode_t mode) {
    return fchmodat(AT_FDCWD, path, mode, AT_SYMLINK_NOFOLLOW);
}

int cs7_signalfd(const sigset_t *mask, int flags) {
    return signalfd(-1, mask, flags);
}

int cs7_signalfd_read_one(int fd) {
    struct signalfd_siginfo info;
    ssize_t count = read(fd, &info, sizeof(info));
    if (count == -1) {
        return -1;
    }
    if (count != (ssize_t)sizeof(info)) {
        errno = EIO;
        return -1;
    }
    return (int)info.ssi_signo;
}

struct cmsghdr *cs7_cmsg_firsthdr(struct msghdr *message) {
    return CMSG_FIRSTHDR(message);
}

struct cmsghdr *cs7_cmsg_nxthdr(struct msghdr *message, struct cmsghdr *header) {
    return CMSG_NXTHDR(message, header);
}

unsigned char *cs7_cmsg_data(struct cmsghdr *header) {
    return CMSG_DATA(header);
}

size_t cs7_cmsg_len(size_t payload) {
    return CMSG_LEN(payload);
}

size_t cs7_cmsg_space(size_t payload) {
    return CMSG_SPACE(payload);
}

int cs7_scm_rights(void) {
    return SCM_RIGHTS;
}

int cs7_msg_ctrunc(void) {
    return MSG_CTRUNC;
}

int cs7_msg_trunc(void) {
    return MSG_TRUNC;
}

bool cs7_wifexited(int status) {
    return WIFEXITED(status);
}

int cs7_wexitstatus(int status) {
    return WEXITSTATUS(status);
}

bool cs7_wifsignaled(int status) {
    return WIFSIGNALED(status);
}

int cs7_wtermsig(int status) {
    return WTERMSIG(status);
}

size_t cs7_robust_mutex_size(void) {
    return sizeof(pthread_mutex_t);
}

size_t cs7_robust_mutex_alignment(void) {
    return alignof(pthread_mutex_t);
}

int cs7_robust_mutex_init(void *mutex) {
    pthread_mutexattr_t attributes;
    int result = pthread_mutexattr_init(&attributes);
    if (result != 0) {
        return result;
    }
    result = pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
    if (result == 0) {
        result = pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    }
    if (result == 0) {
        result = pthread_mutexattr_settype(&attributes, PTHREAD_MUTEX_ERRORCHECK);
    }
    if (result == 0) {
        result = pthread_mutex_init((pthread_mutex_t *)mutex, &attributes);
    }
    pthread_mutexattr_destroy(&attributes);
    return result;
}

int cs7_robust_mutex_lock(void *mutex, bool *recovered) {
    *recovered = false;
    int result = pthread_mutex_lock((pthread_mutex_t *)mutex);
    if (result == EOWNERDEAD) {
        // The owner died inside its critical section; the data it guarded may be half
        // written. The caller is told so it can repair or re-initialise that data.
        result = pthread_mutex_consistent((pthread_mutex_t *)mutex);
        if (result == 0) {
            *recovered = true;
        } else {
            pthread_mutex_unlock((pthread_mutex_t *)mutex);
        }
    }
    return result;
}

int cs7_robust_mutex_unlock(void *mutex) {
    return pthread_mutex_unlock((pthread_mutex_t *)mutex);
}
