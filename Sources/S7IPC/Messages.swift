import PLCMemory

// The four channels and what each side may say. Tags are fixed for the life of a protocol
// version: supervisor→child 0x1x, child→supervisor 0x2x, local clients 0x3x/0x4x.

/// What the worker starts serving with. Descriptors, in order: the listener (when `listening`),
/// `metricsListeners` metrics sockets, the PLC memory segment, and, when the layout has
/// read-only regions of their own (``MemoryDefinition/hasReadOnlySegment``), the read-only
/// segment opened O_RDONLY.
public struct WorkerStart: Equatable, Sendable {
    public var settings: WorkerSettings
    public var memory: MemoryDefinition
    public var listening: Bool
    public var metricsListeners: Int

    public init(settings: WorkerSettings, memory: MemoryDefinition, listening: Bool, metricsListeners: Int) {
        self.settings = settings
        self.memory = memory
        self.listening = listening
        self.metricsListeners = metricsListeners
    }
}

/// Supervisor → S7 worker.
public enum SupervisorToWorker: IPCPhasedMessage {
    case serve(WorkerStart)
    /// Apply these live settings to connections opened from now on.
    case reload(WorkerSettings)
    /// How often each child was restarted, and how often the worker's sandbox ended it, for the metrics.
    case restarts(worker: Int, memory: Int, sandboxKills: Int)
    case statusRequest(id: UInt32)
    /// Close the clients and exit.
    case stop

    public static let sender = "supervisor"

    public var kind: String {
        switch self {
        case .serve: "serve"
        case .reload: "reload"
        case .restarts: "restarts"
        case .statusRequest: "status-request"
        case .stop: "stop"
        }
    }

    public var descriptorCount: Int {
        guard case .serve(let s) = self else { return 0 }
        return (s.listening ? 1 : 0) + s.metricsListeners + 1 + (s.memory.hasReadOnlySegment ? 1 : 0)
    }

    /// The worker's table: `serve` (or `stop`) first, then anything but `serve`.
    public func allowed(in phase: ChannelPhase) -> Bool {
        switch (self, phase) {
        case (.serve, .starting), (.stop, _): true
        case (.serve, _), (_, .starting): false
        default: true
        }
    }

    public func encoded() -> [UInt8] {
        switch self {
        case .serve(let s):
            var w = IPCWriter(tag: 0x10)
            s.settings.write(&w)
            s.memory.write(&w)
            w.bool(s.listening)
            w.count(s.metricsListeners)
            return w.bytes
        case .reload(let settings):
            var w = IPCWriter(tag: 0x11)
            settings.write(&w)
            return w.bytes
        case .restarts(let worker, let memory, let sandboxKills):
            var w = IPCWriter(tag: 0x12)
            w.count(worker)
            w.count(memory)
            w.count(sandboxKills)
            return w.bytes
        case .statusRequest(let id):
            var w = IPCWriter(tag: 0x13)
            w.u32(id)
            return w.bytes
        case .stop:
            return IPCWriter(tag: 0x14).bytes
        }
    }

    public static func decode(_ bytes: [UInt8]) throws(IPCError) -> SupervisorToWorker {
        guard let tag = bytes.first else { throw .truncated(field: "tag") }
        let message: SupervisorToWorker
        switch tag {
        case 0x10:
            var r = IPCReader(bytes, message: "serve")
            let settings = try WorkerSettings.read(&r)
            let memory = try MemoryDefinition.read(&r)
            let listening = try r.bool("listening")
            let metrics = try r.count("metrics listeners", 0...IPCLimits.metricsEndpoints)
            try r.finish()
            message = .serve(WorkerStart(settings: settings, memory: memory, listening: listening, metricsListeners: metrics))
        case 0x11:
            var r = IPCReader(bytes, message: "reload")
            let settings = try WorkerSettings.read(&r)
            try r.finish()
            message = .reload(settings)
        case 0x12:
            var r = IPCReader(bytes, message: "restarts")
            let worker = try r.count("worker restarts", 0...Int(UInt32.max))
            let memory = try r.count("memory restarts", 0...Int(UInt32.max))
            let sandboxKills = try r.count("sandbox kills", 0...Int(UInt32.max))
            try r.finish()
            message = .restarts(worker: worker, memory: memory, sandboxKills: sandboxKills)
        case 0x13:
            var r = IPCReader(bytes, message: "status-request")
            let id = try r.u32("id")
            try r.finish()
            message = .statusRequest(id: id)
        case 0x14:
            try IPCReader(bytes, message: "stop").finish()
            message = .stop
        default:
            throw .unknownTag(tag, peer: sender)
        }
        return message
    }
}

