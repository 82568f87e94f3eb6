import Logging
import PLCMemoryClient
import S7IPC
import S7Sys
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The children's confinement, put in place once a child holds every descriptor it will ever
/// use and before it answers the supervisor: resource limits, then a seccomp allow-list on
/// every thread (Landlock, which takes the filesystem away, is in place since the child
/// started). A call outside the list ends the child with SIGSYS after one line naming it
/// (``SandboxViolationReporter``); the supervisor logs it, counts it and starts a new one.
///
/// The S7 worker can then do what serving S7 clients takes and nothing else: no new socket,
/// no file opened, no connect, bind or listen, no exec, no process, no ptrace, no signal to
/// another process, no executable mapping. The memory process may in addition open, write,
/// fsync, rename and remove files (Landlock keeps that to its state directory).
public enum Sandbox {
    public enum Role: Sendable {
        case worker
        case memory

        var name: String { self == .worker ? "S7 worker" : "memory process" }
    }

    /// System calls both children make while running, found with `strace -f` over the whole
    /// integration suite (NIO's event loops and accepts, the channel thread, Swift's runtime,
    /// libdispatch, glibc's malloc and logging). Names only some architectures have are skipped.
    static let common = [
        // Descriptors it holds: the clients, the listener, the channel, epoll, eventfd, timerfd.
        "read", "readv", "write", "writev", "pread64", "recvmsg", "sendmsg", "recvfrom", "sendto",
        "accept", "accept4", "shutdown", "close", "getsockname", "getpeername", "getsockopt", "setsockopt",
        "fcntl", "lseek", "fstat", "newfstatat", "statx",
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
        "eventfd2", "timerfd_create", "timerfd_settime", "timerfd_gettime", "poll", "ppoll",
        // Memory (mmap and mprotect only without PROT_EXEC: below).
        "munmap", "mremap", "madvise", "brk",
        // Threads and time.
        "futex", "set_robust_list", "rseq", "gettid", "getpid", "getppid", "sched_yield", "sched_getaffinity",
        "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "getrandom", "membarrier",
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid",
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "pause", "sigaltstack", "restart_syscall", "exit", "exit_group",
    ]

    /// What the memory process does beside: retain.bin's atomic replace and setting aside a
    /// damaged one (in its state directory, the only one Landlock lets it write), and the
    /// groups of a memory.sock peer (/proc, read-only).
    static let memoryFiles = [
        "open", "openat", "pwrite64", "pwritev", "rename", "renameat", "renameat2", "unlink", "unlinkat", "fsync", "fdatasync",
        "ftruncate", "fchmod", "getdents64",
    ]

    /// Threads a child may start after RLIMIT_NPROC is set (Swift's cooperative pool and
    /// libdispatch start theirs on demand).
    static let threadHeadroom = 16

