import Foundation
import PLCMemoryClient
import S7IPC
import S7Server
import S7Sys
import SystemPackage

/// What `s7commd status` shows of a running supervisor: its report, with the worker's
/// snapshot of clients and counters decoded (nil when the worker did not answer;
/// `workerProblem` says why).
public struct SupervisorStatus: Codable, Equatable, Sendable {
    public struct Child: Codable, Equatable, Sendable {
        public var role: String
        /// nil while it is being restarted.
        public var pid: Int32?
        public var started: Date?
        public var restarts: Int
        /// How often its sandbox ended it.
        public var sandboxKills: Int
        /// What the running child reported about its confinement, read from the kernel.
        public var sandbox: Sandbox?
    }

    /// A child's confinement as it reported it once in place (see ``SandboxReport``).
    public struct Sandbox: Codable, Equatable, Sendable, CustomStringConvertible {
        public var uid: UInt32
        public var user: String?
        public var gid: UInt32
        /// 0 none, 1 strict, 2 filter.
        public var seccompMode: Int
        public var seccompFilters: Int
        public var noNewPrivs: Bool
        public var dumpable: Bool
        public var landlock: String
        public var limits: String

        init(_ report: SandboxReport) {
            uid = report.uid
            user = (try? ServiceUser.lookup(uid: report.uid))?.name
            gid = report.gid
            seccompMode = report.seccompMode
            seccompFilters = report.seccompFilters
            noNewPrivs = report.noNewPrivileges
            dumpable = report.dumpable
            landlock = report.landlock
            limits = report.limits
        }

        public var description: String {
            let seccomp = switch seccompMode {
            case 2: "seccomp filter mode, \(seccompFilters) filter\(seccompFilters == 1 ? "" : "s")"
            case 1: "seccomp strict mode"
            default: "NO seccomp filter"
            }
            return "user \(user ?? "?") (uid \(uid), gid \(gid)), \(seccomp), NoNewPrivs \(noNewPrivs ? 1 : 0), "
                + "\(dumpable ? "DUMPABLE" : "not dumpable"), \(landlock), \(limits)"
        }
    }

    public var pid: Int32
    /// "disabled" (server.enabled false, no listener), "listening", "restarting" (a child is down) or "stopping".
    public var state: String
    public var endpoint: String
    /// Where metrics are served (`http://127.0.0.1:9102/metrics`, `unix:/run/s7commd/metrics.sock`); empty when off.
    public var metrics: [String]?
    public var startedAt: Date
    public var uptimeSeconds: Double
    public var children: [Child]
    public var server: ServerSnapshot?
    public var workerProblem: String?

    public init(_ report: SupervisorReport) {
        pid = report.pid
        state = report.state.description
        endpoint = report.endpoint
        metrics = report.metrics
        startedAt = Date(timeIntervalSince1970: Double(report.startedAt) / 1000)
        uptimeSeconds = Double(report.uptimeMs) / 1000
        children = report.children.map {
            Child(role: $0.role.description, pid: $0.pid, started: $0.startedAt.map { Date(timeIntervalSince1970: Double($0) / 1000) },
                  restarts: $0.restarts, sandboxKills: $0.sandboxKills, sandbox: $0.sandbox.map(Sandbox.init))
        }
        server = report.workerSnapshot.flatMap(Self.decodeSnapshot)
        workerProblem = report.workerProblem
            ?? (report.workerSnapshot != nil && server == nil && report.workerSnapshot != Self.noSnapshot ? "the S7 worker's status was not readable" : nil)
    }

    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys]
        return e
    }

    /// What the worker sends when it serves no listener (JSON null).
    static let noSnapshot = Array("null".utf8)

    /// The worker's snapshot as it travels to the supervisor, which relays it unparsed; one
    /// that cannot be encoded or is over the message bound travels as ``noSnapshot``.
    static func encodeSnapshot(_ s: ServerSnapshot?) -> [UInt8] {
        guard let s, let json = try? encoder.encode(s), json.count <= IPCLimits.snapshot else { return noSnapshot }
        return Array(json)
    }

    static func decodeSnapshot(_ json: [UInt8]) -> ServerSnapshot? {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try? d.decode(ServerSnapshot.self, from: Data(json))
    }
}

/// Asks the running supervisor for its status over its control socket.
public enum StatusClient {
    /// The control socket in the runtime directory (the pid file's directory).
    public static func socketPath(runtimeDirectory: String) -> String { runtimeDirectory + "/control.sock" }

    public static func query(socketPath: String, timeoutSeconds: Int = 5) throws -> SupervisorStatus {
        let answer: (ControlReply, [SystemPackage.FileDescriptor])?
        do {
            answer = try IPC.exchange(ControlRequest.status, at: socketPath, expecting: ControlReply.self, timeoutSeconds: timeoutSeconds)
        } catch let error as IPCError {
            throw RuntimeError("the supervisor at \(socketPath) answered outside the protocol: \(error)")
        }
        guard let (reply, _) = answer else {
            throw RuntimeError("the supervisor closed the control socket without an answer (refused: run as root, the service user, or a member of its group)")
        }
        guard case .status(let report) = reply else { preconditionFailure("one reply in the set") }
        return SupervisorStatus(report)
    }
}
