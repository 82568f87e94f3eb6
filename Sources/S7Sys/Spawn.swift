#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import SystemPackage

/// Starting child programs with `posix_spawn` (spawn and exec, never fork without exec), or
/// as another user with fork, an id switch and exec in C (``Identity``), and reaping them.
public enum Spawn {
    /// The user a child runs as instead of the caller's (see ``run(executable:arguments:environment:passing:standardInput:standardOutput:standardError:newSession:identity:)``).
    public struct Identity: Equatable, Sendable, CustomStringConvertible {
        /// The real, effective and saved uid of the child.
        public var uid: uid_t
        /// The real, effective and saved gid of the child, and its only group.
        public var gid: gid_t
        /// When set, the child is exec'd with this real gid (effective and saved stay `gid`):
        /// a secure exec, which the kernel makes non-dumpable from its first instruction. The
        /// child then sets its real gid to `gid` itself (``Privileges/evenGroupIDs()``).
        public var execRealGID: gid_t?

        public init(uid: uid_t, gid: gid_t, execRealGID: gid_t? = nil) {
            self.uid = uid
            self.gid = gid
            self.execRealGID = execRealGID
        }

        public var description: String { "uid \(uid), gid \(gid)" }
    }

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
    /// `addclosefrom_np`; with `identity`, `close` below the temporaries and `close_range`
    /// with `CLOSE_RANGE_CLOEXEC` from them up), close-on-exec or not. Its signal mask is
    /// empty and every signal has its default action.
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
    ///   - identity: when given, the child runs as exactly this uid and gid (real, effective
    ///     and saved), with no supplementary group and no capability in any set, switched
    ///     after fork and before exec (`cs7_spawn_as`: posix_spawn cannot change ids); it
    ///     needs `CAP_SETGID` and `CAP_SETUID`, which the child drops before exec. Everything
    ///     else is as without it. A step that fails in the child (e.g. `setresuid` without
    ///     `CAP_SETUID`, or `execve` of a missing file) is thrown as a ``SystemCallError``
    ///     that names it, after the child has been reaped.
    public static func run(
        executable: String,
        arguments: [String],
        environment: [String: String] = [:],
        passing: [(FileDescriptor, as: CInt)] = [],
        standardInput: Input = .inherit,
        standardOutput: FileDescriptor? = nil,
        standardError: FileDescriptor? = nil,
        newSession: Bool = false,
        identity: Identity? = nil
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

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        let child = Child(
            executable: executable, argv: argv, envp: envp, temporaries: temporaries, targets: targets,
            lowestTemporary: lowestTemporary, standardInput: standardInput, newSession: newSession
        )
        if let identity {
            return try spawn(child, as: identity)
        }
        return try posixSpawn(child)
    }

    /// What both ways of starting a child need, prepared by ``run(executable:arguments:environment:passing:standardInput:standardOutput:standardError:newSession:identity:)``.
    private struct Child {
        var executable: String
        /// NULL-terminated.
        var argv: [UnsafeMutablePointer<CChar>?]
        var envp: [UnsafeMutablePointer<CChar>?]
        /// Close-on-exec duplicates, each at least `lowestTemporary`; `temporaries[i]` becomes
        /// `targets[i]` in the child.
        var temporaries: [CInt]
        var targets: [CInt]
        var lowestTemporary: CInt
        var standardInput: Input
        var newSession: Bool
    }