/// S7 worker → supervisor.
public enum WorkerToSupervisor: IPCPhasedMessage {
    /// Serving (or idle when there is no listener), confined as the report says: the answer to `serve`.
    case serving(SandboxReport)
    /// The answer to `reload`.
    case reloaded
    /// The answer to `statusRequest(id)`: the worker's snapshot (JSON), relayed unparsed.
    case status(id: UInt32, snapshot: [UInt8])

    public static let sender = "S7 worker"

    public var kind: String {
        switch self {
        case .serving: "serving"
        case .reloaded: "reloaded"
        case .status: "status"
        }
    }

    public var descriptorCount: Int { 0 }

    /// The supervisor's table: `serving` once, while starting; then answers only.
    public func allowed(in phase: ChannelPhase) -> Bool {
        switch (self, phase) {
        case (.serving, .starting): true
        case (.serving, _), (_, .starting): false
        default: true
        }
    }

    public func encoded() -> [UInt8] {
        switch self {
        case .serving(let sandbox):
            var w = IPCWriter(tag: 0x20)
            sandbox.write(&w)
            return w.bytes
        case .reloaded: return IPCWriter(tag: 0x21).bytes
        case .status(let id, let snapshot):
            var w = IPCWriter(tag: 0x22)
            w.u32(id)
            w.data(snapshot)
            return w.bytes
        }
    }

    public static func decode(_ bytes: [UInt8]) throws(IPCError) -> WorkerToSupervisor {
        guard let tag = bytes.first else { throw .truncated(field: "tag") }
        switch tag {
        case 0x20:
            var r = IPCReader(bytes, message: "serving")
            let sandbox = try SandboxReport.read(&r)
            try r.finish()
            return .serving(sandbox)
        case 0x21:
            try IPCReader(bytes, message: "reloaded").finish()
            return .reloaded
        case 0x22:
            var r = IPCReader(bytes, message: "status")
            let id = try r.u32("id")
            let snapshot = try r.data("snapshot", limit: IPCLimits.snapshot)
            try r.finish()
            return .status(id: id, snapshot: snapshot)
        default:
            throw .unknownTag(tag, peer: sender)
        }
    }
}

/// What the memory process starts with. Descriptors, in order: the segment to take over and,
/// when the layout has one, the read-only segment, both read-write (when `reuse`); the
/// listening socket for local clients (when `attachSocket`).
public struct MemoryStart: Equatable, Sendable {
    public var memory: MemoryDefinition
    /// Where retain.bin lives; nil: nothing is retained.
    public var stateDirectory: String?
    public var reuse: Bool
    public var attachSocket: Bool

    public init(memory: MemoryDefinition, stateDirectory: String?, reuse: Bool, attachSocket: Bool) {
        self.memory = memory
        self.stateDirectory = stateDirectory
        self.reuse = reuse
        self.attachSocket = attachSocket
    }
}

/// Supervisor → memory process.
public enum SupervisorToMemory: IPCPhasedMessage {
    case prepare(MemoryStart)
    /// Save retained data and exit.
    case stop

    public static let sender = "supervisor"

    public var kind: String { self == .stop ? "stop" : "prepare" }

    public var descriptorCount: Int {
        guard case .prepare(let s) = self else { return 0 }
        return (s.reuse ? (s.memory.hasReadOnlySegment ? 2 : 1) : 0) + (s.attachSocket ? 1 : 0)
    }

    /// The memory process's table: `prepare` once, first; `stop` at any time.
    public func allowed(in phase: ChannelPhase) -> Bool {
        self == .stop || phase == .starting
    }

    public func encoded() -> [UInt8] {
        guard case .prepare(let s) = self else { return IPCWriter(tag: 0x16).bytes }
        var w = IPCWriter(tag: 0x15)
        s.memory.write(&w)
        w.optional(s.stateDirectory) { w, p in w.string(p) }
        w.bool(s.reuse)
        w.bool(s.attachSocket)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(IPCError) -> SupervisorToMemory {
        guard let tag = bytes.first else { throw .truncated(field: "tag") }
        switch tag {
        case 0x15:
            var r = IPCReader(bytes, message: "prepare")
            let memory = try MemoryDefinition.read(&r)
            let directory = try r.optional("state directory") { (r: inout IPCReader) throws(IPCError) in
                try r.string("state directory", limit: IPCLimits.path)
            }
            let reuse = try r.bool("reuse")
            let socket = try r.bool("attach socket")
            try r.finish()
            return .prepare(MemoryStart(memory: memory, stateDirectory: directory, reuse: reuse, attachSocket: socket))
        case 0x16:
            try IPCReader(bytes, message: "stop").finish()
            return .stop
        default:
            throw .unknownTag(tag, peer: sender)
        }
    }
}

/// Memory process → supervisor.
public enum MemoryToSupervisor: IPCPhasedMessage {
    /// The segments are laid out (and restored); they come attached: segment 0 (read-write),
    /// then, when `readOnlySize` > 0, segment 1 read-write (kept for a restarted memory
    /// process) and segment 1 again, opened O_RDONLY (the only one the worker gets). With the
    /// memory process's confinement as the kernel reports it.
    case ready(size: Int, readOnlySize: Int, sandbox: SandboxReport? = nil)

