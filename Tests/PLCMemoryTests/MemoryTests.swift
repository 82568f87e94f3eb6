import Testing
@testable import PLCMemory

@Suite("PLC memory")
struct MemoryTests {
    func memory(_ configure: (inout MemoryDefinition) -> Void = { _ in }) throws -> FlatMemory {
        var d = MemoryDefinition()
        d.dataBlocks[1] = RegionDefinition(size: 100)
        d.dataBlocks[2] = RegionDefinition(size: 10, readOnly: true)
        d.flags = RegionDefinition(size: 16)
        configure(&d)
        return try FlatMemory(d)
    }

    @Test func layout() throws {
        var d = MemoryDefinition()
        d.dataBlocks[5] = RegionDefinition(size: 3)
        d.dataBlocks[1] = RegionDefinition(size: 10, retain: true)
        d.dataBlocks[9] = RegionDefinition(size: 4, mapping: ImageMapping(table: .dintOutput, startElement: 2))
        d.inputs = RegionDefinition(size: 1)
        let layout = try MemoryLayout(d)
        // Header, then the 15 image tables in declaration order, then own storage 8-byte aligned.
        var cursor = MemoryLayout.headerSize
        for table in ImageTable.allCases {
            #expect(layout.tableOffsets[table] == cursor)
            cursor += table.byteSize
        }
        #expect(layout.dataBlocks[1] == .init(offset: cursor, size: 10, readOnly: false, retain: true))
        #expect(layout.dataBlocks[5] == .init(offset: cursor + 16, size: 3, readOnly: false, retain: false))
        #expect(layout.dataBlocks[9]?.offset == layout.tableOffsets[.dintOutput]! + 8)
        #expect(layout.areas[.inputs]?.offset == cursor + 24)
        #expect(layout.totalSize == cursor + 32)
        #expect(layout.placement(.outputs, db: 0) == nil)
        #expect(layout.placement(.dataBlock, db: 5)?.size == 3)
        #expect(ImageTable.intMemory.byteSize == 2048 && ImageTable.lintInput.elementSize == 8 && ImageTable.boolInput.byteSize == 1024)
    }

    @Test func boundsAtNAndNPlusOne() throws {
        let m = try memory()
        var out: [UInt8] = []
        try m.read(.dataBlock, db: 1, offset: 0, count: 100, into: &out)
        #expect(out.count == 100)
        try m.read(.dataBlock, db: 1, offset: 99, count: 1, into: &out)
        try m.read(.dataBlock, db: 1, offset: 100, count: 0, into: &out)
        #expect(throws: MemoryAccessError.addressOutOfRange) { try m.read(.dataBlock, db: 1, offset: 0, count: 101, into: &out) }
        #expect(throws: MemoryAccessError.addressOutOfRange) { try m.read(.dataBlock, db: 1, offset: 100, count: 1, into: &out) }
        #expect(throws: MemoryAccessError.addressOutOfRange) { try m.read(.dataBlock, db: 1, offset: -1, count: 1, into: &out) }
        #expect(throws: MemoryAccessError.addressOutOfRange) { try m.read(.dataBlock, db: 1, offset: Int.max, count: 2, into: &out) }
        #expect(throws: MemoryAccessError.addressOutOfRange) { try m.write(.flags, db: 0, offset: 15, bytes: [1, 2][...]) }
        try m.write(.flags, db: 0, offset: 14, bytes: [1, 2][...])
        #expect(throws: MemoryAccessError.objectDoesNotExist) { try m.read(.dataBlock, db: 3, offset: 0, count: 1, into: &out) }
        #expect(throws: MemoryAccessError.objectDoesNotExist) { try m.read(.timers, db: 0, offset: 0, count: 1, into: &out) }
    }

    @Test func readWriteRoundTripAndIsolation() throws {
        let m = try memory()
        try m.write(.dataBlock, db: 1, offset: 98, bytes: [0xDE, 0xAD][...])
        try m.write(.flags, db: 0, offset: 0, bytes: [0x55][...])
        var out: [UInt8] = []
        try m.read(.dataBlock, db: 1, offset: 97, count: 3, into: &out)
        #expect(out == [0, 0xDE, 0xAD])
        out.removeAll()
        try m.read(.dataBlock, db: 2, offset: 0, count: 10, into: &out)
        #expect(out == [UInt8](repeating: 0, count: 10))
    }

