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

    @Option(help: ArgumentHelp("The user the S7 worker runs as, when s7commd is started as root or holds CAP_SETUID, CAP_SETGID and CAP_KILL (the packaged unit): it owns no file and no directory.", valueName: "name"))
    var workerUser: String = "s7commd-worker"

    @Flag(help: "Serve in this one (equally unprivileged) process instead of the supervisor, worker and memory process (for debugging and comparison).")
    var singleProcess = false

    /// Tests only: the program spawned in place of the S7 worker (a fake child that breaks the
    /// protocol, to show the supervisor kills and restarts it). It runs exactly as the worker
    /// would: unprivileged, with the worker's descriptors.
    @Option(help: .hidden)
    var workerProgram: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    /// Everything decided before the first thread starts: the configuration (read and
    /// validated once), the listeners and sockets, the files, and the privileges already dropped.
    struct Prepared: @unchecked Sendable {
        var settings: S7Configuration
        var path: String?
        var source: String
        var listener: SystemPackage.FileDescriptor?
        var metricsListener: SystemPackage.FileDescriptor?
        var metricsSocket: SystemPackage.FileDescriptor?
        var controlSocket: SystemPackage.FileDescriptor?
        var memorySocket: SystemPackage.FileDescriptor?
        /// Whether any region is retained (then the memory process keeps retain.bin in --state-dir).
        var retains: Bool
        /// Whom control.sock and memory.sock trust besides root: the service user and its group.
        var service: (uid: uid_t, gid: gid_t)
        /// The S7 worker's own user; nil: it runs as the service user (no CAP_SETUID/CAP_SETGID to start it as another).
        var worker: Spawn.Identity?
        var logger: Logger
        var files: RuntimeFiles
    }

    /// The privileged part, single-threaded: load, bind (or adopt systemd's socket), create
    /// the runtime files safely, then drop every capability and, as root, become the service
    /// user. Nothing here parses network input.
    func prepare() throws -> Prepared {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LogSetup.bootstrap(level: level)
        let logger = Logger(label: "s7commd")
        let path = config ?? (FileManager.default.fileExists(atPath: Self.installedConfiguration) ? Self.installedConfiguration : nil)
        var settings: S7Configuration
        do {
            settings = try path.map { try S7Configuration.loadForHost(path: $0) } ?? S7Configuration.demo()
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
        let layout: PLCMemory.MemoryLayout
        do {
            layout = try PLCMemory.MemoryLayout(settings.memory)
        } catch {
            printError("configuration \(source) cannot be laid out in memory: \(error)\nNothing was started.")
            throw ExitCode(StartFailure.configuration.rawValue)
        }
        if let program = workerProgram, !program.hasPrefix("/") {
            printError("--worker-program \(program) must be an absolute path\nNothing was started.")
            throw ExitCode(StartFailure.configuration.rawValue)
        }
        // As root, the service user must exist before anything is bound or created.
        let service = try serviceIdentity()
        let worker = singleProcess ? nil : try workerIdentity(service: service, logger)
        logger.info("s7commd \(S7CommdVersion.current) serving \(source)")
        for warning in settings.warnings { logger.warning("configuration: \(warning)") }

        var listener: SystemPackage.FileDescriptor?
        if settings.server.enabled {
            if let env = ProcessInfo.processInfo.environment["LISTEN_PID"], Int32(env) == getpid(),
               let count = ProcessInfo.processInfo.environment["LISTEN_FDS"].flatMap(Int.init), count >= 1 {
                listener = SystemPackage.FileDescriptor(rawValue: 3)
                logger.info("using the listening socket systemd passed (socket activation); server.bind_address and server.port are the socket unit's")
            } else {
                listener = try Self.listen(settings.server.bindAddress, settings.server.port, setting: "server.port", logger)
            }
        } else {
            logger.notice("server.enabled is false: the server is disabled and no listener is opened; PLC memory and all settings are kept. Set server.enabled to true (s7commd config set server.enabled true) and restart to serve clients.")
        }
        // The metrics port is bound here too, while the process may, so any port works and a
        // conflict is explained like one on server.port.
        var metricsListener: SystemPackage.FileDescriptor?
        if settings.metrics.enabled, settings.metrics.port != 0 {
            metricsListener = try Self.listen(settings.metrics.bindAddress, settings.metrics.port, setting: "metrics.port", logger)
        }
        let runtime = try StartChecks.runtimeDirectory(runtimeDirectory, service: service, logger: logger)
        let files = try RuntimeFiles(pidPath: pidFile, logger: logger)
        // The local sockets are bound now, before the drop, so they may live in a directory
        // only root can write; the service group may connect.
        let group = geteuid() == 0 ? service.gid : nil
        let controlSocket = singleProcess ? nil
            : Self.localSocket(runtime + "/control.sock", group: group, what: "`s7commd status` will show only what the state file holds", logger)
        let memorySocket = singleProcess ? nil
            : Self.localSocket(memorySocketPath, group: group, what: "`s7commd mem` and PLC programs cannot attach", logger)
        let metricsSocket = settings.metrics.enabled
            ? Self.localSocket(metricsSocketPath, group: group, kind: .stream, what: "metrics are not served on the Unix socket", logger) : nil
        // --single-process keeps PLC memory in the process and retains nothing.
        let retains = !RetainStore.retained(layout).isEmpty
        if !singleProcess, retains {
            try StartChecks.stateDirectory(stateDir, layout: layout, service: service, user: user, logger: logger)
        }
        try dropPrivileges(service, keepingSetID: worker != nil, logger)
        do {
            try Privileges.setNonDumpable()
        } catch {
            printError("\(error): another process of the service user could then read this one's memory.\nNothing was started.")
            throw ExitCode(StartFailure.privileges.rawValue)
        }
        try StartChecks.sharedMemory(logger: logger)
        if let path, access(path, R_OK) != 0 {
            logger.warning("\(path) is not readable by uid \(getuid()) now that privileges are dropped, so a reload will fail; make it readable to the service user (e.g. chown root:\(user) and chmod 0640)")
        }
        return Prepared(settings: settings, path: path, source: source, listener: listener, metricsListener: metricsListener,
                        metricsSocket: metricsSocket, controlSocket: controlSocket, memorySocket: memorySocket,
                        retains: retains, service: service, worker: worker, logger: logger, files: files)
    }

    /// The pid file's directory: control.sock, memory.sock and metrics.sock live there.
    var runtimeDirectory: String { URL(fileURLWithPath: pidFile).deletingLastPathComponent().path }
    /// The memory process's socket for `s7commd mem` and PLC programs, beside the pid file.
    var memorySocketPath: String { runtimeDirectory + "/memory.sock" }
    /// The metrics endpoint's Unix socket (HTTP), beside the pid file, when metrics.enabled.
    var metricsSocketPath: String { runtimeDirectory + "/metrics.sock" }

    /// The user the processes run as: as root, the service user (which must exist and must not
    /// be root); otherwise this process's own user.
    func serviceIdentity() throws -> (uid: uid_t, gid: gid_t) {
        guard geteuid() == 0 else { return (getuid(), getgid()) }
        do {
            let target = try ServiceUser.lookup(name: user)
            guard target.uid != 0, target.gid != 0 else {
                printError("--user \(user) is root (uid \(target.uid), gid \(target.gid)); s7commd started as root runs as an unprivileged service user. Create one with: adduser --system --group --no-create-home s7commd\nNothing was started.")
                throw ExitCode(StartFailure.privileges.rawValue)
            }
            return (target.uid, target.gid)
        } catch let error as ServiceUserError {
            printError("s7commd was started as root, so it must become the unprivileged service user '\(user)', and \(error). It never falls back to another user. Or pass --user with an existing unprivileged user.\nNothing was started.")
            throw ExitCode(StartFailure.privileges.rawValue)
        }
    }

    /// The S7 worker's own user (`--worker-user`), when this start can give it one: as root, or
    /// holding CAP_SETUID, CAP_SETGID and CAP_KILL (systemd's AmbientCapabilities=). It must exist, must not
    /// be root and must not be the service user; there is no fallback (exit 6). Without either,
    /// the worker runs as the service user and its sandbox alone separates it (one line says so).
    func workerIdentity(service: (uid: uid_t, gid: gid_t), _ logger: Logger) throws -> Spawn.Identity? {
        let effective = (try? Capabilities.current().effective) ?? 0
        let setID = Capabilities.bit(Capabilities.setUID) | Capabilities.bit(Capabilities.setGID) | Capabilities.bit(Capabilities.kill)
        guard geteuid() == 0 || effective & setID == setID else {
            logger.notice("the S7 worker runs as uid \(getuid()) like the other processes: starting it as --worker-user \(workerUser) needs root or CAP_SETUID, CAP_SETGID and CAP_KILL (the packaged unit has them); its sandbox still holds")
            return nil
        }
        do {
            let target = try ServiceUser.lookup(name: workerUser)
            guard target.uid != 0, target.gid != 0, target.uid != service.uid, target.gid != service.gid else {
                printError("--worker-user \(workerUser) (uid \(target.uid), gid \(target.gid)) must be an unprivileged user and group of its own, neither root nor the service user's. Create one with: adduser --system --group --no-create-home --home /nonexistent s7commd-worker\nNothing was started.")
                throw ExitCode(StartFailure.privileges.rawValue)
            }
            // Exec'd with the service group as its real gid: a secure exec, non-dumpable from its
            // first instruction; the worker evens its gids first thing.
            return Spawn.Identity(uid: target.uid, gid: target.gid, execRealGID: service.gid)
        } catch let error as ServiceUserError {
            printError("s7commd runs its S7 worker as a user of its own, '\(workerUser)', and \(error). It never falls back to another user. Or pass --worker-user with an existing unprivileged user.\nNothing was started.")
            throw ExitCode(StartFailure.privileges.rawValue)
        }
    }

    /// Binds a local socket for the supervisor or the memory process; a failure is logged and
    /// the feature is off (the server still serves).
    static func localSocket(_ path: String, group: gid_t?, kind: LocalSocket.Kind = .seqpacket, what: String,
                            _ logger: Logger) -> SystemPackage.FileDescriptor? {
        do {
            return try LocalSocket.listen(path: path, mode: 0o660, kind: kind, group: group)
        } catch {
            logger.error("\(error); \(what)")
            return nil
        }
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
    static func listen(_ address: String, _ port: Int, setting: String, _ logger: Logger) throws -> SystemPackage.FileDescriptor {
        do {
            return try TCPListener.open(address: address, port: port)
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

    /// Drops every capability from every set (but CAP_SETUID, CAP_SETGID and CAP_KILL with
    /// `keepingSetID`, to start the worker as its own user and to kill it); as root, becomes
    /// the service user.
    func dropPrivileges(_ service: (uid: uid_t, gid: gid_t), keepingSetID: Bool, _ logger: Logger) throws {
        let kept: Set<Int> = keepingSetID ? [Capabilities.setUID, Capabilities.setGID, Capabilities.kill] : []
        let keptWords = keepingSetID ? " but CAP_SETUID, CAP_SETGID and CAP_KILL (to start the S7 worker as \(workerUser), and to stop it)" : ""
        if geteuid() == 0 {
            if keepingSetID {
                Privileges.demote(toUID: service.uid, gid: service.gid, keeping: kept)
            } else {
                Privileges.demote(toUID: service.uid, gid: service.gid)
            }
            logger.info("dropped every capability\(keptWords) and became \(user) (uid \(service.uid), gid \(service.gid))")
            return
        }
        do {
            let boundingDropped = keepingSetID ? try Privileges.dropAllCapabilities(keeping: kept) : try Privileges.dropAllCapabilities()
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
        let keptBits = kept.reduce(UInt64(0)) { $0 | Capabilities.bit($1) }
        guard status.effective == keptBits, status.permitted == keptBits, status.inheritable == 0, status.ambient == 0 else {
            printError("capabilities remain after dropping them (CapEff \(String(status.effective, radix: 16))); nothing was started")
            throw ExitCode(StartFailure.privileges.rawValue)
        }
        logger.info("dropped every capability\(keptWords) (running as uid \(getuid()))")
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
        do {
            try ProcessSignal.send(SIGHUP, to: pid)
        } catch let error as SystemCallError {
            printError("cannot signal s7commd (pid \(pid)): \(String(cString: strerror(error.errno.rawValue))); run as the same user or root")
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
