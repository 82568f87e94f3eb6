import ArgumentParser
import Foundation
import Logging
import PLCMemory
import S7Config
import S7IPC
import S7Runtime
import S7Server
import S7Supervisor
import S7Sys
import SystemPackage

extension Run {
    /// What `run` keeps of the configuration for the state file and for reloads.
    final class LiveConfiguration: @unchecked Sendable {
        var settings: S7Configuration
        var state: RuntimeState
        let files: RuntimeFiles

        init(_ p: Prepared) {
            settings = p.settings
            files = p.files
            state = RuntimeState(pid: getpid(), version: S7CommdVersion.current, configuration: p.path, startedAt: Date(),
                                 enabled: p.settings.server.enabled, endpoint: p.settings.server.endpoint,
                                 listening: p.listener != nil, settings: p.settings.shownSettings(), lastReload: nil)
            files.publish(state)
        }

        /// Re-reads and validates the file on SIGHUP; the running settings with the new live
        /// values, and a line for the log, or nil (logged why) to keep the running ones.
        func reload(path: String?, logger: Logger) -> (S7Configuration, String)? {
            guard let path else {
                logger.notice("received SIGHUP: the built-in demo configuration has no file to reload")
                return nil
            }
            do {
                let updated = try S7Configuration.loadForHost(path: path)
                if let limits = try? OpenFilesLimit.current(), limits.soft < OpenFilesLimit.needed(maxClients: updated.server.maxClients) {
                    logger.error("reload refused, the running configuration is unchanged: \(Run.openFilesProblem(maxClients: updated.server.maxClients, limit: limits.soft, which: "soft"))")
                    return nil
                }
                let (live, restart) = settings.changes(to: updated)
                for warning in updated.warnings { logger.warning("configuration: \(warning)") }
                var kept = settings
                kept.server.maxClients = updated.server.maxClients
                kept.server.maxClientsPerAddress = updated.server.maxClientsPerAddress
                kept.server.pduSize = updated.server.pduSize
                kept.server.sendTimeoutMs = updated.server.sendTimeoutMs
                kept.server.recvTimeoutMs = updated.server.recvTimeoutMs
                kept.server.pingTimeoutMs = updated.server.pingTimeoutMs
                kept.server.workIntervalMs = updated.server.workIntervalMs
                kept.server.allowedRackSlots = updated.server.allowedRackSlots
                kept.server.allowPLCControl = updated.server.allowPLCControl
                kept.server.allowClockSet = updated.server.allowClockSet
                kept.identity = updated.identity
                kept.logging = updated.logging
                settings = kept
                state.settings = kept.shownSettings()
                state.lastReload = RuntimeState.Reload(at: Date(), applied: live, restartNeeded: restart)
                files.publish(state)
                return (kept, "reloaded \(path): \(live.isEmpty ? "no live setting changed" : "applied " + live.joined(separator: ", ") + " (to connections opened from now on)")\(restart.isEmpty ? "" : "; restart needed for " + restart.joined(separator: ", "))")
            } catch {
                logger.error("reload refused, the running configuration is unchanged: \(error)")
                return nil
            }
        }
    }

