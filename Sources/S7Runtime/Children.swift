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
        var memory: FlatMemory?
        for await event in channel.events(maxDescriptors: 2) {
            switch event {
            case .closed(let why):
                logger.notice("worker: \(why); stopping")
                await server?.shutdown()
                return 0
            case .message(.serve(let text, let listening), let fds):
                guard server == nil, memory == nil, fds.count == (listening ? 2 : 1) else {
                    logger.error("worker: unexpected serve message; ending")
                    return 70
                }
                let configuration = try S7Configuration.parse(Data(text.utf8), path: "(from the supervisor)")
                let layout = try PLCMemory.MemoryLayout(configuration.memory)
                let mapping = try SharedRegion.attach(fds.last!, layout)
                try? fds.last!.close()
                memory = SharedRegion.memory(layout, mapping)
                if listening {
                    let s = S7Server(settings: serverSettings(configuration), session: configuration.sessionConfiguration(clock: clock),
                                     memory: memory!, logger: logger, threads: threads)
                    try await s.start(listeningOn: fds[0].rawValue)
                    server = s
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
            maxClients: s.maxClients, sendTimeout: .milliseconds(Int64(s.sendTimeoutMs)),
            receiveTimeout: .milliseconds(Int64(s.recvTimeoutMs)), idleTimeout: .milliseconds(Int64(s.pingTimeoutMs)),
            logConnections: c.logging.logConnections, logErrors: c.logging.logErrors)
    }
}

/// The PLC-memory process: creates (or takes over) the shared segment and owns it.
public enum MemoryRole {
    public static func run(control: SystemPackage.FileDescriptor, logger: Logger) async throws -> Int32 {
        let channel = ControlChannel(socket: control, peer: "supervisor")
        var mapping: SharedMemory.Mapping?
        for await event in channel.events(maxDescriptors: 1) {
            switch event {
            case .closed(let why):
                logger.notice("memory process: \(why); stopping")
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
                try channel.send(.memoryReady(size: layout.totalSize), descriptors: [fd])
                try? fd.close()
            case .message(.stop, _):
                logger.info("memory process: stopping")
                return 0
            case .message(let other, let fds):
                for fd in fds { try? fd.close() }
                logger.error("memory process: unexpected \(other.kind) message from the supervisor; ending")
                return 70
            }
        }
        withExtendedLifetime(mapping) {}
        return 0
    }
}
