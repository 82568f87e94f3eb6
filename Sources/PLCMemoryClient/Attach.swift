import PLCMemory
import S7IPC
import S7Sys
import SystemPackage

/// PLC memory of a running server, mapped into this process: the layout the memory process
/// laid the segment out with, and the synchronised view over the segment.
public struct FlatMemoryHandle: Sendable {
    public let definition: MemoryDefinition
    public let memory: FlatMemory

    public init(definition: MemoryDefinition, segment: FileDescriptor) throws {
        self.definition = definition
        let layout = try PLCMemory.MemoryLayout(definition)
        memory = SharedRegion.memory(layout, try SharedRegion.attach(segment, layout))
    }
}

/// Attaches to the running server's PLC memory through its memory process: the way `s7commd
/// mem` and a PLC program on the same host get the segment.
public enum PLCMemoryClient {
    public static func attach(socketPath: String) throws -> FlatMemoryHandle {
        let answer: (MemoryClientReply, [FileDescriptor])?
        do {
            answer = try IPC.exchange(MemoryClientRequest.attach, at: socketPath, expecting: MemoryClientReply.self, maxDescriptors: 1)
        } catch let error as IPCError {
            throw RuntimeError("the memory process at \(socketPath) answered outside the protocol: \(error)")
        }
        guard let (reply, fds) = answer else {
            throw RuntimeError("the memory process closed the connection without an answer (refused: check the user you run as)")
        }
        defer { for descriptor in fds { try? descriptor.close() } }
        guard case .attached(let definition) = reply else { preconditionFailure("one reply in the set") }
        return try FlatMemoryHandle(definition: definition, segment: fds[0])
    }
}
