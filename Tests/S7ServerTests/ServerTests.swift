import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import PLCMemory
import S7Session
import S7Sys
import Synchronization
import Testing
@testable import S7Server

#if canImport(Glibc)
import Glibc
#endif

/// Collects log lines so tests can check the reasons the server gives.
final class LogStore: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
    func contains(_ text: String) -> Bool { all.contains { $0.contains(text) } }
}

struct CapturingLogHandler: LogHandler {
    let store: LogStore
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) { store.append("\(event.level): \(event.message)") }
}

func bytes(_ hex: String) -> [UInt8] {
    let d = Array(hex.filter { $0.isHexDigit })
    return stride(from: 0, to: d.count, by: 2).map { UInt8(String(d[$0...$0 + 1]), radix: 16)! }
}

let connectRequest = bytes("03 00 00 16 11 E0 00 00 00 01 00 C0 01 0A C1 02 01 00 C2 02 01 01")
let connectConfirm = bytes("03 00 00 16 11 D0 00 01 00 01 00 C0 01 0A C1 02 01 00 C2 02 01 01")
let setupRequest = bytes("03 00 00 19 02 F0 80 32 01 00 00 00 01 00 08 00 00 F0 00 00 01 00 01 01 E0")
let setupAnswer = bytes("03 00 00 1B 02 F0 80 32 03 00 00 00 01 00 08 00 00 00 00 F0 00 00 01 00 01 01 E0")
/// Read Var MB0 (ref 2) and its answer for memory whose MB0 is 0x2A.
let readRequest = bytes("03 00 00 1F 02 F0 80 32 01 00 00 00 02 00 0E 00 00 04 01 12 0A 10 02 00 01 00 00 83 00 00 00")
let readAnswer = bytes("03 00 00 1A 02 F0 80 32 03 00 00 00 02 00 02 00 05 00 00 04 01 FF 04 00 08 2A")

func testMemory() throws -> FlatMemory {
    var d = MemoryDefinition()
    d.flags = RegionDefinition(size: 16)
    d.dataBlocks[1] = RegionDefinition(size: 16)
    let m = try FlatMemory(d)
    try m.write(.flags, db: 0, offset: 0, bytes: [0x2A][...])
    return m
}

@Suite("Channel handler (EmbeddedChannel)")
struct EmbeddedHandlerTests {
    struct Harness {
        let channel: EmbeddedChannel
        let logs: LogStore
    }

