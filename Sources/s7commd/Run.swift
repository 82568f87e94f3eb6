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
        abstract: "Serve S7 clients in the foreground until SIGTERM or SIGINT.")

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

        let settings: S7Configuration
        let source: String
        do {
            if let path = config {
                settings = try S7Configuration.load(path: path)
                source = path
            } else if FileManager.default.fileExists(atPath: Self.installedConfiguration) {
                settings = try S7Configuration.load(path: Self.installedConfiguration)
                source = Self.installedConfiguration
            } else {
                settings = try S7Configuration.demo()
                source = "the built-in demo configuration (no --config given and \(Self.installedConfiguration) does not exist)"
            }
        } catch let error as ConfigurationError {
            printError(error.description)
            throw ExitCode(2)
        }

        let memory: FlatMemory
        do {
            memory = try FlatMemory(settings.memory)
        } catch {
            printError("configuration \(source) cannot be laid out in memory: \(error)")
            throw ExitCode(2)
        }
        logger.info("s7commd \(S7CommdVersion.current) serving \(source)")
        let tables = ImageTable.allCases.reduce(0) { $0 + $1.byteSize }
        logger.info("PLC memory: \(settings.memory.dataBlocks.count) data block(s) in one region of \(memory.layout.totalSize) bytes (\(tables) of them the PLC image tables that mappings view)")

        let signals = SignalWaiter([SIGTERM, SIGINT])
        guard settings.server.enabled else {
            logger.notice("server.enabled is false: no listener is opened; PLC memory and all settings are kept. Set server.enabled to true and restart to serve clients.")
            let signal = await signals.wait()
            logger.info("received \(signalName(signal)), stopping")
            return
        }

        let fd: CInt
        do {
            fd = try ListeningSocket.open(address: settings.server.bindAddress, port: settings.server.port)
        } catch {
            printError(error.description)
            logger.error("\(error.description)")
            throw ExitCode(3)
        }

        let s = settings.server
        let server = S7Server(
            settings: ServerSettings(
                maxClients: s.maxClients, sendTimeout: .milliseconds(Int64(s.sendTimeoutMs)),
                receiveTimeout: .milliseconds(Int64(s.recvTimeoutMs)), idleTimeout: .milliseconds(Int64(s.pingTimeoutMs)),
                logConnections: settings.logging.logConnections, logErrors: settings.logging.logErrors),
            session: settings.sessionConfiguration(clock: localClock),
            memory: memory, logger: logger, threads: threads ?? max(1, System.coreCount / 2))
        let bound = try await server.start(listeningOn: fd)
        logger.info("listening on \(s.endpoint) (bound \(bound.map { "\($0)" } ?? "?")), max \(s.maxClients) clients, PDU up to \(s.pduSize) bytes; clients connect to this host's IP, port \(s.port), any rack/slot")

        let signal = await signals.wait()
        logger.info("received \(signalName(signal)), closing \(server.connectedClients) client connection(s) and stopping")
        await server.shutdown()
        withExtendedLifetime(memory) {}
        logger.info("stopped")
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

/// Turns the given signals into one awaitable event.
final class SignalWaiter: @unchecked Sendable {
    private var sources: [any DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "s7commd.signals")
    private var continuation: CheckedContinuation<CInt, Never>?
    private var received: CInt?

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
        } else if received == nil {
            received = sig
        }
    }

    func wait() async -> CInt {
        await withCheckedContinuation { c in
            queue.async {
                if let r = self.received {
                    self.received = nil
                    c.resume(returning: r)
                } else {
                    self.continuation = c
                }
            }
        }
    }
}
