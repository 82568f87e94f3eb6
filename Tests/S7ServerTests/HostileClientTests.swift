import Logging
import NIOCore
import NIOEmbedded
import S7Session
import Testing
@testable import S7Server

/// Deadlines, backpressure and admission, driven through EmbeddedChannel with a virtual clock.
extension EmbeddedHandlerTests {
    static let strict = ServerSettings(maxClients: 4, sendTimeout: .milliseconds(500), receiveTimeout: .milliseconds(300),
                                       idleTimeout: .seconds(2))

    /// The client starts or stops taking data, as NIO reports it.
    func setWritable(_ h: Harness, _ writable: Bool) {
        h.channel.isWritable = writable
        h.channel.pipeline.fireChannelWritabilityChanged()
    }

    @Test func tricklingBytesDoNotExtendTheReceiveDeadline() throws {
        let h = try harness(settings: Self.strict)
        try setUp(h)
        // One byte every 100 ms: the request is dropped 300 ms after its first byte.
        for i in 0..<3 {
            #expect(try exchange(h.channel, [readRequest[i]]) == [])
            #expect(h.channel.isActive, "dropped after \(i * 100) ms")
            h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        }
        #expect(!h.channel.isActive)
        #expect(h.logs.contains("disconnected: request incomplete 300 ms after its first byte (server.recv_timeout_ms=300)"))
    }

