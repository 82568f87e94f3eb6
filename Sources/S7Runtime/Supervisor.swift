import Foundation
import Logging
import S7Server
import S7Sys
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The small, boring parent: it holds the listening socket and a handle on the PLC memory
/// segment, spawns the S7 worker and the memory process (spawn and exec, never a bare fork),
/// passes them descriptors, restarts them with back-off, and never parses S7 traffic.
public final class Supervisor: @unchecked Sendable {
    public enum Role: String, Sendable {
        case memory = "memory process"
        case worker = "S7 worker"

        var argument: String { self == .memory ? "__memory" : "__worker" }
    }

    enum Event: Sendable {
        case message(Role, pid_t, RuntimeMessage, [SystemPackage.FileDescriptor])
        case closed(Role, pid_t, String)
        case exited(Role, pid_t, Spawn.Termination)
        case signal(CInt)
        case restart(Role)
        /// A status request from the control socket, answered through the reply.
        case statusQuery(StatusReply)
        case statusTimeout(Int)
    }

    /// Hands the supervisor's answer from its run loop to the control socket's thread.
    final class StatusReply: @unchecked Sendable {
        private let lock = NSLock()
        private var answer: String?
        private let done = DispatchSemaphore(value: 0)

        func deliver(_ json: String) {
            lock.lock()
            let first = answer == nil
            if first { answer = json }
            lock.unlock()
            if first { done.signal() }
        }

        func wait(seconds: Double) -> String? {
            guard done.wait(timeout: .now() + seconds) == .success else { return nil }
            lock.lock()
            defer { lock.unlock() }
            return answer
        }
    }

    /// How long the worker has to answer a status request.
    static let workerStatusTimeout: Duration = .seconds(2)

    struct Child {
        var pid: pid_t
        var channel: ControlChannel
        var started: Date
        var verified = false
    }

    private let executable: String
    private let childArguments: [String]
    private let memoryArguments: [String]
    /// The configuration the segment was laid out from: memory process and worker restarts use
    /// it, so a reload that changed data blocks (restart needed) cannot break a restart.
    private let layoutConfiguration: String
    /// The latest configuration: its live settings go to the worker after each (re)start.
    private var configuration: String
    private let listening: SystemPackage.FileDescriptor?
    /// The metrics sockets (a loopback TCP port, the Unix socket), handed to each worker.
    private let metricsListeners: [SystemPackage.FileDescriptor]
    private let metricsEndpoints: [String]
    private let logger: Logger
    private var memfd: SystemPackage.FileDescriptor?
    private var children: [Role: Child] = [:]
    private var backoff: [Role: Double] = [.memory: 0.1, .worker: 0.1]
    private var stopping = false
    private var pendingReloadLines: [String] = []
    private let events: AsyncStream<Event>
    private let sink: AsyncStream<Event>.Continuation
    /// Called on SIGHUP: the new configuration text and a line for the log, or nil to keep the old.
    private let reload: () -> (String, String)?
    private let endpoint: String
    private let controlSocket: String?
    private let startedAt = Date()
    private var restarts: [Role: Int] = [.memory: 0, .worker: 0]
    private var workerServing = false
    /// Status requests sent to the worker, answered in order; a timed-out one keeps its place
    /// (reply nil) so a late answer is matched to it and dropped.
    private var pendingStatus: [(id: Int, reply: StatusReply?)] = []
    private var nextStatusID = 0

    public init(executable: String, childArguments: [String], memoryArguments: [String] = [], configuration: String,
                listening: SystemPackage.FileDescriptor?, metricsListeners: [SystemPackage.FileDescriptor] = [],
                metricsEndpoints: [String] = [], logger: Logger,
                endpoint: String = "", controlSocket: String? = nil,
                reload: @escaping () -> (String, String)?) {
        self.metricsListeners = metricsListeners
        self.metricsEndpoints = metricsEndpoints
        self.endpoint = endpoint
        self.controlSocket = controlSocket
        self.executable = executable
        self.childArguments = childArguments
        self.memoryArguments = memoryArguments
        self.configuration = configuration
        self.layoutConfiguration = configuration
        self.listening = listening
        self.logger = logger
        self.reload = reload
        (events, sink) = AsyncStream.makeStream(of: Event.self)
    }