    @Test func readOnly() throws {
        let m = try memory()
        #expect(throws: MemoryAccessError.readOnly) { try m.write(.dataBlock, db: 2, offset: 0, bytes: [1][...]) }
        #expect(throws: MemoryAccessError.readOnly) { try m.writeBit(.dataBlock, db: 2, offset: 0, bit: 0, value: true) }
        // Range is checked before protection: out of range wins.
        #expect(throws: MemoryAccessError.addressOutOfRange) { try m.write(.dataBlock, db: 2, offset: 10, bytes: [1][...]) }
        var out: [UInt8] = []
        try m.read(.dataBlock, db: 2, offset: 0, count: 1, into: &out)
        #expect(try m.readBit(.dataBlock, db: 2, offset: 9, bit: 7) == false)
    }

    @Test func bits() throws {
        let m = try memory()
        try m.write(.flags, db: 0, offset: 3, bytes: [0b1010_0101][...])
        #expect(try m.readBit(.flags, db: 0, offset: 3, bit: 0))
        #expect(try !m.readBit(.flags, db: 0, offset: 3, bit: 1))
        #expect(try m.readBit(.flags, db: 0, offset: 3, bit: 7))
        try m.writeBit(.flags, db: 0, offset: 3, bit: 1, value: true)
        try m.writeBit(.flags, db: 0, offset: 3, bit: 7, value: false)
        var out: [UInt8] = []
        try m.read(.flags, db: 0, offset: 3, count: 1, into: &out)
        #expect(out == [0b0010_0111])
        #expect(throws: MemoryAccessError.addressOutOfRange) { try m.readBit(.flags, db: 0, offset: 3, bit: 8) }
        #expect(throws: MemoryAccessError.addressOutOfRange) { try m.writeBit(.flags, db: 0, offset: 3, bit: -1, value: true) }
        #expect(throws: MemoryAccessError.addressOutOfRange) { try m.readBit(.flags, db: 0, offset: 16, bit: 0) }
    }

    @Test func mappingIntoImageTables() throws {
        let m = try memory { d in
            d.dataBlocks[10] = RegionDefinition(size: 8, mapping: ImageMapping(table: .intMemory, startElement: 10))
            d.dataBlocks[11] = RegionDefinition(size: 2, mapping: ImageMapping(table: .intMemory, startElement: 11))
            d.inputs = RegionDefinition(size: 4, mapping: ImageMapping(table: .boolInput, startElement: 0, bitAddressing: true))
        }
        // The PLC side stores %MW10 = 0x1234 big-endian; the DB sees it at byte 0.
        #expect(m.writeTable(.intMemory, element: 10, bytes: [0x12, 0x34, 0xAB, 0xCD]))
        var out: [UInt8] = []
        try m.read(.dataBlock, db: 10, offset: 0, count: 4, into: &out)
        #expect(out == [0x12, 0x34, 0xAB, 0xCD])
        // Element 9 is before the view and element 14 after it.
        #expect(m.writeTable(.intMemory, element: 9, bytes: [0xEE, 0xEE]))
        #expect(m.writeTable(.intMemory, element: 14, bytes: [0xEE, 0xEE]))
        out.removeAll()
        try m.read(.dataBlock, db: 10, offset: 0, count: 8, into: &out)
        #expect(out == [0x12, 0x34, 0xAB, 0xCD, 0, 0, 0, 0])
        // A client write lands in the table, and in every view of it.
        try m.write(.dataBlock, db: 10, offset: 6, bytes: [0x0F, 0xF0][...])
        #expect(m.readTable(.intMemory, element: 13, count: 2) == [0x0F, 0xF0])
        out.removeAll()
        try m.read(.dataBlock, db: 11, offset: 0, count: 2, into: &out)
        #expect(out == [0xAB, 0xCD])
        try m.writeBit(.inputs, db: 0, offset: 1, bit: 2, value: true)
        #expect(m.readTable(.boolInput, element: 1, count: 1) == [0x04])
        // Table helpers are bounded too.
        #expect(m.readTable(.intMemory, element: 1023, count: 2) == [0, 0])
        #expect(m.readTable(.intMemory, element: 1023, count: 3) == nil)
        #expect(!m.writeTable(.intMemory, element: 1024, bytes: [1]))
        #expect(m.readTable(.intMemory, element: -1, count: 1) == nil)
    }

