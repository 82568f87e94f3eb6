import Foundation
import Logging
import PLCMemory
import PLCMemoryClient
import S7IPC
import S7Server
import S7Session
import S7Sys
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Checks, first thing in a child, that it holds no privilege: no capability in any set it
/// can have, no-new-privileges set, not root. Any failure ends the child.
public func verifyUnprivileged(role: String) throws {
    try Privileges.setNoNewPrivileges()
    let status = try Capabilities.current()
    guard status.inheritable == 0, status.permitted == 0, status.effective == 0, status.ambient == 0 else {
        throw RuntimeError("\(role) started with capabilities (CapPrm \(String(status.permitted, radix: 16)), CapEff \(String(status.effective, radix: 16))); refusing to serve")
    }
    guard status.noNewPrivileges else { throw RuntimeError("\(role): no-new-privileges is not set") }
    guard getuid() != 0, geteuid() != 0 else { throw RuntimeError("\(role) runs as root; refusing to serve") }
}

/// Checks that the control socket's peer is the parent process (the supervisor) and runs as
/// `supervisorUID` (this process's own user unless the supervisor started it as another): the
/// socket pair was made by the supervisor after it dropped privileges.
public func verifyControlPeer(_ socket: SystemPackage.FileDescriptor, role: String, supervisorUID: uid_t) throws {
    let peer = try UnixSocket.peerCredentials(of: socket)
    guard peer.pid == getppid(), peer.uid == supervisorUID else {
        throw RuntimeError("\(role): the control socket's peer is pid \(peer.pid) uid \(peer.uid), not the supervisor (pid \(getppid()), uid \(supervisorUID)); refusing it")
    }
}

/// A child's channel to the supervisor, read on a thread of its own (blocking receives never
/// sit on the concurrency pool). A message outside the set, or outside the child's table for
/// its phase, ends the child with ``ChildExitStatus/protocolViolation``.
final class SupervisorChannel<M: IPCMessage>: @unchecked Sendable {
    let socket: SystemPackage.FileDescriptor
    let logger: Logger
    let role: String

    enum Event: Sendable {
        case message(M, [SystemPackage.FileDescriptor])
        case closed
    }

    init(socket: SystemPackage.FileDescriptor, role: String, logger: Logger) {
        self.socket = socket
        self.role = role
        self.logger = logger
    }

    func events(maxDescriptors: Int) -> AsyncStream<Event> {
        AsyncStream { continuation in
            let thread = Thread { [socket, logger, role] in
                while true {
                    do {
                        guard let (message, fds) = try IPC.receive(M.self, on: socket, maxDescriptors: maxDescriptors) else {
                            continuation.yield(.closed)
                            break
                        }
                        continuation.yield(.message(message, fds))
                    } catch {
                        logger.critical("\(role): the supervisor sent a message outside the protocol (\(error)); exiting with status \(ChildExitStatus.protocolViolation.rawValue)")
                        exit(ChildExitStatus.protocolViolation.rawValue)
                    }
                }
                continuation.finish()
            }
            thread.name = "s7commd-channel"
            thread.start()
        }
    }

    /// Ends the child when `message` is not in its table for `phase`.
    func check(_ message: M, in phase: ChannelPhase) where M: IPCPhasedMessage {
        do {
            try message.check(in: phase)
        } catch {
            logger.critical("\(role): the supervisor sent a message outside the protocol (\(error)); exiting with status \(ChildExitStatus.protocolViolation.rawValue)")
            exit(ChildExitStatus.protocolViolation.rawValue)
        }
    }

    func send<R: IPCMessage>(_ message: R, descriptors: [SystemPackage.FileDescriptor] = []) throws {
        try IPC.send(message, descriptors: descriptors, on: socket)
    }
}

