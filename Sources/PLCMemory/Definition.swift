/// The memory areas an S7 client can address.
public enum PLCArea: String, Sendable, CaseIterable, CustomStringConvertible {
    case inputs = "I"
    case outputs = "Q"
    case flags = "M"
    case dataBlock = "DB"
    case timers = "T"
    case counters = "C"

    public var description: String { rawValue }
}

/// The PLC image tables a data block or system area can be a view of. Names as the OpenPLC
/// runtime's s7comm plugin spells them in `mapping.type`.
public enum ImageTable: String, Sendable, CaseIterable, Codable {
    case boolInput = "bool_input", boolOutput = "bool_output", boolMemory = "bool_memory"
    case byteInput = "byte_input", byteOutput = "byte_output", byteMemory = "byte_memory"
    case intInput = "int_input", intOutput = "int_output", intMemory = "int_memory"
    case dintInput = "dint_input", dintOutput = "dint_output", dintMemory = "dint_memory"
    case lintInput = "lint_input", lintOutput = "lint_output", lintMemory = "lint_memory"

    /// Elements in every image table (the runtime's buffer size).
    public static let elementCount = 1024

    /// Bytes per element: a bool element is one byte of eight packed bits (%IX n.0 ... n.7).
    public var elementSize: Int {
        switch self {
        case .boolInput, .boolOutput, .boolMemory, .byteInput, .byteOutput, .byteMemory: return 1
        case .intInput, .intOutput, .intMemory: return 2
        case .dintInput, .dintOutput, .dintMemory: return 4
        case .lintInput, .lintOutput, .lintMemory: return 8
        }
    }

    /// Size of the whole table in bytes.
    public var byteSize: Int { elementSize * ImageTable.elementCount }
}

/// Where the bytes of a data block or area live when they are a view of an image table.
public struct ImageMapping: Equatable, Sendable {
    public var table: ImageTable
    /// First element of the table the view starts at.
    public var startElement: Int
    /// Recorded as configured; bool tables are always viewed as packed bits.
    public var bitAddressing: Bool

    public init(table: ImageTable, startElement: Int, bitAddressing: Bool = false) {
        self.table = table
        self.startElement = startElement
        self.bitAddressing = bitAddressing
    }

    /// Bytes of the table from `startElement` to its end.
    public var availableBytes: Int { (ImageTable.elementCount - startElement) * table.elementSize }
}

/// One addressable region: a data block, I, Q, M, or the timers / counters.
public struct RegionDefinition: Equatable, Sendable {
    public var size: Int
    public var readOnly: Bool
    public var retain: Bool
    /// nil: own storage of `size` zeroed bytes.
    public var mapping: ImageMapping?

    public init(size: Int, readOnly: Bool = false, retain: Bool = false, mapping: ImageMapping? = nil) {
        self.size = size
        self.readOnly = readOnly
        self.retain = retain
        self.mapping = mapping
    }
}

/// Everything the memory layout is computed from (taken from the configuration).
public struct MemoryDefinition: Equatable, Sendable {
    public var dataBlocks: [UInt16: RegionDefinition]
    public var inputs: RegionDefinition?
    public var outputs: RegionDefinition?
    public var flags: RegionDefinition?
    /// Timers, 2 bytes each; nil when the area is disabled.
    public var timers: RegionDefinition?
    /// Counters, 2 bytes each; nil when the area is disabled.
    public var counters: RegionDefinition?

    public init(dataBlocks: [UInt16: RegionDefinition] = [:], inputs: RegionDefinition? = nil,
                outputs: RegionDefinition? = nil, flags: RegionDefinition? = nil,
                timers: RegionDefinition? = nil, counters: RegionDefinition? = nil) {
        self.dataBlocks = dataBlocks
        self.inputs = inputs
        self.outputs = outputs
        self.flags = flags
        self.timers = timers
        self.counters = counters
    }
}

extension MemoryDefinition {
    /// Whether its layout has a second segment: at least one region is read-only and has
    /// storage of its own (``MemoryLayout/Segment/readOnly``). The messages that carry the
    /// segments count their descriptors from this.
    public var hasReadOnlySegment: Bool {
        ([inputs, outputs, flags, timers, counters].compactMap { $0 } + Array(dataBlocks.values))
            .contains { $0.readOnly && $0.mapping == nil }
    }
}

/// Why an access to PLC memory was refused. The session maps each to an S7 item return code.
public enum MemoryAccessError: Error, Equatable, Sendable {
    /// The data block does not exist, or the area is disabled.
    case objectDoesNotExist
    /// The address or the length reaches past the end of the block or area.
    case addressOutOfRange
    /// A write to read-only data.
    case readOnly
}

/// The CPU's operating mode as clients see it (SZL 0x0424, PLC stop / start).
public enum OperatingMode: UInt8, Sendable, CustomStringConvertible {
    case stop = 0x04
    case run = 0x08

    public var description: String { self == .run ? "RUN" : "STOP" }
}