    /// A connection from 127.0.0.1:`port`; give several the same `loop` (one virtual clock) and
    /// `limiter` where their timing or their log lines are compared.
    func harness(registry: ConnectionRegistry = ConnectionRegistry(limit: 4), logs: LogStore = LogStore(),
                 settings: ServerSettings = ServerSettings(maxClients: 4), port: Int = 40000,
                 metrics: ServerMetrics? = nil, loop: EmbeddedEventLoop = EmbeddedEventLoop(),
                 limiter: LogLimiter? = nil) throws -> Harness {
        let logger = Logger(label: "test") { _ in CapturingLogHandler(store: logs) }
        let handler = S7ChannelHandler(session: S7Session(configuration: SessionConfiguration(), memory: try testMemory()),
                                       settings: settings, registry: registry, logger: logger, limiter: limiter,
                                       latency: metrics?.latency)
        let channel = EmbeddedChannel(handler: handler, loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: port)).wait()
        return Harness(channel: channel, logs: logs)
    }

    func exchange(_ channel: EmbeddedChannel, _ request: [UInt8]) throws -> [UInt8] {
        try channel.writeInbound(ByteBuffer(bytes: request))
        return try written(channel)
    }

    /// Everything the handler wrote since the last call.
    func written(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var out: [UInt8] = []
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            out += buffer.readBytes(length: buffer.readableBytes) ?? []
        }
        return out
    }

    /// COTP connect and Setup Communication, checked.
    func setUp(_ h: Harness) throws {
        #expect(try exchange(h.channel, connectRequest) == connectConfirm)
        #expect(try exchange(h.channel, setupRequest) == setupAnswer)
    }

    @Test func answersAFullSession() throws {
        let h = try harness()
        #expect(try exchange(h.channel, connectRequest) == connectConfirm)
        #expect(try exchange(h.channel, setupRequest) == setupAnswer)
        // A request split over two reads is answered once it is whole.
        #expect(try exchange(h.channel, Array(readRequest[..<10])) == [])
        #expect(try exchange(h.channel, Array(readRequest[10...])) == readAnswer)
        #expect(h.channel.isActive)
        #expect(h.logs.contains("client 127.0.0.1:40000 connected (1 of 4)"))
        #expect(h.logs.contains("proposed PDU 480, agreed 480"))
        _ = try? h.channel.finish()
    }

    @Test func closesOnGarbageWithAReason() throws {
        let h = try harness()
        #expect(try exchange(h.channel, Array("GET / HTTP/1.1\r\n\r\n".utf8)) == [])
        #expect(!h.channel.isActive)
        #expect(h.logs.contains("client 127.0.0.1:40000 disconnected: not an ISO-on-TCP frame: TPKT version byte is 0x47, expected 0x03"))
        _ = try? h.channel.finish()
    }

    @Test func disconnectRequestIsConfirmedThenClosed() throws {
        let h = try harness()
        _ = try exchange(h.channel, connectRequest)
        #expect(try exchange(h.channel, bytes("03 00 00 0B 06 80 00 01 00 03 00")) == bytes("03 00 00 0A 05 C0 00 03 00 01"))
        #expect(!h.channel.isActive)
        #expect(h.logs.contains("disconnected: client disconnected (COTP disconnect request)"))
        _ = try? h.channel.finish()
    }

    @Test func maxClientsClosesTheExtraConnection() throws {
        let registry = ConnectionRegistry(limit: 2)
        let logs = LogStore()
        let a = try harness(registry: registry, logs: logs, port: 40001)
        let b = try harness(registry: registry, logs: logs, port: 40002)
        for h in [a, b] { try setUp(h) }
        let c = try harness(registry: registry, logs: logs, port: 40003)
        #expect(!c.channel.isActive)
        #expect(logs.contains("refused 127.0.0.1:40003: max_clients (2) clients are connected already and all have completed setup (server.max_clients=2)"))
        #expect(try exchange(c.channel, connectRequest) == [])
        #expect(registry.count == 2)
        // The admitted clients go on working.
        for h in [a, b] { #expect(try exchange(h.channel, readRequest) == readAnswer) }
        // When one leaves, a new client is admitted.
        try a.channel.close().wait()
        #expect(registry.count == 1)
        let d = try harness(registry: registry, logs: logs, port: 40004)
        #expect(d.channel.isActive)
        #expect(try exchange(d.channel, connectRequest) == connectConfirm)
        for h in [b, d] { _ = try? h.channel.finish() }
    }

    /// The metrics carry exactly what the handler counted; a second scrape with no traffic
    /// changes nothing, and restart counts only ever add what is new.
    @Test func metricsRenderTheCountersOnce() throws {
        let registry = ConnectionRegistry(limit: 1)
        let metrics = ServerMetrics()
        let a = try harness(registry: registry, port: 40021, metrics: metrics)
        #expect(try exchange(a.channel, connectRequest) == connectConfirm)
        #expect(try exchange(a.channel, setupRequest) == setupAnswer)
        let refused = try harness(registry: registry, port: 40022, metrics: metrics)
        #expect(!refused.channel.isActive)
        func values() -> [String: String] {
            let text = String(decoding: metrics.render(registry.snapshot()), as: UTF8.self)
            var out: [String: String] = [:]
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                let parts = line.split(separator: " ")
                out[String(parts[0])] = String(parts[1])
            }
            return out
        }
        #expect(values()["s7commd_requests_total"] == "0")
        #expect(try exchange(a.channel, readRequest + readRequest) == readAnswer + readAnswer)
        for _ in 0..<2 {
            let v = values()
            #expect(v["s7commd_requests_total"] == "2")
            #expect(v["s7commd_received_bytes_total"] == "\(connectRequest.count + setupRequest.count + 2 * readRequest.count)")
            #expect(v["s7commd_sent_bytes_total"] == "\(connectConfirm.count + setupAnswer.count + 2 * readAnswer.count)")
            #expect(v["s7commd_clients"] == "1.0" && v["s7commd_max_clients"] == "1.0")
            #expect(v["s7commd_connections_total"] == "1")
            #expect(v["s7commd_connections_refused_total{reason=\"max_clients\"}"] == "1")
            #expect(v["s7commd_request_errors_total{kind=\"refused\"}"] == "0")
            // one read answered both requests: one observation, inside the buckets
            #expect(v["s7commd_request_duration_seconds_count"] == "1")
            #expect(v["s7commd_request_duration_seconds_bucket{le=\"1.0\"}"] == "1")
            #expect(v["s7commd_child_restarts_total{child=\"worker\"}"] == "0")
        }
        metrics.setRestarts(["worker": 2, "memory": 0], sandboxKills: 0)
        metrics.setRestarts(["worker": 2, "memory": 1, "unknown": 5], sandboxKills: 1)
        let v = values()
        #expect(v["s7commd_sandbox_kills_total"] == "1")
        #expect(v["s7commd_child_restarts_total{child=\"worker\"}"] == "2")
        #expect(v["s7commd_child_restarts_total{child=\"memory\"}"] == "1")
        #expect(!v.keys.contains { $0.contains("unknown") })
        try a.channel.close().wait()
        #expect(values()["s7commd_clients"] == "0.0")
    }

    @Test func snapshotKeepsEachClientAndTheCounters() throws {
        let registry = ConnectionRegistry(limit: 1)
        let logs = LogStore()
        let a = try harness(registry: registry, logs: logs, port: 40011)
        try setUp(a)
        let refused = try harness(registry: registry, logs: logs, port: 40012)
        #expect(!refused.channel.isActive)
        #expect(try exchange(a.channel, readRequest + readRequest) == readAnswer + readAnswer)
        let snapshot = registry.snapshot()
        #expect(snapshot.maxClients == 1)
        #expect(snapshot.counters.refused(.maxClients) == 1 && snapshot.counters.requestsTotal == 2)
        #expect(snapshot.clients.count == 1)
        let client = try #require(snapshot.clients.first)
        #expect(client.peer == "127.0.0.1:40011" && client.connectionType == "PG" && client.rack == 0 && client.slot == 1)
        #expect(client.pduProposed == 480 && client.pduAgreed == 480 && client.requests == 2 && client.errors == 0)
        try a.channel.close().wait()
        #expect(registry.snapshot().clients.isEmpty)
        let garbage = try harness(registry: registry, logs: logs, port: 40013)
        _ = try exchange(garbage.channel, Array("GET / HTTP/1.1\r\n\r\n".utf8))
        #expect(registry.snapshot().counters.closed(.badInput) == 1)
        _ = try? garbage.channel.finish()
    }

    @Test func idleAndIncompleteRequestTimeouts() throws {
        let settings = ServerSettings(maxClients: 4, receiveTimeout: .milliseconds(300), idleTimeout: .seconds(2))
        let idle = try harness(settings: settings)
        try setUp(idle)
        idle.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1999))
        #expect(idle.channel.isActive)
        idle.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!idle.channel.isActive)
        #expect(idle.logs.contains("disconnected: no request for 2000 ms (server.ping_timeout_ms=2000)"))

        let partial = try harness(settings: settings)
        try setUp(partial)
        _ = try exchange(partial.channel, Array(readRequest[..<5]))
        partial.channel.embeddedEventLoop.advanceTime(by: .milliseconds(300))
        #expect(!partial.channel.isActive)
        #expect(partial.logs.contains("disconnected: request incomplete 300 ms after its first byte (server.recv_timeout_ms=300)"))
    }

    @Test func timeoutsAreCounted() throws {
        let registry = ConnectionRegistry(limit: 4)
        let settings = ServerSettings(maxClients: 4, receiveTimeout: .milliseconds(300), idleTimeout: .seconds(2))
        let idle = try harness(registry: registry, settings: settings)
        try setUp(idle)
        idle.channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        let partial = try harness(registry: registry, settings: settings)
        try setUp(partial)
        _ = try exchange(partial.channel, Array(readRequest[..<5]))
        partial.channel.embeddedEventLoop.advanceTime(by: .milliseconds(300))
        let counters = registry.snapshot().counters
        #expect(counters.closed(.idleTimeout) == 1 && counters.closed(.receiveTimeout) == 1 && counters.closed(.sendTimeout) == 0)
    }
}

