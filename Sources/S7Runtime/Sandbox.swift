import Logging
import PLCMemoryClient
import S7IPC
import S7Sys
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The S7 worker's confinement, put in place once it holds every descriptor it will ever use
/// (the listener, the segment, the channel, the event loops) and before it answers the
/// supervisor: resource limits, then a seccomp allow-list on every thread (Landlock, which
/// takes away the filesystem, is in place since the worker's start). From then on the
/// worker can do what serving S7 clients takes and nothing else: no new socket, no connect,
/// bind or listen, no file opened, no exec, no process, no ptrace, no signal to another
/// process, no executable mapping. A call outside the list ends the worker with SIGSYS after
/// one line naming it (``SandboxViolationReporter``); the supervisor logs it, counts it and
/// starts a new worker.
public enum WorkerSandbox {
    /// System calls the worker makes while serving, found with `strace -f` over the whole
    /// integration suite (NIO's event loops and accepts, the channel thread, Swift's runtime,
    /// libdispatch, glibc's malloc and logging). Names only some architectures have are skipped.
    static let allowed = [
        // Descriptors it holds: the clients, the listener, the channel, epoll, eventfd, timerfd.
        "read", "readv", "write", "writev", "recvmsg", "sendmsg", "recvfrom", "sendto",
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

    /// Confines the calling process (the worker) for good and reports what the kernel now says.
    /// - Parameters:
    ///   - ownUser: the worker runs as a user no other process of s7commd has, so
    ///     RLIMIT_NPROC counts its threads only.
    ///   - landlock: what Landlock enforces (put in place when the worker started, while it had
    ///     one thread), for the report.
    ///   - statusFile: /proc/self/status, opened before Landlock took the filesystem away;
    ///     closed here.
    public static func install(ownUser: Bool, landlock: String, statusFile: FileDescriptor) throws -> SandboxReport {
        defer { try? statusFile.close() }
        try SandboxViolationReporter.install(prefix: "S7 worker (pid \(getpid())): ")
        guard let threads = try ProcessStatus.read(descriptor: statusFile, name: "/proc/self/status").threads else {
            throw RuntimeError("/proc/self/status has no Threads line")
        }
        var limits = ["RLIMIT_FSIZE 0", "RLIMIT_CORE 0"]
        try ResourceLimit.fileSize.set(to: 0)
        try ResourceLimit.coreSize.set(to: 0)
        if ownUser {
            // The threads running now and room for the runtime's pools to grow; a process
            // cannot be made at all (clone without CLONE_THREAD is outside the filter).
            let processes = threads + threadHeadroom
            try ResourceLimit.processes.set(to: processes)
            limits.insert("RLIMIT_NPROC \(processes)", at: 0)
        }

        let dumpable = try Privileges.isDumpable()
        let filter = try SeccompFilter(defaultAction: .trap)
        try filter.allow(allowed, skippingUnknown: true)
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
        // Thread names (prctl PR_SET_NAME) and libdispatch's thread priorities (its own).
        try filter.allow("prctl", whenArgument: 0, equals: 15 /* PR_SET_NAME */)
        try filter.allow("setpriority", whenArgument: 1, equals: 0)
        // Files and new sockets are refused with an error, not a kill: libraries try them on
        // their own (glibc's syslog opens /dev/log when libdispatch cannot raise a priority).
        try filter.fail(["open", "openat", "openat2", "creat", "socket", "access", "faccessat", "faccessat2",
                         "readlink", "readlinkat"], with: .permissionDenied)
        try filter.fail(["ioctl"], with: .inappropriateIOCTLForDevice)
        try filter.load(allThreads: true)

        let status = try ProcessStatus.read(descriptor: statusFile, name: "/proc/self/status")
        return SandboxReport(uid: getuid(), gid: getgid(), seccompMode: status.seccompMode ?? 0,
                             seccompFilters: status.seccompFilters ?? 0, noNewPrivileges: status.noNewPrivileges,
                             dumpable: dumpable, landlock: landlock, limits: limits.joined(separator: ", "))
    }

    /// Threads the worker may start after the limit is set (Swift's cooperative pool and
    /// libdispatch start theirs on demand).
    static let threadHeadroom = 16
}
