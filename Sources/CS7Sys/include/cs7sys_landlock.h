// Landlock (Linux 5.13+, include/uapi/linux/landlock.h) by raw system calls: glibc has no
// wrappers, and Debian 12's linux-libc-dev only knows ABI 2. The values below are the kernel's
// ABI; landlock.c checks each one against <linux/landlock.h> where that header defines it.
//
// No feature macros here (see CS7Sys.h): this header is imported by Swift.
#ifndef CS7SYS_LANDLOCK_H
#define CS7SYS_LANDLOCK_H

#include <stdint.h>

// open(2) O_PATH (a GNU name in glibc): a descriptor that only names a file, for a rule.
#define CS7_O_PATH 010000000

// landlock_create_ruleset(2) flags.
#define CS7_LANDLOCK_CREATE_RULESET_VERSION 1U

// Filesystem rights (struct landlock_ruleset_attr.handled_access_fs), with the ABI that added them.
#define CS7_LANDLOCK_ACCESS_FS_EXECUTE 0x1ULL          // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_WRITE_FILE 0x2ULL       // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_READ_FILE 0x4ULL        // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_READ_DIR 0x8ULL         // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_REMOVE_DIR 0x10ULL      // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_REMOVE_FILE 0x20ULL     // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_MAKE_CHAR 0x40ULL       // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_MAKE_DIR 0x80ULL        // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_MAKE_REG 0x100ULL       // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_MAKE_SOCK 0x200ULL      // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_MAKE_FIFO 0x400ULL      // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_MAKE_BLOCK 0x800ULL     // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_MAKE_SYM 0x1000ULL      // ABI 1
#define CS7_LANDLOCK_ACCESS_FS_REFER 0x2000ULL         // ABI 2
#define CS7_LANDLOCK_ACCESS_FS_TRUNCATE 0x4000ULL      // ABI 3
#define CS7_LANDLOCK_ACCESS_FS_IOCTL_DEV 0x8000ULL     // ABI 5

// TCP rights (handled_access_net), ABI 4.
#define CS7_LANDLOCK_ACCESS_NET_BIND_TCP 0x1ULL
#define CS7_LANDLOCK_ACCESS_NET_CONNECT_TCP 0x2ULL

// Scopes (scoped), ABI 6: no connect to an abstract Unix socket, and no signal, to a process
// outside this Landlock domain.
#define CS7_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET 0x1ULL
#define CS7_LANDLOCK_SCOPE_SIGNAL 0x2ULL

// Each returns what the system call returns and leaves errno set.

// landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION): the ABI version, or -1
// (ENOSYS: not built into the kernel; EOPNOTSUPP: built in but not enabled at boot).
int cs7_landlock_abi_version(void);
// landlock_create_ruleset with these three masks (zero for what the running ABI lacks): a new
// ruleset descriptor, close-on-exec, or -1.
int cs7_landlock_create_ruleset(uint64_t handled_access_fs, uint64_t handled_access_net,
                                uint64_t scoped);
// landlock_add_rule(LANDLOCK_RULE_PATH_BENEATH): `allowed_access` beneath the file or directory
// `parent_fd` (an O_PATH descriptor may do) in the ruleset `ruleset_fd`; 0 or -1.
int cs7_landlock_add_path_beneath(int ruleset_fd, int parent_fd, uint64_t allowed_access);
// landlock_restrict_self(ruleset_fd, 0): enforces the ruleset on the calling thread (and what
// it later creates); needs no-new-privileges or CAP_SYS_ADMIN; 0 or -1.
int cs7_landlock_restrict_self(int ruleset_fd);

#endif
