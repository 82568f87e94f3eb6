import Foundation
import PLCMemory
import S7Session
import S7Wire

/// The effective configuration: every value present, in range and typed.
public struct S7Configuration: Sendable {
    public struct Server: Equatable, Sendable {
        public var enabled: Bool
        public var bindAddress: String
        public var port: Int
        public var maxClients: Int
        /// s7commd: connections from one IP address at once; 0 means no limit.
        public var maxClientsPerAddress: Int
        public var pduSize: Int
        public var sendTimeoutMs: Int
        public var recvTimeoutMs: Int
        public var pingTimeoutMs: Int
        public var workIntervalMs: Int
        public var allowedRackSlots: [RackSlot]
        public var allowPLCControl: Bool
        public var allowClockSet: Bool

        /// The endpoint as the editor names it.
        public var endpoint: String {
            let host = bindAddress.contains(":") ? "[\(bindAddress)]" : bindAddress
            return "codes7://\(host):\(port)"
        }
    }

    /// Where monitoring scrapes `GET /metrics`: when enabled, always `metrics.sock` in the
    /// runtime directory, and also `bind_address:port` (a loopback address) when port is not 0.
    public struct Metrics: Equatable, Sendable {
        public var enabled = false
        public var bindAddress = "127.0.0.1"
        public var port = 0

        public init(enabled: Bool = false, bindAddress: String = "127.0.0.1", port: Int = 0) {
            self.enabled = enabled
            self.bindAddress = bindAddress
            self.port = port
        }

        /// The TCP endpoint, when one is configured.
        public var tcpEndpoint: String? {
            guard enabled, port != 0 else { return nil }
            return "http://\(bindAddress.contains(":") ? "[\(bindAddress)]" : bindAddress):\(port)/metrics"
        }
    }

    public struct Logging: Equatable, Sendable {
        public var logConnections: Bool
        public var logDataAccess: Bool
        public var logErrors: Bool
    }

    public var server: Server
    public var identity: PLCIdentity
    public var memory: MemoryDefinition
    public var dataBlockDescriptions: [UInt16: String]
    public var logging: Logging
    public var metrics: Metrics = Metrics()
    /// Accepted oddities (unknown keys, keys left to their default that matter).
    public var warnings: [ConfigurationWarning] = []

    /// Defaults of the editor's help page and SPEC section 2.
    public enum Defaults {
        public static let enabled = false
        public static let bindAddress = "0.0.0.0"
        public static let port = 102
        public static let maxClients = 32
        public static let maxClientsPerAddress = 0
        public static let pduSize = 480
        public static let sendTimeoutMs = 3000
        public static let recvTimeoutMs = 3000
        public static let pingTimeoutMs = 10000
        public static let workIntervalMs = 100
    }

