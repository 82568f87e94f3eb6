// Landlock system calls for S7Sys (see cs7sys_landlock.h). Its own file so that it can be
// read and changed apart from shim.c.
#define _GNU_SOURCE

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/landlock.h>

#include "cs7sys_landlock.h"

// The system call numbers are the same on every architecture but alpha (they come after the
// table was unified at 424); older headers may not name them.
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif
#ifndef __NR_landlock_add_rule
#define __NR_landlock_add_rule 445
#endif
#ifndef __NR_landlock_restrict_self
#define __NR_landlock_restrict_self 446
#endif
_Static_assert(__NR_landlock_create_ruleset == 444 && __NR_landlock_add_rule == 445 &&
                   __NR_landlock_restrict_self == 446,
               "Landlock system call numbers");

// The constants of cs7sys_landlock.h against the system headers, as far as they go
// (Debian 12's <linux/landlock.h> knows ABI 2).
_Static_assert(CS7_O_PATH == O_PATH, "O_PATH");
_Static_assert(CS7_LANDLOCK_CREATE_RULESET_VERSION == LANDLOCK_CREATE_RULESET_VERSION, "VERSION");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_EXECUTE == LANDLOCK_ACCESS_FS_EXECUTE, "EXECUTE");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_WRITE_FILE == LANDLOCK_ACCESS_FS_WRITE_FILE, "WRITE_FILE");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_READ_FILE == LANDLOCK_ACCESS_FS_READ_FILE, "READ_FILE");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_READ_DIR == LANDLOCK_ACCESS_FS_READ_DIR, "READ_DIR");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_REMOVE_DIR == LANDLOCK_ACCESS_FS_REMOVE_DIR, "REMOVE_DIR");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_REMOVE_FILE == LANDLOCK_ACCESS_FS_REMOVE_FILE, "REMOVE_FILE");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_MAKE_CHAR == LANDLOCK_ACCESS_FS_MAKE_CHAR, "MAKE_CHAR");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_MAKE_DIR == LANDLOCK_ACCESS_FS_MAKE_DIR, "MAKE_DIR");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_MAKE_REG == LANDLOCK_ACCESS_FS_MAKE_REG, "MAKE_REG");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_MAKE_SOCK == LANDLOCK_ACCESS_FS_MAKE_SOCK, "MAKE_SOCK");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_MAKE_FIFO == LANDLOCK_ACCESS_FS_MAKE_FIFO, "MAKE_FIFO");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_MAKE_BLOCK == LANDLOCK_ACCESS_FS_MAKE_BLOCK, "MAKE_BLOCK");
_Static_assert(CS7_LANDLOCK_ACCESS_FS_MAKE_SYM == LANDLOCK_ACCESS_FS_MAKE_SYM, "MAKE_SYM");
#ifdef LANDLOCK_ACCESS_FS_REFER
_Static_assert(CS7_LANDLOCK_ACCESS_FS_REFER == LANDLOCK_ACCESS_FS_REFER, "REFER");
#endif
#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
_Static_assert(CS7_LANDLOCK_ACCESS_FS_TRUNCATE == LANDLOCK_ACCESS_FS_TRUNCATE, "TRUNCATE");
#endif
#ifdef LANDLOCK_ACCESS_FS_IOCTL_DEV
_Static_assert(CS7_LANDLOCK_ACCESS_FS_IOCTL_DEV == LANDLOCK_ACCESS_FS_IOCTL_DEV, "IOCTL_DEV");
#endif
#ifdef LANDLOCK_ACCESS_NET_BIND_TCP
_Static_assert(CS7_LANDLOCK_ACCESS_NET_BIND_TCP == LANDLOCK_ACCESS_NET_BIND_TCP, "BIND_TCP");
_Static_assert(CS7_LANDLOCK_ACCESS_NET_CONNECT_TCP == LANDLOCK_ACCESS_NET_CONNECT_TCP, "CONNECT_TCP");
#endif
#ifdef LANDLOCK_SCOPE_SIGNAL
_Static_assert(CS7_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET == LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET, "SCOPE_ABSTRACT_UNIX_SOCKET");
_Static_assert(CS7_LANDLOCK_SCOPE_SIGNAL == LANDLOCK_SCOPE_SIGNAL, "SCOPE_SIGNAL");
#endif

// struct landlock_ruleset_attr as of ABI 6 (the system header's may be shorter). The kernel
// takes a longer struct than it knows as long as the extra fields are zero, so this one size
// serves every ABI.
struct cs7_landlock_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};
_Static_assert(offsetof(struct landlock_ruleset_attr, handled_access_fs) == 0, "handled_access_fs");

int cs7_landlock_abi_version(void) {
    return (int)syscall(__NR_landlock_create_ruleset, NULL, (size_t)0,
                        (uint32_t)CS7_LANDLOCK_CREATE_RULESET_VERSION);
}

int cs7_landlock_create_ruleset(uint64_t handled_access_fs, uint64_t handled_access_net,
                                uint64_t scoped) {
    const struct cs7_landlock_ruleset_attr attributes = {
        .handled_access_fs = handled_access_fs,
        .handled_access_net = handled_access_net,
        .scoped = scoped,
    };
    return (int)syscall(__NR_landlock_create_ruleset, &attributes, sizeof attributes, (uint32_t)0);
}

int cs7_landlock_add_path_beneath(int ruleset_fd, int parent_fd, uint64_t allowed_access) {
    // struct landlock_path_beneath_attr is packed: 12 bytes, as the system header declares it.
    const struct landlock_path_beneath_attr rule = {
        .allowed_access = allowed_access,
        .parent_fd = parent_fd,
    };
    return (int)syscall(__NR_landlock_add_rule, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, &rule,
                        (uint32_t)0);
}

int cs7_landlock_restrict_self(int ruleset_fd) {
    return (int)syscall(__NR_landlock_restrict_self, ruleset_fd, (uint32_t)0);
}
