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

    /// Starts `executable` as a new process and returns its pid.
    ///
    /// The child gets the descriptors in `passing` at the given numbers (e.g. a socket as 3),
    /// standard input, output and error unless `passing` replaces them, and nothing else:
    /// every other descriptor is closed in the child (`posix_spawn_file_actions_addclose`
    /// and `addclosefrom_np`), close-on-exec or not. Its signal mask is empty and every
    /// signal has its default action.
    ///
    /// - Parameters:
    ///   - executable: an absolute path (no `PATH` search).
    ///   - arguments: the arguments after `argv[0]`, which is `executable`.
    ///   - environment: the whole environment of the child.
    ///   - passing: descriptors of this process and the number each gets in the child.
    public static func run(
        executable: String,
        arguments: [String],
        environment: [String: String] = [:],
        passing: [(FileDescriptor, as: CInt)] = []
    ) throws -> pid_t {
        precondition(executable.hasPrefix("/"), "Spawn.run needs an absolute path, got \(executable)")
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
        try checkingErrorNumber(
            "could not set the spawn flags for \(executable)",
            posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
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
        if cs7_wifexited(status) { return .exited(cs7_wexitstatus(status)) }
        if cs7_wifsignaled(status) { return .signaled(cs7_wtermsig(status)) }
        preconditionFailure("waitpid without WUNTRACED reported neither exit nor signal: \(status)")
    }
}
