#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a listening socket could not be opened, with what the operator can do about it.
public struct BindError: Error, CustomStringConvertible, Sendable {
    public var address: String
    public var port: Int
    public var errno: CInt

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

/// Opens a TCP listening socket the way the supervisor will: the descriptor is handed to the
/// server, which never binds anything itself.
public enum ListeningSocket {
    /// Binds and listens on `address` (IPv4 or IPv6 literal) and `port`; returns the descriptor.
    public static func open(address: String, port: Int, backlog: CInt = 128) throws(BindError) -> CInt {
        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        let isV6 = inet_pton(AF_INET6, address, &v6.sin6_addr) == 1
        if !isV6 {
            guard inet_pton(AF_INET, address, &v4.sin_addr) == 1 else { throw BindError(address: address, port: port, errno: EINVAL) }
        }
        #if canImport(Glibc)
        let fd = socket(isV6 ? AF_INET6 : AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(isV6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw BindError(address: address, port: port, errno: Glibc.errno) }
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
            throw BindError(address: address, port: port, errno: e)
        }
        guard listen(fd, backlog) == 0 else {
            let e = Glibc.errno
            close(fd)
            throw BindError(address: address, port: port, errno: e)
        }
        return fd
    }
}
