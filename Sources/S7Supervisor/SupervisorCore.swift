import S7IPC
import S7Sys

#if canImport(Glibc)
import Glibc
#endif

/// The supervisor's decisions, with no I/O: events in, actions out. The event loop
/// (``SupervisorLoop``) performs the actions and feeds back what happened; tests drive this
/// struct directly with no process.
public struct SupervisorCore: Sendable {
    /// What the supervisor was started with.
    public struct Plan: Sendable {
        public var settings: WorkerSettings
        public var memory: PLCMemoryDefinition
        public var stateDirectory: String?
        public var listening: Bool
        public var metricsListeners: Int
        public var attachSocket: Bool
        public var metrics: [String]

        public init(settings: WorkerSettings, memory: PLCMemoryDefinition, stateDirectory: String?, listening: Bool,
                    metricsListeners: Int, attachSocket: Bool, metrics: [String]) {
            self.settings = settings
            self.memory = memory
            self.stateDirectory = stateDirectory
            self.listening = listening
            self.metricsListeners = metricsListeners
            self.attachSocket = attachSocket
            self.metrics = metrics
        }
    }

    /// A moment, on both clocks: deadlines use the monotonic one, reports the wall clock.
    public struct Instant: Sendable, Equatable {
        public var monotonicMs: Int64
        public var wallMs: Int64
        public init(monotonicMs: Int64, wallMs: Int64) {
            self.monotonicMs = monotonicMs
            self.wallMs = wallMs
        }
    }

    public enum Event: Sendable {
        case start
        case spawned(ChildRole, pid: Int32)
        case spawnFailed(ChildRole, String)
        case fromWorker(pid: Int32, WorkerToSupervisor)
        /// `readOnlyView`: the access mode of the descriptor that came for the worker's view of
        /// the read-only segment (`fcntl(F_GETFL)`), nil when none came.
        case fromMemory(pid: Int32, MemoryToSupervisor, readOnlyView: SharedMemory.AccessMode?)
        /// A child broke the protocol or failed its privilege check.
        case misbehaved(ChildRole, pid: Int32, String)
        /// A child's log had the line its SIGSYS reporter writes: this system call (and its name
        /// on this architecture) was outside its seccomp filter, and it is ending.
        case sandboxViolation(ChildRole, pid: Int32, systemCall: Int32, name: String?)
        /// A child's channel reached its end: it must exit now (or it is killed).
        case channelClosed(ChildRole, pid: Int32)
        case exited(pid: Int32, Spawn.Termination)
        case stopRequested(String)
        case reloadRequested
        case configurationReloaded(WorkerSettings, line: String)
        case statusRequested(client: Int)
        /// Time passed: deadlines that are due fire.
        case tick
    }

    public enum Level: Sendable, Equatable { case debug, info, notice, warning, error }

    public enum Action: Sendable, Equatable {
        case spawn(ChildRole)
        case sendWorker(SupervisorToWorker)
        case sendMemory(SupervisorToMemory)
        /// Keep the descriptors that came with this `ready`: the first segments the
        /// supervisor holds (later copies are closed).
        case holdSegments
        /// SIGKILL, and close its channel: it is forgotten.
        case kill(ChildRole, pid: Int32)
        case readConfiguration
        case reply(client: Int, SupervisorReport)
        case log(Level, String)
        case exit(Int32)
    }

    struct Child: Sendable {
        var pid: Int32
        var started: Instant
        var phase: ChannelPhase
        /// When a stopping child is SIGKILLed.
        var killAt: Int64?
        /// What it reported about its confinement.
        var sandbox: SandboxReport?
        /// The system call its sandbox refused, from its last words.
        var violation: String?
    }

    /// One child's place: running, or down with a restart due (nil: not before something else happens).
    enum Slot: Sendable {
        case up(Child)
        case down(restartAt: Int64?)

        var child: Child? { if case .up(let c) = self { c } else { nil } }
    }

    enum State: Sendable, Equatable {
        case idle
        case running
        case stopping
        case exited(Int32)
    }

    public static let initialBackoffMs: Int64 = 100
    public static let maximumBackoffMs: Int64 = 5000
    /// A child that ran this long starts again from the initial back-off.
    public static let stableUptimeMs: Int64 = 30_000
    public static let stopGraceMs: Int64 = 5000
    public static let statusTimeoutMs: Int64 = 2000
    /// A child whose channel closed has this long to exit (its exit status says why) before it is killed.
    public static let closedGraceMs: Int64 = 1000