    /// Confines the calling process for good and reports what the kernel now says.
    /// - Parameters:
    ///   - ownUser: the child runs as a user no other process of s7commd has, so
    ///     RLIMIT_NPROC counts its threads only.
    ///   - landlock: what Landlock enforces (put in place when the child started, while it had
    ///     one thread), for the report.
    ///   - statusFile: /proc/self/status, opened before Landlock took the filesystem away;
    ///     closed here.
    public static func install(_ role: Role, ownUser: Bool, landlock: String, statusFile: FileDescriptor) throws -> SandboxReport {
        defer { try? statusFile.close() }
        try SandboxViolationReporter.install(prefix: "\(role.name) (pid \(getpid())): ")
        guard let threads = try ProcessStatus.read(descriptor: statusFile, name: "/proc/self/status").threads else {
            throw RuntimeError("/proc/self/status has no Threads line")
        }
        var limits = ["RLIMIT_CORE 0"]
        try ResourceLimit.coreSize.set(to: 0)
        if role == .worker {
            try ResourceLimit.fileSize.set(to: 0)
            limits.append("RLIMIT_FSIZE 0")
        }
        if ownUser {
            // The threads running now and room for the runtime's pools to grow; a process
            // cannot be made at all (clone without CLONE_THREAD is outside the filter).
            let processes = threads + threadHeadroom
            try ResourceLimit.processes.set(to: processes)
            limits.insert("RLIMIT_NPROC \(processes)", at: 0)
        }

        let dumpable = try Privileges.isDumpable()
        let filter = try SeccompFilter(defaultAction: .trap)
        try filter.allow(common + (role == .memory ? memoryFiles : []), skippingUnknown: true)
        let exec = UInt64(PROT_EXEC)
        try filter.allow("mmap", whenArgument: 2, hasNoBitsOf: exec)
        try filter.allow("mprotect", whenArgument: 2, hasNoBitsOf: exec)
        // A thread, never a process: clone only with CLONE_THREAD. clone3 passes its flags in
        // memory a filter cannot read, so it fails with ENOSYS and glibc falls back to clone.
        try filter.allow("clone", whenArgument: 0, hasAllBitsOf: 0x10000 /* CLONE_THREAD */)
        try filter.fail(["clone3"], with: .noFunction)
        // Signals to itself only (raise, abort, the SIGSYS reporter).
        let me = UInt64(UInt32(bitPattern: getpid()))
        try filter.allow("kill", whenArgument: 0, equals: me)
        try filter.allow("tgkill", whenArgument: 0, equals: me)
        // Thread names (prctl PR_SET_NAME, PR_GET_NAME) and libdispatch's thread priorities (its own).
        try filter.allow("prctl", whenArgument: 0, equals: 15 /* PR_SET_NAME */)
        try filter.allow("prctl", whenArgument: 0, equals: 16 /* PR_GET_NAME */)
        try filter.allow("setpriority", whenArgument: 1, equals: 0)
        // Files (the worker) and new sockets are refused with an error, not a kill: libraries
        // try them on their own (glibc's syslog opens /dev/log when libdispatch cannot raise
        // a priority).
        try filter.fail((role == .worker ? ["open", "openat", "openat2", "creat"] : ["openat2", "creat"])
                        + ["socket", "access", "faccessat", "faccessat2", "readlink", "readlinkat"], with: .permissionDenied)
        try filter.fail(["ioctl"], with: .inappropriateIOCTLForDevice)
        try filter.load(allThreads: true)

        let status = try ProcessStatus.read(descriptor: statusFile, name: "/proc/self/status")
        return SandboxReport(uid: getuid(), gid: getgid(), seccompMode: status.seccompMode ?? 0,
                             seccompFilters: status.seccompFilters ?? 0, noNewPrivileges: status.noNewPrivileges,
                             dumpable: dumpable, landlock: landlock, limits: limits.joined(separator: ", "))
    }

    /// What no process of s7commd ever does, refused (SIGSYS, reported) in the supervisor and,
    /// since a filter is inherited, in every child from its exec on: other processes' memory,
    /// mounts and namespaces, kernel modules and keys, BPF, clocks, io_uring (which would
    /// bypass the filter), and every uid or gid change but the one to the worker's user.
    static let neverNeeded = [
        "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
        "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
        "mount_setattr", "unshare", "setns", "open_by_handle_at", "name_to_handle_at",
        "bpf", "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load", "init_module", "finit_module",
        "delete_module", "keyctl", "add_key", "request_key", "reboot", "swapon", "swapoff", "iopl", "ioperm",
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "quotactl", "acct", "vhangup", "syslog", "uselib",
        "io_uring_setup", "io_uring_enter", "io_uring_register",
        "setuid", "setgid", "setreuid", "setfsuid", "setfsgid",
    ]

    /// The supervisor's filter: a deny-list (its children exec, load libraries and make their
    /// own, stricter filters), with the kept CAP_SETUID and CAP_SETGID usable for one thing
    /// only: `setresuid`/`setresgid` to the worker's user and `setgroups(0, NULL)`, so it can
    /// never become root or another user again.
    /// - Parameters:
    ///   - worker: the worker's user, when the supervisor starts it as one of its own.
    ///   - serviceGID: the service user's gid, the worker's real gid at its (secure) exec.
    public static func installSupervisor(worker: Spawn.Identity?, serviceGID: gid_t) throws -> String {
        try SandboxViolationReporter.install(prefix: "supervisor (pid \(getpid())): ")
        let filter = try SeccompFilter(defaultAction: .allow)
        try filter.trap(neverNeeded)
        if let worker {
            for index: UInt32 in 0...2 {
                try filter.trap("setresuid", whenArgument: index, isNot: UInt64(worker.uid))
                try filter.trap("setresgid", whenArgument: index, isNot: UInt64(worker.gid))
            }
            try filter.trap("setgroups", whenArgument: 0, isNot: 0)
            // The worker's secure exec: setregid(service gid, -1) after setresgid to the worker's.
            try filter.trap("setregid", whenArgument: 0, isNot: UInt64(serviceGID))
            try filter.trap("setregid", whenArgument: 1, isNot: UInt64(UInt32.max))
        } else {
            try filter.trap(["setresuid", "setresgid", "setgroups", "setregid"])
        }
        try filter.load(allThreads: true)
        return "seccomp deny-list of \(neverNeeded.count + 4) system calls"
            + (worker.map { "; setresuid/setresgid only to uid \($0.uid), gid \($0.gid)" } ?? "")
    }
}