    @Test func mappingPastTheEndOfATableIsRejected() throws {
        func layout(_ table: ImageTable, start: Int, size: Int) throws(MemoryLayoutError) -> MemoryLayout {
            var d = MemoryDefinition()
            d.dataBlocks[3] = RegionDefinition(size: size, mapping: ImageMapping(table: table, startElement: start))
            return try MemoryLayout(d)
        }
        // int_memory from element 1000 leaves 24 elements = 48 bytes.
        _ = try layout(.intMemory, start: 1000, size: 48)
        let m = ImageMapping(table: .intMemory, startElement: 1000)
        #expect(throws: MemoryLayoutError.mappingOutOfTable("DB3", m)) { try layout(.intMemory, start: 1000, size: 49) }
        _ = try layout(.lintMemory, start: 1023, size: 8)
        #expect(throws: MemoryLayoutError.self) { try layout(.lintMemory, start: 1023, size: 9) }
        #expect(throws: MemoryLayoutError.self) { try layout(.byteMemory, start: 1024, size: 1) }
        #expect(throws: MemoryLayoutError.self) { try layout(.byteMemory, start: -1, size: 1) }
        #expect(throws: MemoryLayoutError.emptyRegion("DB3")) { try layout(.byteMemory, start: 0, size: 0) }
        let text = MemoryLayoutError.mappingOutOfTable("DB3", m).description
        #expect(text == "DB3 maps int_memory from element 1000, which leaves only 48 bytes of the 1024-element table; lower start_buffer or size_bytes")
    }

