import S7IPC
import S7Sys
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The supervisor's one event loop, on one thread: poll(2) over a signalfd, the children's
/// channels and log pipes, and the control socket; each event goes through ``SupervisorCore``
/// and the loop performs the actions it returns. No other thread, no async runtime.
public final class SupervisorLoop {
    public struct Setup {
        /// The program each child runs (absolute): the s7commd binary, re-executed.
        public var executables: [ChildRole: String]
        /// Arguments after the role (`__worker` / `__memory`).
        public var arguments: [ChildRole: [String]]
        /// The user a child runs as when not this process's own (the S7 worker's, spawned with
        /// the CAP_SETUID and CAP_SETGID this process kept for it).
        public var identities: [ChildRole: Spawn.Identity]
        /// The children's whole environment (see ``childEnvironment(_:)``).
        public var environment: [String: String]
        public var listener: FileDescriptor?
        public var metricsListeners: [FileDescriptor]
        /// control.sock, bound before privileges were dropped.
        public var controlListener: FileDescriptor?
        /// memory.sock, handed to the memory process.
        public var memoryListener: FileDescriptor?
        /// Who may use control.sock besides root: this uid, or members of this gid.
        public var serviceUID: uid_t
        public var serviceGID: gid_t
        public var log: (SupervisorCore.Level, String) -> Void
        /// Writes one line a child logged (to the supervisor's standard error: the log).
        public var relay: ([UInt8]) -> Void
        /// Re-reads and validates the configuration on SIGHUP; nil keeps the running one (and has logged why).
        public var reload: () -> (WorkerSettings, String)?

        public init(executables: [ChildRole: String], arguments: [ChildRole: [String]], identities: [ChildRole: Spawn.Identity] = [:],
                    environment: [String: String], listener: FileDescriptor?,
                    metricsListeners: [FileDescriptor], controlListener: FileDescriptor?, memoryListener: FileDescriptor?,
                    serviceUID: uid_t, serviceGID: gid_t, log: @escaping (SupervisorCore.Level, String) -> Void,
                    relay: @escaping ([UInt8]) -> Void, reload: @escaping () -> (WorkerSettings, String)?) {
            self.executables = executables
            self.arguments = arguments
            self.identities = identities
            self.environment = environment
            self.listener = listener
            self.metricsListeners = metricsListeners
            self.controlListener = controlListener
            self.memoryListener = memoryListener
            self.serviceUID = serviceUID
            self.serviceGID = serviceGID
            self.log = log
            self.relay = relay
            self.reload = reload
        }
    }

    /// The variables a child may inherit; every other one (systemd's LISTEN_*/NOTIFY_SOCKET,
    /// the caller's shell environment) stays behind.
    public static let inheritedVariables = ["TZ", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "LC_NUMERIC", "LC_TIME"]

