import ArgumentParser
import Dispatch
import Foundation
import Logging
import S7IPC
import S7Runtime
import S7Sys
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A synchronous entry point: privileges are dropped per thread, so `run` binds and drops them
/// while the process still has one thread, and the children verify theirs before any thread
/// starts; only then does the async part begin.
@main
enum Entry {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let role = arguments.first, role == "__worker" || role == "__memory" {
            runChild(role, Array(arguments.dropFirst()))
        }
        do {
            var command = try S7Commd.parseAsRoot()
            if let run = command as? Run {
                let prepared = try run.prepare()
                if run.singleProcess { runAsync { try await run.serveHere(prepared) } }
                let status = try run.supervise(prepared)
                if status != 0 { throw ExitCode(status) }
                exit(0)
            }
            try command.run()
        } catch {
            S7Commd.exit(withError: error)
        }
    }

    /// Runs `body` on the concurrency runtime and exits with its outcome.
    static func runAsync(_ body: @escaping @Sendable () async throws -> Void) -> Never {
        Task {
            do {
                try await body()
                exit(0)
            } catch {
                S7Commd.exit(withError: error)
            }
        }
        dispatchMain()
    }

    /// A child of the supervisor: `s7commd __worker|__memory [--log-level L] [--journal]
    /// [--threads N] [--state-dir DIR] [--supervisor-uid UID]`, its channel to the supervisor on descriptor 3. Internal: not for people
    /// to run. Its exit status is a ``ChildExitStatus``.
    static func runChild(_ role: String, _ options: [String]) -> Never {
        func option(_ name: String) -> String? {
            options.firstIndex(of: name).flatMap { $0 + 1 < options.count ? options[$0 + 1] : nil }
        }
        let level = Logger.Level(rawValue: option("--log-level") ?? "info") ?? .info
        LogSetup.bootstrap(level: level, journal: options.contains("--journal"))
        let name = role == "__worker" ? "S7 worker" : "memory process"
        let logger = Logger(label: role == "__worker" ? "s7commd-worker" : "s7commd-memory")
        let control = SystemPackage.FileDescriptor(rawValue: 3)
        // Ctrl-C and systemd signal the whole group; a child stops when the supervisor says so
        // (or closes the channel), so retained data is saved and clients are closed.
        for sig in [SIGTERM, SIGINT, SIGHUP] { signal(sig, SIG_IGN) }
        let supervisorUID = option("--supervisor-uid").flatMap { uid_t($0) } ?? getuid()
        do {
            try Privileges.setNonDumpable()
            try Privileges.evenGroupIDs()
            try verifyUnprivileged(role: name)
            try verifyControlPeer(control, role: name, supervisorUID: supervisorUID)
        } catch {
            logger.critical("\(error)")
            exit(ChildExitStatus.unsafeStart.rawValue)
        }
        let threads = option("--threads").flatMap(Int.init) ?? 1
        // Read the time zone once, now: glibc looks at /etc/localtime again on every
        // localtime() unless TZ names it, and the sandboxes refuse it from here on.
        if getenv("TZ") == nil { setenv("TZ", ":/etc/localtime", 1) }
        tzset()
        // Landlock while this is the only thread (it covers the calling thread and the ones it
        // starts): the worker gets no filesystem at all, the memory process its state
        // directory and, read-only, /proc (the groups of a memory.sock peer).
        let landlock: Landlock.Outcome
        let statusFile: SystemPackage.FileDescriptor
        do {
            // The sandbox reports what /proc says of the child, once the filesystem is gone.
            statusFile = try .open("/proc/self/status", .readOnly, options: .closeOnExec)
            let stateDirectory = option("--state-dir")
            landlock = try Landlock.restrict(role == "__worker" ? .nothing
                : Landlock.Policy(readOnly: ["/proc"], readWrite: stateDirectory.map { [$0] } ?? []))
        } catch {
            logger.critical("\(name): could not put Landlock in place: \(error); it does not run without its sandbox, so s7commd stops")
            exit(ChildExitStatus.sandboxUnavailable.rawValue)
        }
        if !landlock.isEnforced { logger.notice("\(name): \(landlock); the seccomp filter and the other limits still hold") }
        let ownUser = supervisorUID != getuid()
        runAsync {
            let status = role == "__worker"
                ? try await WorkerRole.run(control: control, threads: threads, ownUser: ownUser, landlock: "\(landlock)",
                                          statusFile: statusFile, logger: logger, clock: localClock)
                : try await MemoryRole.run(control: control, landlock: "\(landlock)", statusFile: statusFile, logger: logger)
            exit(status)
        }
    }
}
