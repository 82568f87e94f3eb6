import Foundation
import Logging
import NIOCore
import PLCMemory
import S7Config
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
/// this process's user: the socket pair was made by the supervisor after it dropped privileges.
public func verifyControlPeer(_ socket: SystemPackage.FileDescriptor, role: String) throws {
    let peer = try UnixSocket.peerCredentials(of: socket)
    guard peer.pid == getppid(), peer.uid == getuid() else {
        throw RuntimeError("\(role): the control socket's peer is pid \(peer.pid) uid \(peer.uid), not the supervisor (pid \(getppid()), uid \(getuid())); refusing it")
    }
}

/// The S7 worker: receives the listening socket and the PLC memory segment, serves clients.
public enum WorkerRole {
    public static func run(control: SystemPackage.FileDescriptor, threads: Int, logger: Logger,
                           clock: @escaping @Sendable () -> PLCDateTime) async throws -> Int32 {
        let channel = ControlChannel(socket: control, peer: "supervisor")
        var server: S7Server?
        var listeningServer = false
        var memory: FlatMemory?
        // The listener, up to two metrics sockets (TCP and Unix), the segment.
        for await event in channel.events(maxDescriptors: 4) {
            switch event {
            case .closed(let why):
                logger.notice("worker: \(why); stopping")
                await server?.shutdown()
                return 0
            case .message(.serve(let text, let listening, let metricsCount), let fds):
                guard server == nil, memory == nil, (0...2).contains(metricsCount), fds.count == (listening ? 1 : 0) + metricsCount + 1 else {
                    for fd in fds { try? fd.close() }
                    logger.error("worker: unexpected serve message; ending")
                    return 70
                }
                let configuration = try S7Configuration.parse(Data(text.utf8), path: "(from the supervisor)")
                let layout = try PLCMemory.MemoryLayout(configuration.memory)
                let mapping = try SharedRegion.attach(fds.last!, layout)
                try? fds.last!.close()
                memory = SharedRegion.memory(layout, mapping)
                if listening || metricsCount > 0 {
                    let s = S7Server(settings: serverSettings(configuration), session: configuration.sessionConfiguration(clock: clock),
                                     memory: memory!, logger: logger, threads: threads,
                                     metrics: metricsCount > 0 ? ServerMetrics() : nil)
                    server = s
                    if listening { try await s.start(listeningOn: fds[0].rawValue) }
                    for fd in fds.dropFirst(listening ? 1 : 0).dropLast() { try await s.startMetrics(listeningOn: fd.rawValue) }
                    listeningServer = listening
                }
                try channel.send(.serving)
                logger.info(listening
                    ? "worker (pid \(getpid()), uid \(getuid())) serving \(configuration.server.endpoint)"
                    : "worker (pid \(getpid()), uid \(getuid())) idle: no listener (server.enabled is false)")
            case .message(.reload(let text), let fds):
                for fd in fds { try? fd.close() }
                let configuration = try S7Configuration.parse(Data(text.utf8), path: "(from the supervisor)")
                server?.apply(settings: serverSettings(configuration), session: configuration.sessionConfiguration(clock: clock))
                try channel.send(.reloaded)
            case .message(.statusRequest, let fds):
                for fd in fds { try? fd.close() }
                let snapshot = listeningServer ? server?.snapshot() : nil
                try channel.send(.status(json: snapshot.map { SupervisorStatus.encodeSnapshot($0) } ?? "null"))
            case .message(.childRestarts(let counts), let fds):
                for fd in fds { try? fd.close() }
                server?.metrics?.setRestarts(counts)
            case .message(.stop, _):
                logger.info("worker: stopping, closing \(server?.connectedClients ?? 0) client connection(s)")
                await server?.shutdown()
                return 0
            case .message(let other, let fds):
                for fd in fds { try? fd.close() }
                logger.error("worker: unexpected \(other.kind) message from the supervisor; ending")
                return 70
            }
        }
        return 0
    }

    public static func serverSettings(_ c: S7Configuration) -> ServerSettings {
        let s = c.server
        return ServerSettings(
            maxClients: s.maxClients, maxClientsPerAddress: s.maxClientsPerAddress, sendTimeout: .milliseconds(Int64(s.sendTimeoutMs)),
            receiveTimeout: .milliseconds(Int64(s.recvTimeoutMs)), idleTimeout: .milliseconds(Int64(s.pingTimeoutMs)),
            logConnections: c.logging.logConnections, logErrors: c.logging.logErrors)
    }
}

