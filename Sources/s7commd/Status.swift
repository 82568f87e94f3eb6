import ArgumentParser
import Foundation
import S7Config
import S7Runtime
import S7Server
import S7Session
import S7Sys

/// What a running `s7commd run` publishes next to its pid file at start and after each reload,
/// so `s7commd status` can tell what is in effect and which changes wait for a restart.
struct RuntimeState: Codable {
    var pid: Int32
    var version: String
    var configuration: String?
    var startedAt: Date
    var enabled: Bool
    var endpoint: String
    var listening: Bool
    /// The settings in effect, as `config show` lists them.
    var settings: [S7Configuration.ShownSetting]
    var lastReload: Reload?

    struct Reload: Codable {
        var at: Date
        var applied: [String]
        var restartNeeded: [String]
    }

    static func path(forPidFile pidFile: String) -> String {
        (pidFile.hasSuffix(".pid") ? String(pidFile.dropLast(4)) : pidFile) + ".state.json"
    }

    func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return (try? encoder.encode(self)) ?? Data()
    }

    /// The state of a live server behind `pidFile`, nil when none runs.
    static func running(pidFile: String) -> RuntimeState? {
        read(from: path(forPidFile: pidFile)).flatMap { ProcessSignal.isAlive($0.pid) ? $0 : nil }
    }

    static func read(from path: String) -> RuntimeState? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try? decoder.decode(RuntimeState.self, from: data)
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show whether s7commd runs, what it serves, and which configuration changes are not in effect yet.")

    @Option(help: ArgumentHelp("The pid file the running server wrote.", valueName: "path"))
    var pidFile: String = RuntimeFiles.defaultPidPath

    @Flag(help: "Print JSON for scripts.") var json = false

    struct Report: Encodable {
        var running: Bool
        var pid: Int32?
        var configuration: String?
        var endpoint: String?
        /// Where metrics are served; empty when metrics.enabled is false.
        var metrics: [String]?
        var enabled: Bool?
        var listening: Bool?
        var pendingLive: [String]
        var pendingRestart: [String]
        var problem: String?
        /// "control socket" when the supervisor answered, else "state file" (no live details).
        var source: String = "state file"
        var sourceProblem: String?
        var state: String?
        var uptimeSeconds: Double?
        var children: [SupervisorStatus.Child]?
        var counters: ServerCounters?
        var maxClients: Int?
        var clients: [ClientStatus]?
        var workerProblem: String?
    }

    func run() throws {
        let statePath = RuntimeState.path(forPidFile: pidFile)
        guard let state = RuntimeState.running(pidFile: pidFile) else {
            let why = "s7commd is not running (no live process behind \(statePath)); start it with `s7commd run`"
            if json { printJSON(Report(running: false, pendingLive: [], pendingRestart: [], problem: why)) } else { print(why) }
            throw ExitCode(3)
        }
        var pendingLive: [String] = []
        var pendingRestart: [String] = []
        var problem: String?
        if let path = state.configuration {
            do {
                let onDisk = try S7Configuration.load(path: path).shownSettings()
                let running = Dictionary(state.settings.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
                let disk = Dictionary(onDisk.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
                for key in Set(running.keys).union(disk.keys).sorted() where running[key] != disk[key]?.value {
                    if disk[key]?.applies == ConfigKey.Applies.live.rawValue { pendingLive.append(key) } else { pendingRestart.append(key) }
                }
            } catch let error as ConfigurationError {
                problem = "the file on disk is not valid, so neither reload nor restart would take it: " + error.description
            }
        }
        let socketPath = StatusClient.socketPath(runtimeDirectory: URL(fileURLWithPath: pidFile).deletingLastPathComponent().path)
        var live: SupervisorStatus?
        var sourceProblem: String?
        do {
            let answer = try StatusClient.query(socketPath: socketPath)
            if answer.pid == state.pid {
                live = answer
            } else {
                sourceProblem = "\(socketPath) belongs to another s7commd (pid \(answer.pid), not \(state.pid))"
            }
        } catch {
            sourceProblem = "\(error)"
        }
        if json {
            var report = Report(running: true, pid: state.pid, configuration: state.configuration, endpoint: state.endpoint,
                                enabled: state.enabled, listening: state.listening, pendingLive: pendingLive,
                                pendingRestart: pendingRestart, problem: problem)
            if let live {
                report.source = "control socket"
                report.state = live.state
                report.endpoint = live.endpoint
                report.metrics = live.metrics ?? []
                report.uptimeSeconds = live.uptimeSeconds
                report.children = live.children
                report.counters = live.server?.counters
                report.maxClients = live.server?.maxClients
                report.clients = live.server?.clients
                report.workerProblem = live.workerProblem
            } else {
                report.state = state.listening ? nil : "disabled"
                report.sourceProblem = sourceProblem
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.dateEncodingStrategy = .iso8601
            if let data = try? encoder.encode(report) { print(String(decoding: data, as: UTF8.self)) }
            return
        }
        print("s7commd \(state.version) running, pid \(state.pid), since \(state.startedAt)")
        print("configuration: \(state.configuration ?? "built-in demo")")
        if let live {
            printLive(live)
        } else {
            print("(the control socket did not answer: \(sourceProblem ?? "?"); showing what the state file holds, without clients or counters)")
            print("endpoint: \(state.endpoint) — clients use this host's IP address, the port, a rack and a slot")
            print(state.listening ? "listener: open" : "listener: none — the server is disabled (server.enabled false); enable it and restart")
        }
        if let r = state.lastReload {
            print("last reload: \(r.at): applied \(r.applied.isEmpty ? "nothing" : r.applied.joined(separator: ", "))")
        }
        if !pendingLive.isEmpty { print("changed in the file, not applied yet (run `s7commd reload`): \(pendingLive.joined(separator: ", "))") }
        if !pendingRestart.isEmpty { print("changed in the file, restart needed: \(pendingRestart.joined(separator: ", "))") }
        if pendingLive.isEmpty && pendingRestart.isEmpty && problem == nil { print("the file on disk is what is in effect") }
        if let problem { print("problem: \(problem)") }
    }
}

extension Status {
    func printLive(_ live: SupervisorStatus) {
        let stateLine: String
        switch live.state {
        case "disabled": stateLine = "disabled — no listener (server.enabled false); enable it and restart"
        case "restarting": stateLine = "restarting — a child process is down and being restarted"
        default: stateLine = live.state
        }
        print("state: \(stateLine)")
        print("endpoint: \(live.endpoint) — clients use this host's IP address, the port, a rack and a slot")
        print("metrics: \(live.metrics.map { $0.isEmpty ? "off (metrics.enabled false)" : $0.joined(separator: ", ") } ?? "off (metrics.enabled false)")")
        print("uptime: \(Self.duration(live.uptimeSeconds))")
        for child in live.children {
            let pid = child.pid.map { "pid \($0)" } ?? "not running"
            let since = child.started.map { ", started \(Self.time($0))" } ?? ""
            print("\(child.role): \(pid)\(since), restarts \(child.restarts), sandbox kills \(child.sandboxKills)")
            if let sandbox = child.sandbox { print("  sandbox: \(sandbox)") }
        }
        if let problem = live.workerProblem { print("clients and counters: unavailable — \(problem)") }
        guard let server = live.server else { return }
        let c = server.counters
        print("counters: requests \(c.requestsTotal) (errors: \(c.refusedRequests) refused, \(c.pduOverruns) over the PDU), bytes in \(c.bytesReceived) / out \(c.bytesSent), connections \(c.connectionsAccepted), throttled \(c.throttled)")
        print("refused: " + RefusalReason.allCases.map { "\($0.rawValue) \(c.refused($0))" }.joined(separator: ", "))
        print("closed: " + CloseReason.Kind.allCases.map { "\($0.rawValue) \(c.closed($0))" }.joined(separator: ", "))
        print("clients: \(server.clients.count) of max \(server.maxClients)\(server.maxClientsPerAddress > 0 ? ", at most \(server.maxClientsPerAddress) per address" : "")")
        guard !server.clients.isEmpty else { return }
        var rows = [["PEER", "SINCE", "TYPE/RACK/SLOT", "PDU PROPOSED→AGREED", "REQUESTS", "ERRORS"]]
        for client in server.clients {
            let kind = "\(client.connectionType ?? "?")/\(client.rack.map(String.init) ?? "?")/\(client.slot.map(String.init) ?? "?")"
            let pdu = client.pduAgreed.map { "\(client.pduProposed.map(String.init) ?? "?")→\($0)" } ?? (client.pduProposed.map { "\($0)→refused" } ?? "not negotiated")
            let errors = client.errors == 0 ? "0" : "\(client.errors) (\(client.refusedRequests) refused, \(client.pduOverruns) over PDU)"
            rows.append([client.peer, Self.time(client.connectedSince), kind, pdu, String(client.requests), errors])
        }
        let widths = (0..<rows[0].count).map { i in rows.map { $0[i].count }.max() ?? 0 }
        for row in rows {
            print("  " + row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  "))
        }
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds)
        if s < 60 { return "\(s) s" }
        if s < 3600 { return "\(s / 60) min \(s % 60) s" }
        if s < 86400 { return "\(s / 3600) h \(s % 3600 / 60) min" }
        return "\(s / 86400) d \(s % 86400 / 3600) h"
    }

    static func time(_ date: Date) -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: date)
    }
}