    @Test func aCompleteRequestStartsANewReceiveDeadline() throws {
        let h = try harness(settings: Self.strict)
        try setUp(h)
        // A whole request plus the start of the next: the deadline is the new request's.
        #expect(try exchange(h.channel, Array(readRequest[..<10])) == [])
        h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(250))
        #expect(try exchange(h.channel, Array(readRequest[10...]) + Array(readRequest[..<5])) == readAnswer)
        h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(250))
        #expect(h.channel.isActive)
        h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(50))
        #expect(!h.channel.isActive)
    }

    @Test func setupMustFinishWithinTheReceiveTimeoutOfAccept() throws {
        let h = try harness(settings: Self.strict)
        // The connection request alone, in time: the setup deadline still runs from accept.
        #expect(try exchange(h.channel, connectRequest) == connectConfirm)
        h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(299))
        #expect(h.channel.isActive)
        h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!h.channel.isActive)
        #expect(h.logs.contains("disconnected: not set up within 300 ms of connecting (server.recv_timeout_ms=300)"))

        let done = try harness(settings: Self.strict)
        try setUp(done)
        done.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1000))
        #expect(done.channel.isActive)
        _ = try? done.channel.finish()
    }

    @Test func emptyDataTPDUsAreNotActivity() throws {
        let h = try harness(settings: Self.strict)
        try setUp(h)
        let emptyDT = bytes("03 00 00 07 02 F0 80")
        for _ in 0..<3 {
            h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(600))
            #expect(try exchange(h.channel, emptyDT) == [])
        }
        #expect(h.channel.isActive)
        h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        #expect(!h.channel.isActive)
        #expect(h.logs.contains("disconnected: no request for 2000 ms (server.ping_timeout_ms=2000)"))
    }

    @Test func aNewcomerEvictsTheOldestConnectionStillSettingUp() throws {
        let registry = ConnectionRegistry(limit: 2)
        let logs = LogStore()
        let slow = try harness(registry: registry, logs: logs, settings: Self.strict, port: 40101)
        #expect(try exchange(slow.channel, connectRequest) == connectConfirm)
        let ready = try harness(registry: registry, logs: logs, settings: Self.strict, port: 40102)
        try setUp(ready)
        let newcomer = try harness(registry: registry, logs: logs, settings: Self.strict, port: 40103)
        #expect(newcomer.channel.isActive)
        slow.channel.embeddedEventLoop.run()
        #expect(!slow.channel.isActive)
        #expect(logs.contains("client 127.0.0.1:40101 disconnected: evicted: not set up after"))
        try setUp(newcomer)
        // Every slot holds a set-up client now: the next one is refused, nobody is evicted.
        let late = try harness(registry: registry, logs: logs, settings: Self.strict, port: 40104)
        #expect(!late.channel.isActive)
        #expect(ready.channel.isActive && newcomer.channel.isActive)
        let counters = registry.snapshot().counters
        #expect(counters.closed(.evicted) == 1 && counters.refused(.maxClients) == 1)
        for h in [ready, newcomer] { _ = try? h.channel.finish() }
    }

    @Test func aServedConnectionIsEvictedOnlyAfterWaitingTheGrace() throws {
        let registry = ConnectionRegistry(limit: 2)
        let logs = LogStore()
        let loop = EmbeddedEventLoop()
        func connect(_ port: Int) throws -> EmbeddedChannel {
            try harness(registry: registry, logs: logs, settings: ServerSettings(maxClients: 2), port: port, loop: loop).channel
        }
        let dripping = try connect(40131)
        let steady = try connect(40132)
        for c in [dripping, steady] {
            for request in [connectRequest, setupRequest, readRequest] { try c.writeInbound(ByteBuffer(bytes: request)) }
        }
        try dripping.writeInbound(ByteBuffer(bytes: Array(readRequest[..<3])))
        // Within the grace a split request is no reason to lose the connection: refused.
        loop.advanceTime(by: .milliseconds(100))
        let early = try connect(40133)
        #expect(!early.isActive && dripping.isActive)
        // Past it, the connection waiting longest for the rest of its request makes room.
        loop.advanceTime(by: ConnectionRegistry.evictionGrace)
        let late = try connect(40134)
        loop.run()
        #expect(late.isActive && !dripping.isActive && steady.isActive)
        #expect(logs.contains("client 127.0.0.1:40131 disconnected: evicted: a request incomplete after 600 ms"))
        // One that was never answered anything since its setup gets no grace.
        try late.writeInbound(ByteBuffer(bytes: connectRequest))
        try late.writeInbound(ByteBuffer(bytes: setupRequest))
        try late.writeInbound(ByteBuffer(bytes: Array(readRequest[..<3])))
        let next = try connect(40135)
        loop.run()
        #expect(next.isActive && !late.isActive && steady.isActive)
        #expect(logs.contains("client 127.0.0.1:40134 disconnected: evicted: a request incomplete after 0 ms"))
        for c in [steady, next] { _ = try? c.finish() }
    }

    @Test func connectionsPerAddressAreLimited() throws {
        let registry = ConnectionRegistry(limit: 8, perAddress: 1)
        let logs = LogStore()
        let first = try harness(registry: registry, logs: logs, port: 40111)
        let second = try harness(registry: registry, logs: logs, port: 40112)
        #expect(first.channel.isActive && !second.channel.isActive)
        #expect(logs.contains("refused 127.0.0.1:40112: max_clients_per_address (1) connections from 127.0.0.1 are open already (server.max_clients_per_address=1)"))
        #expect(registry.snapshot().counters.refused(.maxClientsPerAddress) == 1)
        try first.channel.close().wait()
        let third = try harness(registry: registry, logs: logs, port: 40113)
        #expect(third.channel.isActive)
        _ = try? third.channel.finish()
    }

    @Test func answersBackedUpStopTheReadingUntilTheyDrain() throws {
        let registry = ConnectionRegistry(limit: 4)
        let h = try harness(registry: registry, settings: Self.strict)
        try setUp(h)
        // The client takes nothing: 100 pipelined reads, far more than the AmQ of 1 it was granted.
        setWritable(h, false)
        let answered = try exchange(h.channel, Array((0..<100).map { _ in readRequest }.joined()))
        var session = S7Session(configuration: SessionConfiguration(), memory: try testMemory())
        var scratch: [UInt8] = []
        _ = session.receive(connectRequest + setupRequest, into: &scratch)
        let bound = session.outputBound
        #expect(answered.count >= readAnswer.count && answered.count < bound + readAnswer.count,
                "\(answered.count) bytes answered while not writable; the bound is \(bound)")
        #expect(registry.snapshot().counters.throttled == 1)
        #expect(h.logs.contains("has more requests in flight than the AmQ 1 it was granted"))
        // It drains: the rest is answered, nothing lost.
        setWritable(h, true)
        // One output bound per event-loop turn: the rest comes in the following turns.
        h.channel.embeddedEventLoop.run()
        let rest = try written(h.channel)
        #expect(answered.count + rest.count == 100 * readAnswer.count)
        // It stops taking answers again and does not drain within send_timeout_ms: dropped.
        setWritable(h, false)
        h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(500))
        #expect(!h.channel.isActive)
        #expect(h.logs.contains("disconnected: took none of its answers for 500 ms (server.send_timeout_ms=500)"))
    }

    @Test func refusalsAreLoggedAtABoundedRate() throws {
        let registry = ConnectionRegistry(limit: 1)
        let logs = LogStore()
        let held = try harness(registry: registry, logs: logs, port: 40120)
        try setUp(held)
        let limiter = LogLimiter(logger: .init(label: "test") { _ in CapturingLogHandler(store: logs) })
        let loop = EmbeddedEventLoop()
        for i in 0..<50 {
            let refused = try harness(registry: registry, logs: logs, settings: ServerSettings(maxClients: 1), port: 41000 + i,
                                      loop: loop, limiter: limiter)
            #expect(!refused.channel.isActive)
        }
        #expect(logs.all.filter { $0.contains("refused 127.0.0.1:") }.count == LogLimiter.burst)
        loop.advanceTime(by: LogLimiter.window)
        #expect(logs.contains("refused 45 more connections from 127.0.0.1 in the last 10 s (max_clients, server.max_clients=1)"))
        #expect(registry.snapshot().counters.refused(.maxClients) == 50)
        _ = try? held.channel.finish()
    }
}
