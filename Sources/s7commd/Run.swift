import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import PLCMemory
import S7Config
import S7Server
import S7Session
import S7Runtime
import S7Sys
import SystemPackage

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve S7 clients in the foreground until SIGTERM or SIGINT; SIGHUP reloads the configuration.",
        discussion: """
            Binds the listener while it may (root, or CAP_NET_BIND_SERVICE granted by systemd's
            AmbientCapabilities= or a file capability), then drops every capability and, when started as
            root, becomes the service user. It then runs as a small supervisor: an S7 worker serves the
            clients and a memory process owns the PLC memory, both unprivileged, restarted if they die.
            """)

    static let installedConfiguration = "/etc/s7commd/s7commd.json"

    @Option(name: .shortAndLong, help: ArgumentHelp(
        "The configuration file (JSON).",
        discussion: "Default: \(installedConfiguration) if it exists, else the built-in demo configuration.",
        valueName: "path"))
    var config: String?

    @Option(help: ArgumentHelp(
        "Event-loop threads serving clients.",
        discussion: "Default: half the cores, at least one: a request costs microseconds, and the PLC program on the same host needs the rest."))
    var threads: Int?

    @Option(help: ArgumentHelp("Where to write the process id, for `s7commd reload` and `s7commd status`.", valueName: "path"))
    var pidFile: String = RuntimeFiles.defaultPidPath

    @Option(help: ArgumentHelp(
        "Listen on this TCP port instead of server.port (e.g. 1102 when not allowed to bind 102).", valueName: "port"))
    var port: Int?

    @Option(help: ArgumentHelp("Where retained data blocks are saved (retain.bin).", valueName: "directory"))
    var stateDir: String = Run.defaultStateDirectory

    static var defaultStateDirectory: String {
        if getuid() == 0 { return "/var/lib/s7commd" }
        let env = ProcessInfo.processInfo.environment
        if let state = env["STATE_DIRECTORY"], !state.isEmpty { return state }
        if let xdg = env["XDG_STATE_HOME"], !xdg.isEmpty { return xdg + "/s7commd" }
        return (env["HOME"] ?? "/tmp") + "/.local/state/s7commd"
    }

    /// The memory process's socket for `s7commd mem` and PLC programs, beside the pid file.
    var memorySocket: String { URL(fileURLWithPath: pidFile).deletingLastPathComponent().path + "/memory.sock" }

    /// The metrics endpoint's Unix socket (HTTP), beside the pid file, when metrics.enabled.
    var metricsSocket: String { URL(fileURLWithPath: pidFile).deletingLastPathComponent().path + "/metrics.sock" }

    @Option(help: ArgumentHelp("The unprivileged user to become when started as root.", valueName: "name"))
    var user: String = "s7commd"

    @Flag(help: "Serve in this one (equally unprivileged) process instead of the supervisor, worker and memory process (for debugging and comparison).")
    var singleProcess = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    /// Everything decided before the first thread starts: the configuration, the listener,
    /// and the privileges already dropped.
    struct Prepared: @unchecked Sendable {
        var settings: S7Configuration
        var path: String?
        var source: String
        var text: String
        var listener: CInt?
        var metricsListener: CInt?
        var logger: Logger
        var files: RuntimeFiles
    }

    /// The privileged part, single-threaded: load, bind (or adopt systemd's socket), then drop
    /// every capability and, as root, become the service user. Nothing here parses network input.
    func prepare() throws -> Prepared {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LogSetup.bootstrap(level: level)
        let logger = Logger(label: "s7commd")
        let path = config ?? (FileManager.default.fileExists(atPath: Self.installedConfiguration) ? Self.installedConfiguration : nil)
        var settings: S7Configuration
        let text: String
        do {
            if let path {
                settings = try S7Configuration.loadForHost(path: path)
                text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            } else {
                settings = try S7Configuration.demo()
                text = S7Configuration.demoJSON
            }
        } catch let error as ConfigurationError {
            printError(error.description + "\nNothing was started.")
            throw ExitCode(StartFailure.configuration.rawValue)
        }
        if let port {
            guard (1...65535).contains(port) else {
                printError("--port \(port) is not a TCP port (1-65535)\nNothing was started.")
                throw ExitCode(StartFailure.configuration.rawValue)
            }
            settings.server.port = port
        }
        try Self.raiseOpenFilesLimit(maxClients: settings.server.maxClients, logger)
        let source = path ?? "the built-in demo configuration (no --config given and \(Self.installedConfiguration) does not exist)"
        do {
            _ = try PLCMemory.MemoryLayout(settings.memory)
        } catch {
            printError("configuration \(source) cannot be laid out in memory: \(error)\nNothing was started.")
            throw ExitCode(StartFailure.configuration.rawValue)
        }
        logger.info("s7commd \(S7CommdVersion.current) serving \(source)")
        for warning in settings.warnings { logger.warning("configuration: \(warning)") }

        var listener: CInt?
        if settings.server.enabled {
            if let env = ProcessInfo.processInfo.environment["LISTEN_PID"], Int32(env) == getpid(),
               let count = ProcessInfo.processInfo.environment["LISTEN_FDS"].flatMap(Int.init), count >= 1 {
                listener = 3
                logger.info("using the listening socket systemd passed (socket activation); server.bind_address and server.port are the socket unit's")
            } else {
                listener = try Self.listen(settings.server.bindAddress, settings.server.port, setting: "server.port", logger)
            }
        } else {
            logger.notice("server.enabled is false: the server is disabled and no listener is opened; PLC memory and all settings are kept. Set server.enabled to true (s7commd config set server.enabled true) and restart to serve clients.")
        }
        // The metrics port is bound here too, while the process may, so any port works and a
        // conflict is explained like one on server.port.
        var metricsListener: CInt?
        if settings.metrics.enabled, settings.metrics.port != 0 {
            metricsListener = try Self.listen(settings.metrics.bindAddress, settings.metrics.port, setting: "metrics.port", logger)
        }
        let files = RuntimeFiles(pidPath: pidFile, logger: logger)
        try dropPrivileges(logger)
        try? Privileges.setNonDumpable()
        if let layout = try? PLCMemory.MemoryLayout(settings.memory) {
            try StartChecks.stateDirectory(stateDir, layout: layout, user: user, logger: logger)
        }
        try StartChecks.sharedMemory(logger: logger)
        if let path, access(path, R_OK) != 0 {
            logger.warning("\(path) is not readable by uid \(getuid()) now that privileges are dropped, so a reload will fail; make it readable to the service user (e.g. chown root:\(user) and chmod 0640)")
        }
        return Prepared(settings: settings, path: path, source: source, text: text, listener: listener,
                        metricsListener: metricsListener, logger: logger, files: files)
    }

    /// Raises the soft open-files limit to what server.max_clients needs (and, where the hard
    /// limit allows, to what max_clients 1024 would need, so that a reload may raise it), or
    /// stops the start when the hard limit is too low.
    static func raiseOpenFilesLimit(maxClients: Int, _ logger: Logger) throws {
        let needed = OpenFilesLimit.needed(maxClients: maxClients)
        let limits: OpenFilesLimit.Value
        do {
            limits = try OpenFilesLimit.raise(to: OpenFilesLimit.needed(maxClients: ConfigSchema.maximumClients))
        } catch {
            printError("\(error)\nNothing was started.")
            throw ExitCode(StartFailure.descriptors.rawValue)
        }
        guard limits.soft >= needed else {
            printError(openFilesProblem(maxClients: maxClients, limit: limits.hard, which: "hard") + "\nNothing was started.")
            throw ExitCode(StartFailure.descriptors.rawValue)
        }
        logger.debug("open-files limit \(limits.soft) (hard \(limits.hard)); server.max_clients \(maxClients) needs \(needed)")
    }

    /// Why `maxClients` does not fit under an open-files limit, and what to do.
    static func openFilesProblem(maxClients: Int, limit: Int, which: String) -> String {
        let needed = OpenFilesLimit.needed(maxClients: maxClients)
        return "server.max_clients \(maxClients) needs up to \(needed) open descriptors (one per client and \(OpenFilesLimit.reserve) for s7commd itself), but the \(which) open-files limit (RLIMIT_NOFILE) is \(limit): raise it to at least \(needed) (LimitNOFILE=\(needed) in the systemd unit, or `ulimit -Hn \(needed)` as root before starting) or lower server.max_clients"
    }

    /// Binds a listening TCP socket, or explains on stderr and in the log why it could not:
    /// who holds the port, which capability is missing, which addresses the host has.
    static func listen(_ address: String, _ port: Int, setting: String, _ logger: Logger) throws -> CInt {
        do {
            return try ListeningSocket.open(address: address, port: port)
        } catch {
            let detail: String
            let status: StartFailure
            switch error.errno {
            case EADDRINUSE: (detail, status) = (PortHolders.explain(port: port, setting: setting), .portInUse)
            case EACCES: (detail, status) = (CapabilityReport.current(), .permission)
            case EADDRNOTAVAIL: (detail, status) = ("", .addressNotAvailable)
            default: (detail, status) = ("", .permission)
            }
            let what = setting == "server.port" ? "" : " (\(setting))"
            printError(error.description + what + (detail.isEmpty ? "" : "\n" + detail) + "\nNothing was started.")
            logger.error("\(error.description)\(what) \(detail)")
            throw ExitCode(status.rawValue)
        }
    }

    /// Drops every capability from every set; as root, becomes the service user first.
    func dropPrivileges(_ logger: Logger) throws {
        let runtimeDirectory = URL(fileURLWithPath: pidFile).deletingLastPathComponent().path
        if geteuid() == 0 {
            var target: ServiceUser
            do {
                target = try ServiceUser.lookup(name: user)
            } catch {
                guard let nobody = try? ServiceUser.lookup(name: "nobody") else {
                    printError("\(error)\nNothing was started.")
                    throw ExitCode(StartFailure.privileges.rawValue)
                }
                target = nobody
                logger.warning("the service user '\(user)' does not exist, so the supervisor and its children run as 'nobody' (uid \(nobody.uid)); create the proper one with: adduser --system --group --no-create-home \(user)")
            }
            for directory in [runtimeDirectory, stateDir] {
                try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                _ = chown(directory, target.uid, target.gid)
            }
            Privileges.demote(toUID: target.uid, gid: target.gid)
            logger.info("dropped every capability and became \(target.name) (uid \(target.uid), gid \(target.gid))")
        } else {
            do {
                let boundingDropped = try Privileges.dropAllCapabilities()
                try Privileges.setNoNewPrivileges()
                if !boundingDropped {
                    let bounding = (try? Capabilities.current().bounding).map { String($0, radix: 16) } ?? "?"
                    logger.notice("the capability bounding set stays \(bounding): emptying it needs CAP_SETPCAP beside CAP_NET_BIND_SERVICE (the packaged unit grants both); no-new-privileges keeps every child from gaining any of it")
                }
            } catch {
                printError("could not drop capabilities: \(error)\nNothing was started.")
                throw ExitCode(StartFailure.privileges.rawValue)
            }
            let status = try Capabilities.current()
            guard status.effective == 0, status.permitted == 0, status.inheritable == 0, status.ambient == 0 else {
                printError("capabilities remain after dropping them (CapEff \(String(status.effective, radix: 16))); nothing was started")
                throw ExitCode(StartFailure.privileges.rawValue)
            }
            logger.info("dropped every capability (running as uid \(getuid()))")
        }
    }

    /// The unprivileged part: supervise the children (or, with --single-process, serve here).
    func serve(_ p: Prepared) async throws {
        let logger = p.logger
        let signals = SignalWaiter([SIGTERM, SIGINT, SIGHUP])
        let files = p.files
        var settings = p.settings
        var state = RuntimeState(pid: getpid(), version: S7CommdVersion.current, configuration: p.path, startedAt: Date(),
                                 enabled: settings.server.enabled, endpoint: settings.server.endpoint,
                                 listening: p.listener != nil, settings: settings.shownSettings(), lastReload: nil)
        files.publish(state)
        defer { files.remove() }
        let threadCount = threads ?? max(1, System.coreCount / 2)
        let (metricsListeners, metricsPlaces) = openMetrics(p)
        defer { if settings.metrics.enabled { unlink(metricsSocket) } }

        /// Re-reads the file on SIGHUP: the new text for the children and a line for the log.
        let reloadFile: () -> (String, String)? = {
            guard let path = p.path else {
                logger.notice("received SIGHUP: the built-in demo configuration has no file to reload")
                return nil
            }
            do {
                let updated = try S7Configuration.loadForHost(path: path)
                if let limits = try? OpenFilesLimit.current(), limits.soft < OpenFilesLimit.needed(maxClients: updated.server.maxClients) {
                    logger.error("reload refused, the running configuration is unchanged: \(Self.openFilesProblem(maxClients: updated.server.maxClients, limit: limits.soft, which: "soft"))")
                    return nil
                }
                let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? p.text
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
                return (text, "reloaded \(path): \(live.isEmpty ? "no live setting changed" : "applied " + live.joined(separator: ", ") + " (to connections opened from now on)")\(restart.isEmpty ? "" : "; restart needed for " + restart.joined(separator: ", "))")
            } catch {
                logger.error("reload refused, the running configuration is unchanged: \(error)")
                return nil
            }
        }

        if singleProcess {
            try await serveHere(p, settings: settings, signals: signals, threads: threadCount, metrics: metricsListeners, reload: reloadFile) { updated in
                settings = updated
            }
            return
        }
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let supervisor = Supervisor(
            executable: executable, childArguments: ["--log-level", logLevel, "--threads", String(threadCount)],
            memoryArguments: ["--state-dir", stateDir, "--socket", memorySocket],
            configuration: p.text, listening: p.listener.map { SystemPackage.FileDescriptor(rawValue: $0) },
            metricsListeners: metricsListeners.map { SystemPackage.FileDescriptor(rawValue: $0) }, metricsEndpoints: metricsPlaces, logger: logger,
            endpoint: settings.server.endpoint,
            controlSocket: StatusClient.socketPath(runtimeDirectory: URL(fileURLWithPath: pidFile).deletingLastPathComponent().path),
            reload: reloadFile)
        let forward = Task {
            while true {
                let signal = await signals.wait()
                if signal != SIGHUP { logger.info("received \(signalName(signal)), stopping the worker and the memory process") }
                supervisor.deliver(signal: signal)
            }
        }
        let status = await supervisor.run()
        forward.cancel()
        logger.info("stopped")
        if status != 0 { throw ExitCode(status) }
    }

    /// The metrics sockets the worker serves: the TCP port bound in `prepare()`, and the Unix
    /// socket, made now that privileges are dropped so it belongs to the service user.
    private func openMetrics(_ p: Prepared) -> (fds: [CInt], places: [String]) {
        guard p.settings.metrics.enabled else { return ([], []) }
        var fds = p.metricsListener.map { [$0] } ?? []
        var places = p.settings.metrics.tcpEndpoint.map { [$0] } ?? []
        do {
            fds.append(try LocalSocket.listen(path: metricsSocket, mode: 0o660, kind: .stream).rawValue)
            places.append("unix:\(metricsSocket)")
        } catch {
            p.logger.error("metrics: \(error); metrics are served \(places.first.map { "only on " + $0 } ?? "nowhere")")
        }
        if !places.isEmpty { p.logger.info("metrics (Prometheus text format) at \(places.joined(separator: " and "))") }
        return (fds, places)
    }

    /// --single-process: the server and the memory in this process, as before privilege separation.
    private func serveHere(_ p: Prepared, settings: S7Configuration, signals: SignalWaiter, threads: Int, metrics: [CInt],
                           reload: () -> (String, String)?, updated: (S7Configuration) -> Void) async throws {
        let logger = p.logger
        let memory = try FlatMemory(settings.memory)
        var server: S7Server?
        if p.listener != nil || !metrics.isEmpty {
            server = S7Server(settings: WorkerRole.serverSettings(settings), session: settings.sessionConfiguration(clock: localClock),
                              memory: memory, logger: logger, threads: threads, metrics: metrics.isEmpty ? nil : ServerMetrics())
        }
        if let fd = p.listener, let server {
            let bound = try await server.start(listeningOn: fd)
            logger.info("listening on \(settings.server.endpoint) (bound \(bound.map { "\($0)" } ?? "?")) in one process, max \(settings.server.maxClients) clients, PDU up to \(settings.server.pduSize) bytes")
        }
        for fd in metrics { try await server?.startMetrics(listeningOn: fd) }
        while true {
            let signal = await signals.wait()
            guard signal == SIGHUP else {
                logger.info("received \(signalName(signal)), closing \(server?.connectedClients ?? 0) client connection(s) and stopping")
                break
            }
            if let (text, line) = reload(), let c = try? S7Configuration.parse(Data(text.utf8)) {
                server?.apply(settings: WorkerRole.serverSettings(c), session: c.sessionConfiguration(clock: localClock))
                updated(c)
                logger.notice("\(line)")
            }
        }
        await server?.shutdown()
        withExtendedLifetime(memory) {}
        logger.info("stopped")
    }
}

