import ArgumentParser
import Foundation
import S7Config

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
        var enabled: Bool?
        var listening: Bool?
        var pendingLive: [String]
        var pendingRestart: [String]
        var problem: String?
    }

    func run() throws {
        let statePath = RuntimeState.path(forPidFile: pidFile)
        guard let state = RuntimeState.read(from: statePath), kill(state.pid, 0) == 0 || errno == EPERM else {
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
        if json {
            printJSON(Report(running: true, pid: state.pid, configuration: state.configuration, endpoint: state.endpoint,
                             enabled: state.enabled, listening: state.listening, pendingLive: pendingLive,
                             pendingRestart: pendingRestart, problem: problem))
            return
        }
        print("s7commd \(state.version) running, pid \(state.pid), since \(state.startedAt)")
        print("configuration: \(state.configuration ?? "built-in demo")")
        print("endpoint: \(state.endpoint) — clients use this host's IP address, the port, a rack and a slot")
        print(state.listening ? "listener: open" : "listener: none — the server is disabled (server.enabled false); enable it and restart")
        if let r = state.lastReload {
            print("last reload: \(r.at): applied \(r.applied.isEmpty ? "nothing" : r.applied.joined(separator: ", "))")
        }
        if !pendingLive.isEmpty { print("changed in the file, not applied yet (run `s7commd reload`): \(pendingLive.joined(separator: ", "))") }
        if !pendingRestart.isEmpty { print("changed in the file, restart needed: \(pendingRestart.joined(separator: ", "))") }
        if pendingLive.isEmpty && pendingRestart.isEmpty && problem == nil { print("the file on disk is what is in effect") }
        if let problem { print("problem: \(problem)") }
    }
}
