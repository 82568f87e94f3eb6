#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage
import Testing

private let isRoot = getuid() == 0

@Suite struct LocalSocketTests {
    @Test func aSeqpacketMessageMakesTheRoundTrip() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("control.sock")
        let group: gid_t? = isRoot ? 65534 : nil
        let listener = try LocalSocket.listen(path: path, mode: 0o660, group: group)
        defer { try? listener.close() }
        let status = try #require(fileStatus(path))
        #expect(status.st_mode & S_IFMT == S_IFSOCK)
        #expect(status.st_mode & 0o7777 == 0o660)
        if let group { #expect(status.st_gid == group) }
        #expect(fcntl(listener.rawValue, F_GETFD) & FD_CLOEXEC != 0)

        let client = try LocalSocket.connect(path: path)
        defer { try? client.close() }
        let server = try LocalSocket.accept(listener)
        defer { try? server.close() }
        #expect(fcntl(server.rawValue, F_GETFD) & FD_CLOEXEC != 0)

        try UnixSocket.send(message: Array("status".utf8), on: client)
        #expect(try UnixSocket.receive(on: server, maxBytes: 64).bytes == Array("status".utf8))
        try UnixSocket.send(message: Array("ok".utf8), on: server)
        #expect(try UnixSocket.receive(on: client, maxBytes: 64).bytes == Array("ok".utf8))

        let peer = try UnixSocket.peerCredentials(of: server)
        #expect(peer.pid == getpid())
        #expect(LocalSocket.isTrusted(peer, serviceUID: peer.uid, serviceGID: 54321))
        #expect(LocalSocket.isTrusted((peer.pid, 54321, peer.gid), serviceUID: 54322, serviceGID: peer.gid))
        #expect(!LocalSocket.isTrusted((peer.pid, 54321, 54321), serviceUID: 54322, serviceGID: 54323))
        if let supplementary = try supplementaryGroups().first(where: { $0 != getegid() }) {
            #expect(LocalSocket.isTrusted((getpid(), 54321, 54321), serviceUID: 54322, serviceGID: supplementary))
        }

        try LocalSocket.setReceiveTimeout(server, seconds: 1)
        let started = Poll.monotonicMilliseconds()
        #expect {
            try UnixSocket.receive(on: server, maxBytes: 64)
        } throws: { error in
            (error as? SystemCallError)?.errno == .resourceTemporarilyUnavailable
        }
        #expect(Poll.monotonicMilliseconds() - started >= 900)
    }

    @Test func aStaleSocketIsReplacedAndAStreamSocketWorks() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("metrics.sock")
        let first = try LocalSocket.listen(path: path, mode: 0o600, kind: .stream)
        try first.close()
        let second = try LocalSocket.listen(path: path, mode: 0o600, kind: .stream)
        defer { try? second.close() }
        let client = try LocalSocket.connect(path: path, kind: .stream)
        defer { try? client.close() }
        let server = try LocalSocket.accept(second)
        defer { try? server.close() }
        _ = try client.writeAll(Array("GET /".utf8))
        var buffer = [UInt8](repeating: 0, count: 16)
        let count = try buffer.withUnsafeMutableBytes { try server.read(into: $0) }
        #expect(Array(buffer[0..<count]) == Array("GET /".utf8))
    }

    @Test func aRegularFileAtThePathIsRefusedAndKept() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("control.sock")
        try writeFile(path, "keep me", mode: 0o600)
        #expect {
            try LocalSocket.listen(path: path, mode: 0o660)
        } throws: { error in
            (error as? UnsafePathError)?.found == "is a regular file, not a socket"
        }
        #expect(try readFileText(path) == "keep me")

        let link = temporary("link.sock")
        #expect(symlink(path, link) == 0)
        #expect(throws: UnsafePathError.self) { try LocalSocket.listen(path: link, mode: 0o660) }
        #expect(fileStatus(link).map { $0.st_mode & S_IFMT == S_IFLNK } == true)
    }

    @Test func connectingWhereNothingListensSaysWhatToCheck() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("memory.sock")
        #expect {
            try LocalSocket.connect(path: path)
        } throws: { error in
            guard let error = error as? SystemCallError else { return false }
            return error.errno == .noSuchFileOrDirectory && "\(error)".contains("is `s7commd run` running?")
        }
        // A socket file nobody listens on any more.
        let listener = try LocalSocket.listen(path: path, mode: 0o600)
        try listener.close()
        #expect {
            try LocalSocket.connect(path: path)
        } throws: { error in
            (error as? SystemCallError)?.errno == .connectionRefused
        }
    }

    @Test func aPathTooLongIsAnError() throws {
        #expect(throws: SystemCallError.self) {
            try LocalSocket.listen(path: "/tmp/" + String(repeating: "x", count: 200), mode: 0o600)
        }
    }

    private func supplementaryGroups() throws -> [gid_t] {
        let count = getgroups(0, nil)
        guard count > 0 else { return [] }
        var groups = [gid_t](repeating: 0, count: Int(count))
        let filled = getgroups(count, &groups)
        return filled > 0 ? Array(groups[0..<Int(filled)]) : []
    }
}

@Suite struct TCPListenerTests {
    @Test func portZeroListensAndASecondBindOfThePortIsInUse() throws {
        let listener = try TCPListener.open(address: "127.0.0.1", port: 0)
        defer { try? listener.close() }
        let port = try TCPListener.port(of: listener)
        #expect(port > 0)
        #expect(fcntl(listener.rawValue, F_GETFD) & FD_CLOEXEC != 0)
        #expect(throws: ListenError(address: "127.0.0.1", port: port, errno: EADDRINUSE)) {
            _ = try TCPListener.open(address: "127.0.0.1", port: port)
        }
        let error = ListenError(address: "127.0.0.1", port: port, errno: EADDRINUSE)
        #expect(error.description.hasSuffix("Another process already listens on this port."))
    }

    @Test func anAddressThatIsNoLiteralIsInvalid() throws {
        #expect(throws: ListenError(address: "not an address", port: 1102, errno: EINVAL)) {
            _ = try TCPListener.open(address: "not an address", port: 1102)
        }
    }

    @Test func ipv6LoopbackWorks() throws {
        let opened = Result { () throws(ListenError) in try TCPListener.open(address: "::1", port: 0) }
        if case .failure(let error) = opened, error.errno == EADDRNOTAVAIL || error.errno == EAFNOSUPPORT {
            return  // no IPv6 on this host
        }
        let listener = try opened.get()
        defer { try? listener.close() }
        #expect(try TCPListener.port(of: listener) > 0)
    }
}
