import Synchronization

/// Reads and writes PLC memory by area, data block and byte offset, checking every access.
///
/// An implementation makes each call atomic: a reader sees an item whole or not at all.
public protocol PLCMemoryAccess: AnyObject, Sendable {
    var layout: MemoryLayout { get }
    /// Appends `count` bytes at `offset` of the region to `out`.
    func read(_ area: PLCArea, db: UInt16, offset: Int, count: Int, into out: inout [UInt8]) throws(MemoryAccessError)
    /// Stores `bytes` at `offset` of the region.
    func write(_ area: PLCArea, db: UInt16, offset: Int, bytes: ArraySlice<UInt8>) throws(MemoryAccessError)
    /// Reads bit `bit` (0-7) of the byte at `offset`.
    func readBit(_ area: PLCArea, db: UInt16, offset: Int, bit: Int) throws(MemoryAccessError) -> Bool
    /// Sets or clears bit `bit` (0-7) of the byte at `offset`, leaving the other bits as they are.
    func writeBit(_ area: PLCArea, db: UInt16, offset: Int, bit: Int, value: Bool) throws(MemoryAccessError)
    /// The CPU's operating mode, shared by every connection and the PLC side.
    var operatingMode: OperatingMode { get }
    func setOperatingMode(_ mode: OperatingMode)
    /// How far the CPU clock is from the host clock, in milliseconds (set by a client's clock set).
    var clockOffsetMilliseconds: Int64 { get }
    func setClockOffset(milliseconds: Int64)
}

/// Makes each access to the region atomic: a writer excludes other writers, and a reader sees
/// a write whole or not at all.
///
/// `read` may run its closure more than once (a seqlock reader retries after overlapping a
/// write), so the closure must only copy bytes out and be safe to repeat.
public protocol RegionGuard: Sendable {
    func read<T>(_ body: () -> T) -> T
    func write<T>(_ body: () -> T) -> T
}

/// One in-process lock: the region lives in this process only.
public final class InProcessGuard: RegionGuard {
    private let lock = Mutex<Void>(())
    public init() {}
    public func read<T>(_ body: () -> T) -> T { lock.withLock { _ in body() } }
    public func write<T>(_ body: () -> T) -> T { lock.withLock { _ in body() } }
}

/// PLC memory over the byte regions laid out by ``MemoryLayout``: segment 0 (header, tables,
/// writable regions) and, when the layout has one, segment 1 (read-only regions).
///
/// The regions are either allocated here (single process) or handed in (shared memory); either
/// way they are addressed by offsets only. A ``RegionGuard`` makes every call atomic; the
/// guard of segment 0 covers segment 1 as well.
public final class FlatMemory: PLCMemoryAccess, @unchecked Sendable {
    public let layout: MemoryLayout
    /// Segment 0.
    private let region: UnsafeMutableRawBufferPointer
    /// Segment 1, or an empty buffer when the layout has none.
    private let readOnlyRegion: UnsafeMutableRawBufferPointer
    /// Whether segment 1 may be stored to from this process (false: it is mapped read-only, as
    /// in the S7 worker, and the PLC-side writes refuse it instead of faulting).
    private let readOnlyRegionWritable: Bool
    private let ownsRegion: Bool
    private let guardian: any RegionGuard
    /// Keeps whatever owns a handed-in region (a shared-memory mapping) alive as long as this.
    private let owner: AnyObject?

    /// Where one region's first byte is in this process, computed once from its placement and
    /// its segment's base, so an access costs one lookup, as with a single segment.
    private struct Slot {
        var start: UnsafeMutableRawPointer
        var size: Int
        var readOnly: Bool
        /// In segment 1 while segment 1 is mapped read-only here.
        var unwritable: Bool
    }
    private let dataBlockSlots: [UInt16: Slot]
    private let areaSlots: [PLCArea: Slot]