    /// Feeds a signal (SIGTERM, SIGINT, SIGHUP) into the supervision loop.
    public func deliver(signal: CInt) { sink.yield(.signal(signal)) }

    /// Starts both children and supervises them until a stop signal; returns the exit status.
    public func run() async -> Int32 {
        var controlListener: SystemPackage.FileDescriptor?
        if let controlSocket { controlListener = serveControl(path: controlSocket) }
        defer {
            if let controlSocket, controlListener != nil { unlink(controlSocket) }
        }
        start(.memory)
        for await event in events {
            switch event {
            case .signal(let sig) where sig == SIGHUP:
                guard let (text, line) = reload() else { continue }
                configuration = text
                // Logged once the worker has applied it, so the line means "in effect".
                if let worker = children[.worker], (try? worker.channel.send(.reload(configuration: text))) != nil {
                    pendingReloadLines.append(line)
                } else {
                    logger.notice("\(line)")
                }
            case .signal:
                guard !stopping else { continue }
                stopping = true
                if let worker = children[.worker] {
                    try? worker.channel.send(.stop)
                    killLater(worker.pid, after: 5)
                } else if let memory = children[.memory] {
                    try? memory.channel.send(.stop)
                    killLater(memory.pid, after: 5)
                } else {
                    return 0
                }
            case .message(let role, let pid, let message, let fds):
                guard children[role]?.pid == pid else {
                    fds.forEach { try? $0.close() }
                    continue
                }
                handle(role, pid, message, fds)
            case .closed(let role, let pid, let why):
                if children[role]?.pid == pid, !stopping { logger.warning("\(role.rawValue) (pid \(pid)): \(why)") }
            case .exited(let role, let pid, let termination):
                guard children[role]?.pid == pid else { continue }
                let child = children.removeValue(forKey: role)
                if role == .worker {
                    workerServing = false
                    for entry in pendingStatus { entry.reply?.deliver(composeStatus(nil, problem: "the S7 worker (pid \(pid)) ended before it answered")) }
                    pendingStatus.removeAll()
                }
                if stopping {
                    logger.info("\(role.rawValue) (pid \(pid)) stopped: \(termination)")
                    if role == .worker, let memory = children[.memory] {
                        try? memory.channel.send(.stop)
                        killLater(memory.pid, after: 5)
                    }
                    if children.isEmpty { return 0 }
                    continue
                }
                restarts[role, default: 0] += 1
                let uptime = Date().timeIntervalSince(child?.started ?? Date())
                if uptime > 30 { backoff[role] = 0.1 }
                let delay = backoff[role] ?? 0.1
                backoff[role] = min(delay * 2, 5)
                logger.error("\(role.rawValue) (pid \(pid)) \(termination) after \(String(format: "%.1f", uptime)) s; restarting it in \(String(format: "%.1f", delay)) s\(role == .worker ? " (the listening socket stays open; clients reconnect)" : " (the PLC memory segment is kept)")")
                let sink = self.sink
                Task {
                    try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
                    sink.yield(.restart(role))
                }
            case .restart(let role):
                if !stopping { start(role) }
            case .statusQuery(let reply):
                if let worker = children[.worker], !stopping, (try? worker.channel.send(.statusRequest)) != nil {
                    nextStatusID += 1
                    let id = nextStatusID
                    pendingStatus.append((id, reply))
                    let sink = self.sink
                    Task {
                        try? await Task.sleep(for: Self.workerStatusTimeout)
                        sink.yield(.statusTimeout(id))
                    }
                } else {
                    reply.deliver(composeStatus(nil, problem: stopping ? "s7commd is stopping" : "the S7 worker is not running (it is being restarted)"))
                }
            case .statusTimeout(let id):
                if let i = pendingStatus.firstIndex(where: { $0.id == id }), let reply = pendingStatus[i].reply {
                    pendingStatus[i].reply = nil
                    let pid = children[.worker].map { " (pid \($0.pid))" } ?? ""
                    reply.deliver(composeStatus(nil, problem: "the S7 worker\(pid) is not answering (no status within 2 s)"))
                }
            }
        }
        return 0
    }

