#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import SystemPackage

/// Starting child programs with `posix_spawn` (spawn and exec, never fork without exec) and
/// reaping them.
public enum Spawn {
    /// How a child ended.
    public enum Termination: Equatable, Sendable, CustomStringConvertible {
        /// It exited with this status.
        case exited(CInt)
        /// A signal ended it.
        case signaled(CInt)

        public var description: String {
            switch self {
            case .exited(let status): "exited with status \(status)"
            case .signaled(let signal): "killed by signal \(signal)"
            }
        }
    }

    /// What a child gets as standard input.
    public enum Input: Equatable, Sendable {
        /// The caller's descriptor 0 (unless `passing` replaces it).
        case inherit
        /// /dev/null opened read-only as descriptor 0 (`posix_spawn_file_actions_addopen`):
        /// a daemon's child never reads the terminal or a pipe it was started from.
        case devNull
    }

    /// Starts `executable` as a new process and returns its pid.
    ///
    /// The child gets the descriptors in `passing` at the given numbers (e.g. a socket as 3),
    /// standard input, output and error (each the caller's unless `standardInput`,
    /// `standardOutput`, `standardError` or `passing` replaces it), and nothing else: every
    /// other descriptor is closed in the child (`posix_spawn_file_actions_addclose` and
    /// `addclosefrom_np`), close-on-exec or not. Its signal mask is empty and every signal
    /// has its default action.
    ///
    /// - Parameters:
    ///   - executable: an absolute path (no `PATH` search).
    ///   - arguments: the arguments after `argv[0]`, which is `executable`.
    ///   - environment: the whole environment of the child.
    ///   - passing: descriptors of this process and the number each gets in the child.
    ///   - standardInput: `.devNull` gives the child /dev/null (read-only) as descriptor 0;
    ///     `passing` must then not also name 0.
    ///   - standardOutput: when given, becomes descriptor 1 of the child (dup2); nil keeps
    ///     the caller's. `passing` must then not also name 1.
    ///   - standardError: when given, becomes descriptor 2 of the child; nil keeps the caller's.
    ///     `passing` must then not also name 2.
    ///   - newSession: the child calls `setsid` before `exec` (`POSIX_SPAWN_SETSID`): it leads
    ///     a new session and process group, has no controlling terminal, and a signal sent to
    ///     the caller's process group or a terminal hang-up does not reach it.
    public static func run(
        executable: String,
        arguments: [String],
        environment: [String: String] = [:],
        passing: [(FileDescriptor, as: CInt)] = [],
        standardInput: Input = .inherit,
        standardOutput: FileDescriptor? = nil,
        standardError: FileDescriptor? = nil,
        newSession: Bool = false
    ) throws -> pid_t {
        precondition(executable.hasPrefix("/"), "Spawn.run needs an absolute path, got \(executable)")
        precondition(
            standardInput == .inherit || !passing.contains { $0.as == 0 },
            "standardInput: .devNull and a descriptor passed as 0"
        )
        precondition(standardOutput == nil || !passing.contains { $0.as == 1 }, "standardOutput and a descriptor passed as 1")
        precondition(standardError == nil || !passing.contains { $0.as == 2 }, "standardError and a descriptor passed as 2")
        var passing = passing
        if let standardOutput { passing.append((standardOutput, as: 1)) }
        if let standardError { passing.append((standardError, as: 2)) }
        let targets = passing.map(\.as)
        precondition(Set(targets).count == targets.count, "two descriptors passed as the same number")
        precondition(targets.allSatisfy { $0 >= 0 }, "a descriptor number is negative")

        // Duplicate every source above every target first, so that one dup2 in the child can
        // never overwrite a source another one still needs; the duplicates are close-on-exec
        // and vanish at exec, while dup2's copies are not.
        let lowestTemporary = max((targets.max() ?? 2) + 1, 3)
        var temporaries: [CInt] = []
        defer { for descriptor in temporaries { _ = close(descriptor) } }
        for (descriptor, target) in passing {
            let temporary = try retryingOnInterrupt(
                "could not duplicate descriptor \(descriptor.rawValue) to pass it as \(target) (F_DUPFD_CLOEXEC)"
            ) {
                fcntl(descriptor.rawValue, F_DUPFD_CLOEXEC, lowestTemporary)
            }
            temporaries.append(temporary)
        }

        var actions = posix_spawn_file_actions_t()
        try checkingErrorNumber("could not prepare the file actions to spawn \(executable)", posix_spawn_file_actions_init(&actions))
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (temporary, target) in zip(temporaries, targets) {
            try checkingErrorNumber(
                "could not add a dup2 to \(target) to the file actions to spawn \(executable)",
                posix_spawn_file_actions_adddup2(&actions, temporary, target)
            )
        }
        if standardInput == .devNull {
            // After the dup2s, which only read descriptors above every target, never 0.
            try checkingErrorNumber(
                "could not add an open of /dev/null as standard input to the file actions to spawn \(executable)",
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            )
        }

        // Close everything else in the child, also what was not close-on-exec here (a test
        // runner's pipes, a socket systemd passed as LISTEN_FDS): what a child holds is
        // exactly standard input, output, error and `passing`.
        for number in 3..<lowestTemporary where !targets.contains(number) {
            try checkingErrorNumber(
                "could not add a close of \(number) to the file actions to spawn \(executable)",
                posix_spawn_file_actions_addclose(&actions, number)
            )
        }
        try checkingErrorNumber(
            "could not add a close of every descriptor from \(lowestTemporary) to spawn \(executable)",
            cs7_spawn_file_actions_addclosefrom(&actions, lowestTemporary)
        )

        var attributes = posix_spawnattr_t()
        try checkingErrorNumber("could not prepare the attributes to spawn \(executable)", posix_spawnattr_init(&attributes))
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        try checkingErrorNumber("could not set the signal mask to spawn \(executable)", posix_spawnattr_setsigmask(&attributes, &noSignals))
        try checkingErrorNumber("could not reset the signals to spawn \(executable)", posix_spawnattr_setsigdefault(&attributes, &allSignals))
        var flags = CInt(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if newSession { flags |= CS7_POSIX_SPAWN_SETSID }
        try checkingErrorNumber(
            "could not set the spawn flags for \(executable)",
            posix_spawnattr_setflags(&attributes, Int16(flags))
        )

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        try checkingErrorNumber(
            "could not spawn \(executable) (posix_spawn)",
            posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        )
        return pid
    }

    /// Waits for the child `pid` to end and reaps it (`waitpid`, retried on EINTR).
    public static func wait(_ pid: pid_t) throws -> Termination {
        var status: CInt = 0
        while true {
            let result = try retryingOnInterrupt("could not wait for process \(pid) (waitpid)") {
                waitpid(pid, &status, 0)
            }
            if result == pid { break }
        }
        return termination(status)
    }

    /// Reaps one child that has ended, if any, without waiting (`waitpid(-1, WNOHANG)`,
    /// retried on EINTR).
    ///
    /// For an event loop that learns from `SIGCHLD` (see ``SignalDescriptor``) that some
    /// child ended: call it until it returns nil, since several ends can share one signal.
    /// It reaps *any* child of this process, so it must not be mixed with ``wait(_:)`` on
    /// another thread that expects a particular child.
    ///
    /// - Returns: the child and how it ended, or nil when no child has ended yet or this
    ///   process has no children (`ECHILD`).
    public static func reapAny() throws -> (pid: pid_t, termination: Termination)? {
        var status: CInt = 0
        while true {
            let result = waitpid(-1, &status, WNOHANG)
            if result > 0 { return (result, termination(status)) }
            if result == 0 { return nil }
            let code = Glibc.errno
            if code == EINTR { continue }
            if code == ECHILD { return nil }
            throw SystemCallError("could not reap an ended child (waitpid -1, WNOHANG)", errno: Errno(rawValue: code))
        }
    }

    private static func termination(_ status: CInt) -> Termination {
        if cs7_wifexited(status) { return .exited(cs7_wexitstatus(status)) }
        if cs7_wifsignaled(status) { return .signaled(cs7_wtermsig(status)) }
        preconditionFailure("waitpid without WUNTRACED reported neither exit nor signal: \(status)")
    }
}
