import Foundation

/// The IP addresses configured on this host's interfaces.
public enum HostAddresses {
    /// Addresses always accepted for `server.bind_address`: every interface and loopback.
    public static let wildcardAndLoopback: Set<String> = ["0.0.0.0", "::", "127.0.0.1", "::1"]

    /// Every IPv4 and IPv6 address of a local interface, as "address (interface)" pairs.
    public static func current() -> [(address: String, interface: String)] {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return [] }
        defer { freeifaddrs(head) }
        var out: [(String, String)] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let sa = entry.pointee.ifa_addr else { continue }
            let family = Int32(sa.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6 else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let length = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
            guard getnameinfo(sa, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 else { continue }
            var address = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let percent = address.firstIndex(of: "%") { address = String(address[..<percent]) }
            out.append((address, String(cString: entry.pointee.ifa_name)))
        }
        return out
    }

    /// Canonical text of an address literal, so "0:0::1" and "::1" compare equal.
    static func canonical(_ text: String) -> String? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            return inet_ntop(AF_INET, &v4, &buf, socklen_t(buf.count)).map { String(cString: $0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            return inet_ntop(AF_INET6, &v6, &buf, socklen_t(buf.count)).map { String(cString: $0) }
        }
        return nil
    }
}

extension S7Configuration {
    /// Checks what depends on this host: the bind address must be one of its addresses.
    public func hostProblems() -> [ConfigurationProblem] {
        guard let bind = HostAddresses.canonical(server.bindAddress) else { return [] }
        if HostAddresses.wildcardAndLoopback.contains(bind) { return [] }
        let host = HostAddresses.current()
        if host.contains(where: { HostAddresses.canonical($0.address) == bind }) { return [] }
        let list = host.map { "\($0.address) (\($0.interface))" }.joined(separator: ", ")
        return [ConfigurationProblem(
            keyPath: "server.bind_address", value: "\"\(server.bindAddress)\"",
            allowed: "0.0.0.0, 127.0.0.1, or an address of this host: \(list.isEmpty ? "none found" : list)",
            meaning: "the address is not configured on any interface of this host, so nothing could listen on it")]
    }

    /// Loads a file and checks it against this host too (what `run` and `config check` use).
    public static func loadForHost(path: String) throws -> S7Configuration {
        let configuration = try load(path: path)
        let problems = configuration.hostProblems()
        guard problems.isEmpty else { throw ConfigurationError(path: path, problems: problems) }
        return configuration
    }
}