    private func handle(_ role: Role, _ pid: pid_t, _ message: RuntimeMessage, _ fds: [SystemPackage.FileDescriptor]) {
        if children[role]?.verified == false {
            do {
                try verifyChild(role, pid)
                children[role]?.verified = true
            } catch {
                logger.error("\(error); killing it")
                fds.forEach { try? $0.close() }
                kill(pid, SIGKILL)
                return
            }
        }
        switch (role, message) {
        case (.memory, .memoryReady):
            guard fds.count == 1 else { return refuse(role, pid, message, fds) }
            if memfd == nil { memfd = fds[0] } else { try? fds[0].close() }
            if children[.worker] == nil { start(.worker) }
        case (.worker, .serving):
            workerServing = true
            logger.info("S7 worker (pid \(pid)) is serving")
        case (.worker, .status(let json)) where !pendingStatus.isEmpty:
            let entry = pendingStatus.removeFirst()
            let snapshot = SupervisorStatus.decodeSnapshot(json)
            entry.reply?.deliver(composeStatus(snapshot, problem: snapshot == nil && json != "null" ? "the S7 worker's status was not readable" : nil))
        case (.worker, .reloaded):
            if !pendingReloadLines.isEmpty { logger.notice("\(pendingReloadLines.removeFirst())") }
        default:
            refuse(role, pid, message, fds)
        }
    }

    /// The supervisor's own part of the status, with the worker's snapshot.
    private func composeStatus(_ server: ServerSnapshot?, problem: String?) -> String {
        let state = listening == nil ? "disabled"
            : (children[.worker] != nil && children[.memory] != nil && workerServing ? "listening" : "restarting")
        let kids = [Role.worker, .memory].map {
            SupervisorStatus.Child(role: $0.rawValue, pid: children[$0]?.pid, started: children[$0]?.started, restarts: restarts[$0] ?? 0)
        }
        return SupervisorStatus(pid: getpid(), state: state, endpoint: endpoint, metrics: metricsEndpoints, startedAt: startedAt,
                                uptimeSeconds: Date().timeIntervalSince(startedAt), children: kids, server: server,
                                workerProblem: problem).encoded()
    }

    /// Serves `s7commd status` on `path` (0660): root, this user, or members of its group, one
    /// status request per connection. The blocking socket work runs on a thread of its own; the
    /// request goes through the run loop, which alone touches the supervisor's state.
    private func serveControl(path: String) -> SystemPackage.FileDescriptor? {
        let listener: SystemPackage.FileDescriptor
        do {
            listener = try LocalSocket.listen(path: path, mode: 0o660)
        } catch {
            logger.error("supervisor: \(error); `s7commd status` will show only what the state file holds")
            return nil
        }
        let sink = self.sink
        let logger = self.logger
        let thread = Thread {
            while true {
                guard let peer = try? LocalSocket.accept(listener) else { return }
                defer { try? peer.close() }
                guard let cred = try? UnixSocket.peerCredentials(of: peer), LocalSocket.isTrusted(cred) else {
                    logger.warning("control socket: refused a peer that is neither root, the service user, nor in its group")
                    continue
                }
                LocalSocket.setReceiveTimeout(peer, seconds: 2)
                do {
                    guard let (message, fds) = try RuntimeMessage.receive(on: peer, maxDescriptors: 0) else { continue }
                    fds.forEach { try? $0.close() }
                    guard message == .statusRequest else {
                        logger.warning("control socket: pid \(cred.pid) (uid \(cred.uid)) sent \(message.kind) instead of a status request; closed")
                        continue
                    }
                    let reply = StatusReply()
                    sink.yield(.statusQuery(reply))
                    guard let json = reply.wait(seconds: 5) else {
                        logger.warning("control socket: no status for pid \(cred.pid) within 5 s")
                        continue
                    }
                    try RuntimeMessage.status(json: json).send(on: peer)
                } catch {
                    logger.warning("control socket: pid \(cred.pid) (uid \(cred.uid)): \(error); closed")
                }
            }
        }
        thread.name = "s7commd-status"
        thread.start()
        return listener
    }

