import PLCMemory
import S7Sys
import SystemPackage
import Testing

@testable import S7IPC

let settings = WorkerSettings(
    endpoint: "0.0.0.0:102", maxClients: 32, maxClientsPerAddress: 4, sendTimeoutMs: 3000, recvTimeoutMs: 3000,
    idleTimeoutMs: 10_000, pduSize: 480,
    identity: .init(name: "s7commd", moduleType: "CPU 315-2 PN/DP", serialNumber: "S C-1", copyright: "Original Siemens Equipment",
                    moduleName: "s7commd", orderCode: "6ES7 315-2EH14-0AB0", plantIdentification: "Halle 3 — Presse",
                    firmwareVersion: [3, 2, 6]),
    allowedRackSlots: [[0, 2], [0, 1]], allowPLCControl: true, allowClockSet: false, logConnections: true, logErrors: true,
    logDataAccess: false)

let definition = MemoryDefinition(
    dataBlocks: [1: RegionDefinition(size: 256), 7: RegionDefinition(size: 16, readOnly: false, retain: true),
                 9: RegionDefinition(size: 8, readOnly: true, mapping: ImageMapping(table: .intMemory, startElement: 10, bitAddressing: true))],
    inputs: RegionDefinition(size: 128, readOnly: true), outputs: RegionDefinition(size: 128), flags: RegionDefinition(size: 256, retain: true),
    timers: nil, counters: RegionDefinition(size: 512))

