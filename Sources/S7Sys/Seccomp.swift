#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import CSeccomp
import SystemPackage

/// A seccomp-bpf allow-list built with libseccomp: every system call the filter does not
/// allow ends the process — at once (`SCMP_ACT_KILL_PROCESS`), or through a SIGSYS that a
/// handler can report before it dies (`SCMP_ACT_TRAP`, see ``SandboxViolationReporter``) — and
/// a call made under another architecture's calling convention (e.g. the i386 `int 0x80` gate
/// on x86-64) kills the process at once. Loaded with no-new-privileges set; once loaded it
/// holds for the process and every child it would have.
public final class SeccompFilter {
    /// What a call outside the list does.
    public enum DefaultAction: Sendable {
        /// The kernel kills the whole process (SIGSYS, no handler runs).
        case killProcess
        /// The calling thread gets SIGSYS with the call's number in `si_syscall`; a handler
        /// reports it and ends the process (``SandboxViolationReporter``).
        case trap
        /// Everything not refused runs: a deny-list (``trap(_:)``), for a process whose
        /// children inherit the filter and exec programs that load libraries.
        case allow
    }

    private let context: scmp_filter_ctx

    /// An empty filter: nothing is allowed yet.
    public init(defaultAction: DefaultAction = .killProcess) throws {
        let action = switch defaultAction {
        case .killProcess: cseccomp_act_kill_process()
        case .trap: cseccomp_act_trap()
        case .allow: cseccomp_act_allow()
        }
        guard let context = seccomp_init(action) else {
            throw SystemCallError("could not create a seccomp filter (seccomp_init)", errno: .noMemory)
        }
        self.context = context
        try check("could not make a foreign architecture's system calls kill the process (SCMP_FLTATR_ACT_BADARCH)",
                  seccomp_attr_set(context, SCMP_FLTATR_ACT_BADARCH, cseccomp_act_kill_process()))
        // A binary tree of the system call numbers instead of a list: every call of the
        // process runs through the filter, and the tree makes that a few comparisons.
        try check("could not ask for a binary-tree seccomp filter (SCMP_FLTATR_CTL_OPTIMIZE 2)",
                  seccomp_attr_set(context, SCMP_FLTATR_CTL_OPTIMIZE, 2))
    }

    deinit { seccomp_release(context) }

    /// The number of system call `name` on this architecture, e.g. "socket" → 41 on x86-64.
    public static func number(of name: String) -> Int32? {
        let number = seccomp_syscall_resolve_name(name)
        return number == __NR_SCMP_ERROR ? nil : number
    }

    /// The name of system call `number` on this architecture, e.g. 41 → "socket" on x86-64.
    public static func name(of number: Int32) -> String? {
        guard let name = seccomp_syscall_resolve_num_arch(UInt32(SCMP_ARCH_NATIVE), number) else { return nil }
        defer { free(name) }
        return String(cString: name)
    }

    /// Allows each system call by name; a name this architecture does not know is an error,
    /// unless `skippingUnknown` (for calls only some architectures have, such as `epoll_wait`,
    /// which arm64 replaced with `epoll_pwait`).
    public func allow(_ names: [String], skippingUnknown: Bool = false) throws {
        for name in names {
            if skippingUnknown && seccomp_syscall_resolve_name(name) == __NR_SCMP_ERROR { continue }
            try check("could not allow \(name) in the seccomp filter", seccomp_rule_add_array(context, cseccomp_act_allow(), try number(name), 0, nil))
        }
    }

    /// Allows `name` only when argument `index` (0-based) has every bit of `mask` set, e.g.
    /// clone only with CLONE_THREAD (a thread, never a new process).
    public func allow(_ name: String, whenArgument index: UInt32, hasAllBitsOf mask: UInt64) throws {
        try check("could not allow \(name) with argument \(index) & \(mask) == \(mask) in the seccomp filter",
                  cseccomp_allow_if_bits_set(context, try number(name), index, mask))
    }

    /// Allows `name` only when argument `index` (0-based) has none of the bits of `mask` set,
    /// e.g. mmap and mprotect without PROT_EXEC.
    public func allow(_ name: String, whenArgument index: UInt32, hasNoBitsOf mask: UInt64) throws {
        try check("could not allow \(name) with argument \(index) & \(mask) == 0 in the seccomp filter",
                  cseccomp_allow_if_bits_clear(context, try number(name), index, mask))
    }

