import S7Sys
import SystemPackage

/// One message per SOCK_SEQPACKET packet, with its descriptors as SCM_RIGHTS.
public enum IPC {
    /// Sends `message` with exactly the descriptors it carries.
    public static func send<M: IPCMessage>(_ message: M, descriptors: [FileDescriptor] = [], on socket: FileDescriptor) throws(IPCError) {
        precondition(descriptors.count == message.descriptorCount, "a \(message.kind) message carries \(message.descriptorCount) descriptors, not \(descriptors.count)")
        let bytes = message.encoded()
        guard bytes.count <= IPCLimits.messageSize else { throw .messageTooLarge(size: bytes.count, limit: IPCLimits.messageSize) }
        do {
            try UnixSocket.send(message: bytes, descriptors: descriptors, on: socket)
        } catch let error as SystemCallError where error.errno == .resourceTemporarilyUnavailable {
            throw .wouldBlock
        } catch {
            throw .transport("could not send a \(message.kind) message: \(error)")
        }
    }

    /// Receives one message of `M`'s set; nil when the peer closed. Anything else — a decode
    /// error, an oversize packet, descriptors the message does not carry — is thrown after
    /// every received descriptor has been closed.
    public static func receive<M: IPCMessage>(_: M.Type, on socket: FileDescriptor, maxDescriptors: Int = 4) throws(IPCError) -> (M, [FileDescriptor])? {
        let bytes: [UInt8]
        let fds: [FileDescriptor]
        do {
            (bytes, fds) = try UnixSocket.receive(on: socket, maxBytes: IPCLimits.messageSize, maxDescriptors: maxDescriptors)
        } catch let error as UnixMessageError {
            switch error {
            case .messageTruncated: throw .messageTooLarge(size: IPCLimits.messageSize + 1, limit: IPCLimits.messageSize)
            case .tooManyDescriptors(let received, _):
                throw .unexpectedDescriptors(message: "\(M.sender)'s", received: received, expected: maxDescriptors)
            case .controlDataTruncated:  // more than fit: the count itself was cut off
                throw .unexpectedDescriptors(message: "\(M.sender)'s", received: maxDescriptors + 1, expected: maxDescriptors)
            }
        } catch let error as SystemCallError where error.errno == .resourceTemporarilyUnavailable {
            throw .wouldBlock
        } catch {
            throw .transport("could not receive from the \(M.sender): \(error)")
        }
        if bytes.isEmpty && fds.isEmpty { return nil }
        do {
            return (try M.decode(bytes, descriptors: fds.count), fds)
        } catch {
            for fd in fds { try? fd.close() }
            throw error
        }
    }

    /// A local client's one exchange: connects to `path`, sends `request`, waits up to
    /// `timeoutSeconds` for the reply. Nil when the server closed without one (it refused the
    /// peer); a reply outside the protocol throws.
    public static func exchange<Request: IPCMessage, Reply: IPCMessage>(
        _ request: Request, at path: String, expecting _: Reply.Type, maxDescriptors: Int = 0, timeoutSeconds: Int = 5
    ) throws -> (Reply, [FileDescriptor])? {
        let socket = try LocalSocket.connect(path: path)
        defer { try? socket.close() }
        try LocalSocket.setReceiveTimeout(socket, seconds: timeoutSeconds)
        try send(request, on: socket)
        return try receive(Reply.self, on: socket, maxDescriptors: maxDescriptors)
    }
}