/// What the process may do about binding, for the "permission denied" error.
enum CapabilityReport {
    static func current() -> String {
        guard let s = try? Capabilities.current() else { return "" }
        let bind: UInt64 = 1 << 10
        let start = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_unprivileged_port_start", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        return "This process runs as uid \(getuid()) with CapEff \(String(format: "%016llx", s.effective)) (CAP_NET_BIND_SERVICE \(s.effective & bind != 0 ? "held" : "not held")); net.ipv4.ip_unprivileged_port_start is \(start)."
    }
}

/// The pid file and the state file of a running `s7commd run`, opened before privileges are
/// dropped and kept open, so the unprivileged supervisor can still update them wherever they are.
final class RuntimeFiles: @unchecked Sendable {
    static var defaultPidPath: String {
        if getuid() == 0 { return "/run/s7commd/s7commd.pid" }
        if let runtime = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { return runtime + "/s7commd.pid" }
        if let runtime = ProcessInfo.processInfo.environment["RUNTIME_DIRECTORY"], !runtime.isEmpty { return runtime + "/s7commd.pid" }
        return "/tmp/s7commd-\(getuid())/s7commd.pid"
    }

    let pidPath: String
    let statePath: String
    private let pidFD: CInt
    private let stateFD: CInt

    init(pidPath: String, logger: Logger) {
        self.pidPath = pidPath
        statePath = RuntimeState.path(forPidFile: pidPath)
        let directory = URL(fileURLWithPath: pidPath).deletingLastPathComponent().path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        pidFD = open(pidPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        stateFD = open(statePath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if pidFD < 0 || stateFD < 0 {
            logger.warning("cannot write \(pidFD < 0 ? pidPath : statePath): \(String(cString: strerror(errno))); `s7commd reload` and `status` will need --pid-file, or use kill -HUP \(getpid())")
        }
        Self.replace(pidFD, with: Data("\(getpid())\n".utf8))
    }

    func publish(_ state: RuntimeState) {
        Self.replace(stateFD, with: state.encoded())
    }

    /// Empties both files (and removes them where the directory allows it) at a clean stop.
    func remove() {
        Self.replace(stateFD, with: Data())
        Self.replace(pidFD, with: Data())
        unlink(statePath)
        unlink(pidPath)
        close(stateFD)
        close(pidFD)
    }

    private static func replace(_ fd: CInt, with data: Data) {
        guard fd >= 0 else { return }
        _ = ftruncate(fd, 0)
        _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the running s7commd re-read its configuration file (sends SIGHUP).",
        discussion: "Settings marked live in `s7commd config show` take effect for connections opened afterwards; the log of the running server lists what was applied and what needs a restart.")

    @Option(help: ArgumentHelp("The pid file the running server wrote.", valueName: "path"))
    var pidFile: String = RuntimeFiles.defaultPidPath

    func run() throws {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            printError("no running s7commd found: cannot read \(pidFile). Is `s7commd run` running? If it was started with --pid-file, pass the same path.")
            throw ExitCode(1)
        }
        let cmdline = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))).map { String(decoding: $0, as: UTF8.self) } ?? ""
        guard cmdline.contains("s7commd") else {
            printError("process \(pid) named in \(pidFile) is not s7commd (it has exited); nothing was sent")
            throw ExitCode(1)
        }
        guard kill(pid, SIGHUP) == 0 else {
            printError("cannot signal s7commd (pid \(pid)): \(String(cString: strerror(errno))); run as the same user or root")
            throw ExitCode(1)
        }
        print("sent SIGHUP to s7commd (pid \(pid)); its log lists what was applied and what needs a restart")
    }
}