let report = SupervisorReport(
    pid: 4242, state: .listening, endpoint: "0.0.0.0:102", metrics: ["http://127.0.0.1:9102/metrics", "unix:/run/s7commd/metrics.sock"],
    startedAt: 1_764_806_400_000, uptimeMs: 12_345,
    children: [.init(role: .worker, pid: 4243, startedAt: 1_764_806_400_100, restarts: 2), .init(role: .memory, pid: nil, startedAt: nil, restarts: 0)],
    workerSnapshot: Array(#"{"clients":[]}"#.utf8), workerProblem: nil)

/// Every message of every set, with every optional both present and absent.
let toWorker: [SupervisorToWorker] = [
    .serve(WorkerStart(settings: settings, memory: definition, listening: true, metricsListeners: 2)),
    .serve(WorkerStart(settings: settings, memory: MemoryDefinition(), listening: false, metricsListeners: 0)),
    .reload(settings), .restarts(worker: 3, memory: 1, sandboxKills: 2), .statusRequest(id: 7), .stop,
]
let sandboxReport = SandboxReport(uid: 996, gid: 995, seccompMode: 2, seccompFilters: 1, noNewPrivileges: true, dumpable: false,
                                  landlock: "ABI 6: no filesystem access", limits: "RLIMIT_NPROC 24, RLIMIT_FSIZE 0, RLIMIT_CORE 0")
let fromWorker: [WorkerToSupervisor] = [.serving(sandboxReport), .reloaded, .status(id: 7, snapshot: Array("null".utf8)), .status(id: 0, snapshot: [])]
let toMemory: [SupervisorToMemory] = [
    .prepare(MemoryStart(memory: definition, stateDirectory: "/var/lib/s7commd", reuse: true, attachSocket: true)),
    .prepare(MemoryStart(memory: definition, stateDirectory: nil, reuse: false, attachSocket: false)), .stop,
]
let fromMemory: [MemoryToSupervisor] = [.ready(size: 70_000, readOnlySize: 0), .ready(size: 49_408, readOnlySize: 128),
                                        .ready(size: 4096, readOnlySize: 0, sandbox: sandboxReport)]
let controlReplies: [ControlReply] = [
    .status(report),
    .status(SupervisorReport(pid: 1, state: .restarting, endpoint: "", metrics: [], startedAt: 0, uptimeMs: 0, children: [],
                             workerSnapshot: nil, workerProblem: "the S7 worker is not running (it is being restarted)")),
]

func roundTrips<M: IPCMessage>(_ messages: [M]) throws {
    for message in messages {
        let bytes = message.encoded()
        #expect(try M.decode(bytes, descriptors: message.descriptorCount) == message, "\(message.kind)")
    }
}

/// Every strict prefix of every encoding is refused (never decodes to something else).
func prefixesRefused<M: IPCMessage>(_ messages: [M]) {
    for message in messages {
        let bytes = message.encoded()
        for length in 0..<bytes.count {
            #expect(throws: IPCError.self, "\(message.kind) cut to \(length) of \(bytes.count) bytes") {
                try M.decode(Array(bytes[0..<length]))
            }
        }
    }
}

@Suite("IPC encoding")
struct IPCEncodingTests {
    @Test func everyMessageRoundTrips() throws {
        try roundTrips(toWorker)
        try roundTrips(fromWorker)
        try roundTrips(toMemory)
        try roundTrips(fromMemory)
        try roundTrips([ControlRequest.status])
        try roundTrips(controlReplies)
        try roundTrips([MemoryClientRequest.attach])
        try roundTrips([MemoryClientReply.attached(definition)])
    }

    @Test func truncatedMessagesAreRefused() {
        prefixesRefused(toWorker)
        prefixesRefused(fromWorker)
        prefixesRefused(toMemory)
        prefixesRefused(fromMemory)
        prefixesRefused(controlReplies)
        prefixesRefused([MemoryClientReply.attached(definition)])
        #expect(throws: IPCError.truncated(field: "tag")) { try WorkerToSupervisor.decode([]) }
        #expect(throws: IPCError.truncated(field: "id")) { try SupervisorToWorker.decode([0x13, 1, 2]) }
    }

    @Test func trailingBytesAreRefused() {
        #expect(throws: IPCError.trailingBytes(message: "serving", count: 1)) { try WorkerToSupervisor.decode(WorkerToSupervisor.serving(sandboxReport).encoded() + [0]) }
        #expect(throws: IPCError.trailingBytes(message: "stop", count: 3)) { try SupervisorToMemory.decode(SupervisorToMemory.stop.encoded() + [1, 2, 3]) }
    }

    @Test func unknownTagsAreRefused() {
        // A worker sending what only the supervisor sends, and bytes of no set at all.
        #expect(throws: IPCError.unknownTag(0x14, peer: "S7 worker")) { try WorkerToSupervisor.decode(SupervisorToWorker.stop.encoded()) }
        #expect(throws: IPCError.unknownTag(0x20, peer: "supervisor")) { try SupervisorToWorker.decode(WorkerToSupervisor.serving(sandboxReport).encoded()) }
        for tag in UInt8.min...UInt8.max where ![0x25].contains(tag) {
            #expect(throws: IPCError.self) { try MemoryToSupervisor.decode([tag, 0, 0, 0, 0]) }
        }
        #expect(throws: IPCError.unknownTag(0x7B, peer: "control client")) { try ControlRequest.decode(Array(#"{"statusRequest":{}}"#.utf8)) }
    }

    @Test func oversizedFieldsAreRefusedBeforeAllocating() {
        // A status snapshot declaring 4 GiB.
        var w = IPCWriter(tag: 0x22)
        w.u32(1)
        w.u32(.max)
        #expect(throws: IPCError.oversized(field: "snapshot", length: Int(UInt32.max), limit: IPCLimits.snapshot)) {
            try WorkerToSupervisor.decode(w.bytes)
        }
        // A layout declaring more data blocks than exist, and a region over the bound.
        var many = IPCWriter(tag: 0x41)
        many.u16(.max)
        #expect(throws: IPCError.truncated(field: "data block number")) { try MemoryClientReply.decode(many.bytes) }
        var big = IPCWriter(tag: 0x41)
        big.u16(1)
        big.u16(1)
        big.u32(UInt32(IPCLimits.regionSize + 1))
        #expect(throws: IPCError.oversized(field: "data block size", length: IPCLimits.regionSize + 1, limit: IPCLimits.regionSize)) {
            try MemoryClientReply.decode(big.bytes)
        }
        // A client count over the server's maximum.
        var bad = SupervisorToWorker.reload(settings).encoded()
        let at = 1 + 4 + settings.endpoint.utf8.count
        bad.replaceSubrange(at..<at + 4, with: [0x01, 0x04, 0, 0])  // 1025
        #expect(throws: IPCError.oversized(field: "max_clients", length: 1025, limit: 1024)) { try SupervisorToWorker.decode(bad) }
    }

    @Test func invalidValuesAreRefused() {
        var w = IPCWriter(tag: 0x15)
        definition.write(&w)
        w.u8(2)  // an optional's presence byte that is neither 0 nor 1
        #expect(throws: IPCError.invalidValue(field: "state directory")) { try SupervisorToMemory.decode(w.bytes) }
        var utf8 = IPCWriter(tag: 0x31)
        utf8.u32(1)
        utf8.u8(2)
        utf8.data([0xFF, 0xFE])
        #expect(throws: IPCError.invalidValue(field: "endpoint")) { try ControlReply.decode(utf8.bytes) }
        var duplicate = IPCWriter(tag: 0x41)
        duplicate.array([5, 5]) { w, n in w.u16(UInt16(n)); RegionDefinition(size: 4).write(&w) }
        for _ in 0..<5 { duplicate.bool(false) }
        #expect(throws: IPCError.invalidValue(field: "data block number")) { try MemoryClientReply.decode(duplicate.bytes) }
    }

    @Test func descriptorsMustBeExactlyTheMessagesOwn() throws {
        // The listener, two metrics sockets, segment 0 and (the inputs are read-only with
        // storage of their own) the read-only segment.
        let serve = toWorker[0]
        #expect(definition.hasReadOnlySegment)
        #expect(serve.descriptorCount == 5)
        #expect(throws: IPCError.unexpectedDescriptors(message: "serve", received: 4, expected: 5)) {
            try SupervisorToWorker.decode(serve.encoded(), descriptors: 4)
        }
        #expect(toWorker[1].descriptorCount == 1, "no listener, no metrics, one segment")
        // A read-only region that is a window into an image table needs no second segment.
        let mappedOnly = MemoryDefinition(dataBlocks: [9: definition.dataBlocks[9]!])
        #expect(!mappedOnly.hasReadOnlySegment)
        #expect(SupervisorToWorker.serve(WorkerStart(settings: settings, memory: mappedOnly, listening: true, metricsListeners: 0)).descriptorCount == 2)
        // prepare: both segments to take over, then memory.sock; none without reuse.
        #expect(toMemory[0].descriptorCount == 3)
        #expect(toMemory[1].descriptorCount == 0)
        #expect(SupervisorToMemory.prepare(MemoryStart(memory: mappedOnly, stateDirectory: nil, reuse: true, attachSocket: true)).descriptorCount == 2)
        // ready: segment 0, or segment 0, segment 1 and segment 1 read-only.
        #expect(fromMemory.map(\.descriptorCount) == [1, 3, 1])
        #expect(throws: IPCError.unexpectedDescriptors(message: "ready", received: 1, expected: 3)) {
            try MemoryToSupervisor.decode(fromMemory[1].encoded(), descriptors: 1)
        }
        // attached: both segments, read-write.
        #expect(MemoryClientReply.attached(definition).descriptorCount == 2)
        #expect(MemoryClientReply.attached(mappedOnly).descriptorCount == 1)
        #expect(throws: IPCError.unexpectedDescriptors(message: "attached", received: 1, expected: 2)) {
            try MemoryClientReply.decode(MemoryClientReply.attached(definition).encoded(), descriptors: 1)
        }
        #expect(throws: IPCError.unexpectedDescriptors(message: "serving", received: 1, expected: 0)) {
            try WorkerToSupervisor.decode(WorkerToSupervisor.serving(sandboxReport).encoded(), descriptors: 1)
        }
        #expect(throws: IPCError.unexpectedDescriptors(message: "ready", received: 0, expected: 1)) {
            try MemoryToSupervisor.decode(MemoryToSupervisor.ready(size: 10, readOnlySize: 0).encoded(), descriptors: 0)
        }
    }
}