/// The S7 worker: receives the listening socket and the PLC memory segment, serves clients.
public enum WorkerRole {
    /// - Parameters:
    ///   - ownUser: no other process of s7commd runs as this worker's user.
    ///   - landlock: what Landlock enforces on this process (put in place at its start).
    ///   - statusFile: /proc/self/status, opened before Landlock, for the sandbox's report.
    public static func run(control: SystemPackage.FileDescriptor, threads: Int, ownUser: Bool, landlock: String,
                           statusFile: SystemPackage.FileDescriptor, logger: Logger,
                           clock: @escaping @Sendable () -> PLCDateTime) async throws -> Int32 {
        let channel = SupervisorChannel<SupervisorToWorker>(socket: control, role: "worker", logger: logger)
        var server: S7Server?
        var listeningServer = false
        var memory: FlatMemory?
        var phase = ChannelPhase.starting
        // The listener, up to two metrics sockets (TCP and Unix), the segment, the read-only segment.
        for await event in channel.events(maxDescriptors: 5) {
            guard case .message(let message, let fds) = event else {
                logger.notice("worker: the supervisor closed the channel; stopping")
                await server?.shutdown()
                return ChildExitStatus.stopped.rawValue
            }
            channel.check(message, in: phase)
            switch message {
            case .serve(let start):
                phase = .running
                let layout = try PLCMemory.MemoryLayout(start.memory)
                // The read-only segment comes O_RDONLY and is mapped PROT_READ: the kernel,
                // not only FlatMemory's check, keeps this process from writing it.
                let segmentCount = layout.hasReadOnlySegment ? 2 : 1
                let segments = SharedRegion.Descriptors(main: fds[fds.count - segmentCount],
                                                        readOnly: layout.hasReadOnlySegment ? fds[fds.count - 1] : nil)
                let mapping = try SharedRegion.attach(segments, layout, readOnlySegment: .readOnly)
                segments.close()
                memory = SharedRegion.memory(layout, mapping)
                if start.listening || start.metricsListeners > 0 {
                    let s = S7Server(settings: start.settings.server, session: start.settings.session(clock: clock),
                                     memory: memory!, logger: logger, threads: threads,
                                     metrics: start.metricsListeners > 0 ? ServerMetrics() : nil)
                    server = s
                    if start.listening { try await s.start(listeningOn: fds[0].rawValue) }
                    for fd in fds.dropFirst(start.listening ? 1 : 0).dropLast(segmentCount) { try await s.startMetrics(listeningOn: fd.rawValue) }
                    listeningServer = start.listening
                }
                let sandbox: SandboxReport
                do {
                    sandbox = try Sandbox.install(.worker, ownUser: ownUser, landlock: landlock, statusFile: statusFile)
                } catch {
                    logger.critical("worker: could not put the sandbox in place: \(error); a worker does not serve without it, so s7commd stops. Run `s7commd doctor` to see what this kernel offers.")
                    exit(ChildExitStatus.sandboxUnavailable.rawValue)
                }
                try channel.send(WorkerToSupervisor.serving(sandbox))
                logger.info(start.listening
                    ? "worker (pid \(getpid()), uid \(getuid())) serving \(start.settings.endpoint); sandbox: \(sandbox)"
                    : "worker (pid \(getpid()), uid \(getuid())) idle: no listener (server.enabled is false); sandbox: \(sandbox)")
            case .reload(let settings):
                server?.apply(settings: settings.server, session: settings.session(clock: clock))
                try channel.send(WorkerToSupervisor.reloaded)
            case .statusRequest(let id):
                let snapshot = listeningServer ? server?.snapshot() : nil
                try channel.send(WorkerToSupervisor.status(id: id, snapshot: SupervisorStatus.encodeSnapshot(snapshot)))
            case .restarts(let worker, let memory, let sandboxKills):
                server?.metrics?.setRestarts(["worker": worker, "memory": memory], sandboxKills: sandboxKills)
            case .stop:
                logger.info("worker: stopping, closing \(server?.connectedClients ?? 0) client connection(s)")
                await server?.shutdown()
                return ChildExitStatus.stopped.rawValue
            }
        }
        return ChildExitStatus.stopped.rawValue
    }
}

