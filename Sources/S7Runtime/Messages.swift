import Foundation
import S7Sys
import SystemPackage

/// The closed set of messages between the supervisor and its two children, one per
/// SOCK_SEQPACKET packet, as JSON. Anything that does not decode into exactly one of these
/// ends the peer.
public enum RuntimeMessage: Codable, Equatable, Sendable {
    /// Supervisor → memory process: the configuration, and (attached) the existing segment to
    /// take over, or none to create one.
    case prepareMemory(configuration: String, reuse: Bool)
    /// Memory process → supervisor: the segment (attached).
    case memoryReady(size: Int)
    /// Supervisor → worker: the configuration, with the listening socket (when the server is
    /// enabled), the `metricsListeners` metrics sockets, and the segment attached, in that order.
    case serve(configuration: String, listening: Bool, metricsListeners: Int)
    /// Supervisor → worker: how often it has restarted each child ("worker", "memory"), for
    /// the metrics; sent after `serve` and after each restart of the memory process.
    case childRestarts([String: Int])
    /// Worker → supervisor: serving.
    case serving
    /// Supervisor → worker: apply the live settings of this configuration.
    case reload(configuration: String)
    /// Worker → supervisor: the live settings are applied to new connections.
    case reloaded
    /// Supervisor → child: stop gracefully (close clients, save retained data) and exit.
    case stop
    /// A local tool or PLC program → memory process (on its socket): hand me the segment.
    case attach
    /// Memory process → tool: the configuration the segment was laid out from, with the segment attached.
    case attached(configuration: String)
    /// Supervisor → worker, and `s7commd status` → supervisor (on its control socket): report.
    case statusRequest
    /// Worker → supervisor: its ``ServerSnapshot`` as JSON; supervisor → tool: the whole
    /// ``SupervisorStatus`` as JSON.
    case status(json: String)

    /// Largest message accepted (a configuration with many data blocks fits easily).
    public static let maximumSize = 200_000

    public func send(on socket: FileDescriptor, descriptors: [FileDescriptor] = []) throws {
        let data = try JSONEncoder().encode(self)
        guard data.count <= Self.maximumSize else {
            throw RuntimeError("a \(kind) message of \(data.count) bytes exceeds the \(Self.maximumSize)-byte limit; the configuration is too large")
        }
        try UnixSocket.send(message: Array(data), descriptors: descriptors, on: socket)
    }

    /// Receives one message; nil when the peer closed the socket.
    public static func receive(on socket: FileDescriptor, maxDescriptors: Int) throws -> (RuntimeMessage, [FileDescriptor])? {
        let (bytes, fds) = try UnixSocket.receive(on: socket, maxBytes: maximumSize, maxDescriptors: maxDescriptors)
        if bytes.isEmpty && fds.isEmpty { return nil }
        do {
            return (try JSONDecoder().decode(RuntimeMessage.self, from: Data(bytes)), fds)
        } catch {
            for fd in fds { try? fd.close() }
            throw RuntimeError("unexpected message of \(bytes.count) bytes from the peer: not one of the runtime's messages")
        }
    }

    public var kind: String {
        switch self {
        case .prepareMemory: return "prepare-memory"
        case .memoryReady: return "memory-ready"
        case .serve: return "serve"
        case .childRestarts: return "child-restarts"
        case .serving: return "serving"
        case .reload: return "reload"
        case .reloaded: return "reloaded"
        case .stop: return "stop"
        case .attach: return "attach"
        case .attached: return "attached"
        case .statusRequest: return "status-request"
        case .status: return "status"
        }
    }
}