    /// Loads and validates a file; throws ``ConfigurationError`` listing every problem.
    public static func load(path: String) throws -> S7Configuration {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            let why = access(path, F_OK) != 0 ? "it does not exist" : access(path, R_OK) != 0
                ? "permission denied for uid \(getuid()): make it readable to the user s7commd runs as (e.g. chown root:s7commd, chmod 0640)"
                : (error as NSError).localizedDescription
            throw ConfigurationError(path: path, problems: [ConfigurationProblem(
                keyPath: "(file)", value: path, allowed: "a readable JSON file", meaning: "could not be read: \(why)")])
        }
        return try parse(data, path: path)
    }

    /// Decodes and validates JSON text.
    public static func parse(_ data: Data, path: String = "(text)") throws -> S7Configuration {
        let document = try ConfigDocument(data: data, path: path)
        let typeProblems = document.typeProblems()
        guard typeProblems.isEmpty else { throw ConfigurationError(path: path, problems: typeProblems) }
        let file: ConfigurationFile
        do {
            file = try ConfigurationFile.decoder().decode(ConfigurationFile.self, from: data)
        } catch let error as DecodingError {
            throw ConfigurationError(path: path, problems: [problem(from: error, in: document.root)])
        }
        var configuration = try validate(file, path: path)
        configuration.warnings = document.unknownKeys() + configuration.warnings
        return configuration
    }

    static func problem(from error: DecodingError, in root: [String: Any] = [:]) -> ConfigurationProblem {
        func path(_ keys: [any CodingKey]) -> String {
            keys.map { k in k.intValue.map { "[\($0)]" } ?? ".\(snake(k.stringValue))" }.joined()
                .trimmingCharacters(in: CharacterSet(charactersIn: "."))
        }
        // A key of the schema with a value of the wrong JSON type (or a required key left out):
        // name the value as written, what the key allows and what it is for.
        func schemaProblem(_ keys: [any CodingKey], _ value: String) -> ConfigurationProblem? {
            let keyPath = path(keys)
            guard let key = ConfigSchema.key(for: keyPath) else { return nil }
            var allowed = key.allowed
            if case .int = key.kind { allowed = "a whole number " + allowed }
            return ConfigurationProblem(keyPath: keyPath, value: value, allowed: allowed, meaning: key.meaning)
        }
        func written(_ keys: [any CodingKey]) -> String {
            var node: Any? = root
            for k in keys {
                if let i = k.intValue { node = (node as? [Any]).flatMap { i < $0.count ? $0[i] : nil } } else {
                    node = (node as? [String: Any])?[snake(k.stringValue)]
                }
            }
            guard let node, let data = try? JSONSerialization.data(withJSONObject: node, options: [.fragmentsAllowed, .sortedKeys]),
                  var text = String(data: data, encoding: .utf8) else { return "a value of another type" }
            if text.count > 40 { text = String(text.prefix(40)) + "…" }
            let kind = node is String ? "a string" : node is [Any] ? "a list" : node is [String: Any] ? "an object"
                : (text == "true" || text == "false") ? "a boolean" : "a number"
            return "\(text) (\(kind))"
        }
        switch error {
        case .typeMismatch(_, let ctx) where schemaProblem(ctx.codingPath, "") != nil:
            return schemaProblem(ctx.codingPath, written(ctx.codingPath))!
        case .dataCorrupted(let ctx) where !ctx.codingPath.isEmpty && schemaProblem(ctx.codingPath, "") != nil:
            return schemaProblem(ctx.codingPath, written(ctx.codingPath))!
        case .valueNotFound(_, let ctx) where schemaProblem(ctx.codingPath, "") != nil:
            return schemaProblem(ctx.codingPath, "null")!
        case .keyNotFound(let key, let ctx) where schemaProblem(ctx.codingPath + [key], "") != nil:
            return schemaProblem(ctx.codingPath + [key], "(missing)")!
        case .typeMismatch(let type, let ctx):
            return ConfigurationProblem(keyPath: path(ctx.codingPath), value: "a value of another type",
                                        allowed: "a value of type \(type)", meaning: ctx.debugDescription)
        case .valueNotFound(let type, let ctx):
            return ConfigurationProblem(keyPath: path(ctx.codingPath), value: "null",
                                        allowed: "a value of type \(type)", meaning: ctx.debugDescription)
        case .keyNotFound(let key, let ctx):
            return ConfigurationProblem(keyPath: path(ctx.codingPath + [key]), value: "(missing)",
                                        allowed: "a value", meaning: "this key is required here")
        case .dataCorrupted(let ctx):
            let underlying = (ctx.underlyingError as NSError?)?.userInfo["NSDebugDescription"] as? String
            return ConfigurationProblem(keyPath: ctx.codingPath.isEmpty ? "(file)" : path(ctx.codingPath),
                                        value: "not valid JSON", allowed: "a JSON object as in docs/configuration.md",
                                        meaning: underlying ?? ctx.debugDescription)
        @unknown default:
            return ConfigurationProblem(keyPath: "(file)", value: "?", allowed: "valid JSON", meaning: "\(error)")
        }
    }

    static func snake(_ camel: String) -> String {
        var out = ""
        for c in camel {
            if c.isUppercase { out += "_" + c.lowercased() } else { out.append(c) }
        }
        return out
    }
}
