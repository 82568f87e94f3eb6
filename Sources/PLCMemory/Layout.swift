/// Where each region sits in the flat byte region: a fixed header, the image tables, then the
/// regions with storage of their own. Offsets only, no pointers, so the same layout can be put
/// in shared memory and mapped at any address.
public struct MemoryLayout: Equatable, Sendable {
    /// A region placed in the flat byte region.
    public struct Placement: Equatable, Sendable {
        public var offset: Int
        public var size: Int
        public var readOnly: Bool
        public var retain: Bool
    }

    /// Bytes reserved at the start for a header (version, layout, synchronisation).
    public static let headerSize = 256
    /// Header byte holding the operating mode (0 before anyone set it: RUN).
    public static let operatingModeOffset = 16
    /// Header bytes 24-31: the CPU clock's offset from the host clock in milliseconds (Int64, little-endian).
    public static let clockOffsetOffset = 24

    public private(set) var tableOffsets: [ImageTable: Int] = [:]
    public private(set) var dataBlocks: [UInt16: Placement] = [:]
    public private(set) var areas: [PLCArea: Placement] = [:]
    public private(set) var totalSize: Int = 0

    /// Lays out `definition`. Throws when a mapping reaches past the end of its image table.
    public init(_ definition: MemoryDefinition) throws(MemoryLayoutError) {
        var cursor = MemoryLayout.headerSize
        for table in ImageTable.allCases {
            tableOffsets[table] = cursor
            cursor += table.byteSize
        }
        func place(_ region: RegionDefinition, _ name: String) throws(MemoryLayoutError) -> Placement {
            guard region.size >= 1 else { throw .emptyRegion(name) }
            if let m = region.mapping {
                guard m.startElement >= 0, m.startElement < ImageTable.elementCount else {
                    throw .mappingOutOfTable(name, m)
                }
                guard region.size <= m.availableBytes else { throw .mappingOutOfTable(name, m) }
                let base = tableOffsets[m.table] ?? 0
                return Placement(offset: base + m.startElement * m.table.elementSize, size: region.size,
                                 readOnly: region.readOnly, retain: region.retain)
            }
            // Own storage, 8-byte aligned so every element is naturally aligned.
            let p = Placement(offset: cursor, size: region.size, readOnly: region.readOnly, retain: region.retain)
            cursor += (region.size + 7) & ~7
            return p
        }
        for (number, region) in definition.dataBlocks.sorted(by: { $0.key < $1.key }) {
            dataBlocks[number] = try place(region, "DB\(number)")
        }
        let areaList: [(PLCArea, RegionDefinition?)] = [
            (.inputs, definition.inputs), (.outputs, definition.outputs), (.flags, definition.flags),
            (.timers, definition.timers), (.counters, definition.counters),
        ]
        for case let (area, region?) in areaList {
            areas[area] = try place(region, area.rawValue)
        }
        totalSize = cursor
    }

    /// The placement addressed by an area and (for data blocks) a number.
    @inlinable public func placement(_ area: PLCArea, db: UInt16) -> Placement? {
        area == .dataBlock ? dataBlocks[db] : areas[area]
    }
}

public enum MemoryLayoutError: Error, Equatable, Sendable, CustomStringConvertible {
    case emptyRegion(String)
    case mappingOutOfTable(String, ImageMapping)

    public var description: String {
        switch self {
        case .emptyRegion(let name):
            return "\(name) has no bytes; give it a size of at least 1"
        case .mappingOutOfTable(let name, let m):
            return "\(name) maps \(m.table.rawValue) from element \(m.startElement), which leaves only "
                + "\(max(0, m.availableBytes)) bytes of the \(ImageTable.elementCount)-element table; "
                + "lower start_buffer or size_bytes"
        }
    }
}
