import PLCMemory

/// Bounds every decoder checks before it allocates.
public enum IPCLimits {
    /// Largest message on any channel (one SOCK_SEQPACKET packet; under the default socket buffer).
    public static let messageSize = 200_000
    /// A name, an identity string, an endpoint.
    public static let text = 1024
    /// A filesystem path (PATH_MAX).
    public static let path = 4096
    /// Data blocks in one layout (every DB number 1-65535).
    public static let dataBlocks = 65535
    /// Bytes of one region (data block or area); the configuration allows far less.
    public static let regionSize = 1 << 30
    /// Entries of server.allowed_rack_slots.
    public static let rackSlots = 256
    /// Metrics endpoints (a TCP port and a Unix socket).
    public static let metricsEndpoints = 2
    /// Clients the server may hold, and the worker's snapshot of them.
    public static let maxClients = 1024
    public static let snapshot = 180_000
}

/// The two children of the supervisor.
public enum ChildRole: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case worker = 1
    case memory = 2

    public var description: String { self == .worker ? "S7 worker" : "memory process" }
}

/// Where a channel's peer is in its life; each message set says what may arrive in which.
public enum ChannelPhase: String, Sendable, CustomStringConvertible {
    /// Started, not yet ready (the memory process has not handed over the segment, the worker
    /// has not said it serves, a local client has not asked yet).
    case starting
    /// Ready and working.
    case running
    /// Told to stop.
    case stopping

    public var description: String { rawValue }
}

/// How a child of the supervisor ends (documented in s7commd(8), EXIT STATUS of the children).
public enum ChildExitStatus: Int32, Sendable {
    /// Stopped when told to, or when the supervisor closed the channel.
    case stopped = 0
    /// Something it needed failed; the log line says what.
    case failed = 1
    /// The supervisor sent something outside the protocol (decode error, wrong state,
    /// unexpected descriptors): the child trusts nothing more from that channel.
    case protocolViolation = 70
    /// It started with a privilege it must not have, or its channel's peer is not its parent.
    case unsafeStart = 71
    /// The worker could not put its sandbox in place (the line before says why): it does not
    /// serve without one, and the supervisor stops rather than restart it.
    case sandboxUnavailable = 72
}

/// What the S7 worker serves with: the validated server and session settings.
public struct WorkerSettings: Equatable, Sendable {
    public struct Identity: Equatable, Sendable {
        public var name, moduleType, serialNumber, copyright, moduleName, orderCode, plantIdentification: String
        public var firmwareVersion: [UInt8]

        public init(name: String, moduleType: String, serialNumber: String, copyright: String, moduleName: String,
                    orderCode: String, plantIdentification: String, firmwareVersion: [UInt8]) {
            self.name = name
            self.moduleType = moduleType
            self.serialNumber = serialNumber
            self.copyright = copyright
            self.moduleName = moduleName
            self.orderCode = orderCode
            self.plantIdentification = plantIdentification
            self.firmwareVersion = firmwareVersion
        }
    }

    public var endpoint: String
    public var maxClients: Int
    public var maxClientsPerAddress: Int
    public var sendTimeoutMs: Int
    public var recvTimeoutMs: Int
    public var idleTimeoutMs: Int
    public var pduSize: Int
    public var identity: Identity
    /// (rack, slot) pairs; empty: any.
    public var allowedRackSlots: [[UInt8]]
    public var allowPLCControl: Bool
    public var allowClockSet: Bool
    public var logConnections: Bool
    public var logErrors: Bool
    public var logDataAccess: Bool

    public init(endpoint: String, maxClients: Int, maxClientsPerAddress: Int, sendTimeoutMs: Int, recvTimeoutMs: Int,
                idleTimeoutMs: Int, pduSize: Int, identity: Identity, allowedRackSlots: [[UInt8]], allowPLCControl: Bool,
                allowClockSet: Bool, logConnections: Bool, logErrors: Bool, logDataAccess: Bool) {
        self.endpoint = endpoint
        self.maxClients = maxClients
        self.maxClientsPerAddress = maxClientsPerAddress
        self.sendTimeoutMs = sendTimeoutMs
        self.recvTimeoutMs = recvTimeoutMs
        self.idleTimeoutMs = idleTimeoutMs
        self.pduSize = pduSize
        self.identity = identity
        self.allowedRackSlots = allowedRackSlots
        self.allowPLCControl = allowPLCControl
        self.allowClockSet = allowClockSet
        self.logConnections = logConnections
        self.logErrors = logErrors
        self.logDataAccess = logDataAccess
    }

