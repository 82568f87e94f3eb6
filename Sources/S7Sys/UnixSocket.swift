#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import SystemPackage

/// Both ends of a connected pair of Unix sockets.
public struct UnixSocketPair: Sendable {
    /// One end.
    public var first: FileDescriptor
    /// The other end.
    public var second: FileDescriptor

    /// Creates a connected `AF_UNIX`, `SOCK_SEQPACKET` pair, both ends close-on-exec.
    ///
    /// `SOCK_SEQPACKET` keeps message boundaries, delivers in order and never splits a
    /// message, so one ``UnixSocket/send(message:descriptors:on:)`` is one
    /// ``UnixSocket/receive(on:maxBytes:maxDescriptors:)``.
    ///
    /// `SO_PEERCRED` on either end reports the process that called `make()`, also after the
    /// other end was handed to another process (see ``UnixSocket/peerCredentials(of:)``).
    public static func make() throws -> UnixSocketPair {
        var descriptors: [CInt] = [-1, -1]
        _ = try retryingOnInterrupt("could not create a Unix socket pair (socketpair)") {
            cs7_socketpair_seqpacket_cloexec(&descriptors)
        }
        return UnixSocketPair(
            first: FileDescriptor(rawValue: descriptors[0]),
            second: FileDescriptor(rawValue: descriptors[1])
        )
    }
}

/// A message that arrived but cannot be accepted whole; the descriptors it carried are closed.
public enum UnixMessageError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The message was longer than the receive buffer (`MSG_TRUNC`).
    case messageTruncated(maxBytes: Int)
    /// The message carried more control data than expected (`MSG_CTRUNC`), e.g. more
    /// descriptors than `maxDescriptors`.
    case controlDataTruncated(maxDescriptors: Int)
    /// The message carried more descriptors than `maxDescriptors` (they fitted only because
    /// control data is padded).
    case tooManyDescriptors(received: Int, maxDescriptors: Int)

    public var description: String {
        switch self {
        case .messageTruncated(let maxBytes):
            "the peer sent a message longer than \(maxBytes) bytes; it was rejected"
        case .controlDataTruncated(let maxDescriptors):
            "the peer sent more control data than \(maxDescriptors) descriptors fill; "
                + "the message was rejected and the descriptors that arrived were closed"
        case .tooManyDescriptors(let received, let maxDescriptors):
            "the peer sent \(received) descriptors where at most \(maxDescriptors) are accepted; "
                + "the message was rejected and the descriptors were closed"
        }
    }
}

/// Messages with descriptors (`SCM_RIGHTS`) and peer credentials on Unix sockets.
public enum UnixSocket {
    /// The kernel's limit of descriptors in one message (`SCM_MAX_FD`).
    public static let maxDescriptorsPerMessage = 253

    /// Sends one message, with `descriptors` attached as `SCM_RIGHTS`.
    ///
    /// The receiver gets its own duplicates; the caller still owns (and should close) its
    /// copies. Uses `MSG_NOSIGNAL`: a closed peer is an `EPIPE` error, not a `SIGPIPE`.
    ///
    /// - Parameters:
    ///   - message: the bytes; not empty (an empty read means the peer has closed).
    ///   - descriptors: at most ``maxDescriptorsPerMessage`` descriptors to pass.
    ///   - socket: a connected `SOCK_SEQPACKET` (or datagram) Unix socket.
    public static func send(
        message: [UInt8],
        descriptors: [FileDescriptor] = [],
        on socket: FileDescriptor
    ) throws {
        precondition(!message.isEmpty, "an empty message reads as end of stream at the peer")
        precondition(descriptors.count <= maxDescriptorsPerMessage, "too many descriptors for one message")
        let payloadLength = descriptors.count * MemoryLayout<CInt>.size
        let controlLength = descriptors.isEmpty ? 0 : cs7_cmsg_space(payloadLength)
        let control = UnsafeMutableRawBufferPointer.allocate(
            byteCount: max(controlLength, 1),
            alignment: MemoryLayout<cmsghdr>.alignment
        )
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0)

