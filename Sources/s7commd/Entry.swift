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
    /// [--threads N]`, its channel to the supervisor on descriptor 3. Internal: not for people
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
        var supervisorUID = getuid()
        do {
            try Privileges.setNonDumpable()
            try verifyUnprivileged(role: name)
            supervisorUID = try verifyControlPeer(control, role: name)
        } catch {
            logger.critical("\(error)")
            exit(ChildExitStatus.unsafeStart.rawValue)
        }
        let threads = option("--threads").flatMap(Int.init) ?? 1
        if role == "__worker" {
            // Read the time zone once, now: glibc looks at /etc/localtime again on every
            // localtime() unless TZ names it, and the worker's sandbox refuses open.
            if getenv("TZ") == nil { setenv("TZ", ":/etc/localtime", 1) }
            tzset()
        }
        let ownUser = supervisorUID != getuid()
        runAsync {
            let status = role == "__worker"
                ? try await WorkerRole.run(control: control, threads: threads, ownUser: ownUser, logger: logger, clock: localClock)
                : try await MemoryRole.run(control: control, logger: logger)
            exit(status)
        }
    }
}
