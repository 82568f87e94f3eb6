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

/// PLC memory over one flat byte region laid out by ``MemoryLayout``.
///
/// The region is either allocated here (single process) or handed in (shared memory); either
/// way it is addressed by offsets only. A ``RegionGuard`` makes every call atomic.
public final class FlatMemory: PLCMemoryAccess, @unchecked Sendable {
    public let layout: MemoryLayout
    private let region: UnsafeMutableRawBufferPointer
    private let ownsRegion: Bool
    private let guardian: any RegionGuard
    /// Keeps whatever owns a handed-in region (a shared-memory mapping) alive as long as this.
    private let owner: AnyObject?

    /// Allocates a zeroed region for `layout`.
    public init(layout: MemoryLayout) {
        self.layout = layout
        region = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.totalSize, alignment: 64)
        region.initializeMemory(as: UInt8.self, repeating: 0)
        ownsRegion = true
        guardian = InProcessGuard()
        owner = nil
    }

    /// Uses a region provided by the caller (for example a shared-memory mapping), which must
    /// stay valid for the lifetime of this object and be at least `layout.totalSize` bytes;
    /// `owner` is kept alive with it.
    public init(layout: MemoryLayout, region: UnsafeMutableRawBufferPointer, guard: any RegionGuard = InProcessGuard(),
                owner: AnyObject? = nil) {
        precondition(region.count >= layout.totalSize, "region smaller than its layout")
        self.layout = layout
        self.region = region
        ownsRegion = false
        guardian = `guard`
        self.owner = owner
    }

    /// Convenience: lays out `definition` and allocates its region.
    public convenience init(_ definition: MemoryDefinition) throws(MemoryLayoutError) {
        self.init(layout: try MemoryLayout(definition))
    }

    deinit {
        if ownsRegion { region.deallocate() }
    }

    @inline(__always)
    private func locate(_ area: PLCArea, _ db: UInt16, _ offset: Int, _ count: Int, writing: Bool) throws(MemoryAccessError) -> Int {
        guard let p = layout.placement(area, db: db) else { throw .objectDoesNotExist }
        guard offset >= 0, count >= 0, offset <= p.size, count <= p.size - offset else { throw .addressOutOfRange }
        if writing && p.readOnly { throw .readOnly }
        return p.offset + offset
    }

    public func read(_ area: PLCArea, db: UInt16, offset: Int, count: Int, into out: inout [UInt8]) throws(MemoryAccessError) {
        let at = try locate(area, db, offset, count, writing: false)
        let source = UnsafeRawBufferPointer(rebasing: region[at..<at + count])
        let start = out.count
        guardian.read {
            out.removeSubrange(start...)
            out.append(contentsOf: source)
        }
    }

    public func write(_ area: PLCArea, db: UInt16, offset: Int, bytes: ArraySlice<UInt8>) throws(MemoryAccessError) {
        let at = try locate(area, db, offset, bytes.count, writing: true)
        let target = UnsafeMutableRawBufferPointer(rebasing: region[at..<at + bytes.count])
        guardian.write { bytes.withUnsafeBytes { target.copyMemory(from: $0) } }
    }

    public func readBit(_ area: PLCArea, db: UInt16, offset: Int, bit: Int) throws(MemoryAccessError) -> Bool {
        guard (0...7).contains(bit) else { throw .addressOutOfRange }
        let at = try locate(area, db, offset, 1, writing: false)
        return guardian.read { region[at] & (1 << UInt8(bit)) != 0 }
    }

    public func writeBit(_ area: PLCArea, db: UInt16, offset: Int, bit: Int, value: Bool) throws(MemoryAccessError) {
        guard (0...7).contains(bit) else { throw .addressOutOfRange }
        let at = try locate(area, db, offset, 1, writing: true)
        guardian.write {
            if value { region[at] |= 1 << UInt8(bit) } else { region[at] &= ~(1 << UInt8(bit)) }
        }
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
    /// `read_only` does not apply, since it restricts S7 clients.
    public func plcWrite(_ area: PLCArea, db: UInt16, offset: Int, bytes: ArraySlice<UInt8>) throws(MemoryAccessError) {
        guard let p = layout.placement(area, db: db) else { throw .objectDoesNotExist }
        guard offset >= 0, offset <= p.size, bytes.count <= p.size - offset else { throw .addressOutOfRange }
        let target = UnsafeMutableRawBufferPointer(rebasing: region[(p.offset + offset)..<(p.offset + offset + bytes.count)])
        guardian.write { bytes.withUnsafeBytes { target.copyMemory(from: $0) } }
    }

    /// Sets or clears one bit from the PLC side (see ``plcWrite(_:db:offset:bytes:)``).
    public func plcWriteBit(_ area: PLCArea, db: UInt16, offset: Int, bit: Int, value: Bool) throws(MemoryAccessError) {
        guard (0...7).contains(bit), let p = layout.placement(area, db: db) else { throw .objectDoesNotExist }
        guard offset >= 0, offset < p.size else { throw .addressOutOfRange }
        let at = p.offset + offset
        guardian.write {
            if value { region[at] |= 1 << UInt8(bit) } else { region[at] &= ~(1 << UInt8(bit)) }
        }
    }

    /// Puts back the whole of a retained region at start, read-only or not (restoring is not a
    /// client's write). The size must match the region's.
    public func restore(_ area: PLCArea, db: UInt16, bytes: [UInt8]) throws(MemoryAccessError) {
        guard let p = layout.placement(area, db: db) else { throw .objectDoesNotExist }
        guard bytes.count == p.size else { throw .addressOutOfRange }
        let target = UnsafeMutableRawBufferPointer(rebasing: region[p.offset..<p.offset + p.size])
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
