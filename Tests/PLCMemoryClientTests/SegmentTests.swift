#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import PLCMemory
import PLCMemoryClient
import S7Sys
import SystemPackage
import Testing

/// The two segments as the processes use them: the memory process creates both and maps both
/// read-write; the worker gets segment 1 O_RDONLY and maps it PROT_READ, and the kernel keeps
/// it that way.
@Suite struct SegmentTests {
    static let definition = MemoryDefinition(dataBlocks: [1: RegionDefinition(size: 16), 2: RegionDefinition(size: 5000, readOnly: true, retain: true)],
                                             flags: RegionDefinition(size: 8, readOnly: true))

    /// What the memory process sends the supervisor, and the supervisor the worker.
    func created() throws -> (MemoryLayout, SharedRegion.Descriptors, FlatMemory, FileDescriptor) {
        let layout = try MemoryLayout(Self.definition)
        let (descriptors, mappings) = try SharedRegion.create(layout)
        let view = try SharedMemory.reopenReadOnly(descriptors.readOnly!)
        return (layout, descriptors, SharedRegion.memory(layout, mappings), view)
    }

    @Test func theWorkersViewOfTheReadOnlySegmentCanNeverBeWritten() throws {
        let (layout, descriptors, plc, view) = try created()
        defer { descriptors.close(); try? view.close() }
        #expect(try SharedMemory.accessMode(of: view) == .readOnly)
        #expect(try SharedMemory.accessMode(of: descriptors.readOnly!) == .readWrite)
        let mappings = try SharedRegion.attach(SharedRegion.Descriptors(main: descriptors.main, readOnly: view), layout, readOnlySegment: .readOnly)
        let ro = try #require(mappings.readOnly)
        #expect(!ro.writable)

        // The descriptor cannot be mapped writable and shared...
        let size = layout.readOnlySize
        let writable = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, view.rawValue, 0)
        let mmapErrno = errno
        #expect(writable == MAP_FAILED && mmapErrno == EACCES, "mmap(PROT_WRITE, MAP_SHARED) of the worker's descriptor")
        // ...and the worker's read mapping cannot be made writable.
        let pageAligned = UnsafeMutableRawPointer(ro.bytes.baseAddress!)
        let protect = mprotect(pageAligned, size, PROT_READ | PROT_WRITE)
        let protectErrno = errno
        #expect(protect == -1 && protectErrno == EACCES, "mprotect(PROT_WRITE) of the worker's mapping")

        // The memory process (and PLC programs) write it; the worker reads what they wrote.
        let worker = SharedRegion.memory(layout, mappings)
        try plc.plcWrite(.dataBlock, db: 2, offset: 4998, bytes: [0xAB, 0xCD][...])
        try plc.plcWrite(.flags, db: 0, offset: 0, bytes: [1, 2][...])
        var out: [UInt8] = []
        try worker.read(.dataBlock, db: 2, offset: 4998, count: 2, into: &out)
        try worker.read(.flags, db: 0, offset: 0, count: 2, into: &out)
        #expect(out == [0xAB, 0xCD, 1, 2])
        // A client's write is refused by the check, a PLC-side one by the mapping's mode.
        #expect(throws: MemoryAccessError.readOnly) { try worker.write(.dataBlock, db: 2, offset: 0, bytes: [1][...]) }
        #expect(throws: MemoryAccessError.readOnly) { try worker.plcWrite(.dataBlock, db: 2, offset: 0, bytes: [1][...]) }
        try worker.write(.dataBlock, db: 1, offset: 0, bytes: [9][...])
        out = []
        try plc.read(.dataBlock, db: 1, offset: 0, count: 1, into: &out)
        #expect(out == [9])
    }

    @Test func theWorkerRefusesAWritableDescriptorForTheReadOnlySegment() throws {
        let (layout, descriptors, _, view) = try created()
        defer { descriptors.close(); try? view.close() }
        #expect {
            try SharedRegion.attach(descriptors, layout, readOnlySegment: .readOnly)
        } throws: { "\($0)".contains("the read-only PLC memory segment came open for writing (O_RDWR), not O_RDONLY") }
        // The memory process taking over (and PLC programs) map both read-write.
        let both = try SharedRegion.attach(descriptors, layout)
        #expect(both.readOnly?.writable == true)
    }

    @Test func segmentsWithoutSealsOrOfAnotherSizeOrMissingAreRefused() throws {
        let (layout, descriptors, _, view) = try created()
        defer { descriptors.close(); try? view.close() }
        // A memfd made without MFD_ALLOW_SEALING: sealed against further seals only.
        let unsealed = FileDescriptor(rawValue: cs7_memfd_create("fake", 0))
        defer { try? unsealed.close() }
        #expect(ftruncate(unsealed.rawValue, off_t(layout.readOnlySize)) == 0)
        #expect {
            try SharedRegion.attach(SharedRegion.Descriptors(main: descriptors.main, readOnly: unsealed), layout)
        } throws: { "\($0)".contains("the read-only PLC memory segment is not sealed against resizing (its seals: seal)") }
        // Sealed, but not the size the layout needs.
        let small = try SharedMemory.create(name: "small", size: layout.readOnlySize - 8)
        defer { try? small.close() }
        #expect {
            try SharedRegion.attach(SharedRegion.Descriptors(main: descriptors.main, readOnly: small), layout)
        } throws: { "\($0)".contains("is \(layout.readOnlySize - 8) bytes, the configuration needs \(layout.readOnlySize)") }
        // Segment 1 missing.
        #expect {
            try SharedRegion.attach(SharedRegion.Descriptors(main: descriptors.main, readOnly: nil), layout)
        } throws: { "\($0)".contains("the read-only PLC memory segment is missing") }
        // The layout of another configuration (the same sizes, regions elsewhere).
        var other = Self.definition
        other.dataBlocks[1] = nil
        other.dataBlocks[3] = RegionDefinition(size: 16)
        #expect {
            try SharedRegion.attach(descriptors, try MemoryLayout(other))
        } throws: { "\($0)".contains("laid out for another configuration") }
    }

    /// Without read-only regions of their own, the segment and its header are those of the
    /// single-segment layout (the fingerprint of before, size 0 at header byte 48).
    @Test func withoutReadOnlyRegionsThereIsOneSegmentAsBefore() throws {
        let layout = try MemoryLayout(MemoryDefinition(dataBlocks: [1: RegionDefinition(size: 16),
                                                                    3: RegionDefinition(size: 4, readOnly: true, mapping: ImageMapping(table: .intMemory, startElement: 0))]))
        #expect(!layout.hasReadOnlySegment)
        #expect(SharedRegion.fingerprint(layout) == 0x7AA6_DFF5_B354_5D85, "FNV-1a over the total size and each placement, as before (checked by hand)")
        let (descriptors, mappings) = try SharedRegion.create(layout)
        defer { descriptors.close() }
        #expect(descriptors.readOnly == nil && mappings.readOnly == nil)
        #expect(mappings.main.bytes.load(fromByteOffset: 48, as: UInt64.self) == 0)
    }
}
