import ArgumentParser
import Foundation
import S7Config

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Create, check, show and change the configuration file.",
        discussion: """
            Every change is validated with the whole file and saved at once and atomically (temporary
            file, fsync, rename), like the editor saves a field when it loses focus; a rejected change
            leaves the file as it was. Changes apply at the next start, except those `config show`
            marks "live", which `s7commd reload` (SIGHUP) applies to connections opened afterwards.
            """,
        subcommands: [Init.self, Check.self, Show.self, Set.self, Unset.self, Keys.self])

    struct FileOptions: ParsableArguments {
        @Option(name: .shortAndLong, help: ArgumentHelp("The configuration file.", valueName: "path"))
        var config: String = Run.installedConfiguration

        @Flag(help: "Print JSON for scripts instead of text for people.")
        var json = false
    }

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new configuration file with the defaults (server disabled, 0.0.0.0, port 102, 32 clients, PDU 480).")
        @OptionGroup var options: FileOptions
        @Flag(help: "Replace an existing file.")
        var force = false

        func run() throws {
            let path = options.config
            if FileManager.default.fileExists(atPath: path) && !force {
                fail("\(path) already exists; it was left as it is. Use --force to replace it, or `s7commd config set` to change one key.", json: options.json)
            }
            let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                try ConfigDocument.atomicWrite(Data((S7Configuration.initialJSON + "\n").utf8), to: path)
            } catch {
                fail("cannot write \(path): \(error)", json: options.json)
            }
            report(json: options.json, ["file": path, "written": true],
                   "wrote \(path) with the defaults: the server is disabled; enable it with `s7commd config set server.enabled true --config \(path)`")
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate the file and print every problem at once; exit status 1 when there is one.")
        @OptionGroup var options: FileOptions

        func run() throws {
            let path = options.config
            do {
                let c = try S7Configuration.loadForHost(path: path)
                if options.json {
                    printJSON(CheckReport(file: path, valid: true, problems: [], warnings: c.warnings))
                } else {
                    print("\(path): valid (\(c.server.enabled ? "server enabled" : "server disabled"), \(c.server.endpoint), \(c.memory.dataBlocks.count) data block(s))")
                    for w in c.warnings { print("  warning: \(w)") }
                }
            } catch let error as ConfigurationError {
                if options.json {
                    printJSON(CheckReport(file: path, valid: false, problems: error.problems, warnings: []))
                } else {
                    FileHandle.standardError.write(Data((error.description + "\n").utf8))
                }
                throw ExitCode(1)
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the effective configuration: every value (defaults filled in), what it means, and whether a change applies live.")
        @OptionGroup var options: FileOptions

        func run() throws {
            let path = options.config
            let c: S7Configuration
            do {
                c = try S7Configuration.load(path: path)
            } catch let error as ConfigurationError {
                fail(error.description, json: options.json)
            }
            let settings = c.shownSettings()
            let hint = "clients use this host's IP address (not \(c.server.bindAddress) itself), port \(c.server.port), a rack and a slot (any are accepted unless server.allowed_rack_slots says otherwise)"
            if options.json {
                printJSON(ShowReport(file: path, endpoint: c.server.endpoint, hint: hint, enabled: c.server.enabled,
                                     settings: settings, warnings: c.warnings, hostProblems: c.hostProblems()))
                return
            }
            print("Configuration \(path)")
            print("Endpoint: \(c.server.endpoint) — \(hint)")
            print(c.server.enabled ? "Server: enabled" : "Server: disabled — no listener is opened; `s7commd config set server.enabled true` and restart to serve clients")
            print("")
            let width = min(44, settings.map(\.key.count).max() ?? 0)
            for s in settings {
                let pad = String(repeating: " ", count: max(1, width - s.key.count + 1))
                let def = s.defaultValue.isEmpty ? "" : ", default \(s.defaultValue)"
                print("\(s.key)\(pad)= \(s.value.isEmpty ? "\"\"" : s.value)  [\(s.applies)\(def)]")
                print(String(repeating: " ", count: width + 3) + s.meaning)
            }
            for p in c.hostProblems() { print("\nproblem: \(p)") }
            for w in c.warnings { print("\nwarning: \(w)") }
        }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change one key, validate the whole file, and save it atomically.",
            discussion: """
                KEY is a path such as server.port, plc_identity.name, data_blocks[0].size_bytes,
                data_blocks[db=10].mapping.type, or data_blocks[+] to add a block. VALUE is read as JSON
                (1102, true, {"db_number": 4, "size_bytes": 64}) except for text keys, which take it as it is.
                A value that makes the file invalid is refused and the file is not touched.
                """)
        @OptionGroup var options: FileOptions
        @Argument(help: "The key path.") var key: String
        @Argument(help: "The new value.") var value: String

        func run() throws {
            try edit(options, key, describe: "\(key) = \(value)") { try $0.set(key, text: value) }
        }
    }

    struct Keys: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List every key the file may hold: type, default, allowed values, meaning, live or restart.")
        @Flag(help: "Print JSON for scripts.") var json = false
        @Flag(help: "Print a Markdown table (the one in docs/configuration.md).") var markdown = false

        func run() {
            let keys = ConfigSchema.keys.filter { $0.kind != .object && $0.kind != .array || $0.path.hasSuffix("allowed_rack_slots") || $0.path == "data_blocks" }
            if json {
                printJSON(keys.map { KeyRow(key: $0.path, allowed: $0.allowed, defaultValue: $0.defaultValue, applies: $0.applies.rawValue,
                                            meaning: $0.meaning, s7commdOnly: $0.s7commdOnly) })
            } else if markdown {
                print("| key | default | allowed | applies | meaning |")
                print("|---|---|---|---|---|")
                for k in keys {
                    let name = "`\(k.path)`" + (k.s7commdOnly ? " *(s7commd)*" : "")
                    print("| \(name) | \(k.defaultValue.isEmpty ? "" : "`\(k.defaultValue)`") | \(k.allowed) | \(k.applies.rawValue) | \(k.meaning) |")
                }
            } else {
                for k in keys {
                    print("\(k.path)\(k.s7commdOnly ? " (s7commd)" : ""): \(k.allowed); default \(k.defaultValue.isEmpty ? "none" : k.defaultValue); \(k.applies.rawValue)")
                    print("    \(k.meaning)")
                }
            }
        }
    }

    struct Unset: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove one key (it falls back to its default) or one list element, validate, and save atomically.")
        @OptionGroup var options: FileOptions
        @Argument(help: "The key path, e.g. server.pdu_size or data_blocks[db=4].") var key: String

        func run() throws {
            try edit(options, key, describe: "removed \(key)") { try $0.unset(key) }
        }
    }
}