    /// The children's environment: the allow-listed variables of `environment`, a fixed PATH,
    /// and Swift's crash backtracer off: it would exec swift-backtrace from a crashing child,
    /// which the sandbox forbids, so a fault would end as a sandbox kill instead of its signal.
    public static func childEnvironment(_ environment: [String: String]) -> [String: String] {
        var out = environment.filter { inheritedVariables.contains($0.key) }
        out["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        out["SWIFT_BACKTRACE"] = "enable=no"
        return out
    }

    struct Channel {
        var role: ChildRole
        var pid: Int32
        var socket: FileDescriptor
        var verified = false
    }

    struct LogPipe {
        var role: ChildRole
        var pid: Int32
        var descriptor: FileDescriptor
        var pending: [UInt8] = []
    }

    /// Longest line relayed from a child; the rest of a longer one is dropped.
    static let maximumLine = 4096
    /// A control client that has not sent its request by then is dropped.
    static let clientTimeoutMs: Int64 = 5000
    /// Control clients served at once; more are closed at once (they are local and trusted,
    /// but one of them must not hold the supervisor's descriptors).
    static let maximumClients = 16

    private let setup: Setup
    private var core: SupervisorCore
    private var channels: [ChildRole: Channel] = [:]
    private var pipes: [LogPipe] = []
    private var clients: [Int: (socket: FileDescriptor, deadline: Int64, asked: Bool, peer: String)] = [:]
    private var nextClient = 0
    /// The segments, from the first `ready` on: segment 0 and segment 1 read-write (for a
    /// restarted memory process), and segment 1 O_RDONLY (the only one the worker gets).
    private var segment: FileDescriptor?
    private var readOnlySegment: FileDescriptor?
    private var readOnlyView: FileDescriptor?
    /// The descriptors of the `ready` being handled, until the core says to hold them.
    private var arrived: [FileDescriptor] = []
    private var exitStatus: Int32?

    public init(setup: Setup, plan: SupervisorCore.Plan) {
        self.setup = setup
        core = SupervisorCore(plan: plan, pid: getpid(), now: Self.now())
    }

    static func now() -> SupervisorCore.Instant {
        SupervisorCore.Instant(monotonicMs: Poll.monotonicMilliseconds(), wallMs: Poll.realtimeMilliseconds())
    }

    /// Supervises until a stop signal has stopped both children; returns the exit status.
    public func run() throws -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        let signals = try SignalDescriptor([SIGTERM, SIGINT, SIGHUP, SIGCHLD])
        // accept(2) after poll must not wait for a client that went away in between.
        try setup.controlListener?.setNonBlocking()
        feed(.start)
        while exitStatus == nil {
            // What to poll, each with what to do when it is readable. A handler may close or
            // replace what a later one names: each checks that its descriptor is still current.
            var watched: [(FileDescriptor, () -> Void)] = [(signals.descriptor, { self.handleSignals(signals) })]
            watched += channels.values.map { channel in (channel.socket, { self.receive(channel) }) }
            watched += pipes.map { pipe in (pipe.descriptor, { self.relay(pipe.descriptor) }) }
            if let control = setup.controlListener { watched.append((control, { self.accept(control) })) }
            watched += clients.filter { !$0.value.asked }.map { id, client in (client.socket, { self.request(id) }) }
            let deadlines = [core.nextDeadline].compactMap { $0 } + clients.values.filter { !$0.asked }.map(\.deadline)
            let timeout = deadlines.min().map { Int(max(0, $0 - Poll.monotonicMilliseconds())) } ?? -1
            let ready = try Poll.wait(watched.map { ($0.0, .readable) }, timeoutMilliseconds: timeout)
            for (entry, events) in zip(watched, ready) where !events.isEmpty { entry.1() }
            let now = Poll.monotonicMilliseconds()
            for (id, client) in clients where !client.asked && client.deadline <= now {
                setup.log(.warning, "control socket: \(client.peer) sent no status request within \(Self.clientTimeoutMs / 1000) s; closed")
                drop(id)
            }
            feed(.tick)
        }
        for pipe in pipes { relay(pipe.descriptor) }
        return exitStatus ?? 0
    }

    private func feed(_ event: SupervisorCore.Event) {
        for action in core.handle(event, now: Self.now()) { perform(action) }
    }

    private func perform(_ action: SupervisorCore.Action) {
        switch action {
        case .spawn(let role): spawn(role)
        case .sendWorker(let message):
            var fds: [FileDescriptor] = []
            if case .serve = message {
                fds = (setup.listener.map { [$0] } ?? []) + setup.metricsListeners + [segment, readOnlyView].compactMap { $0 }
            }
            send(message, to: .worker, descriptors: fds)
        case .sendMemory(let message):
            var fds: [FileDescriptor] = []
            if case .prepare(let start) = message {
                if start.reuse { fds += [segment, readOnlySegment].compactMap { $0 } }
                if start.attachSocket, let socket = setup.memoryListener { fds.append(socket) }
            }
            send(message, to: .memory, descriptors: fds)
        case .holdSegments:
            guard segment == nil, !arrived.isEmpty else { break }
            segment = arrived[0]
            if arrived.count == 3 { (readOnlySegment, readOnlyView) = (arrived[1], arrived[2]) }
            arrived = []
        case .kill(let role, let pid):
            try? ProcessSignal.send(SIGKILL, to: pid)
            if let channel = channels[role], channel.pid == pid { close(role) }
        case .readConfiguration:
            if let (settings, line) = setup.reload() { feed(.configurationReloaded(settings, line: line)) }
        case .reply(let client, let report):
            if let socket = clients[client]?.socket {
                do {
                    try IPC.send(ControlReply.status(report), on: socket)
                } catch {
                    setup.log(.warning, "control socket: could not answer a status request: \(error)")
                }
                drop(client)
            }
        case .log(let level, let text): setup.log(level, text)
        case .exit(let status): exitStatus = status
        }
    }