    /// Allocates zeroed regions for `layout`.
    public convenience init(layout: MemoryLayout) {
        let main = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.totalSize, alignment: 64)
        main.initializeMemory(as: UInt8.self, repeating: 0)
        let second = UnsafeMutableRawBufferPointer.allocate(byteCount: max(layout.readOnlySize, 1), alignment: 64)
        second.initializeMemory(as: UInt8.self, repeating: 0)
        self.init(layout: layout, region: main, readOnlyRegion: second, readOnlyRegionWritable: true, guard: InProcessGuard(), owner: nil, owns: true)
    }

    /// Uses regions provided by the caller (for example shared-memory mappings), which must
    /// stay valid for the lifetime of this object and be at least `layout.totalSize` and
    /// `layout.readOnlySize` bytes; `owner` is kept alive with them. `readOnlyRegionWritable`
    /// false: segment 1 is mapped read-only, and no call of this object stores to it.
    public convenience init(layout: MemoryLayout, region: UnsafeMutableRawBufferPointer,
                            readOnlyRegion: UnsafeMutableRawBufferPointer? = nil, readOnlyRegionWritable: Bool = true,
                            guard: any RegionGuard = InProcessGuard(), owner: AnyObject? = nil) {
        self.init(layout: layout, region: region, readOnlyRegion: readOnlyRegion ?? UnsafeMutableRawBufferPointer(start: nil, count: 0),
                  readOnlyRegionWritable: readOnlyRegionWritable, guard: `guard`, owner: owner, owns: false)
    }

    private init(layout: MemoryLayout, region: UnsafeMutableRawBufferPointer, readOnlyRegion: UnsafeMutableRawBufferPointer,
                 readOnlyRegionWritable: Bool, guard: any RegionGuard, owner: AnyObject?, owns: Bool) {
        precondition(region.count >= layout.totalSize, "region smaller than its layout")
        precondition(readOnlyRegion.count >= layout.readOnlySize, "read-only region smaller than its layout")
        self.layout = layout
        self.region = region
        self.readOnlyRegion = readOnlyRegion
        self.readOnlyRegionWritable = readOnlyRegionWritable
        ownsRegion = owns
        guardian = `guard`
        self.owner = owner
        func slot(_ p: MemoryLayout.Placement) -> Slot {
            let base = p.segment == .main ? region.baseAddress! : readOnlyRegion.baseAddress!
            return Slot(start: base + p.offset, size: p.size, readOnly: p.readOnly,
                        unwritable: p.segment == .readOnly && !readOnlyRegionWritable)
        }
        dataBlockSlots = layout.dataBlocks.mapValues(slot)
        areaSlots = layout.areas.mapValues(slot)
    }

    /// Convenience: lays out `definition` and allocates its regions.
    public convenience init(_ definition: MemoryDefinition) throws(MemoryLayoutError) {
        self.init(layout: try MemoryLayout(definition))
    }

    deinit {
        if ownsRegion {
            region.deallocate()
            readOnlyRegion.deallocate()
        }
    }

    @inline(__always)
    private func slot(_ area: PLCArea, _ db: UInt16) -> Slot? {
        area == .dataBlock ? dataBlockSlots[db] : areaSlots[area]
    }

    @inline(__always)
    private func locate(_ area: PLCArea, _ db: UInt16, _ offset: Int, _ count: Int, writing: Bool) throws(MemoryAccessError) -> UnsafeMutableRawPointer {
        guard let p = slot(area, db) else { throw .objectDoesNotExist }
        guard offset >= 0, count >= 0, offset <= p.size, count <= p.size - offset else { throw .addressOutOfRange }
        if writing && p.readOnly { throw .readOnly }
        return p.start + offset
    }

    /// A PLC-side store's target: `read_only` does not apply, but a segment mapped read-only here does.
    @inline(__always)
    private func locatePLC(_ area: PLCArea, _ db: UInt16, _ offset: Int, _ count: Int) throws(MemoryAccessError) -> UnsafeMutableRawPointer {
        guard let p = slot(area, db) else { throw .objectDoesNotExist }
        guard offset >= 0, count >= 0, offset <= p.size, count <= p.size - offset else { throw .addressOutOfRange }
        if p.unwritable { throw .readOnly }
        return p.start + offset
    }

    public func read(_ area: PLCArea, db: UInt16, offset: Int, count: Int, into out: inout [UInt8]) throws(MemoryAccessError) {
        let source = UnsafeRawBufferPointer(start: try locate(area, db, offset, count, writing: false), count: count)
        let start = out.count
        guardian.read {
            out.removeSubrange(start...)
            out.append(contentsOf: source)
        }
    }

    public func write(_ area: PLCArea, db: UInt16, offset: Int, bytes: ArraySlice<UInt8>) throws(MemoryAccessError) {
        let target = UnsafeMutableRawBufferPointer(start: try locate(area, db, offset, bytes.count, writing: true), count: bytes.count)
        guardian.write { bytes.withUnsafeBytes { target.copyMemory(from: $0) } }
    }

    public func readBit(_ area: PLCArea, db: UInt16, offset: Int, bit: Int) throws(MemoryAccessError) -> Bool {
        guard (0...7).contains(bit) else { throw .addressOutOfRange }
        let at = try locate(area, db, offset, 1, writing: false)
        return guardian.read { at.load(as: UInt8.self) & (1 << UInt8(bit)) != 0 }
    }

    public func writeBit(_ area: PLCArea, db: UInt16, offset: Int, bit: Int, value: Bool) throws(MemoryAccessError) {
        guard (0...7).contains(bit) else { throw .addressOutOfRange }
        let at = try locate(area, db, offset, 1, writing: true)
        guardian.write { Self.setBit(at, bit, value) }
    }

    @inline(__always)
    private static func setBit(_ at: UnsafeMutableRawPointer, _ bit: Int, _ value: Bool) {
        let old = at.load(as: UInt8.self)
        at.storeBytes(of: value ? old | 1 << UInt8(bit) : old & ~(1 << UInt8(bit)), as: UInt8.self)
    }

    public var operatingMode: OperatingMode {
        guardian.read { OperatingMode(rawValue: region[MemoryLayout.operatingModeOffset]) ?? .run }
    }

    public func setOperatingMode(_ mode: OperatingMode) {
        guardian.write { region[MemoryLayout.operatingModeOffset] = mode.rawValue }
    }

    public var clockOffsetMilliseconds: Int64 {
        guardian.read { Int64(littleEndian: region.load(fromByteOffset: MemoryLayout.clockOffsetOffset, as: Int64.self)) }
    }

    public func setClockOffset(milliseconds: Int64) {
        guardian.write { region.storeBytes(of: milliseconds.littleEndian, toByteOffset: MemoryLayout.clockOffsetOffset, as: Int64.self) }
    }

    /// A write from the PLC side (a local tool or program): bounds-checked like a client's, but
    /// `read_only` does not apply, since it restricts S7 clients. Refused with `.readOnly` only
    /// where this process maps the region's segment read-only (the S7 worker).
    public func plcWrite(_ area: PLCArea, db: UInt16, offset: Int, bytes: ArraySlice<UInt8>) throws(MemoryAccessError) {
        let target = UnsafeMutableRawBufferPointer(start: try locatePLC(area, db, offset, bytes.count), count: bytes.count)
        guardian.write { bytes.withUnsafeBytes { target.copyMemory(from: $0) } }
    }

    /// Sets or clears one bit from the PLC side (see ``plcWrite(_:db:offset:bytes:)``).
    public func plcWriteBit(_ area: PLCArea, db: UInt16, offset: Int, bit: Int, value: Bool) throws(MemoryAccessError) {
        guard (0...7).contains(bit), slot(area, db) != nil else { throw .objectDoesNotExist }
        let at = try locatePLC(area, db, offset, 1)
        guardian.write { Self.setBit(at, bit, value) }
    }

    /// Puts back the whole of a retained region at start, read-only or not (restoring is not a
    /// client's write). The size must match the region's.
    public func restore(_ area: PLCArea, db: UInt16, bytes: [UInt8]) throws(MemoryAccessError) {
        guard let p = slot(area, db) else { throw .objectDoesNotExist }
        guard bytes.count == p.size else { throw .addressOutOfRange }
        let target = UnsafeMutableRawBufferPointer(start: try locatePLC(area, db, 0, p.size), count: p.size)
        guardian.write { bytes.withUnsafeBytes { target.copyMemory(from: $0) } }
    }

    /// Reads bytes of an image table (the PLC side's view), for tests and tools.
    public func readTable(_ table: ImageTable, element: Int, count: Int) -> [UInt8]? {
        guard let base = layout.tableOffsets[table], element >= 0, count >= 0,
              element * table.elementSize + count <= table.byteSize else { return nil }
        let at = base + element * table.elementSize
        return guardian.read { Array(region[at..<at + count]) }
    }

    /// Writes bytes of an image table (the PLC side's view), for tests and tools.
    @discardableResult
    public func writeTable(_ table: ImageTable, element: Int, bytes: [UInt8]) -> Bool {
        guard let base = layout.tableOffsets[table], element >= 0,
              element * table.elementSize + bytes.count <= table.byteSize else { return false }
        let at = base + element * table.elementSize
        guardian.write {
            for (i, b) in bytes.enumerated() { region[at + i] = b }
        }
        return true
    }
}