/// Loads the document, applies `change`, validates the result against the schema and this host,
/// and saves atomically; on any failure the file is left untouched and the exit status is 1.
private func edit(_ options: ConfigCommand.FileOptions, _ key: String, describe: String,
                  _ change: (inout ConfigDocument) throws -> Void) throws {
    let path = options.config
    guard let data = FileManager.default.contents(atPath: path) else {
        fail("cannot read \(path); create it with `s7commd config init --config \(path)`", json: options.json)
    }
    do {
        var document = try ConfigDocument(data: data, path: path)
        let before = try? S7Configuration.parse(data, path: path)
        try change(&document)
        let after = try S7Configuration.parse(document.data(), path: path)
        let hostProblems = after.hostProblems()
        guard hostProblems.isEmpty else { throw ConfigurationError(path: path, problems: hostProblems) }
        try document.write(to: path)
        let changes = before.map { $0.changes(to: after) } ?? (live: [], restart: [key])
        let when = changes.restart.isEmpty
            ? (changes.live.isEmpty ? "nothing changed in effect" : "applies live with `s7commd reload` (or at the next start)")
            : "restart needed: \(changes.restart.joined(separator: ", "))"
        report(json: options.json, ["file": path, "saved": true, "live": changes.live, "restart": changes.restart],
               "saved \(path): \(describe); \(when)")
        for w in after.warnings where !options.json { print("  warning: \(w)") }
    } catch let error as ConfigurationError {
        if options.json {
            printJSON(CheckReport(file: path, valid: false, problems: error.problems, warnings: []))
        } else {
            FileHandle.standardError.write(Data(("s7commd: change refused, \(path) was not modified.\n" + error.description + "\n").utf8))
        }
        throw ExitCode(1)
    } catch let error as ConfigEditError {
        fail("change refused, \(path) was not modified: \(error)", json: options.json)
    }
}

struct KeyRow: Encodable {
    var key: String
    var allowed: String
    var defaultValue: String
    var applies: String
    var meaning: String
    var s7commdOnly: Bool
}

struct CheckReport: Encodable {
    var file: String
    var valid: Bool
    var problems: [ConfigurationProblem]
    var warnings: [ConfigurationWarning]
}

struct ShowReport: Encodable {
    var file: String
    var endpoint: String
    var hint: String
    var enabled: Bool
    var settings: [S7Configuration.ShownSetting]
    var warnings: [ConfigurationWarning]
    var hostProblems: [ConfigurationProblem]
}

func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    if let data = try? encoder.encode(value), let text = String(data: data, encoding: .utf8) { print(text) }
}

func report(json: Bool, _ object: [String: Any], _ text: String) {
    if json {
        if let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]),
           let s = String(data: data, encoding: .utf8) { print(s) }
    } else {
        print(text)
    }
}

func fail(_ text: String, json: Bool) -> Never {
    if json {
        report(json: true, ["error": text], "")
    } else {
        FileHandle.standardError.write(Data(("s7commd: " + text + "\n").utf8))
    }
    Foundation.exit(1)
}