    func write(_ w: inout IPCWriter) {
        w.string(endpoint)
        for v in [maxClients, maxClientsPerAddress, sendTimeoutMs, recvTimeoutMs, idleTimeoutMs, pduSize] { w.count(v) }
        for s in [identity.name, identity.moduleType, identity.serialNumber, identity.copyright, identity.moduleName,
                  identity.orderCode, identity.plantIdentification] { w.string(s) }
        w.data(identity.firmwareVersion)
        w.array(allowedRackSlots) { w, pair in w.u8(pair[0]); w.u8(pair[1]) }
        for b in [allowPLCControl, allowClockSet, logConnections, logErrors, logDataAccess] { w.bool(b) }
    }

    static func read(_ r: inout IPCReader) throws(IPCError) -> WorkerSettings {
        let endpoint = try r.string("endpoint", limit: IPCLimits.text)
        let maxClients = try r.count("max_clients", 1...IPCLimits.maxClients)
        let perAddress = try r.count("max_clients_per_address", 0...IPCLimits.maxClients)
        let send = try r.count("send_timeout_ms", 0...86_400_000)
        let recv = try r.count("recv_timeout_ms", 0...86_400_000)
        let idle = try r.count("ping_timeout_ms", 0...86_400_000)
        let pdu = try r.count("pdu_size", 240...960)
        var texts: [String] = []
        for field in ["identity.name", "identity.module_type", "identity.serial_number", "identity.copyright",
                      "identity.module_name", "identity.order_code", "identity.plant_identification"] {
            texts.append(try r.string(field, limit: IPCLimits.text))
        }
        let firmware = try r.data("identity.firmware_version", limit: 3)
        guard firmware.count == 3 else { throw .invalidValue(field: "identity.firmware_version") }
        let pairs = try r.array("allowed_rack_slots", limit: IPCLimits.rackSlots) { (r: inout IPCReader) throws(IPCError) in
            [try r.u8("rack"), try r.u8("slot")]
        }
        var flags: [Bool] = []
        for field in ["allow_plc_control", "allow_clock_set", "log_connections", "log_errors", "log_data_access"] {
            flags.append(try r.bool(field))
        }
        return WorkerSettings(endpoint: endpoint, maxClients: maxClients, maxClientsPerAddress: perAddress, sendTimeoutMs: send,
                              recvTimeoutMs: recv, idleTimeoutMs: idle, pduSize: pdu,
                              identity: Identity(name: texts[0], moduleType: texts[1], serialNumber: texts[2], copyright: texts[3],
                                                 moduleName: texts[4], orderCode: texts[5], plantIdentification: texts[6],
                                                 firmwareVersion: firmware),
                              allowedRackSlots: pairs, allowPLCControl: flags[0], allowClockSet: flags[1],
                              logConnections: flags[2], logErrors: flags[3], logDataAccess: flags[4])
    }
}

/// The memory layout travels as the definition it is computed from, never as configuration text.
extension MemoryDefinition {
    func write(_ w: inout IPCWriter) {
        w.array(dataBlocks.sorted { $0.key < $1.key }) { w, entry in
            w.u16(entry.key)
            entry.value.write(&w)
        }
        for area in [inputs, outputs, flags, timers, counters] { w.optional(area) { w, r in r.write(&w) } }
    }

    static func read(_ r: inout IPCReader) throws(IPCError) -> MemoryDefinition {
        let blocks = try r.array("data_blocks", limit: IPCLimits.dataBlocks) { (r: inout IPCReader) throws(IPCError) in
            (try r.u16("data block number"), try RegionDefinition.read(&r, "data block"))
        }
        var dataBlocks: [UInt16: RegionDefinition] = [:]
        for (number, region) in blocks {
            guard number > 0, dataBlocks.updateValue(region, forKey: number) == nil else { throw .invalidValue(field: "data block number") }
        }
        var areas: [RegionDefinition?] = []
        for name in ["inputs", "outputs", "flags", "timers", "counters"] {
            areas.append(try r.optional(name) { (r: inout IPCReader) throws(IPCError) in try RegionDefinition.read(&r, name) })
        }
        return MemoryDefinition(dataBlocks: dataBlocks, inputs: areas[0], outputs: areas[1], flags: areas[2],
                                timers: areas[3], counters: areas[4])
    }
}

extension RegionDefinition {
    func write(_ w: inout IPCWriter) {
        w.count(size)
        w.bool(readOnly)
        w.bool(retain)
        w.optional(mapping) { w, m in
            w.u8(UInt8(ImageTable.allCases.firstIndex(of: m.table)!))
            w.count(m.startElement)
            w.bool(m.bitAddressing)
        }
    }

