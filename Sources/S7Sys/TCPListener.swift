#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import SystemPackage

/// Why a TCP listening socket could not be opened, with what the operator can do about it.
///
/// The same texts as S7Server's `BindError`, under another name so that a file importing both
/// S7Sys and S7Server can name either.
public struct ListenError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The address that was asked for.
    public var address: String
    /// The port that was asked for.
    public var port: Int
    /// The error number of the failing call (`EINVAL` for an address that is not an IP literal).
    public var errno: CInt

    /// Creates an error for `address`:`port` that failed with `errno`.
    public init(address: String, port: Int, errno: CInt) {
        self.address = address
        self.port = port
        self.errno = errno
    }

    public var description: String {
        let what = "cannot listen on \(address):\(port): \(String(cString: strerror(errno)))"
        switch errno {
        case EADDRINUSE:
            return what + ". Another process already listens on this port."
        case EACCES:
            return what + ". Ports below 1024 need CAP_NET_BIND_SERVICE: start as root, grant the capability "
                + "(systemd AmbientCapabilities=CAP_NET_BIND_SERVICE, or setcap cap_net_bind_service=+ep on the binary), "
                + "or set server.port above net.ipv4.ip_unprivileged_port_start (e.g. 1102)."
        case EADDRNOTAVAIL:
            return what + ". The address is not configured on any interface of this host; use 0.0.0.0, 127.0.0.1 or one of the host's addresses (ip -brief address)."
        default:
            return what + "."
        }
    }
}

/// Opens a TCP listening socket the way the supervisor does: the descriptor is handed to the
/// server, which never binds anything itself.
public enum TCPListener {
    /// Binds and listens on `address` (an IPv4 or IPv6 literal) and `port`, with
    /// `SO_REUSEADDR`; port 0 lets the kernel choose one (see ``port(of:)``).
    ///
    /// - Returns: the listening descriptor (close-on-exec, blocking), owned by the caller.
    public static func open(address: String, port: Int, backlog: CInt = 128) throws(ListenError) -> FileDescriptor {
        guard (0...65535).contains(port) else { throw ListenError(address: address, port: port, errno: EINVAL) }
        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        let isV6 = inet_pton(AF_INET6, address, &v6.sin6_addr) == 1
        if !isV6 {
            guard inet_pton(AF_INET, address, &v4.sin_addr) == 1 else { throw ListenError(address: address, port: port, errno: EINVAL) }
        }
        let fd = socket(isV6 ? AF_INET6 : AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ListenError(address: address, port: port, errno: Glibc.errno) }
        var one: CInt = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
        let rc: CInt
        if isV6 {
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = in_port_t(UInt16(port).bigEndian)
            rc = withUnsafePointer(to: &v6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = in_port_t(UInt16(port).bigEndian)
            rc = withUnsafePointer(to: &v4) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        guard rc == 0 else {
            let e = Glibc.errno
            close(fd)
            throw ListenError(address: address, port: port, errno: e)
        }
        guard listen(fd, backlog) == 0 else {
            let e = Glibc.errno
            close(fd)
            throw ListenError(address: address, port: port, errno: e)
        }
        return FileDescriptor(rawValue: fd)
    }

    /// The local port a bound socket listens on (`getsockname`), e.g. after binding port 0.
    public static func port(of socket: FileDescriptor) throws -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try retryingOnInterrupt("could not read the local address of descriptor \(socket.rawValue) (getsockname)") {
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket.rawValue, $0, &length) }
            }
        }
        let port: in_port_t = withUnsafeBytes(of: &storage) { raw in
            // sin_port and sin6_port are both at offset 2, in network byte order.
            raw.loadUnaligned(fromByteOffset: 2, as: in_port_t.self)
        }
        return Int(UInt16(bigEndian: port))
    }
}