    private(set) var state: State = .idle
    private(set) var slots: [ChildRole: Slot] = [.worker: .down(restartAt: nil), .memory: .down(restartAt: nil)]
    private var backoff: [ChildRole: Int64] = [.worker: initialBackoffMs, .memory: initialBackoffMs]
    public private(set) var restarts: [ChildRole: Int] = [.worker: 0, .memory: 0]
    /// Children ended by their sandbox.
    public private(set) var sandboxKills: [ChildRole: Int] = [.worker: 0, .memory: 0]
    /// The status s7commd exits with once stopped: 0, or 11 when the worker has no sandbox.
    private var stopStatus: Int32 = 0
    /// Exit status of s7commd when the worker could not put its sandbox in place.
    public static let sandboxUnavailableStatus: Int32 = 11
    /// The supervisor holds the segment (the memory process handed it over at least once).
    public private(set) var hasSegment = false
    private var plan: Plan
    private let pid: Int32
    private let startedAt: Instant
    private var pendingStatus: [(id: UInt32, client: Int, deadline: Int64)] = []
    private var nextStatusID: UInt32 = 0
    private var pendingReloadLines: [String] = []
    /// Children killed and forgotten, not yet reaped.
    private var forgotten: Set<Int32> = []

    public init(plan: Plan, pid: Int32, now: Instant) {
        self.plan = plan
        self.pid = pid
        startedAt = now
    }

    /// The earliest deadline, for the event loop's poll timeout.
    public var nextDeadline: Int64? {
        var all = pendingStatus.map(\.deadline)
        for slot in slots.values {
            switch slot {
            case .up(let c): if let k = c.killAt { all.append(k) }
            case .down(let at): if let at { all.append(at) }
            }
        }
        return all.min()
    }

    public mutating func handle(_ event: Event, now: Instant) -> [Action] {
        if case .exited = state { return [] }
        var out: [Action] = []
        switch event {
        case .start:
            state = .running
            out.append(.spawn(.memory))
        case .spawned(let role, let pid):
            slots[role] = .up(Child(pid: pid, started: now, phase: .starting))
            out.append(.log(.info, "started the \(role) (pid \(pid))"))
            if role == .memory {
                out.append(.sendMemory(.prepare(MemoryStart(memory: plan.memory, stateDirectory: plan.stateDirectory,
                                                            reuse: hasSegment, attachSocket: plan.attachSocket))))
            } else {
                out.append(.sendWorker(.serve(WorkerStart(settings: plan.settings, memory: plan.memory,
                                                          listening: plan.listening, metricsListeners: plan.metricsListeners))))
            }
            out += reportRestarts()
        case .spawnFailed(let role, let why):
            out += scheduleRestart(role, now, "could not be started: \(why)")
        case .fromMemory(let pid, let message, let readOnlyView):
            guard var child = current(.memory, pid) else { break }
            do {
                try message.check(in: child.phase)
            } catch {
                out += kill(.memory, child, now, "sent a message outside the protocol (\(error))")
                break
            }
            if let problem = segmentProblem(message, readOnlyView) {
                out += kill(.memory, child, now, "sent a message outside the protocol (\(problem))")
                break
            }
            child.phase = .running
            if case .ready(_, _, let sandbox) = message { child.sandbox = sandbox }
            slots[.memory] = .up(child)
            if !hasSegment { out.append(.holdSegments) }
            hasSegment = true
            if slots[.worker]?.child == nil, state == .running { out.append(.spawn(.worker)) }
        case .fromWorker(let pid, let message):
            guard var child = current(.worker, pid) else { break }
            do {
                try message.check(in: child.phase)
            } catch {
                out += kill(.worker, child, now, "sent a message outside the protocol (\(error))")
                break
            }
            switch message {
            case .serving(let sandbox):
                child.phase = .running
                child.sandbox = sandbox
                slots[.worker] = .up(child)
                out.append(.log(.info, "S7 worker (pid \(pid)) is serving"))
            case .reloaded:
                if !pendingReloadLines.isEmpty { out.append(.log(.notice, pendingReloadLines.removeFirst())) }
            case .status(let id, let snapshot):
                if let i = pendingStatus.firstIndex(where: { $0.id == id }) {
                    out.append(.reply(client: pendingStatus.remove(at: i).client, report(now, snapshot: snapshot, problem: nil)))
                }
            }
        case .misbehaved(let role, let pid, let why):
            if let child = current(role, pid) { out += kill(role, child, now, why) }
        case .sandboxViolation(let role, let pid, let number, let name):
            if var child = current(role, pid) {
                child.violation = "system call \(number)" + (name.map { " (\($0))" } ?? "")
                slots[role] = .up(child)
            }
        case .channelClosed(let role, let pid):
            if var child = current(role, pid), child.killAt == nil {
                child.killAt = now.monotonicMs + Self.closedGraceMs
                slots[role] = .up(child)
            }
        case .exited(let pid, let termination):
            if forgotten.remove(pid) != nil {
                out.append(.log(.debug, "reaped the forgotten child \(pid): \(termination)"))
                break
            }
            guard let role = ChildRole.allCases.first(where: { slots[$0]?.child?.pid == pid }), let child = slots[role]?.child else { break }
            out += childEnded(role, child, termination, now)
        case .stopRequested(let why):
            guard case .running = state else { break }
            state = .stopping
            out.append(.log(.info, "\(why), stopping the worker and the memory process"))
            for role in ChildRole.allCases { if case .down = slots[role] { slots[role] = .down(restartAt: nil) } }
            out += stopNext(now)
        case .reloadRequested:
            if case .running = state { out.append(.readConfiguration) }
        case .configurationReloaded(let settings, let line):
            plan.settings = settings
            if slots[.worker]?.child?.phase == .running {
                out.append(.sendWorker(.reload(settings)))
                pendingReloadLines.append(line)
            } else {
                out.append(.log(.notice, line + " (the S7 worker is restarting; it starts with these settings)"))
            }
        case .statusRequested(let client):
            if case .running = state, slots[.worker]?.child?.phase == .running {
                nextStatusID &+= 1
                pendingStatus.append((nextStatusID, client, now.monotonicMs + Self.statusTimeoutMs))
                out.append(.sendWorker(.statusRequest(id: nextStatusID)))
            } else {
                let problem = if case .stopping = state { "s7commd is stopping" } else { "the S7 worker is not running (it is being restarted)" }
                out.append(.reply(client: client, report(now, snapshot: nil, problem: problem)))
            }
        case .tick:
            out += fireDeadlines(now)
        }
        if case .stopping = state, slots.values.allSatisfy({ $0.child == nil }) {
            state = .exited(stopStatus)
            out.append(.exit(stopStatus))
        }
        return out
    }