    /// Allows `name` only when argument `index` (0-based) equals `value`, e.g. kill of one pid.
    public func allow(_ name: String, whenArgument index: UInt32, equals value: UInt64) throws {
        try check("could not allow \(name) with argument \(index) == \(value) in the seccomp filter",
                  cseccomp_allow_if_equal(context, try number(name), index, value))
    }

    /// Makes each of `names` end the process through SIGSYS (``DefaultAction/trap``), in a
    /// filter whose default allows. Names this architecture does not know are skipped.
    public func trap(_ names: [String]) throws {
        for name in names where seccomp_syscall_resolve_name(name) != __NR_SCMP_ERROR {
            try check("could not make \(name) trap in the seccomp filter", seccomp_rule_add_array(context, cseccomp_act_trap(), try number(name), 0, nil))
        }
    }

    /// Makes `name` end the process through SIGSYS when argument `index` is not `value`, e.g.
    /// setresuid to any uid but one.
    public func trap(_ name: String, whenArgument index: UInt32, isNot value: UInt64) throws {
        try check("could not make \(name) trap with argument \(index) != \(value) in the seccomp filter",
                  cseccomp_rule_if_not_equal(context, cseccomp_act_trap(), try number(name), index, value))
    }

    /// Makes each of `names` fail with `error` instead of ending the process (for calls a
    /// library makes and copes with failing, such as glibc's syslog opening /dev/log, or
    /// clone3, which glibc replaces with clone on ENOSYS). Names this architecture does not
    /// know are skipped: there is nothing to fail.
    public func fail(_ names: [String], with error: Errno) throws {
        for name in names where seccomp_syscall_resolve_name(name) != __NR_SCMP_ERROR {
            try check("could not make \(name) fail with \(error) in the seccomp filter",
                      seccomp_rule_add_array(context, cseccomp_act_errno(UInt16(error.rawValue)), try number(name), 0, nil))
        }
    }

    /// Makes `name` fail with `error` instead of ending the process.
    public func fail(_ name: String, with error: Errno) throws {
        try fail([name], with: error)
    }

    /// Installs the filter in this process (seccomp_load, with no-new-privileges). With
    /// `allThreads`, every thread of the process gets it at once (`SECCOMP_FILTER_FLAG_TSYNC`);
    /// otherwise only the calling thread and the threads it starts later.
    public func load(allThreads: Bool = false) throws {
        if allThreads {
            try check("could not ask for the seccomp filter on every thread (SCMP_FLTATR_CTL_TSYNC)",
                      seccomp_attr_set(context, SCMP_FLTATR_CTL_TSYNC, 1))
        }
        try check("could not install the seccomp filter (seccomp_load)", seccomp_load(context))
    }

    private func number(_ name: String) throws -> CInt {
        let number = seccomp_syscall_resolve_name(name)
        guard number != __NR_SCMP_ERROR else {
            throw SystemCallError("the seccomp filter names \(name), which is no system call of this architecture", errno: .invalidArgument)
        }
        return number
    }

    /// libseccomp returns 0 or a negated errno.
    private func check(_ operation: @autoclosure () -> String, _ result: CInt) throws {
        if result < 0 { throw SystemCallError(operation(), errno: Errno(rawValue: -result)) }
    }
}

/// Reports a system call a ``SeccompFilter`` with the `.trap` default refused, then ends the
/// process with SIGSYS: the line goes to standard error (which s7commd's supervisor relays
/// into its log) and the parent's waitpid sees the signal.
public enum SandboxViolationReporter {
    /// What the line says before the number.
    static let marker = "sandbox violation: system call "

    /// Installs the SIGSYS handler; each report line starts with `prefix`.
    public static func install(prefix: String) throws {
        guard cs7_install_sandbox_reporter(prefix) == 0 else {
            throw SystemCallError("could not install the SIGSYS handler that reports sandbox violations (sigaction)", errno: Errno(rawValue: errno))
        }
    }

    /// The system call number in a line the handler wrote, or nil for any other line.
    public static func systemCall(in line: [UInt8]) -> Int32? {
        let pattern = Array(marker.utf8)
        guard line.count >= pattern.count else { return nil }
        for start in 0...(line.count - pattern.count) where line[start..<(start + pattern.count)].elementsEqual(pattern) {
            let rest = line[(start + pattern.count)...]
            let digits = rest.prefix { $0 == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
            return Int32(String(decoding: digits, as: UTF8.self))
        }
        return nil
    }
}