    var threadCount: Int { threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / 2) }

    /// The unprivileged supervisor, on this (the only) thread: it spawns the worker and the
    /// memory process and supervises them until SIGTERM or SIGINT.
    func supervise(_ p: Prepared) throws -> Int32 {
        let logger = p.logger
        let live = LiveConfiguration(p)
        defer { live.files.remove() }
        let (metrics, places) = metricsListeners(p)
        let journal = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil
        let common = ["--log-level", logLevel] + (journal ? ["--journal"] : [])
        let plan = SupervisorCore.Plan(
            settings: WorkerSettings(p.settings), memory: p.settings.memory, stateDirectory: p.retains ? stateDir : nil,
            listening: p.listener != nil, metricsListeners: metrics.count, attachSocket: p.memorySocket != nil, metrics: places)
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let setup = SupervisorLoop.Setup(
            executables: [.worker: workerProgram ?? executable, .memory: executable],
            arguments: [.worker: common + ["--threads", String(threadCount), "--supervisor-uid", String(getuid())],
                        .memory: common + ["--supervisor-uid", String(getuid())] + (p.retains ? ["--state-dir", stateDir] : [])],
            identities: p.worker.map { [.worker: $0] } ?? [:],
            environment: SupervisorLoop.childEnvironment(ProcessInfo.processInfo.environment),
            listener: p.listener, metricsListeners: metrics, controlListener: p.controlSocket, memoryListener: p.memorySocket,
            serviceUID: p.service.uid, serviceGID: p.service.gid,
            log: { level, text in
                switch level {
                case .debug: logger.debug("\(text)")
                case .info: logger.info("\(text)")
                case .notice: logger.notice("\(text)")
                case .warning: logger.warning("\(text)")
                case .error: logger.error("\(text)")
                }
            },
            relay: { line in _ = try? FileDescriptor.standardError.writeAll(line + [0x0A]) },
            reload: { live.reload(path: p.path, logger: logger).map { (WorkerSettings($0.0), $0.1) } })
        do {
            let filter = try Sandbox.installSupervisor(worker: p.worker, serviceGID: getgid())
            logger.info("supervisor sandbox: \(filter)")
        } catch {
            printError("could not put the supervisor's seccomp filter in place: \(error); s7commd does not run without it.\nNothing was started.")
            throw ExitCode(StartFailure.sandbox.rawValue)
        }
        let status = try SupervisorLoop(setup: setup, plan: plan).run()
        removeSockets(p)
        logger.info("stopped")
        return status
    }

    /// The metrics sockets the worker serves: the TCP port and the Unix socket, both bound in `prepare()`.
    func metricsListeners(_ p: Prepared) -> (fds: [SystemPackage.FileDescriptor], places: [String]) {
        guard p.settings.metrics.enabled else { return ([], []) }
        var fds: [SystemPackage.FileDescriptor] = []
        var places: [String] = []
        if let tcp = p.metricsListener, let endpoint = p.settings.metrics.tcpEndpoint {
            fds.append(tcp)
            places.append(endpoint)
        }
        if let unix = p.metricsSocket {
            fds.append(unix)
            places.append("unix:\(metricsSocketPath)")
        }
        if !places.isEmpty { p.logger.info("metrics (Prometheus text format) at \(places.joined(separator: " and "))") }
        return (fds, places)
    }

    /// --single-process: the server and the memory in this process (for debugging and
    /// comparison), with the same dropped privileges.
    func serveHere(_ p: Prepared) async throws {
        let logger = p.logger
        let live = LiveConfiguration(p)
        defer { live.files.remove() }
        let signals = SignalWaiter([SIGTERM, SIGINT, SIGHUP])
        let (metrics, _) = metricsListeners(p)
        let settings = p.settings
        let memory = try FlatMemory(settings.memory)
        var server: S7Server?
        if p.listener != nil || !metrics.isEmpty {
            let worker = WorkerSettings(settings)
            server = S7Server(settings: worker.server, session: worker.session(clock: localClock),
                              memory: memory, logger: logger, threads: threadCount, metrics: metrics.isEmpty ? nil : ServerMetrics())
        }
        if let fd = p.listener, let server {
            let bound = try await server.start(listeningOn: fd.rawValue)
            logger.info("listening on \(settings.server.endpoint) (bound \(bound.map { "\($0)" } ?? "?")) in one process, max \(settings.server.maxClients) clients, PDU up to \(settings.server.pduSize) bytes")
        }
        for fd in metrics { try await server?.startMetrics(listeningOn: fd.rawValue) }
        while true {
            let signal = await signals.wait()
            guard signal == SIGHUP else {
                logger.info("received \(signalName(signal)), closing \(server?.connectedClients ?? 0) client connection(s) and stopping")
                break
            }
            if let (updated, line) = live.reload(path: p.path, logger: logger) {
                let worker = WorkerSettings(updated)
                server?.apply(settings: worker.server, session: worker.session(clock: localClock))
                logger.notice("\(line)")
            }
        }
        await server?.shutdown()
        withExtendedLifetime(memory) {}
        removeSockets(p)
        logger.info("stopped")
    }

    /// Removes the local sockets this start bound (where the directory lets this, now
    /// unprivileged, process; LocalSocket.remove leaves anything that is not a socket).
    func removeSockets(_ p: Prepared) {
        let bound = [(p.controlSocket, runtimeDirectory + "/control.sock"), (p.memorySocket, memorySocketPath),
                     (p.metricsSocket, metricsSocketPath)]
        for (socket, path) in bound where socket != nil { try? LocalSocket.remove(path: path) }
    }
}