    /// What is wrong with the segments a `ready` came with: a read-only segment where the
    /// layout has none or none where it has one, or a view for the worker that is open for
    /// writing (the worker would get a descriptor it could map writable).
    private func segmentProblem(_ message: MemoryToSupervisor, _ readOnlyView: SharedMemory.AccessMode?) -> String? {
        guard case .ready(_, let readOnlySize, _) = message else { return nil }
        let expected = plan.memory.hasReadOnlySegment
        if (readOnlySize > 0) != expected {
            return expected ? "a ready without the read-only segment, which the layout has"
                            : "a ready with a read-only segment, which the layout does not have"
        }
        if expected, readOnlyView != .readOnly {
            return "the read-only segment's descriptor for the S7 worker is open \(readOnlyView.map { "\($0)" } ?? "in no known mode"), not O_RDONLY"
        }
        return nil
    }

    private func current(_ role: ChildRole, _ pid: Int32) -> Child? {
        guard let child = slots[role]?.child, child.pid == pid else { return nil }
        return child
    }

    /// SIGKILL, forget, log why, restart with back-off (unless stopping).
    private mutating func kill(_ role: ChildRole, _ child: Child, _ now: Instant, _ why: String) -> [Action] {
        forgotten.insert(child.pid)
        return [.kill(role, pid: child.pid)]
            + gone(role, child, now, whileStopping: (.error, "\(role) (pid \(child.pid)) \(why); killed it"),
                   otherwise: "(pid \(child.pid)) \(why); killed it (SIGKILL) and forgot it")
    }

    private mutating func childEnded(_ role: ChildRole, _ child: Child, _ termination: Spawn.Termination, _ now: Instant) -> [Action] {
        let uptime = now.monotonicMs - child.started.monotonicMs
        let kept = role == .worker ? " (the listening socket stays open; clients reconnect)" : " (the PLC memory segment is kept)"
        var ended = "\(termination)"
        if termination == .signaled(SIGSYS) {
            sandboxKills[role, default: 0] += 1
            ended = "was killed by the sandbox: \(child.violation ?? "SIGSYS, with no system call reported")"
        }
        if termination == .exited(ChildExitStatus.sandboxUnavailable.rawValue), case .running = state {
            // Restarting would meet the same kernel: stop, and say so.
            slots[role] = .down(restartAt: nil)
            state = .stopping
            stopStatus = Self.sandboxUnavailableStatus
            for other in ChildRole.allCases where slots[other]?.child == nil { slots[other] = .down(restartAt: nil) }
            return [.log(.error, "the \(role) (pid \(child.pid)) could not put its sandbox in place (its line before says why); s7commd does not run without it and stops (exit status \(stopStatus))")]
                + stopNext(now)
        }
        return gone(role, child, now, whileStopping: (.info, "\(role) (pid \(child.pid)) stopped: \(ended)"),
                    otherwise: "(pid \(child.pid)) \(ended) after \(seconds(uptime)) s\(kept)")
    }