    static func read(_ r: inout IPCReader, _ what: String) throws(IPCError) -> RegionDefinition {
        let size = try r.count("\(what) size", 0...IPCLimits.regionSize)
        let readOnly = try r.bool("\(what) read_only")
        let retain = try r.bool("\(what) retain")
        let mapping = try r.optional("\(what) mapping") { (r: inout IPCReader) throws(IPCError) -> ImageMapping in
            let code = Int(try r.u8("\(what) mapping table"))
            guard code < ImageTable.allCases.count else { throw .invalidValue(field: "\(what) mapping table") }
            let start = try r.count("\(what) mapping start", 0...(ImageTable.elementCount - 1))
            return ImageMapping(table: ImageTable.allCases[code], startElement: start, bitAddressing: try r.bool("\(what) mapping bit_addressing"))
        }
        return RegionDefinition(size: size, readOnly: readOnly, retain: retain, mapping: mapping)
    }
}

/// What a child reports about its own confinement once it is in place, read back from the
/// kernel (/proc/self/status, prctl) before it handles any input: its ids, seccomp mode and
/// filter count, no-new-privileges, dumpable flag, Landlock and resource limits.
public struct SandboxReport: Equatable, Sendable, CustomStringConvertible {
    public var uid: UInt32
    public var gid: UInt32
    /// 0 none, 1 strict, 2 filter (/proc `Seccomp:`).
    public var seccompMode: Int
    /// /proc `Seccomp_filters:` (0 when the kernel does not show it).
    public var seccompFilters: Int
    public var noNewPrivileges: Bool
    public var dumpable: Bool
    /// What Landlock enforces, or why it does not, in words.
    public var landlock: String
    /// The resource limits set, in words (e.g. "RLIMIT_NPROC 24, RLIMIT_FSIZE 0, RLIMIT_CORE 0").
    public var limits: String

    public init(uid: UInt32, gid: UInt32, seccompMode: Int, seccompFilters: Int, noNewPrivileges: Bool, dumpable: Bool,
                landlock: String, limits: String) {
        self.uid = uid
        self.gid = gid
        self.seccompMode = seccompMode
        self.seccompFilters = seccompFilters
        self.noNewPrivileges = noNewPrivileges
        self.dumpable = dumpable
        self.landlock = landlock
        self.limits = limits
    }

    public var description: String {
        let seccomp = switch seccompMode {
        case 2: "seccomp filter (\(seccompFilters) filter\(seccompFilters == 1 ? "" : "s"))"
        case 1: "seccomp strict"
        default: "no seccomp"
        }
        return "uid \(uid) gid \(gid), \(seccomp), NoNewPrivs \(noNewPrivileges ? 1 : 0), \(dumpable ? "dumpable" : "not dumpable"), "
            + "\(landlock), \(limits)"
    }

    func write(_ w: inout IPCWriter) {
        w.u32(uid)
        w.u32(gid)
        w.u8(UInt8(clamping: seccompMode))
        w.count(seccompFilters)
        w.bool(noNewPrivileges)
        w.bool(dumpable)
        w.string(landlock)
        w.string(limits)
    }

    static func read(_ r: inout IPCReader) throws(IPCError) -> SandboxReport {
        let uid = try r.u32("sandbox uid")
        let gid = try r.u32("sandbox gid")
        let mode = Int(try r.u8("seccomp mode"))
        guard mode <= 2 else { throw .invalidValue(field: "seccomp mode") }
        let filters = try r.count("seccomp filters", 0...1024)
        let noNewPrivileges = try r.bool("no-new-privileges")
        let dumpable = try r.bool("dumpable")
        let landlock = try r.string("landlock", limit: IPCLimits.text)
        let limits = try r.string("limits", limit: IPCLimits.text)
        return SandboxReport(uid: uid, gid: gid, seccompMode: mode, seccompFilters: filters, noNewPrivileges: noNewPrivileges,
                             dumpable: dumpable, landlock: landlock, limits: limits)
    }
}

/// The supervisor's answer to `s7commd status`: its own part, and the worker's snapshot of
/// clients and counters relayed as the worker wrote it (the supervisor never parses it).
public struct SupervisorReport: Equatable, Sendable {
    public enum State: UInt8, Sendable, CustomStringConvertible {
        /// server.enabled is false: no listener.
        case disabled = 1
        case listening = 2
        /// A child is down and being restarted.
        case restarting = 3
        case stopping = 4

        public var description: String {
            switch self {
            case .disabled: "disabled"
            case .listening: "listening"
            case .restarting: "restarting"
            case .stopping: "stopping"
            }
        }
    }