        var message = message
        let sent = try message.withUnsafeMutableBytes { (bytes) throws -> Int in
            var vector = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
            return try withUnsafeMutablePointer(to: &vector) { (vectorPointer) throws -> Int in
                var header = msghdr()
                header.msg_iov = vectorPointer
                header.msg_iovlen = 1
                if !descriptors.isEmpty {
                    header.msg_control = control.baseAddress
                    header.msg_controllen = controlLength
                    guard let controlHeader = cs7_cmsg_firsthdr(&header) else {
                        preconditionFailure("CMSG_FIRSTHDR found no room in a buffer of CMSG_SPACE bytes")
                    }
                    controlHeader.pointee.cmsg_level = SOL_SOCKET
                    controlHeader.pointee.cmsg_type = cs7_scm_rights()
                    controlHeader.pointee.cmsg_len = cs7_cmsg_len(payloadLength)
                    let data = UnsafeMutableRawPointer(cs7_cmsg_data(controlHeader)!)
                    for (index, descriptor) in descriptors.enumerated() {
                        data.storeBytes(
                            of: descriptor.rawValue,
                            toByteOffset: index * MemoryLayout<CInt>.size,
                            as: CInt.self
                        )
                    }
                }
                return try retryingOnInterrupt(
                    "could not send a \(bytes.count)-byte message with \(descriptors.count) descriptors (sendmsg)"
                ) {
                    cs7_sendmsg_nosignal(socket.rawValue, &header)
                }
            }
        }
        // A SOCK_SEQPACKET or datagram socket sends a message whole or not at all.
        precondition(sent == message.count, "sendmsg sent \(sent) of \(message.count) bytes")
    }

    /// Receives one message and the descriptors passed with it.
    ///
    /// Received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`) and owned by the caller.
    /// A message that does not fit — longer than `maxBytes`, or with more descriptors than
    /// `maxDescriptors` — is rejected with a ``UnixMessageError`` after every descriptor that
    /// arrived with it has been closed.
    ///
    /// - Returns: the bytes and descriptors; empty bytes mean the peer closed its end.
    public static func receive(
        on socket: FileDescriptor,
        maxBytes: Int,
        maxDescriptors: Int = 0
    ) throws -> (bytes: [UInt8], descriptors: [FileDescriptor]) {
        precondition(maxBytes > 0, "maxBytes must be positive")
        precondition(
            (0...maxDescriptorsPerMessage).contains(maxDescriptors),
            "maxDescriptors must be within 0...\(maxDescriptorsPerMessage)"
        )
        let controlLength = maxDescriptors == 0 ? 0 : cs7_cmsg_space(maxDescriptors * MemoryLayout<CInt>.size)
        let control = UnsafeMutableRawBufferPointer.allocate(
            byteCount: max(controlLength, 1),
            alignment: MemoryLayout<cmsghdr>.alignment
        )
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0)

        var bytes = [UInt8](repeating: 0, count: maxBytes)
        var received: [FileDescriptor] = []
        var flags: CInt = 0
        let count = try bytes.withUnsafeMutableBytes { (buffer) throws -> Int in
            var vector = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
            return try withUnsafeMutablePointer(to: &vector) { (vectorPointer) throws -> Int in
                var header = msghdr()
                header.msg_iov = vectorPointer
                header.msg_iovlen = 1
                header.msg_control = controlLength == 0 ? nil : control.baseAddress
                header.msg_controllen = controlLength
                let count = try retryingOnInterrupt("could not receive a message (recvmsg)") {
                    cs7_recvmsg_cloexec(socket.rawValue, &header)
                }
                flags = header.msg_flags
                var controlHeader = cs7_cmsg_firsthdr(&header)
                while let current = controlHeader {
                    if current.pointee.cmsg_level == SOL_SOCKET && current.pointee.cmsg_type == cs7_scm_rights() {
                        let payload = Int(current.pointee.cmsg_len) - cs7_cmsg_len(0)
                        let data = UnsafeRawPointer(cs7_cmsg_data(current)!)
                        for index in 0..<(payload / MemoryLayout<CInt>.size) {
                            let raw = data.loadUnaligned(fromByteOffset: index * MemoryLayout<CInt>.size, as: CInt.self)
                            received.append(FileDescriptor(rawValue: raw))
                        }
                    }
                    controlHeader = cs7_cmsg_nxthdr(&header, current)
                }
                return count
            }
        }

        let rejection: UnixMessageError?
        if flags & cs7_msg_ctrunc() != 0 {
            rejection = .controlDataTruncated(maxDescriptors: maxDescriptors)
        } else if flags & cs7_msg_trunc() != 0 {
            rejection = .messageTruncated(maxBytes: maxBytes)
        } else if received.count > maxDescriptors {
            rejection = .tooManyDescriptors(received: received.count, maxDescriptors: maxDescriptors)
        } else {
            rejection = nil
        }
        if let rejection {
            for descriptor in received {
                try? descriptor.close()
            }
            throw rejection
        }
        bytes.removeSubrange(count...)
        return (bytes, received)
    }

    /// The credentials of the peer of a connected Unix socket (`SO_PEERCRED`).
    ///
    /// They are the credentials the peer had when *its* socket was created (by `connect`,
    /// `socketpair` or `listen`), not its current ones: on a ``UnixSocketPair`` both ends
    /// report the process that created the pair, even after one end was passed on. Create a
    /// pair in the process whose identity matters, after it has changed its ids.
    public static func peerCredentials(
        of socket: FileDescriptor
    ) throws -> (pid: pid_t, uid: uid_t, gid: gid_t) {
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        _ = try retryingOnInterrupt("could not read the peer credentials of a Unix socket (SO_PEERCRED)") {
            cs7_peercred(socket.rawValue, &pid, &uid, &gid)
        }
        return (pid, uid, gid)
    }
}