@Suite("IPC tables")
struct IPCTableTests {
    @Test func theWorkerMaySayServingOnceWhileStarting() {
        #expect(WorkerToSupervisor.serving(sandboxReport).allowed(in: .starting))
        #expect(!WorkerToSupervisor.serving(sandboxReport).allowed(in: .running))
        #expect(!WorkerToSupervisor.serving(sandboxReport).allowed(in: .stopping))
        for answer in [WorkerToSupervisor.reloaded, .status(id: 1, snapshot: [])] {
            #expect(!answer.allowed(in: .starting), "\(answer.kind) before serving")
            #expect(answer.allowed(in: .running))
            #expect(answer.allowed(in: .stopping), "a late answer to a request sent before stop")
        }
    }

    @Test func wrongStateIsATypedError() throws {
        #expect(throws: IPCError.notAllowed(message: "serving", state: "running")) { try WorkerToSupervisor.serving(sandboxReport).check(in: .running) }
        #expect(throws: IPCError.notAllowed(message: "reloaded", state: "starting")) { try WorkerToSupervisor.reloaded.check(in: .starting) }
        #expect(throws: IPCError.notAllowed(message: "serve", state: "running")) { try toWorker[0].check(in: .running) }
        #expect(throws: IPCError.notAllowed(message: "prepare", state: "stopping")) { try toMemory[0].check(in: .stopping) }
        #expect(throws: IPCError.notAllowed(message: "ready", state: "running")) { try MemoryToSupervisor.ready(size: 1, readOnlySize: 0).check(in: .running) }
        #expect(throws: IPCError.notAllowed(message: "attach", state: "running")) { try MemoryClientRequest.attach.check(in: .running) }
        try WorkerToSupervisor.serving(sandboxReport).check(in: .starting)
        try SupervisorToWorker.stop.check(in: .running)
        #expect(IPCError.notAllowed(message: "serving", state: "running").description == "a serving message is not allowed while running")
    }