@Suite("Server on loopback")
struct LoopbackServerTests {
    /// A blocking client socket with a receive timeout.
    final class Client {
        let fd: CInt
        init(port: Int) throws {
            fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(Swift.MemoryLayout<timeval>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(Swift.MemoryLayout<sockaddr_in>.size)) }
            }
            guard rc == 0 else { throw POSIXError(.ECONNREFUSED) }
        }
        deinit { close(fd) }

        func send(_ b: [UInt8]) { _ = b.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }

        /// Reads `count` bytes; returns fewer when the server closes (or after the timeout).
        func receive(_ count: Int) -> [UInt8] {
            var out: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: count)
            while out.count < count {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, count - out.count, 0) }
                if n <= 0 { break }
                out += buffer[..<n]
            }
            return out
        }

        func exchange(_ request: [UInt8], expecting count: Int) -> [UInt8] {
            send(request)
            return receive(count)
        }
    }

    @Test func maxClientsOnARealSocket() async throws {
        let logs = LogStore()
        let server = S7Server(settings: ServerSettings(maxClients: 2), session: SessionConfiguration(), memory: try testMemory(),
                              logger: Logger(label: "test") { _ in CapturingLogHandler(store: logs) }, threads: 1)
        let fd = try TCPListener.open(address: "127.0.0.1", port: 0).rawValue
        let address = try await server.start(listeningOn: fd)
        let port = try #require(address?.port)

        let a = try Client(port: port)
        let b = try Client(port: port)
        for client in [a, b] {
            #expect(client.exchange(connectRequest, expecting: connectConfirm.count) == connectConfirm)
            #expect(client.exchange(setupRequest, expecting: setupAnswer.count) == setupAnswer)
        }
        let c = try Client(port: port)
        // Both slots hold set-up clients: the third is accepted by TCP and closed at once; it
        // reads end-of-file, no answer.
        #expect(c.exchange(connectRequest, expecting: connectConfirm.count) == [])
        #expect(server.connectedClients == 2)
        for client in [a, b] { #expect(client.exchange(readRequest, expecting: readAnswer.count) == readAnswer) }
        // Garbage closes that connection only.
        a.send(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        #expect(a.receive(1) == [])
        #expect(b.exchange(readRequest, expecting: readAnswer.count) == readAnswer)
        await server.shutdown()
        #expect(logs.contains("refused 127.0.0.1:"))
        #expect(logs.contains("not an ISO-on-TCP frame"))
    }
}