/// A pipe whose both ends are close-on-exec.
public enum UnixPipe {
    /// Creates a pipe with `pipe2(O_CLOEXEC)`, so no spawned child inherits an end by
    /// accident (pass one explicitly with ``Spawn/run(executable:arguments:environment:passing:standardInput:standardOutput:standardError:newSession:identity:)``).
    public static func make() throws -> (read: FileDescriptor, write: FileDescriptor) {
        var descriptors: [CInt] = [-1, -1]
        _ = try retryingOnInterrupt("could not create a pipe (pipe2)") {
            cs7_pipe_cloexec(&descriptors)
        }
        return (FileDescriptor(rawValue: descriptors[0]), FileDescriptor(rawValue: descriptors[1]))
    }

    /// Reads what is there, up to `max` bytes, from a descriptor made non-blocking with
    /// ``SystemPackage/FileDescriptor/setNonBlocking()`` (`read`, retried on EINTR).
    ///
    /// - Returns: nil at end of file (every write end closed), an empty array when nothing is
    ///   there yet (`EAGAIN`), else the bytes read (at most `max`).
    public static func readAvailable(_ fd: FileDescriptor, max: Int) throws -> [UInt8]? {
        precondition(max > 0, "max must be positive")
        var bytes = [UInt8](repeating: 0, count: max)
        let count = bytes.withUnsafeMutableBytes { buffer -> Int in
            while true {
                let count = Glibc.read(fd.rawValue, buffer.baseAddress, buffer.count)
                if count == -1 && Glibc.errno == EINTR { continue }
                return count
            }
        }
        if count == -1 {
            let code = Glibc.errno
            if code == EAGAIN || code == EWOULDBLOCK { return [] }
            throw SystemCallError("could not read from descriptor \(fd.rawValue)", errno: Errno(rawValue: code))
        }
        if count == 0 { return nil }
        bytes.removeSubrange(count...)
        return bytes
    }
}

extension FileDescriptor {
    /// Sets `O_NONBLOCK` (`fcntl F_SETFL`), for an event loop that polls before it reads.
    ///
    /// The flag belongs to the open file description: every duplicate of this descriptor,
    /// also one passed to another process, becomes non-blocking too.
    public func setNonBlocking() throws {
        let flags = try retryingOnInterrupt("could not read the flags of descriptor \(rawValue) (fcntl F_GETFL)") {
            fcntl(rawValue, F_GETFL)
        }
        guard flags & O_NONBLOCK == 0 else { return }
        _ = try retryingOnInterrupt("could not make descriptor \(rawValue) non-blocking (fcntl F_SETFL O_NONBLOCK)") {
            fcntl(rawValue, F_SETFL, flags | O_NONBLOCK)
        }
    }
}