    public struct Child: Equatable, Sendable {
        public var role: ChildRole
        /// nil while it is being restarted.
        public var pid: Int32?
        /// Milliseconds since 1970 (UTC).
        public var startedAt: Int64?
        public var restarts: Int
        /// How often its sandbox ended it (a system call outside its seccomp filter).
        public var sandboxKills: Int
        /// What the running child reported about its confinement (nil until it did).
        public var sandbox: SandboxReport?

        public init(role: ChildRole, pid: Int32?, startedAt: Int64?, restarts: Int, sandboxKills: Int = 0, sandbox: SandboxReport? = nil) {
            self.role = role
            self.pid = pid
            self.startedAt = startedAt
            self.restarts = restarts
            self.sandboxKills = sandboxKills
            self.sandbox = sandbox
        }
    }

    public var pid: Int32
    public var state: State
    public var endpoint: String
    public var metrics: [String]
    /// Milliseconds since 1970 (UTC).
    public var startedAt: Int64
    public var uptimeMs: Int64
    public var children: [Child]
    /// The worker's snapshot (JSON); nil when it did not answer, and `workerProblem` says why.
    public var workerSnapshot: [UInt8]?
    public var workerProblem: String?

    public init(pid: Int32, state: State, endpoint: String, metrics: [String], startedAt: Int64, uptimeMs: Int64,
                children: [Child], workerSnapshot: [UInt8]?, workerProblem: String?) {
        self.pid = pid
        self.state = state
        self.endpoint = endpoint
        self.metrics = metrics
        self.startedAt = startedAt
        self.uptimeMs = uptimeMs
        self.children = children
        self.workerSnapshot = workerSnapshot
        self.workerProblem = workerProblem
    }

    func write(_ w: inout IPCWriter) {
        w.u32(UInt32(bitPattern: pid))
        w.u8(state.rawValue)
        w.string(endpoint)
        w.array(metrics) { w, s in w.string(s) }
        w.i64(startedAt)
        w.i64(uptimeMs)
        w.array(children) { w, c in
            w.u8(c.role.rawValue)
            w.optional(c.pid) { w, p in w.u32(UInt32(bitPattern: p)) }
            w.optional(c.startedAt) { w, t in w.i64(t) }
            w.count(c.restarts)
            w.count(c.sandboxKills)
            w.optional(c.sandbox) { w, s in s.write(&w) }
        }
        w.optional(workerSnapshot) { w, s in w.data(s) }
        w.optional(workerProblem) { w, s in w.string(s) }
    }

    static func read(_ r: inout IPCReader) throws(IPCError) -> SupervisorReport {
        let pid = Int32(bitPattern: try r.u32("pid"))
        guard let state = State(rawValue: try r.u8("state")) else { throw .invalidValue(field: "state") }
        let endpoint = try r.string("endpoint", limit: IPCLimits.text)
        let metrics = try r.array("metrics", limit: IPCLimits.metricsEndpoints) { (r: inout IPCReader) throws(IPCError) in
            try r.string("metrics endpoint", limit: IPCLimits.path)
        }
        let startedAt = try r.i64("started_at")
        let uptime = try r.i64("uptime")
        let children = try r.array("children", limit: ChildRole.allCases.count) { (r: inout IPCReader) throws(IPCError) -> Child in
            guard let role = ChildRole(rawValue: try r.u8("child role")) else { throw .invalidValue(field: "child role") }
            let pid = try r.optional("child pid") { (r: inout IPCReader) throws(IPCError) in Int32(bitPattern: try r.u32("child pid")) }
            let started = try r.optional("child started_at") { (r: inout IPCReader) throws(IPCError) in try r.i64("child started_at") }
            let restarts = try r.count("child restarts", 0...Int(UInt32.max))
            let kills = try r.count("child sandbox kills", 0...Int(UInt32.max))
            let sandbox = try r.optional("child sandbox") { (r: inout IPCReader) throws(IPCError) in try SandboxReport.read(&r) }
            return Child(role: role, pid: pid, startedAt: started, restarts: restarts, sandboxKills: kills, sandbox: sandbox)
        }
        let snapshot = try r.optional("worker snapshot") { (r: inout IPCReader) throws(IPCError) in
            try r.data("worker snapshot", limit: IPCLimits.snapshot)
        }
        let problem = try r.optional("worker problem") { (r: inout IPCReader) throws(IPCError) in
            try r.string("worker problem", limit: IPCLimits.text)
        }
        return SupervisorReport(pid: pid, state: state, endpoint: endpoint, metrics: metrics, startedAt: startedAt, uptimeMs: uptime,
                                children: children, workerSnapshot: snapshot, workerProblem: problem)
    }
}

/// The memory definition under the name the supervisor uses, so it needs no import of PLCMemory.
public typealias PLCMemoryDefinition = MemoryDefinition
