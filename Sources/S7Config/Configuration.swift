import Foundation
import PLCMemory

/// The configuration file as written: every key optional, names as SPEC section 2 and the
/// OpenPLC runtime's s7comm plugin spell them. ``S7Configuration/validate()`` turns it into
/// effective values or a list of problems.
public struct ConfigurationFile: Codable, Equatable, Sendable {
    public var server: Server?
    public var plcIdentity: Identity?
    public var dataBlocks: [DataBlock]?
    public var systemAreas: SystemAreas?
    public var logging: Logging?
    /// s7commd: the Prometheus metrics endpoint.
    public var metrics: Metrics?

    public struct Server: Codable, Equatable, Sendable {
        public var enabled: Bool?
        public var bindAddress: String?
        public var port: Int?
        public var maxClients: Int?
        /// s7commd: connections from one IP address at once (0 or absent: no limit).
        public var maxClientsPerAddress: Int?
        public var pduSize: Int?
        public var sendTimeoutMs: Int?
        public var recvTimeoutMs: Int?
        public var pingTimeoutMs: Int?
        public var workIntervalMs: Int?
        /// s7commd: only these rack/slot pairs may connect (empty or absent: any).
        public var allowedRackSlots: [RackSlotEntry]?
        /// s7commd: clients may stop and start the CPU.
        public var allowPlcControl: Bool?
        /// s7commd: clients may set the CPU clock.
        public var allowClockSet: Bool?
    }

    public struct RackSlotEntry: Codable, Equatable, Sendable {
        public var rack: Int
        public var slot: Int
    }

    public struct Identity: Codable, Equatable, Sendable {
        public var name: String?
        public var moduleType: String?
        public var serialNumber: String?
        public var copyright: String?
        public var moduleName: String?
        /// s7commd: order number reported in SZL 0x0011.
        public var orderCode: String?
        /// s7commd: "Vx.y.z" reported in SZL 0x0011.
        public var firmwareVersion: String?
        /// s7commd: plant identification reported in SZL 0x001C index 3.
        public var plantIdentification: String?
    }

    public struct Mapping: Codable, Equatable, Sendable {
        public var type: String?
        public var startBuffer: Int?
        public var bitAddressing: Bool?
    }

    public struct DataBlock: Codable, Equatable, Sendable {
        public var dbNumber: Int?
        public var description: String?
        public var sizeBytes: Int?
        public var mapping: Mapping?
        public var readOnly: Bool?
        public var retain: Bool?
    }

    public struct Area: Codable, Equatable, Sendable {
        public var enabled: Bool?
        public var sizeBytes: Int?
        public var mapping: Mapping?
        public var readOnly: Bool?
        public var retain: Bool?
    }

    public struct CountedArea: Codable, Equatable, Sendable {
        public var enabled: Bool?
        public var count: Int?
        public var retain: Bool?
    }

    public struct SystemAreas: Codable, Equatable, Sendable {
        public var peArea: Area?
        public var paArea: Area?
        public var mkArea: Area?
        public var tmArea: CountedArea?
        public var ctArea: CountedArea?
    }

    public struct Logging: Codable, Equatable, Sendable {
        public var logConnections: Bool?
        public var logDataAccess: Bool?
        public var logErrors: Bool?
    }

    public struct Metrics: Codable, Equatable, Sendable {
        public var enabled: Bool?
        public var bindAddress: String?
        public var port: Int?
    }

    public init(server: Server? = nil, plcIdentity: Identity? = nil, dataBlocks: [DataBlock]? = nil,
                systemAreas: SystemAreas? = nil, logging: Logging? = nil, metrics: Metrics? = nil) {
        self.metrics = metrics
        self.server = server
        self.plcIdentity = plcIdentity
        self.dataBlocks = dataBlocks
        self.systemAreas = systemAreas
        self.logging = logging
    }

    static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }
}

/// One thing wrong with a configuration: where, what, what is allowed, and what the field is for.
public struct ConfigurationProblem: Error, Equatable, Codable, Sendable, CustomStringConvertible {
    public var keyPath: String
    public var value: String
    public var allowed: String
    public var meaning: String

    public init(keyPath: String, value: String, allowed: String, meaning: String) {
        self.keyPath = keyPath
        self.value = value
        self.allowed = allowed
        self.meaning = meaning
    }

    public var description: String {
        "\(keyPath) = \(value): allowed \(allowed) (\(meaning))"
    }
}

/// Every problem of a file at once, with the file's path.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var problems: [ConfigurationProblem]

    public init(path: String, problems: [ConfigurationProblem]) {
        self.path = path
        self.problems = problems
    }

    public var description: String {
        var lines = ["configuration \(path) is not valid (\(problems.count) problem\(problems.count == 1 ? "" : "s")):"]
        lines += problems.map { "  - \($0)" }
        lines.append("Fix the values above (docs/configuration.md explains every key).")
        return lines.joined(separator: "\n")
    }
}
