import Foundation
import S7Sys
import SystemPackage

/// A control socket read on a thread of its own, delivering messages as an async stream, so
/// blocking receives never sit on the concurrency pool.
public final class ControlChannel: @unchecked Sendable {
    public let socket: FileDescriptor
    public let peer: String

    public enum Event: Sendable {
        case message(RuntimeMessage, [FileDescriptor])
        /// The peer closed the socket or sent something outside the closed set.
        case closed(String)
    }

    public init(socket: FileDescriptor, peer: String) {
        self.socket = socket
        self.peer = peer
    }

    /// Starts the reading thread; the stream ends after ``Event/closed(_:)``.
    public func events(maxDescriptors: Int) -> AsyncStream<Event> {
        AsyncStream { continuation in
            let thread = Thread { [socket, peer] in
                while true {
                    do {
                        guard let (message, fds) = try RuntimeMessage.receive(on: socket, maxDescriptors: maxDescriptors) else {
                            continuation.yield(.closed("\(peer) closed its control socket"))
                            break
                        }
                        continuation.yield(.message(message, fds))
                    } catch {
                        continuation.yield(.closed("\(peer): \(error)"))
                        break
                    }
                }
                continuation.finish()
            }
            thread.name = "s7commd-control"
            thread.start()
        }
    }

    public func send(_ message: RuntimeMessage, descriptors: [FileDescriptor] = []) throws {
        try message.send(on: socket, descriptors: descriptors)
    }
}