    private static func posixSpawn(_ child: Child) throws -> pid_t {
        let executable = child.executable
        let targets = child.targets
        let lowestTemporary = child.lowestTemporary
        var actions = posix_spawn_file_actions_t()
        try checkingErrorNumber("could not prepare the file actions to spawn \(executable)", posix_spawn_file_actions_init(&actions))
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (temporary, target) in zip(child.temporaries, targets) {
            try checkingErrorNumber(
                "could not add a dup2 to \(target) to the file actions to spawn \(executable)",
                posix_spawn_file_actions_adddup2(&actions, temporary, target)
            )
        }
        if child.standardInput == .devNull {
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
        if child.newSession { flags |= CS7_POSIX_SPAWN_SETSID }
        try checkingErrorNumber(
            "could not set the spawn flags for \(executable)",
            posix_spawnattr_setflags(&attributes, Int16(flags))
        )

        var pid: pid_t = 0
        try checkingErrorNumber(
            "could not spawn \(executable) (posix_spawn)",
            posix_spawn(&pid, executable, &actions, &attributes, child.argv, child.envp)
        )
        return pid
    }

    private static func spawn(_ child: Child, as identity: Identity) throws -> pid_t {
        var failure = cs7_spawn_as_failure()
        let pid = child.executable.withCString { path in
            child.argv.withUnsafeBufferPointer { argv in
                child.envp.withUnsafeBufferPointer { envp in
                    child.temporaries.withUnsafeBufferPointer { sources in
                        child.targets.withUnsafeBufferPointer { targets in
                            var request = cs7_spawn_as_request(
                                path: path, argv: argv.baseAddress, envp: envp.baseAddress,
                                sources: sources.baseAddress, targets: targets.baseAddress, count: CInt(targets.count),
                                lowest_temporary: child.lowestTemporary,
                                standard_input_dev_null: child.standardInput == .devNull,
                                new_session: child.newSession, uid: identity.uid, gid: identity.gid,
                                secure_exec: identity.execRealGID != nil, exec_real_gid: identity.execRealGID ?? identity.gid
                            )
                            return cs7_spawn_as(&request, &failure)
                        }
                    }
                }
            }
        }
        if pid > 0 { return pid }
        throw SystemCallError(
            spawnAsOperation(step: failure.step, detail: failure.detail, executable: child.executable, identity: identity),
            errno: Errno(rawValue: failure.error_number)
        )
    }

    /// The sentence for a step of `cs7_spawn_as` that failed.
    static func spawnAsOperation(step: CInt, detail: CInt, executable: String, identity: Identity) -> String {
        switch step {
        case CS7_SPAWN_STEP_PIPE:
            return "could not create the pipe to learn whether \(executable) started (pipe2)"
        case CS7_SPAWN_STEP_MOVE_PIPE:
            return "could not move the pipe to learn whether \(executable) started above the passed descriptors (F_DUPFD_CLOEXEC)"
        case CS7_SPAWN_STEP_FORK:
            return "could not start a child for \(executable) (fork)"
        case CS7_SPAWN_STEP_READ:
            return "could not learn whether the child for \(executable) started (read); it was killed"
        case CS7_SPAWN_STEP_SIGACTION:
            return "could not reset signal \(detail) to its default action in the child (sigaction)"
        case CS7_SPAWN_STEP_SIGMASK:
            return "could not empty the signal mask of the child (sigprocmask)"
        case CS7_SPAWN_STEP_SETSID:
            return "could not start a new session in the child (setsid)"
        case CS7_SPAWN_STEP_SETGROUPS:
            return "could not clear the supplementary groups of the child (setgroups)"
        case CS7_SPAWN_STEP_SETRESGID:
            return "could not switch the child to gid \(identity.gid) (setresgid)"
        case CS7_SPAWN_STEP_SETREGID:
            return "could not give the child the real gid \(identity.execRealGID ?? identity.gid) for a secure exec (setregid)"
        case CS7_SPAWN_STEP_SETRESUID:
            return "could not switch the child to uid \(identity.uid) (setresuid)"
        case CS7_SPAWN_STEP_CAPSET:
            return "could not empty the capability sets of the child (capset)"
        case CS7_SPAWN_STEP_AMBIENT:
            return "could not clear the ambient capability set of the child (PR_CAP_AMBIENT_CLEAR_ALL)"
        case CS7_SPAWN_STEP_VERIFY:
            switch detail {
            case CS7_SPAWN_VERIFY_UIDS: return "the uids of the child are not all \(identity.uid) after the switch (getresuid)"
            case CS7_SPAWN_VERIFY_GIDS: return "the gids of the child are not \(identity.execRealGID ?? identity.gid), \(identity.gid), \(identity.gid) after the switch (getresgid)"
            case CS7_SPAWN_VERIFY_GROUPS: return "the child has supplementary groups after setgroups(0, NULL) (getgroups)"
            default: return "the child holds a capability after emptying its sets (capget)"
            }
        case CS7_SPAWN_STEP_DUP2:
            return "could not pass a descriptor as \(detail) to the child (dup2)"
        case CS7_SPAWN_STEP_DEV_NULL:
            return "could not open /dev/null as standard input of the child (open)"
        case CS7_SPAWN_STEP_CLOSE_RANGE:
            return "could not mark every descriptor from \(detail) close-on-exec in the child (close_range)"
        case CS7_SPAWN_STEP_EXECVE:
            return "could not execute \(executable) as \(identity) (execve)"
        default:
            return "could not spawn \(executable) as \(identity) (unknown step \(step))"
        }
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