    private func send<M: IPCMessage>(_ message: M, to role: ChildRole, descriptors: [FileDescriptor]) {
        guard let channel = channels[role] else { return }
        do {
            try IPC.send(message, descriptors: descriptors, on: channel.socket)
        } catch .wouldBlock {
            // Its end is non-blocking: a child that stops reading cannot stall the supervisor.
            feed(.misbehaved(role, pid: channel.pid, "does not read its channel (no room for a \(message.kind) message)"))
        } catch {
            // The child is gone or going: its exit (or closed channel) is the event that counts.
            setup.log(.debug, "could not send \(message.kind) to the \(role) (pid \(channel.pid)): \(error)")
        }
    }

    private func spawn(_ role: ChildRole) {
        do {
            let pair = try UnixSocketPair.make()
            // The supervisor's end only (the child's is another open file description).
            try pair.first.setNonBlocking()
            let output = try UnixPipe.make()
            let errors = try UnixPipe.make()
            defer { for fd in [pair.second, output.write, errors.write] { try? fd.close() } }
            let pid = try Spawn.run(executable: setup.executables[role] ?? "/proc/self/exe",
                                    arguments: [role == .worker ? "__worker" : "__memory"] + (setup.arguments[role] ?? []),
                                    environment: setup.environment, passing: [(pair.second, as: 3)],
                                    standardInput: .devNull, standardOutput: output.write, standardError: errors.write,
                                    newSession: true, identity: setup.identities[role])
            channels[role] = Channel(role: role, pid: pid, socket: pair.first)
            for end in [output.read, errors.read] {
                try end.setNonBlocking()
                pipes.append(LogPipe(role: role, pid: pid, descriptor: end))
            }
            feed(.spawned(role, pid: pid))
        } catch {
            feed(.spawnFailed(role, "\(error)"))
        }
    }

    private func close(_ role: ChildRole) {
        guard let channel = channels.removeValue(forKey: role) else { return }
        try? channel.socket.close()
    }

    private func handleSignals(_ signals: SignalDescriptor) {
        for signo in (try? signals.read()) ?? [] {
            switch signo {
            case SIGHUP: feed(.reloadRequested)
            case SIGCHLD:
                // A child's last words (a sandbox's report) come before the news of its end.
                for pipe in pipes { relay(pipe.descriptor) }
                while let (pid, termination) = try? Spawn.reapAny() { feed(.exited(pid: pid, termination)) }
            default: feed(.stopRequested(signo == SIGINT ? "received SIGINT" : "received SIGTERM"))
            }
        }
    }