/// The PLC-memory process: creates (or takes over) the shared segment and owns it, keeps the
/// retained regions on disk, and hands the segment to local tools and PLC programs.
public enum MemoryRole {
    /// How often retained regions are compared with what is on disk; a changed region is on
    /// disk at most this long plus one write and fsync after the client's write was acknowledged.
    public static let retainInterval: Duration = .milliseconds(250)

    /// - Parameters:
    ///   - landlock: what Landlock enforces on this process (put in place at its start).
    ///   - statusFile: /proc/self/status, opened before Landlock, for the sandbox's report.
    public static func run(control: SystemPackage.FileDescriptor, landlock: String, statusFile: SystemPackage.FileDescriptor,
                           logger: Logger) async throws -> Int32 {
        let channel = SupervisorChannel<SupervisorToMemory>(socket: control, role: "memory process", logger: logger)
        var mapping: SharedRegion.Mappings?
        var memory: FlatMemory?
        var retainTask: Task<Void, Never>?
        var store: RetainStore?
        var keys: [RetainStore.Key] = []
        var phase = ChannelPhase.starting
        func finalSave() {
            retainTask?.cancel()
            guard let store, let memory, !keys.isEmpty else { return }
            do {
                try store.save(RetainStore.snapshot(memory, keys))
                logger.info("memory process: retained data saved to \(store.path)")
            } catch {
                logger.error("memory process: could not save retained data: \(error)")
            }
        }
        // The two segments to take over, memory.sock.
        for await event in channel.events(maxDescriptors: 3) {
            guard case .message(let message, var fds) = event else {
                logger.notice("memory process: the supervisor closed the channel; stopping")
                finalSave()
                return ChildExitStatus.stopped.rawValue
            }
            channel.check(message, in: phase)
            guard case .prepare(let start) = message else {
                logger.info("memory process: stopping")
                finalSave()
                return ChildExitStatus.stopped.rawValue
            }
            phase = .running
            let layout = try PLCMemory.MemoryLayout(start.memory)
            let segments: SharedRegion.Descriptors
            let sizes = layout.hasReadOnlySegment ? "\(layout.totalSize) bytes, read-only segment \(layout.readOnlySize) bytes" : "\(layout.totalSize) bytes"
            if start.reuse {
                let main = fds.removeFirst()
                segments = SharedRegion.Descriptors(main: main, readOnly: layout.hasReadOnlySegment ? fds.removeFirst() : nil)
                mapping = try SharedRegion.attach(segments, layout)
                logger.info("memory process (pid \(getpid()), uid \(getuid())) took over the PLC memory segment (\(sizes))")
            } else {
                (segments, mapping) = try SharedRegion.create(layout)
                logger.info("memory process (pid \(getpid()), uid \(getuid())) created the PLC memory segment (\(sizes))")
            }
            let shared = SharedRegion.memory(layout, mapping!)
            memory = shared
            keys = RetainStore.retained(layout)
            if let directory = start.stateDirectory, !keys.isEmpty {
                let s = RetainStore(directory: directory)
                store = s
                if !start.reuse { restore(s, shared, keys, logger) }
                let retainedKeys = keys
                // After taking over a segment (the previous memory process died), what is in
                // memory may be newer than the file: save it first.
                retainTask = Task { await keepRetained(s, shared, retainedKeys, logger, saveNow: start.reuse) }
            }
            if start.attachSocket {
                serveAttach(listener: fds.removeFirst(), definition: start.memory, segments: segments, logger: logger)
            }
            // The supervisor keeps both read-write (for a restarted memory process) and hands
            // the worker only a new, O_RDONLY open file description of the read-only segment.
            let view = try segments.readOnly.map { try SharedMemory.reopenReadOnly($0) }
            defer { try? view?.close() }
            let sandbox: SandboxReport
            do {
                sandbox = try Sandbox.install(.memory, ownUser: false, landlock: landlock, statusFile: statusFile)
            } catch {
                logger.critical("memory process: could not put the sandbox in place: \(error); it does not run without it, so s7commd stops. Run `s7commd doctor` to see what this kernel offers.")
                finalSave()
                exit(ChildExitStatus.sandboxUnavailable.rawValue)
            }
            logger.info("memory process sandbox: \(sandbox)")
            try channel.send(MemoryToSupervisor.ready(size: layout.totalSize, readOnlySize: layout.readOnlySize, sandbox: sandbox),
                             descriptors: segments.all + (view.map { [$0] } ?? []))
        }
        finalSave()
        withExtendedLifetime(mapping) {}
        return ChildExitStatus.stopped.rawValue
    }

