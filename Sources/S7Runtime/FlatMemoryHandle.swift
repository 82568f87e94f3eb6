import Foundation
import PLCMemory
import S7Config
import S7Sys
import SystemPackage

/// PLC memory of a running server, mapped into this process: the configuration it was laid
/// out from and the synchronised view over the shared segment.
public struct FlatMemoryHandle: Sendable {
    public let configuration: S7Configuration
    public let memory: FlatMemory

    public init(configuration text: String, segment: SystemPackage.FileDescriptor) throws {
        configuration = try S7Configuration.parse(Data(text.utf8), path: "(from the memory process)")
        let layout = try PLCMemory.MemoryLayout(configuration.memory)
        memory = SharedRegion.memory(layout, try SharedRegion.attach(segment, layout))
    }
}
