import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import PLCMemory
import S7Config
import S7Server
import S7Session

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve S7 clients in the foreground until SIGTERM or SIGINT; SIGHUP reloads the configuration.")

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

    @Option(help: ArgumentHelp("Where to write the process id, for `s7commd reload`.", valueName: "path"))
    var pidFile: String = PidFile.defaultPath

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "s7commd")

        let path = config ?? (FileManager.default.fileExists(atPath: Self.installedConfiguration) ? Self.installedConfiguration : nil)
        var settings: S7Configuration
        do {
            settings = try path.map { try S7Configuration.loadForHost(path: $0) } ?? S7Configuration.demo()
        } catch let error as ConfigurationError {
            printError(error.description + "\nNothing was started.")
            throw ExitCode(2)
        }
        let source = path ?? "the built-in demo configuration (no --config given and \(Self.installedConfiguration) does not exist)"

        let memory: FlatMemory
        do {
            memory = try FlatMemory(settings.memory)
        } catch {
            printError("configuration \(source) cannot be laid out in memory: \(error)\nNothing was started.")
            throw ExitCode(2)
        }
        logger.info("s7commd \(S7CommdVersion.current) serving \(source)")
        for warning in settings.warnings { logger.warning("configuration: \(warning)") }
        let tables = ImageTable.allCases.reduce(0) { $0 + $1.byteSize }
        logger.info("PLC memory: \(settings.memory.dataBlocks.count) data block(s) in one region of \(memory.layout.totalSize) bytes (\(tables) of them the PLC image tables that mappings view)")

        let signals = SignalWaiter([SIGTERM, SIGINT, SIGHUP])
        var server: S7Server?
        if settings.server.enabled {
            let fd: CInt
            do {
                fd = try ListeningSocket.open(address: settings.server.bindAddress, port: settings.server.port)
            } catch {
                printError(error.description)
                logger.error("\(error.description)")
                throw ExitCode(3)
            }
            let s = settings.server
            let started = S7Server(settings: serverSettings(settings), session: settings.sessionConfiguration(clock: localClock),
                                   memory: memory, logger: logger, threads: threads ?? max(1, System.coreCount / 2))
            let bound = try await started.start(listeningOn: fd)
            server = started
            logger.info("listening on \(s.endpoint) (bound \(bound.map { "\($0)" } ?? "?")), max \(s.maxClients) clients, PDU up to \(s.pduSize) bytes; clients connect to this host's IP, port \(s.port), any rack/slot")
        } else {
            logger.notice("server.enabled is false: the server is disabled and no listener is opened; PLC memory and all settings are kept. Set server.enabled to true (s7commd config set server.enabled true) and restart to serve clients.")
        }
        let pid = PidFile(path: pidFile, logger: logger)
        let statePath = RuntimeState.path(forPidFile: pidFile)
        var state = RuntimeState(pid: getpid(), version: S7CommdVersion.current, configuration: path, startedAt: Date(),
                                 enabled: settings.server.enabled, endpoint: settings.server.endpoint,
                                 listening: server != nil, settings: settings.shownSettings(), lastReload: nil)
        state.write(to: statePath)

        while true {
            let signal = await signals.wait()
            guard signal == SIGHUP else {
                logger.info("received \(signalName(signal)), closing \(server?.connectedClients ?? 0) client connection(s) and stopping")
                break
            }
            guard let path else {
                logger.notice("received SIGHUP: the built-in demo configuration has no file to reload")
                continue
            }
            do {
                let updated = try S7Configuration.loadForHost(path: path)
                let (live, restart) = settings.changes(to: updated)
                server?.apply(settings: serverSettings(updated), session: updated.sessionConfiguration(clock: localClock))
                for warning in updated.warnings { logger.warning("configuration: \(warning)") }
                var kept = settings
                kept.server.maxClients = updated.server.maxClients
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
                state.write(to: statePath)
                logger.notice("reloaded \(path): \(live.isEmpty ? "no live setting changed" : "applied " + live.joined(separator: ", ") + " (to connections opened from now on)")\(restart.isEmpty ? "" : "; restart needed for " + restart.joined(separator: ", "))")
            } catch let error as ConfigurationError {
                logger.error("reload refused, the running configuration is unchanged: \(error.description)")
            }
        }
        await server?.shutdown()
        if RuntimeState.read(from: statePath)?.pid == getpid() { unlink(statePath) }
        pid.remove()
        withExtendedLifetime(memory) {}
        logger.info("stopped")
    }

    func serverSettings(_ c: S7Configuration) -> ServerSettings {
        let s = c.server
        return ServerSettings(
            maxClients: s.maxClients, sendTimeout: .milliseconds(Int64(s.sendTimeoutMs)),
            receiveTimeout: .milliseconds(Int64(s.recvTimeoutMs)), idleTimeout: .milliseconds(Int64(s.pingTimeoutMs)),
            logConnections: c.logging.logConnections, logErrors: c.logging.logErrors)
    }
}

/// The process id of a running `s7commd run`, for `s7commd reload`.
struct PidFile {
    static var defaultPath: String {
        if getuid() == 0 { return "/run/s7commd/s7commd.pid" }
        if let runtime = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { return runtime + "/s7commd.pid" }
        return "/tmp/s7commd-\(getuid()).pid"
    }

    let path: String

    init(path: String, logger: Logger) {
        self.path = path
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if !FileManager.default.createFile(atPath: path, contents: Data("\(getpid())\n".utf8)) {
            logger.warning("cannot write the pid file \(path); `s7commd reload` will need --pid-file or kill -HUP \(getpid())")
        }
    }

    func remove() {
        if let text = try? String(contentsOfFile: path, encoding: .utf8), Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) == getpid() {
            unlink(path)
        }
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the running s7commd re-read its configuration file (sends SIGHUP).",
        discussion: "Settings marked live in `s7commd config show` take effect for connections opened afterwards; the log of the running server lists what was applied and what needs a restart.")

    @Option(help: ArgumentHelp("The pid file the running server wrote.", valueName: "path"))
    var pidFile: String = PidFile.defaultPath

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