    static func restore(_ store: RetainStore, _ memory: FlatMemory, _ keys: [RetainStore.Key], _ logger: Logger) {
        do {
            let saved = try store.load()
            var restored: [String] = []
            for key in keys {
                guard let bytes = saved[key] else { continue }
                do {
                    try memory.restore(key.area, db: key.number, bytes: bytes)
                    restored.append(key.description)
                } catch {
                    logger.warning("retained \(key) in \(store.path) has \(bytes.count) bytes but the configuration gives it another size; it starts zeroed")
                }
            }
            if !restored.isEmpty { logger.info("restored retained data of \(restored.joined(separator: ", ")) from \(store.path)") }
        } catch {
            do {
                let aside = try store.setAside()
                logger.error("\(error); it was moved aside to \(aside) and NOT loaded: the retained blocks start zeroed. Inspect or delete that file.")
            } catch let renameError {
                logger.error("\(error); it was NOT loaded and could not be moved aside (\(renameError)), so it stays at \(store.path) and the next save replaces it: the retained blocks start zeroed. Copy it elsewhere now to inspect it.")
            }
        }
    }

    /// Saves the retained regions whenever they changed, checking every ``retainInterval``.
    static func keepRetained(_ store: RetainStore, _ memory: FlatMemory, _ keys: [RetainStore.Key], _ logger: Logger,
                             saveNow: Bool = false) async {
        var last: [[UInt8]] = saveNow ? [] : RetainStore.snapshot(memory, keys).map(\.1)
        var failing = false
        while !Task.isCancelled {
            try? await Task.sleep(for: retainInterval)
            let now = RetainStore.snapshot(memory, keys)
            guard now.map(\.1) != last else { continue }
            do {
                try store.save(now)
                last = now.map(\.1)
                if failing { logger.notice("retained data is saved again to \(store.path)") }
                failing = false
            } catch {
                if !failing { logger.error("could not save retained data: \(error); retrying every \(retainInterval)") }
                failing = true
            }
        }
    }

    /// Hands the segment (and the layout it was made with) to local tools and PLC programs
    /// that connect to memory.sock (bound by the supervisor, passed here): root, the service
    /// user, or members of its group; one attach request per connection.
    static func serveAttach(listener: SystemPackage.FileDescriptor, definition: MemoryDefinition,
                            segments: SharedRegion.Descriptors, logger: Logger) {
        let dups = segments.all.map { (try? $0.duplicate()) ?? $0 }
        Thread.detachNewThread {
            while true {
                guard let peer = try? LocalSocket.accept(listener) else { return }
                defer { try? peer.close() }
                guard let cred = try? UnixSocket.peerCredentials(of: peer),
                      LocalSocket.isTrusted(cred, serviceUID: getuid(), serviceGID: getgid()) else {
                    logger.warning("memory socket: refused a peer that is neither root, the service user, nor in its group")
                    continue
                }
                try? LocalSocket.setReceiveTimeout(peer, seconds: 2)
                do {
                    guard try IPC.receive(MemoryClientRequest.self, on: peer, maxDescriptors: 0) != nil else { continue }
                    try IPC.send(MemoryClientReply.attached(definition), descriptors: dups, on: peer)
                    logger.info("memory socket: pid \(cred.pid) (uid \(cred.uid)) attached to the PLC memory")
                } catch {
                    logger.warning("memory socket: pid \(cred.pid) (uid \(cred.uid)) sent something outside the protocol (\(error)); closed")
                }
            }
        }
    }
}