    public static let sender = "memory process"
    public var kind: String { "ready" }
    public var descriptorCount: Int {
        guard case .ready(_, let readOnlySize, _) = self else { return 0 }
        return readOnlySize > 0 ? 3 : 1
    }

    /// Once, while starting.
    public func allowed(in phase: ChannelPhase) -> Bool { phase == .starting }

    public func encoded() -> [UInt8] {
        guard case .ready(let size, let readOnlySize, let sandbox) = self else { return [] }
        var w = IPCWriter(tag: 0x25)
        w.count(size)
        w.count(readOnlySize)
        w.optional(sandbox) { w, s in s.write(&w) }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(IPCError) -> MemoryToSupervisor {
        var r = try IPCReader(bytes, tag: 0x25, message: "ready", peer: sender)
        let size = try r.count("size", 1...Int(UInt32.max))
        let readOnlySize = try r.count("read-only size", 0...Int(UInt32.max))
        let sandbox = try r.optional("memory sandbox") { (r: inout IPCReader) throws(IPCError) in try SandboxReport.read(&r) }
        try r.finish()
        return .ready(size: size, readOnlySize: readOnlySize, sandbox: sandbox)
    }
}

/// `s7commd status` → supervisor, on control.sock: one request per connection.
public enum ControlRequest: IPCPhasedMessage {
    case status

    public static let sender = "control client"
    public var kind: String { "status-request" }
    public var descriptorCount: Int { 0 }
    public func allowed(in phase: ChannelPhase) -> Bool { phase == .starting }
    public func encoded() -> [UInt8] { IPCWriter(tag: 0x30).bytes }

    public static func decode(_ bytes: [UInt8]) throws(IPCError) -> ControlRequest {
        try IPCReader(bytes, tag: 0x30, message: "status-request", peer: sender).finish()
        return .status
    }
}

/// Supervisor → `s7commd status`.
public enum ControlReply: IPCMessage {
    case status(SupervisorReport)

    public static let sender = "supervisor"
    public var kind: String { "status" }
    public var descriptorCount: Int { 0 }

    public func encoded() -> [UInt8] {
        guard case .status(let report) = self else { return [] }
        var w = IPCWriter(tag: 0x31)
        report.write(&w)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(IPCError) -> ControlReply {
        var r = try IPCReader(bytes, tag: 0x31, message: "status", peer: sender)
        let report = try SupervisorReport.read(&r)
        try r.finish()
        return .status(report)
    }
}

/// A PLC program or `s7commd mem` → memory process, on memory.sock: one request per connection.
public enum MemoryClientRequest: IPCPhasedMessage {
    case attach

    public static let sender = "memory client"
    public var kind: String { "attach" }
    public var descriptorCount: Int { 0 }
    public func allowed(in phase: ChannelPhase) -> Bool { phase == .starting }
    public func encoded() -> [UInt8] { IPCWriter(tag: 0x40).bytes }

    public static func decode(_ bytes: [UInt8]) throws(IPCError) -> MemoryClientRequest {
        try IPCReader(bytes, tag: 0x40, message: "attach", peer: sender).finish()
        return .attach
    }
}

/// Memory process → its client: the layout (the definition it is computed from), with the
/// segments attached, both read-write: segment 0, then segment 1 when the layout has one.
public enum MemoryClientReply: IPCMessage {
    case attached(MemoryDefinition)

    public static let sender = "memory process"
    public var kind: String { "attached" }
    public var descriptorCount: Int {
        guard case .attached(let definition) = self else { return 0 }
        return definition.hasReadOnlySegment ? 2 : 1
    }

    public func encoded() -> [UInt8] {
        guard case .attached(let definition) = self else { return [] }
        var w = IPCWriter(tag: 0x41)
        definition.write(&w)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(IPCError) -> MemoryClientReply {
        var r = try IPCReader(bytes, tag: 0x41, message: "attached", peer: sender)
        let definition = try MemoryDefinition.read(&r)
        try r.finish()
        return .attached(definition)
    }
}