    private func receive(_ channel: Channel) {
        let role = channel.role, pid = channel.pid
        guard channels[role]?.pid == pid else { return }
        // Checked at its first message, when it has set no-new-privileges itself.
        func verified() -> Bool {
            if channel.verified { return true }
            let expected = setup.identities[role] ?? Spawn.Identity(uid: getuid(), gid: getgid())
            if let problem = ProcessStatus.privilegeProblem(pid: pid, uid: expected.uid, gid: expected.gid) {
                feed(.misbehaved(role, pid: pid, problem))
                return false
            }
            channels[role]?.verified = true
            return true
        }
        do {
            switch role {
            case .worker:
                guard let (message, _) = try IPC.receive(WorkerToSupervisor.self, on: channel.socket, maxDescriptors: 1) else {
                    close(role)
                    return feed(.channelClosed(role, pid: pid))
                }
                if verified() { feed(.fromWorker(pid: pid, message)) }
            case .memory:
                guard let (message, fds) = try IPC.receive(MemoryToSupervisor.self, on: channel.socket, maxDescriptors: 3) else {
                    close(role)
                    return feed(.channelClosed(role, pid: pid))
                }
                guard verified() else { return fds.forEach { try? $0.close() } }
                // What the worker would get for the read-only segment must be O_RDONLY; the
                // core treats anything else as a protocol violation.
                let view: SharedMemory.AccessMode? = fds.count == 3 ? ((try? SharedMemory.accessMode(of: fds[2])) ?? .readWrite) : nil
                arrived = fds
                feed(.fromMemory(pid: pid, message, readOnlyView: view))
                // Not held (a later copy, or a refused ready): closed.
                arrived.forEach { try? $0.close() }
                arrived = []
            }
        } catch .wouldBlock {
            return  // poll woke without a message: nothing to read yet
        } catch {
            // The core's kill action closes the channel.
            feed(.misbehaved(role, pid: pid, "sent a message outside the protocol (\(error))"))
        }
    }

    /// Relays whole lines a child wrote; control bytes other than tab become '?'.
    private func relay(_ descriptor: FileDescriptor) {
        guard let i = pipes.firstIndex(where: { $0.descriptor == descriptor }) else { return }
        guard let bytes = try? UnixPipe.readAvailable(descriptor, max: 65536) else {
            if !pipes[i].pending.isEmpty { setup.relay(pipes[i].pending) }
            try? descriptor.close()
            pipes.remove(at: i)
            return
        }
        var violations: [Int32] = []
        for byte in bytes {
            if byte == 0x0A {
                setup.relay(pipes[i].pending)
                if let number = SandboxViolationReporter.systemCall(in: pipes[i].pending) { violations.append(number) }
                pipes[i].pending.removeAll(keepingCapacity: true)
            } else if pipes[i].pending.count < Self.maximumLine {
                pipes[i].pending.append(byte < 0x20 && byte != 0x09 || byte == 0x7F ? 0x3F : byte)
            }
        }
        let (role, pid) = (pipes[i].role, pipes[i].pid)
        for number in violations {
            feed(.sandboxViolation(role, pid: pid, systemCall: number, name: SeccompFilter.name(of: number)))
        }
    }

    private func accept(_ listener: FileDescriptor) {
        guard let peer = try? LocalSocket.accept(listener) else { return }
        guard let cred = try? UnixSocket.peerCredentials(of: peer),
              LocalSocket.isTrusted(cred, serviceUID: setup.serviceUID, serviceGID: setup.serviceGID) else {
            setup.log(.warning, "control socket: refused a peer that is neither root, the service user, nor in its group")
            try? peer.close()
            return
        }
        guard clients.count < Self.maximumClients else {
            setup.log(.warning, "control socket: \(Self.maximumClients) requests are already open; closed the one of pid \(cred.pid)")
            try? peer.close()
            return
        }
        nextClient += 1
        clients[nextClient] = (peer, Poll.monotonicMilliseconds() + Self.clientTimeoutMs, false, "pid \(cred.pid) (uid \(cred.uid))")
    }

    private func request(_ id: Int) {
        guard let client = clients[id] else { return }
        do {
            guard try IPC.receive(ControlRequest.self, on: client.socket, maxDescriptors: 0) != nil else { return drop(id) }
            clients[id]?.asked = true
            feed(.statusRequested(client: id))
        } catch {
            setup.log(.warning, "control socket: \(client.peer) sent something outside the protocol (\(error)); closed")
            drop(id)
        }
    }

    private func drop(_ id: Int) {
        if let client = clients.removeValue(forKey: id) { try? client.socket.close() }
    }
}
