/// Where each region sits: segment 0 holds a fixed header, the image tables, then the writable
/// regions with storage of their own; segment 1 (only when there is at least one) holds the
/// read-only regions with storage of their own, so that the S7 worker can map it read-only and
/// the kernel, not only ``FlatMemory``'s check, keeps S7 clients from writing it. Offsets only
/// (per segment), no pointers, so the same layout can be put in shared memory and mapped at
/// any address.
public struct MemoryLayout: Equatable, Sendable {
    /// Which of the two segments a region lives in.
    public enum Segment: Int, Equatable, Sendable {
        /// Header, image tables, writable own-storage regions (and every mapped region).
        case main = 0
        /// Read-only own-storage regions.
        case readOnly = 1
    }

    /// A region placed in one of the segments.
    public struct Placement: Equatable, Sendable {
        public var offset: Int
        public var size: Int
        public var readOnly: Bool
        public var retain: Bool
        /// The segment `offset` counts from.
        public var segment: Segment = .main

        public init(offset: Int, size: Int, readOnly: Bool, retain: Bool, segment: Segment = .main) {
            self.offset = offset
            self.size = size
            self.readOnly = readOnly
            self.retain = retain
            self.segment = segment
        }
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
    /// Bytes of segment 0 (header, tables, writable own storage).
    public private(set) var totalSize: Int = 0
    /// Bytes of segment 1 (read-only own storage); 0: there is no segment 1.
    public private(set) var readOnlySize: Int = 0

    /// Lays out `definition`. Throws when a mapping reaches past the end of its image table.
    public init(_ definition: MemoryDefinition) throws(MemoryLayoutError) {
        var cursor = MemoryLayout.headerSize
        var readOnlyCursor = 0
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
            // Own storage, 8-byte aligned so every element is naturally aligned. A mapped
            // read-only region stays a window into its (writable) table in segment 0.
            let rounded = (region.size + 7) & ~7
            if region.readOnly {
                defer { readOnlyCursor += rounded }
                return Placement(offset: readOnlyCursor, size: region.size, readOnly: true, retain: region.retain, segment: .readOnly)
            }
            defer { cursor += rounded }
            return Placement(offset: cursor, size: region.size, readOnly: false, retain: region.retain)
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
        readOnlySize = readOnlyCursor
    }

    /// Whether the layout has segment 1.
    public var hasReadOnlySegment: Bool { readOnlySize > 0 }

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