    private func refuse(_ role: Role, _ pid: pid_t, _ message: RuntimeMessage, _ fds: [SystemPackage.FileDescriptor]) {
        fds.forEach { try? $0.close() }
        logger.error("\(role.rawValue) (pid \(pid)) sent an unexpected \(message.kind) message; ending it")
        kill(pid, SIGKILL)
    }

    /// The child must run as this process's user with no capability and no-new-privs set.
    private func verifyChild(_ role: Role, _ pid: pid_t) throws {
        let status = try ProcessStatus.read(pid: pid)
        guard status.uid.all(equal: getuid()), status.gid.all(equal: getgid()) else {
            throw RuntimeError("\(role.rawValue) (pid \(pid)) runs as uid \(status.uid), not \(getuid())")
        }
        guard status.permitted == 0, status.effective == 0, status.inheritable == 0, status.ambient == 0, status.noNewPrivileges else {
            throw RuntimeError("\(role.rawValue) (pid \(pid)) holds capabilities or lacks no-new-privileges")
        }
    }

    private func start(_ role: Role) {
        do {
            let pair = try UnixSocketPair.make()
            // The children get this environment (TZ, LANG, ...) but never systemd's socket
            // activation variables, which describe the supervisor's descriptors, not theirs.
            var environment = ProcessInfo.processInfo.environment
            for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"] { environment.removeValue(forKey: key) }
            let pid = try Spawn.run(executable: executable,
                                    arguments: [role.argument] + childArguments + (role == .memory ? memoryArguments : []),
                                    environment: environment, passing: [(pair.second, as: 3)])
            try? pair.second.close()
            if role == .worker { workerServing = false }
            let channel = ControlChannel(socket: pair.first, peer: role.rawValue)
            children[role] = Child(pid: pid, channel: channel, started: Date())
            let sink = self.sink
            Thread.detachNewThread {
                let termination = (try? Spawn.wait(pid)) ?? .exited(-1)
                sink.yield(.exited(role, pid, termination))
            }
            Task {
                for await event in channel.events(maxDescriptors: 1) {
                    switch event {
                    case .message(let m, let fds): sink.yield(.message(role, pid, m, fds))
                    case .closed(let why): sink.yield(.closed(role, pid, why))
                    }
                }
                try? pair.first.close()
            }
            switch role {
            case .memory:
                try channel.send(.prepareMemory(configuration: layoutConfiguration, reuse: memfd != nil), descriptors: memfd.map { [$0] } ?? [])
                reportRestarts()
            case .worker:
                guard let memfd else { throw RuntimeError("no PLC memory segment to hand to the worker") }
                try channel.send(.serve(configuration: layoutConfiguration, listening: listening != nil, metricsListeners: metricsListeners.count),
                                 descriptors: (listening.map { [$0] } ?? []) + metricsListeners + [memfd])
                if configuration != layoutConfiguration { try channel.send(.reload(configuration: configuration)) }
                reportRestarts()
            }
            logger.info("started the \(role.rawValue) (pid \(pid))")
        } catch {
            logger.error("could not start the \(role.rawValue): \(error); retrying")
            let sink = self.sink
            let delay = backoff[role] ?? 1
            backoff[role] = min(delay * 2, 5)
            Task {
                try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
                sink.yield(.restart(role))
            }
        }
    }

    /// Tells the worker the restart counts, for its metrics.
    private func reportRestarts() {
        guard !metricsListeners.isEmpty, let worker = children[.worker] else { return }
        try? worker.channel.send(.childRestarts(["worker": restarts[.worker] ?? 0, "memory": restarts[.memory] ?? 0]))
    }

    private func killLater(_ pid: pid_t, after seconds: Double) {
        Task {
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            kill(pid, SIGKILL)
        }
    }
}