/// The PLC-memory process: creates (or takes over) the shared segment and owns it, keeps the
/// retained regions on disk, and hands the segment to local tools and PLC programs.
public enum MemoryRole {
    /// How often retained regions are compared with what is on disk; a changed region is on
    /// disk at most this long plus one write and fsync after the client's write was acknowledged.
    public static let retainInterval: Duration = .milliseconds(250)

    public static func run(control: SystemPackage.FileDescriptor, stateDirectory: String?, socketPath: String?,
                           logger: Logger) async throws -> Int32 {
        let channel = ControlChannel(socket: control, peer: "supervisor")
        var mapping: SharedMemory.Mapping?
        var memory: FlatMemory?
        var retainTask: Task<Void, Never>?
        var store: RetainStore?
        var keys: [RetainStore.Key] = []
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
        for await event in channel.events(maxDescriptors: 1) {
            switch event {
            case .closed(let why):
                logger.notice("memory process: \(why); stopping")
                finalSave()
                return 0
            case .message(.prepareMemory(let text, let reuse), let fds):
                guard mapping == nil, fds.count == (reuse ? 1 : 0) else {
                    logger.error("memory process: unexpected prepare message; ending")
                    return 70
                }
                let configuration = try S7Configuration.parse(Data(text.utf8), path: "(from the supervisor)")
                let layout = try PLCMemory.MemoryLayout(configuration.memory)
                let fd: SystemPackage.FileDescriptor
                if reuse {
                    fd = fds[0]
                    mapping = try SharedRegion.attach(fd, layout)
                    logger.info("memory process (pid \(getpid()), uid \(getuid())) took over the PLC memory segment (\(layout.totalSize) bytes)")
                } else {
                    (fd, mapping) = try SharedRegion.create(layout)
                    logger.info("memory process (pid \(getpid()), uid \(getuid())) created the PLC memory segment (\(layout.totalSize) bytes)")
                }
                let shared = SharedRegion.memory(layout, mapping!)
                memory = shared
                keys = RetainStore.retained(layout)
                if let stateDirectory, !keys.isEmpty {
                    let s = RetainStore(directory: stateDirectory)
                    store = s
                    if !reuse { restore(s, shared, keys, logger) }
                    let retainedKeys = keys
                    // After taking over a segment (the previous memory process died), what is in
                    // memory may be newer than the file: save it first.
                    retainTask = Task { await keepRetained(s, shared, retainedKeys, logger, saveNow: reuse) }
                }
                if let socketPath {
                    serveAttach(path: socketPath, configuration: text, segment: fd, logger: logger)
                }
                try channel.send(.memoryReady(size: layout.totalSize), descriptors: [fd])
            case .message(.stop, _):
                logger.info("memory process: stopping")
                finalSave()
                return 0
            case .message(let other, let fds):
                for fd in fds { try? fd.close() }
                logger.error("memory process: unexpected \(other.kind) message from the supervisor; ending")
                return 70
            }
        }
        finalSave()
        withExtendedLifetime(mapping) {}
        return 0
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
            let aside = store.setAside()
            logger.error("\(error); it was moved aside to \(aside) and NOT loaded: the retained blocks start zeroed. Inspect or delete that file.")
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

    /// Hands the segment (and the configuration it was laid out from) to local tools and PLC
    /// programs that connect to `path`: root, the service user, or members of its group.
    static func serveAttach(path: String, configuration: String, segment: SystemPackage.FileDescriptor, logger: Logger) {
        let listener: SystemPackage.FileDescriptor
        do {
            listener = try LocalSocket.listen(path: path, mode: 0o660)
        } catch {
            logger.error("memory process: \(error); `s7commd mem` and PLC programs cannot attach")
            return
        }
        let dup = (try? segment.duplicate()) ?? segment
        Thread.detachNewThread {
            while true {
                guard let peer = try? LocalSocket.accept(listener) else { return }
                defer { try? peer.close() }
                guard let cred = try? UnixSocket.peerCredentials(of: peer), LocalSocket.isTrusted(cred) else {
                    logger.warning("memory socket: refused a peer that is neither root, the service user, nor in its group")
                    continue
                }
                LocalSocket.setReceiveTimeout(peer, seconds: 2)
                do {
                    guard let (message, fds) = try RuntimeMessage.receive(on: peer, maxDescriptors: 0), message == .attach, fds.isEmpty else {
                        logger.warning("memory socket: pid \(cred.pid) sent something other than an attach request; closed")
                        continue
                    }
                    try RuntimeMessage.attached(configuration: configuration).send(on: peer, descriptors: [dup])
                    logger.info("memory socket: pid \(cred.pid) (uid \(cred.uid)) attached to the PLC memory")
                } catch {
                    logger.warning("memory socket: pid \(cred.pid): \(error)")
                }
            }
        }
    }
}