    /// A child is gone (it ended, or was killed and forgotten): a worker's pending status
    /// requests are answered, and the child is restarted with back-off, or, while stopping,
    /// the next one is told to stop.
    private mutating func gone(_ role: ChildRole, _ child: Child, _ now: Instant,
                               whileStopping: (Level, String), otherwise what: String) -> [Action] {
        slots[role] = .down(restartAt: nil)
        var out: [Action] = []
        if role == .worker {
            out = pendingStatus.map { .reply(client: $0.client, report(now, snapshot: nil, problem: "the S7 worker (pid \(child.pid)) ended before it answered")) }
            pendingStatus.removeAll()
        }
        if case .stopping = state { return out + [.log(whileStopping.0, whileStopping.1)] + stopNext(now) }
        restarts[role, default: 0] += 1
        return out + scheduleRestart(role, now, what, uptime: now.monotonicMs - child.started.monotonicMs)
    }

    private mutating func scheduleRestart(_ role: ChildRole, _ now: Instant, _ what: String, uptime: Int64 = 0) -> [Action] {
        if uptime > Self.stableUptimeMs { backoff[role] = Self.initialBackoffMs }
        let delay = backoff[role] ?? Self.initialBackoffMs
        backoff[role] = min(delay * 2, Self.maximumBackoffMs)
        slots[role] = .down(restartAt: now.monotonicMs + delay)
        return [.log(.error, "\(role) \(what); restarting it in \(seconds(delay)) s")]
    }

    /// Stopping: the worker first (it closes its clients), then the memory process (it saves).
    private mutating func stopNext(_ now: Instant) -> [Action] {
        for role in [ChildRole.worker, .memory] {
            guard var child = slots[role]?.child else { continue }
            if child.killAt != nil { return [] }
            child.killAt = now.monotonicMs + Self.stopGraceMs
            child.phase = .stopping
            slots[role] = .up(child)
            return [role == .worker ? .sendWorker(.stop) : .sendMemory(.stop)]
        }
        return []
    }

    private mutating func fireDeadlines(_ now: Instant) -> [Action] {
        var out: [Action] = []
        for role in ChildRole.allCases {
            switch slots[role] {
            case .down(let at?) where at <= now.monotonicMs:
                slots[role] = .down(restartAt: nil)
                if case .running = state, role == .memory || hasSegment { out.append(.spawn(role)) }
            case .up(let child) where (child.killAt ?? .max) <= now.monotonicMs:
                out += kill(role, child, now, child.phase == .stopping ? "did not stop within \(seconds(Self.stopGraceMs)) s"
                                                : "closed its channel and did not exit")
            default:
                break
            }
        }
        while let i = pendingStatus.firstIndex(where: { $0.deadline <= now.monotonicMs }) {
            let entry = pendingStatus.remove(at: i)
            let pid = slots[.worker]?.child.map { " (pid \($0.pid))" } ?? ""
            out.append(.reply(client: entry.client, report(now, snapshot: nil, problem: "the S7 worker\(pid) is not answering (no status within \(seconds(Self.statusTimeoutMs)) s)")))
        }
        return out
    }

    private func reportRestarts() -> [Action] {
        guard plan.metricsListeners > 0, slots[.worker]?.child != nil else { return [] }
        return [.sendWorker(.restarts(worker: restarts[.worker] ?? 0, memory: restarts[.memory] ?? 0,
                                      sandboxKills: sandboxKills[.worker] ?? 0))]
    }

    public func report(_ now: Instant, snapshot: [UInt8]?, problem: String?) -> SupervisorReport {
        let allUp = slots.values.allSatisfy { $0.child != nil } && slots[.worker]?.child?.phase == .running
        let state: SupervisorReport.State = if case .stopping = self.state { .stopping }
            else if !plan.listening { .disabled } else if allUp { .listening } else { .restarting }
        let children = [ChildRole.worker, .memory].map { role in
            SupervisorReport.Child(role: role, pid: slots[role]?.child?.pid, startedAt: slots[role]?.child?.started.wallMs,
                                   restarts: restarts[role] ?? 0, sandboxKills: sandboxKills[role] ?? 0,
                                   sandbox: slots[role]?.child?.sandbox)
        }
        return SupervisorReport(pid: pid, state: state, endpoint: plan.settings.endpoint, metrics: plan.metrics,
                                startedAt: startedAt.wallMs, uptimeMs: now.monotonicMs - startedAt.monotonicMs,
                                children: children, workerSnapshot: snapshot, workerProblem: problem)
    }

    private func seconds(_ ms: Int64) -> String {
        let tenths = ms / 100
        return "\(tenths / 10).\(tenths % 10)"
    }
}
