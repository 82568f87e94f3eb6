import PLCMemory
import S7IPC
import S7Sys
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// PLC memory of a running server, mapped into this process: the layout the memory process
/// laid the segments out with, and the synchronised view over them (both segments read-write:
/// the PLC side may write its read-only data blocks).
public struct FlatMemoryHandle: Sendable {
    public let definition: MemoryDefinition
    public let memory: FlatMemory

    /// Checks the segments' seals and sizes against the layout, then maps them.
    public init(definition: MemoryDefinition, segments: SharedRegion.Descriptors) throws {
        self.definition = definition
        let layout = try PLCMemory.MemoryLayout(definition)
        memory = SharedRegion.memory(layout, try SharedRegion.attach(segments, layout))
    }
}

/// Attaches to the running server's PLC memory through its memory process: the way `s7commd
/// mem` and a PLC program on the same host get the segments.
public enum PLCMemoryClient {
    /// Connects to `socketPath`, checks who serves it, asks for the segments and maps them
    /// after checking their seals and sizes (``SharedRegion/attach(_:_:readOnlySegment:)``).
    public static func attach(socketPath: String) throws -> FlatMemoryHandle {
        let socket = try LocalSocket.connect(path: socketPath)
        defer { try? socket.close() }
        try verifyServer(of: socket, at: socketPath)
        try LocalSocket.setReceiveTimeout(socket, seconds: 5)
        let answer: (MemoryClientReply, [FileDescriptor])?
        do {
            try IPC.send(MemoryClientRequest.attach, on: socket)
            answer = try IPC.receive(MemoryClientReply.self, on: socket, maxDescriptors: 2)
        } catch {
            throw RuntimeError("the memory process at \(socketPath) answered outside the protocol: \(error)")
        }
        guard let (reply, fds) = answer else {
            throw RuntimeError("the memory process closed the connection without an answer (refused: check the user you run as)")
        }
        defer { for descriptor in fds { try? descriptor.close() } }
        guard case .attached(let definition) = reply else { preconditionFailure("one reply in the set") }
        return try FlatMemoryHandle(definition: definition,
                                    segments: SharedRegion.Descriptors(main: fds[0], readOnly: fds.count > 1 ? fds[1] : nil))
    }

    /// The process behind memory.sock (`SO_PEERCRED`: whoever called listen(2) on it, the
    /// supervisor before it dropped privileges) must be root or the user that owns the
    /// directory holding the socket (the runtime directory, which only root and the service
    /// user can write): anyone else could have put a socket there that hands out memory of
    /// its own making.
    public static func verifyServer(of socket: FileDescriptor, at socketPath: String) throws {
        let directory = socketPath.lastIndex(of: "/").map { i in i == socketPath.startIndex ? "/" : String(socketPath[..<i]) } ?? "."
        var status = stat()
        guard stat(directory, &status) == 0 else {
            throw RuntimeError("could not read the owner of \(directory), the directory of the memory socket: \(String(cString: strerror(errno)))")
        }
        let peer = try UnixSocket.peerCredentials(of: socket)
        guard peer.uid == 0 || peer.uid == status.st_uid else {
            throw RuntimeError("the memory socket \(socketPath) is served by uid \(peer.uid) (pid \(peer.pid)), which is neither root nor uid \(status.st_uid), the owner of \(directory); refusing to attach: is that s7commd's runtime directory?")
        }
    }
}