    @Test func theMemoryProcessSaysReadyOnce() {
        #expect(MemoryToSupervisor.ready(size: 1, readOnlySize: 0).allowed(in: .starting))
        #expect(!MemoryToSupervisor.ready(size: 1, readOnlySize: 0).allowed(in: .running))
        #expect(!MemoryToSupervisor.ready(size: 1, readOnlySize: 0).allowed(in: .stopping))
    }

    @Test func childrenTakeTheirStartOnceAndStopAlways() {
        let serve = toWorker[0]
        #expect(serve.allowed(in: .starting) && !serve.allowed(in: .running))
        for later in toWorker.dropFirst(2) where later != .stop {
            #expect(!later.allowed(in: .starting) && later.allowed(in: .running), "\(later.kind)")
        }
        #expect(SupervisorToWorker.stop.allowed(in: .starting) && SupervisorToWorker.stop.allowed(in: .running))
        #expect(toMemory[0].allowed(in: .starting) && !toMemory[0].allowed(in: .running))
        #expect(SupervisorToMemory.stop.allowed(in: .running))
        #expect(ControlRequest.status.allowed(in: .starting) && !ControlRequest.status.allowed(in: .running))
        #expect(MemoryClientRequest.attach.allowed(in: .starting) && !MemoryClientRequest.attach.allowed(in: .running))
    }
}

@Suite("IPC transport")
struct IPCTransportTests {
    @Test func aMessageAndItsDescriptorTravelOverASocketPair() throws {
        let pair = try UnixSocketPair.make()
        defer { try? pair.first.close(); try? pair.second.close() }
        let segment = try SharedMemory.create(name: "ipc-test", size: 4096)
        defer { try? segment.close() }
        try IPC.send(MemoryToSupervisor.ready(size: 4096, readOnlySize: 0), descriptors: [segment], on: pair.second)
        let received = try #require(try IPC.receive(MemoryToSupervisor.self, on: pair.first, maxDescriptors: 3))
        #expect(received.0 == .ready(size: 4096, readOnlySize: 0))
        #expect(received.1.count == 1)
        #expect(try SharedMemory.size(of: received.1[0]) == 4096)
        for fd in received.1 { try fd.close() }
    }

