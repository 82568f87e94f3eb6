#if canImport(Glibc)
import Glibc
#endif
import CSeccomp
import SystemPackage

/// A seccomp-bpf allow-list built with libseccomp: every system call the filter does not allow
/// kills the whole process (`SCMP_ACT_KILL_PROCESS`), and so does a call made under another
/// architecture's calling convention (e.g. the i386 `int 0x80` gate on x86-64). Loaded with
/// no-new-privileges set; once loaded it holds for the process and every child it would have.
public final class SeccompFilter {
    private let context: scmp_filter_ctx

    /// An empty filter: nothing is allowed yet.
    public init() throws {
        guard let context = seccomp_init(cseccomp_act_kill_process()) else {
            throw SystemCallError("could not create a seccomp filter (seccomp_init)", errno: .noMemory)
        }
        self.context = context
        try check("could not make a foreign architecture's system calls kill the process (SCMP_FLTATR_ACT_BADARCH)",
                  seccomp_attr_set(context, SCMP_FLTATR_ACT_BADARCH, cseccomp_act_kill_process()))
    }

    deinit { seccomp_release(context) }

    /// Allows each system call by name; a name this kernel's architecture does not know is an error.
    public func allow(_ names: [String]) throws {
        for name in names {
            try check("could not allow \(name) in the seccomp filter", seccomp_rule_add_array(context, cseccomp_act_allow(), try number(name), 0, nil))
        }
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

    /// Makes `name` fail with `error` instead of killing the process (for calls a library
    /// makes and copes with failing, such as a probe of an optional feature).
    public func fail(_ name: String, with error: Errno) throws {
        try check("could not make \(name) fail with \(error) in the seccomp filter",
                  seccomp_rule_add_array(context, cseccomp_act_errno(UInt16(error.rawValue)), try number(name), 0, nil))
    }

    /// Installs the filter in this process (seccomp_load, with no-new-privileges).
    public func load() throws {
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
