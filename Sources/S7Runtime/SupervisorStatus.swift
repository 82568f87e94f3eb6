import Foundation
import S7Server

/// What the supervisor answers on its control socket: its own part, and the worker's
/// snapshot of clients and counters (nil when the worker did not answer; `workerProblem` says why).
public struct SupervisorStatus: Codable, Equatable, Sendable {
    public struct Child: Codable, Equatable, Sendable {
        public var role: String
        /// nil while it is being restarted.
        public var pid: Int32?
        public var started: Date?
        public var restarts: Int
    }

    public var pid: Int32
    /// "disabled" (server.enabled false, no listener), "listening", or "restarting" (a child is down).
    public var state: String
    public var endpoint: String
    /// Where metrics are served (`http://127.0.0.1:9102/metrics`, `unix:/run/s7commd/metrics.sock`); empty when off.
    public var metrics: [String]?
    public var startedAt: Date
    public var uptimeSeconds: Double
    public var children: [Child]
    public var server: ServerSnapshot?
    public var workerProblem: String?

    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys]
        return e
    }

    public func encoded() -> String {
        (try? Self.encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    public static func decode(_ json: String) throws -> SupervisorStatus {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        d.keyDecodingStrategy = .convertFromSnakeCase
        do {
            return try d.decode(SupervisorStatus.self, from: Data(json.utf8))
        } catch {
            throw RuntimeError("the supervisor's status is not readable: \(error)")
        }
    }

    static func encodeSnapshot(_ s: ServerSnapshot) -> String {
        (try? encoder.encode(s)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }

    static func decodeSnapshot(_ json: String) -> ServerSnapshot? {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try? d.decode(ServerSnapshot.self, from: Data(json.utf8))
    }
}
