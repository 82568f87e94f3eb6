#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage
import Testing

@Suite struct TCPConnectionTests {
    private func loopback(_ port: Int) throws -> [TCPConnection.Address] {
        guard case .addresses(let addresses) = TCPConnection.resolve(host: "127.0.0.1", port: port) else {
            throw SystemCallError("could not resolve 127.0.0.1", errno: .invalidArgument)
        }
        return addresses
    }

    @Test func bytesMakeTheRoundTripAndAClosedPeerIsReported() throws {
        let listener = try TCPListener.open(address: "127.0.0.1", port: 0)
        defer { try? listener.close() }
        let port = try TCPListener.port(of: listener)
        let addresses = try loopback(port)
        #expect(addresses.first?.numericHost == "127.0.0.1")
        let connection = try TCPConnection.connect(to: addresses, timeoutMilliseconds: 2000)
        defer { connection.close() }
        #expect(connection.peer.numericHost == "127.0.0.1")
        #expect(fcntl(connection.descriptor.rawValue, F_GETFD) & FD_CLOEXEC != 0)
        #expect(fcntl(connection.descriptor.rawValue, F_GETFL) & O_NONBLOCK == 0, "blocking again after the connect")
        let server = try LocalSocket.accept(listener)

        try connection.send(all: Array("request".utf8))
        var request = [UInt8](repeating: 0, count: 16)
        let count = request.withUnsafeMutableBytes { recv(server.rawValue, $0.baseAddress, $0.count, 0) }
        #expect(Array(request.prefix(max(0, count))) == Array("request".utf8))

        #expect(try connection.receive(max: 16, timeoutMilliseconds: 50) == .timedOut)
        _ = Array("answer".utf8).withUnsafeBytes { send(server.rawValue, $0.baseAddress, $0.count, 0) }
        #expect(try connection.receive(max: 3, timeoutMilliseconds: 2000) == .bytes(Array("ans".utf8)))
        #expect(try connection.receive(max: 16, timeoutMilliseconds: 2000) == .bytes(Array("wer".utf8)))
        try server.close()
        #expect(try connection.receive(max: 16, timeoutMilliseconds: 2000) == .closed)
    }

    @Test func aPortNobodyListensOnIsConnectionRefused() throws {
        let listener = try TCPListener.open(address: "127.0.0.1", port: 0)
        let port = try TCPListener.port(of: listener)
        try listener.close()
        #expect {
            _ = try TCPConnection.connect(to: try loopback(port), timeoutMilliseconds: 2000)
        } throws: { error in
            (error as? SystemCallError)?.errno == .connectionRefused
        }
    }

    @Test func aNameTheResolverDoesNotKnowGivesItsMessage() {
        guard case .failed(let message) = TCPConnection.resolve(host: "no-such-host.invalid", port: 102) else {
            Issue.record("no-such-host.invalid resolved")
            return
        }
        #expect(!message.isEmpty)
    }
}
