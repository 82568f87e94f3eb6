#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import SystemPackage

/// A blocking TCP client connection whose connect and receive waits are bounded, for a tool
/// that talks to a server and must not hang on it (such as `s7commd probe`).
public struct TCPConnection: Sendable {
    /// One address of a host, as the resolver gives it (IPv4 or IPv6, with the port).
    public struct Address: Sendable, CustomStringConvertible {
        /// The `sockaddr_in` or `sockaddr_in6`, as bytes.
        let bytes: [UInt8]
        let family: CInt
        let type: CInt
        let `protocol`: CInt

        /// The address as a numeric host, e.g. "127.0.0.1" or "::1" (`getnameinfo` with
        /// `NI_NUMERICHOST`); nil when it cannot be formatted.
        public var numericHost: String? {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let result = bytes.withUnsafeBytes { raw in
                getnameinfo(
                    raw.baseAddress?.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count),
                    &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST
                )
            }
            guard result == 0 else { return nil }
            return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }

        public var description: String { numericHost ?? "an address of family \(family)" }
    }

    /// What ``resolve(host:port:)`` found.
    public enum Resolution: Sendable {
        /// The addresses, in the order the resolver prefers them; never empty.
        case addresses([Address])
        /// The resolver's message, e.g. "Name or service not known" (`gai_strerror`): its
        /// errors are not `errno` values, so they are not a ``SystemCallError``.
        case failed(String)
    }

    /// What ``receive(max:timeoutMilliseconds:)`` got.
    public enum Received: Equatable, Sendable {
        /// One to `max` bytes.
        case bytes([UInt8])
        /// The peer closed its side of the connection (end of stream).
        case closed
        /// Nothing arrived in time.
        case timedOut
    }

    /// The connected socket (close-on-exec, blocking), owned by this value until ``close()``.
    public let descriptor: FileDescriptor
    /// The address the connection was made to.
    public let peer: Address

    /// The TCP addresses of `host` (a name or an IPv4 or IPv6 literal) for `port`
    /// (`getaddrinfo` with `AF_UNSPEC`, `SOCK_STREAM`).
    public static func resolve(host: String, port: Int) -> Resolution {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let result = getaddrinfo(host, String(port), &hints, &list)
        guard result == 0, let first = list else {
            return .failed(String(cString: gai_strerror(result)))
        }
        defer { freeaddrinfo(list) }
        var addresses: [Address] = []
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let entry = node {
            node = entry.pointee.ai_next
            guard let address = entry.pointee.ai_addr else { continue }
            let bytes = Array(UnsafeRawBufferPointer(start: address, count: Int(entry.pointee.ai_addrlen)))
            addresses.append(Address(
                bytes: bytes, family: entry.pointee.ai_family, type: entry.pointee.ai_socktype,
                protocol: entry.pointee.ai_protocol
            ))
        }
        return addresses.isEmpty ? .failed(String(cString: gai_strerror(EAI_NONAME))) : .addresses(addresses)
    }

    /// Connects to the first of `addresses` that accepts, each within `timeoutMilliseconds`.
    ///
    /// Per address: `socket` (close-on-exec), a non-blocking `connect`, `poll` for
    /// `POLLOUT` until the timeout, `SO_ERROR` for the outcome; the connected socket is
    /// made blocking again and gets `TCP_NODELAY` (small requests are not delayed).
    ///
    /// - Parameters:
    ///   - addresses: from ``resolve(host:port:)``; not empty.
    ///   - timeoutMilliseconds: how long one address may take to accept.
    /// - Throws: ``SystemCallError`` of the last address tried, e.g. `ECONNREFUSED`, or
    ///   `ETIMEDOUT` when it did not accept within the timeout.
    public static func connect(to addresses: [Address], timeoutMilliseconds: Int) throws -> TCPConnection {
        precondition(!addresses.isEmpty, "TCPConnection.connect needs at least one address")
        var lastError: SystemCallError?
        for address in addresses {
            do {
                return try connect(to: address, timeoutMilliseconds: timeoutMilliseconds)
            } catch let error as SystemCallError {
                lastError = error
            }
        }
        // Not reached without an error: there was at least one address and each one threw.
        throw lastError ?? SystemCallError("could not connect to any address", errno: .invalidArgument)
    }

    private static func connect(to address: Address, timeoutMilliseconds: Int) throws -> TCPConnection {
        let raw = try retryingOnInterrupt("could not create a TCP socket for \(address) (socket)") {
            socket(address.family, address.type | CInt(SOCK_CLOEXEC.rawValue), address.protocol)
        }
        let descriptor = FileDescriptor(rawValue: raw)
        do {
            let flags = try retryingOnInterrupt("could not read the flags of descriptor \(raw) (fcntl F_GETFL)") {
                fcntl(raw, F_GETFL)
            }
            _ = try retryingOnInterrupt("could not make descriptor \(raw) non-blocking (fcntl F_SETFL)") {
                fcntl(raw, F_SETFL, flags | O_NONBLOCK)
            }
            let started = address.bytes.withUnsafeBytes { bytes in
                Glibc.connect(raw, bytes.baseAddress?.assumingMemoryBound(to: sockaddr.self), socklen_t(bytes.count))
            }
            if started != 0 {
                let code = Glibc.errno
                // EINTR: the connection goes on in the background, as with EINPROGRESS.
                guard code == EINPROGRESS || code == EINTR else {
                    throw SystemCallError("could not connect to \(address) (connect)", errno: Errno(rawValue: code))
                }
                let events = try Poll.wait([(descriptor, .writable)], timeoutMilliseconds: timeoutMilliseconds)
                guard events.first?.isEmpty == false else {
                    throw SystemCallError("could not connect to \(address) within \(timeoutMilliseconds) ms (connect)", errno: .timedOut)
                }
                var outcome: CInt = 0
                var length = socklen_t(MemoryLayout<CInt>.size)
                _ = try retryingOnInterrupt("could not read the outcome of connecting to \(address) (SO_ERROR)") {
                    getsockopt(raw, SOL_SOCKET, SO_ERROR, &outcome, &length)
                }
                guard outcome == 0 else {
                    throw SystemCallError("could not connect to \(address) (connect)", errno: Errno(rawValue: outcome))
                }
            }
            _ = try retryingOnInterrupt("could not make descriptor \(raw) blocking again (fcntl F_SETFL)") {
                fcntl(raw, F_SETFL, flags)
            }
            var one: CInt = 1
            _ = try retryingOnInterrupt("could not set TCP_NODELAY on the connection to \(address) (setsockopt)") {
                setsockopt(raw, CInt(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<CInt>.size))
            }
        } catch {
            try? descriptor.close()
            throw error
        }
        return TCPConnection(descriptor: descriptor, peer: address)
    }

    /// Sends all of `bytes` (`send` with `MSG_NOSIGNAL`, so a peer that has gone away is an
    /// `EPIPE` error rather than a `SIGPIPE`); blocks until the kernel has taken them.
    ///
    /// - Throws: ``SystemCallError``, e.g. `ECONNRESET` or `EPIPE`.
    public func send(all bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let count = try bytes.withUnsafeBytes { (buffer) throws -> Int in
                try retryingOnInterrupt("could not send \(buffer.count - sent) bytes to \(peer) (send)") {
                    Glibc.send(descriptor.rawValue, buffer.baseAddress?.advanced(by: sent), buffer.count - sent, CInt(MSG_NOSIGNAL))
                }
            }
            sent += count
        }
    }

    /// Receives what has arrived, up to `max` bytes, waiting at most `timeoutMilliseconds`
    /// for the first one (`poll` for `POLLIN`, then `recv`; retried on EINTR and EAGAIN
    /// within the same deadline).
    ///
    /// - Throws: ``SystemCallError`` when `recv` fails, e.g. `ECONNRESET`.
    public func receive(max: Int, timeoutMilliseconds: Int) throws -> Received {
        precondition(max > 0, "TCPConnection.receive needs room for at least one byte")
        let deadline = Poll.monotonicMilliseconds() + Int64(timeoutMilliseconds)
        var buffer = [UInt8](repeating: 0, count: max)
        while true {
            let left = deadline - Poll.monotonicMilliseconds()
            guard left > 0 else { return .timedOut }
            let events = try Poll.wait([(descriptor, .readable)], timeoutMilliseconds: Int(left))
            guard events.first?.isEmpty == false else { return .timedOut }
            let count = buffer.withUnsafeMutableBytes { raw in
                recv(descriptor.rawValue, raw.baseAddress, raw.count, 0)
            }
            if count > 0 { return .bytes(Array(buffer[0..<count])) }
            if count == 0 { return .closed }
            let code = Glibc.errno
            if code == EINTR || code == EAGAIN { continue }
            throw SystemCallError("could not receive from \(peer) (recv)", errno: Errno(rawValue: code))
        }
    }

    /// Closes the connection (`close`).
    public func close() {
        try? descriptor.close()
    }
}