    @Test func aReadyWithTheReadOnlySegmentCarriesItTwiceOnceReadOnly() throws {
        let pair = try UnixSocketPair.make()
        defer { try? pair.first.close(); try? pair.second.close() }
        let main = try SharedMemory.create(name: "ipc-test", size: 4096)
        let second = try SharedMemory.create(name: "ipc-test-ro", size: 64)
        let view = try SharedMemory.reopenReadOnly(second)
        defer { for fd in [main, second, view] { try? fd.close() } }
        try IPC.send(MemoryToSupervisor.ready(size: 4096, readOnlySize: 64), descriptors: [main, second, view], on: pair.second)
        let received = try #require(try IPC.receive(MemoryToSupervisor.self, on: pair.first, maxDescriptors: 3))
        defer { for fd in received.1 { try? fd.close() } }
        #expect(received.0 == .ready(size: 4096, readOnlySize: 64))
        #expect(try received.1.map { try SharedMemory.size(of: $0) } == [4096, 64, 64])
        #expect(try received.1.map { try SharedMemory.accessMode(of: $0) } == [.readWrite, .readWrite, .readOnly])
    }

    @Test func aPeerThatDoesNotReadMakesANonBlockingSendFailInsteadOfWaiting() throws {
        let pair = try UnixSocketPair.make()
        defer { try? pair.first.close(); try? pair.second.close() }
        try pair.first.setNonBlocking()
        var sent = 0
        while true {
            do {
                try IPC.send(SupervisorToWorker.statusRequest(id: UInt32(sent)), on: pair.first)
                sent += 1
            } catch .wouldBlock {
                break
            }
            #expect(sent < 100_000, "the socket buffer never filled")
            if sent >= 100_000 { return }
        }
        #expect(sent > 0)
        // Nothing to read on the sender's own (non-blocking) end: wouldBlock, not a decode error.
        #expect(throws: IPCError.wouldBlock) { try IPC.receive(WorkerToSupervisor.self, on: pair.first) }
        // The peer still gets every message that was queued, in order.
        let first = try #require(try IPC.receive(SupervisorToWorker.self, on: pair.second))
        #expect(first.0 == .statusRequest(id: 0))
    }

    @Test func aForgedMessageIsATypedErrorAndItsDescriptorsAreClosed() throws {
        let pair = try UnixSocketPair.make()
        defer { try? pair.first.close(); try? pair.second.close() }
        let extra = try SharedMemory.create(name: "ipc-test", size: 4096)
        defer { try? extra.close() }
        // 'serving' never carries a descriptor.
        try UnixSocket.send(message: WorkerToSupervisor.serving(sandboxReport).encoded(), descriptors: [extra], on: pair.second)
        #expect(throws: IPCError.unexpectedDescriptors(message: "serving", received: 1, expected: 0)) {
            try IPC.receive(WorkerToSupervisor.self, on: pair.first, maxDescriptors: 1)
        }
        // An oversize packet.
        try UnixSocket.send(message: [0x22] + [UInt8](repeating: 0, count: IPCLimits.messageSize + 10), on: pair.second)
        #expect(throws: IPCError.messageTooLarge(size: IPCLimits.messageSize + 1, limit: IPCLimits.messageSize)) {
            try IPC.receive(WorkerToSupervisor.self, on: pair.first)
        }
        // The old JSON encoding is no message at all.
        try UnixSocket.send(message: Array(#"{"serving":{}}"#.utf8), on: pair.second)
        #expect(throws: IPCError.unknownTag(0x7B, peer: "S7 worker")) { try IPC.receive(WorkerToSupervisor.self, on: pair.first) }
        // A closed peer is nil, not an error.
        try pair.second.close()
        #expect(try IPC.receive(WorkerToSupervisor.self, on: pair.first) == nil)
    }
}