/// The host's local time as the CPU clock.
@Sendable func localClock() -> PLCDateTime {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    var t = tm()
    var seconds = ts.tv_sec
    localtime_r(&seconds, &t)
    return PLCDateTime(year: Int(t.tm_year) + 1900, month: Int(t.tm_mon) + 1, day: Int(t.tm_mday),
                       hour: Int(t.tm_hour), minute: Int(t.tm_min), second: Int(t.tm_sec),
                       millisecond: Int(ts.tv_nsec / 1_000_000), weekday: Int(t.tm_wday) + 1)
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data(("s7commd: " + text + "\n").utf8))
}

func signalName(_ signal: CInt) -> String {
    switch signal {
    case SIGTERM: return "SIGTERM"
    case SIGINT: return "SIGINT"
    case SIGHUP: return "SIGHUP"
    default: return "signal \(signal)"
    }
}

/// Turns the given signals into awaitable events, queued in arrival order.
final class SignalWaiter: @unchecked Sendable {
    private var sources: [any DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "s7commd.signals")
    private var continuation: CheckedContinuation<CInt, Never>?
    private var received: [CInt] = []

    init(_ signals: [CInt]) {
        for sig in signals {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { [weak self] in self?.fire(sig) }
            source.resume()
            sources.append(source)
        }
    }

    private func fire(_ sig: CInt) {
        if let c = continuation {
            continuation = nil
            c.resume(returning: sig)
        } else {
            received.append(sig)
        }
    }

    func wait() async -> CInt {
        await withCheckedContinuation { c in
            queue.async {
                if !self.received.isEmpty {
                    c.resume(returning: self.received.removeFirst())
                } else {
                    self.continuation = c
                }
            }
        }
    }
}