    @Test func sharedRegion() throws {
        var d = MemoryDefinition()
        d.dataBlocks[1] = RegionDefinition(size: 4)
        let layout = try MemoryLayout(d)
        let region = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.totalSize, alignment: 64)
        defer { region.deallocate() }
        region.initializeMemory(as: UInt8.self, repeating: 0)
        let m = FlatMemory(layout: layout, region: region)
        try m.write(.dataBlock, db: 1, offset: 0, bytes: [1, 2, 3, 4][...])
        let at = layout.dataBlocks[1]!.offset
        #expect(Array(region[at..<at + 4]) == [1, 2, 3, 4])
    }

    /// Read-only regions of their own storage go to segment 1, offsets from its start; a
    /// read-only region mapped onto a table stays a window into segment 0.
    @Test func readOnlyRegionsOfTheirOwnLiveInTheSecondSegment() throws {
        var d = MemoryDefinition()
        d.dataBlocks[1] = RegionDefinition(size: 10)
        d.dataBlocks[2] = RegionDefinition(size: 5, readOnly: true, retain: true)
        d.dataBlocks[3] = RegionDefinition(size: 4, readOnly: true, mapping: ImageMapping(table: .intMemory, startElement: 1))
        d.dataBlocks[4] = RegionDefinition(size: 3)
        d.inputs = RegionDefinition(size: 9, readOnly: true)
        #expect(d.hasReadOnlySegment)
        let layout = try MemoryLayout(d)
        let tablesEnd = MemoryLayout.headerSize + ImageTable.allCases.map(\.byteSize).reduce(0, +)
        #expect(layout.dataBlocks[1] == .init(offset: tablesEnd, size: 10, readOnly: false, retain: false))
        #expect(layout.dataBlocks[4] == .init(offset: tablesEnd + 16, size: 3, readOnly: false, retain: false))
        #expect(layout.dataBlocks[2] == .init(offset: 0, size: 5, readOnly: true, retain: true, segment: .readOnly))
        #expect(layout.areas[.inputs] == .init(offset: 8, size: 9, readOnly: true, retain: false, segment: .readOnly))
        #expect(layout.dataBlocks[3] == .init(offset: layout.tableOffsets[.intMemory]! + 2, size: 4, readOnly: true, retain: false))
        #expect(layout.totalSize == tablesEnd + 24)
        #expect(layout.readOnlySize == 24)

        // No read-only region of its own: one segment, laid out as before.
        d.dataBlocks[2] = nil
        d.inputs = nil
        #expect(!d.hasReadOnlySegment)
        let single = try MemoryLayout(d)
        #expect(!single.hasReadOnlySegment && single.readOnlySize == 0)
        #expect(single.dataBlocks[4]?.offset == tablesEnd + 16 && single.totalSize == tablesEnd + 24)
    }

    @Test func bothSegmentsAreAddressedThroughTheirOwnBase() throws {
        var d = MemoryDefinition()
        d.dataBlocks[1] = RegionDefinition(size: 4)
        d.dataBlocks[2] = RegionDefinition(size: 4, readOnly: true)
        let layout = try MemoryLayout(d)
        let main = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.totalSize, alignment: 64)
        let second = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.readOnlySize, alignment: 64)
        defer { main.deallocate(); second.deallocate() }
        main.initializeMemory(as: UInt8.self, repeating: 0)
        second.initializeMemory(as: UInt8.self, repeating: 0)
        let plc = FlatMemory(layout: layout, region: main, readOnlyRegion: second)
        #expect(throws: MemoryAccessError.readOnly) { try plc.write(.dataBlock, db: 2, offset: 0, bytes: [1][...]) }
        #expect(throws: MemoryAccessError.readOnly) { try plc.writeBit(.dataBlock, db: 2, offset: 0, bit: 1, value: true) }
        try plc.plcWrite(.dataBlock, db: 2, offset: 1, bytes: [7, 8, 9][...])
        try plc.plcWriteBit(.dataBlock, db: 2, offset: 0, bit: 0, value: true)
        try plc.write(.dataBlock, db: 1, offset: 0, bytes: [5, 6, 7, 8][...])
        #expect(Array(second[0..<4]) == [1, 7, 8, 9])
        #expect(Array(main[layout.dataBlocks[1]!.offset..<layout.dataBlocks[1]!.offset + 4]) == [5, 6, 7, 8])
        #expect(throws: MemoryAccessError.addressOutOfRange) { try plc.plcWrite(.dataBlock, db: 2, offset: 2, bytes: [1, 2, 3][...]) }

        // Segment 1 mapped read-only in this process (the worker): reads go on; the PLC-side
        // stores refuse instead of faulting.
        let worker = FlatMemory(layout: layout, region: main, readOnlyRegion: second, readOnlyRegionWritable: false)
        var out: [UInt8] = []
        try worker.read(.dataBlock, db: 2, offset: 0, count: 4, into: &out)
        #expect(out == [1, 7, 8, 9])
        #expect(try worker.readBit(.dataBlock, db: 2, offset: 0, bit: 0))
        #expect(throws: MemoryAccessError.readOnly) { try worker.plcWrite(.dataBlock, db: 2, offset: 0, bytes: [1][...]) }
        #expect(throws: MemoryAccessError.readOnly) { try worker.plcWriteBit(.dataBlock, db: 2, offset: 0, bit: 0, value: false) }
        #expect(throws: MemoryAccessError.readOnly) { try worker.restore(.dataBlock, db: 2, bytes: [0, 0, 0, 0]) }
        try worker.plcWrite(.dataBlock, db: 1, offset: 0, bytes: [1][...])

        // Allocated in one process: both segments, zeroed.
        let own = FlatMemory(layout: layout)
        try own.restore(.dataBlock, db: 2, bytes: [4, 3, 2, 1])
        out = []
        try own.read(.dataBlock, db: 2, offset: 0, count: 4, into: &out)
        #expect(out == [4, 3, 2, 1])
    }
}
