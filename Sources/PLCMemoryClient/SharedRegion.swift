import PLCMemory
import S7Sys
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The shared-memory segments: segment 0, a flat header, the image tables and the writable
/// ``MemoryLayout`` regions; and, when the layout has read-only regions with storage of their
/// own, segment 1 holding only those (no header: segment 0's header, seqlock and mutex cover
/// it). Offsets only, no pointers; every access goes through ``FlatMemory``'s bounds checks.
///
/// Header of segment 0 (all little-endian):
/// | offset | field |
/// |---|---|
/// | 0-7 | magic `S7CMDSHM` |
/// | 8-11 | version (1) |
/// | 16 | operating mode (``MemoryLayout/operatingModeOffset``) |
/// | 24-31 | CPU clock offset, ms (``MemoryLayout/clockOffsetOffset``) |
/// | 32-39 | size of segment 0 |
/// | 40-47 | layout fingerprint (FNV-1a of both sizes and every placement) |
/// | 48-55 | size of segment 1 (0: there is none) |
/// | 64-71 | seqlock counter (readers), for both segments |
/// | 128-… | robust process-shared mutex (writers), for both segments |
public enum SharedRegion {
    public static let magic: [UInt8] = Array("S7CMDSHM".utf8)
    public static let version: UInt32 = 1
    static let versionOffset = 8
    static let sizeOffset = 32
    static let fingerprintOffset = 40
    static let readOnlySizeOffset = 48
    static let seqlockOffset = 64
    static let mutexOffset = 128
    /// The memfds' names, as /proc/PID/fd and /proc/PID/maps show them (`/memfd:NAME`).
    public static let mainName = "s7commd-plc-memory"
    public static let readOnlyName = "s7commd-plc-readonly"

    /// The descriptors of a segment pair: segment 0, and segment 1 when the layout has one.
    public struct Descriptors: Sendable {
        public var main: FileDescriptor
        public var readOnly: FileDescriptor?

        public init(main: FileDescriptor, readOnly: FileDescriptor?) {
            self.main = main
            self.readOnly = readOnly
        }

        /// Both, in message order.
        public var all: [FileDescriptor] { [main] + (readOnly.map { [$0] } ?? []) }

        public func close() { for fd in all { try? fd.close() } }
    }

    /// The mappings of a segment pair, each kept for the process lifetime.
    public struct Mappings: Sendable {
        public let main: SharedMemory.Mapping
        public let readOnly: SharedMemory.Mapping?
    }

    /// How this process maps segment 1.
    public enum ReadOnlySegmentAccess: Sendable {
        /// Read and write (the memory process, `s7commd mem`, PLC programs).
        case readWrite
        /// `PROT_READ` from an `O_RDONLY` descriptor, which is checked (the S7 worker).
        case readOnly
    }

    /// A fingerprint of where every region sits, so a process attaching with another
    /// configuration is refused instead of reading the wrong bytes. Without segment 1 it is
    /// the fingerprint of the single-segment layout of before.
    public static func fingerprint(_ layout: MemoryLayout) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        func mix(_ value: Int) {
            var v = UInt64(bitPattern: Int64(value))
            for _ in 0..<8 {
                hash = (hash ^ (v & 0xFF)) &* 0x0000_0100_0000_01B3
                v >>= 8
            }
        }
        let two = layout.hasReadOnlySegment
        mix(layout.totalSize)
        if two { mix(layout.readOnlySize) }
        for (n, p) in layout.dataBlocks.sorted(by: { $0.key < $1.key }) {
            mix(Int(n)); mix(p.offset); mix(p.size); mix(p.readOnly ? 1 : 0)
            if two { mix(p.segment.rawValue) }
        }
        for (a, p) in layout.areas.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            mix(PLCArea.allCases.firstIndex(of: a) ?? -1); mix(p.offset); mix(p.size)
            if two { mix(p.segment.rawValue) }
        }
        return hash
    }

    /// Creates the sealed memfds for `layout` (segment 1 only when it has one), initialises
    /// the header and the mutex, and maps both read-write.
    public static func create(_ layout: MemoryLayout) throws -> (Descriptors, Mappings) {
        precondition(MemoryLayout.headerSize >= mutexOffset + RobustMutex.size, "header too small for the mutex")
        let fd = try SharedMemory.create(name: mainName, size: layout.totalSize)
        var second: FileDescriptor?
        do {
            if layout.hasReadOnlySegment { second = try SharedMemory.create(name: readOnlyName, size: layout.readOnlySize) }
            let mapping = try SharedMemory.map(descriptor: fd, size: layout.totalSize).retainForProcessLifetime()
            let readOnly = try second.map { try SharedMemory.map(descriptor: $0, size: layout.readOnlySize).retainForProcessLifetime() }
            let base = mapping.bytes
            for (i, b) in magic.enumerated() { base[i] = b }
            base.storeBytes(of: version.littleEndian, toByteOffset: versionOffset, as: UInt32.self)
            base.storeBytes(of: UInt64(layout.totalSize).littleEndian, toByteOffset: sizeOffset, as: UInt64.self)
            base.storeBytes(of: fingerprint(layout).littleEndian, toByteOffset: fingerprintOffset, as: UInt64.self)
            base.storeBytes(of: UInt64(layout.readOnlySize).littleEndian, toByteOffset: readOnlySizeOffset, as: UInt64.self)
            base[MemoryLayout.operatingModeOffset] = OperatingMode.run.rawValue
            _ = try RobustMutex.initialize(at: base.baseAddress! + mutexOffset)
            return (Descriptors(main: fd, readOnly: second), Mappings(main: mapping, readOnly: readOnly))
        } catch {
            Descriptors(main: fd, readOnly: second).close()
            throw error
        }
    }

    /// Checks what the kernel says of one memfd before it is mapped: sealed against shrinking
    /// and growing (so no one can make a mapping fault), and exactly `size` bytes.
    public static func check(_ fd: FileDescriptor, _ what: String, size expected: Int) throws {
        let seals = try SharedMemory.seals(of: fd)
        guard seals.contains(.shrink), seals.contains(.grow) else {
            throw RuntimeError("the \(what) is not sealed against resizing (its seals: \(seals.isEmpty ? "none" : seals.description)); refusing to map it")
        }
        let size = try SharedMemory.size(of: fd)
        guard size == expected else {
            throw RuntimeError("the \(what) is \(size) bytes, the configuration needs \(expected): the processes were started with different configurations")
        }
    }

    /// Maps segments another process created and checks that they were laid out for `layout`:
    /// the descriptors' seals and sizes first, then the header's magic, version, sizes and
    /// fingerprint. `readOnlySegment` `.readOnly` also refuses a segment-1 descriptor that is
    /// open for writing, and maps it `PROT_READ`.
    public static func attach(_ descriptors: Descriptors, _ layout: MemoryLayout,
                              readOnlySegment access: ReadOnlySegmentAccess = .readWrite) throws -> Mappings {
        guard (descriptors.readOnly != nil) == layout.hasReadOnlySegment else {
            throw RuntimeError(layout.hasReadOnlySegment
                ? "the read-only PLC memory segment is missing, but the configuration has read-only data blocks or areas"
                : "a read-only PLC memory segment came, but the configuration has no read-only data block or area with storage of its own")
        }
        try check(descriptors.main, "PLC memory segment", size: layout.totalSize)
        if let second = descriptors.readOnly {
            try check(second, "read-only PLC memory segment", size: layout.readOnlySize)
            if access == .readOnly {
                let mode = try SharedMemory.accessMode(of: second)
                guard mode == .readOnly else {
                    throw RuntimeError("the read-only PLC memory segment came open for writing (\(mode)), not O_RDONLY; refusing it")
                }
            }
        }
        let mapping = try SharedMemory.map(descriptor: descriptors.main, size: layout.totalSize).retainForProcessLifetime()
        let base = mapping.bytes
        guard Array(base[0..<8]) == magic,
              UInt32(littleEndian: base.load(fromByteOffset: versionOffset, as: UInt32.self)) == version else {
            throw RuntimeError("the PLC memory segment has no s7commd header of version \(version)")
        }
        guard UInt64(littleEndian: base.load(fromByteOffset: sizeOffset, as: UInt64.self)) == UInt64(layout.totalSize),
              UInt64(littleEndian: base.load(fromByteOffset: readOnlySizeOffset, as: UInt64.self)) == UInt64(layout.readOnlySize),
              UInt64(littleEndian: base.load(fromByteOffset: fingerprintOffset, as: UInt64.self)) == fingerprint(layout) else {
            throw RuntimeError("the PLC memory segment was laid out for another configuration")
        }
        let readOnly = try descriptors.readOnly.map { fd in
            try (access == .readOnly ? SharedMemory.mapReadOnly(descriptor: fd, size: layout.readOnlySize)
                                     : SharedMemory.map(descriptor: fd, size: layout.readOnlySize)).retainForProcessLifetime()
        }
        return Mappings(main: mapping, readOnly: readOnly)
    }

    /// PLC memory over mapped segments, synchronised across processes.
    public static func memory(_ layout: MemoryLayout, _ mappings: Mappings) -> FlatMemory {
        let base = mappings.main.bytes.baseAddress!
        let guardian = SharedGuard(mutex: RobustMutex(existingAt: base + mutexOffset), seqlock: SeqLock(counterAt: base + seqlockOffset))
        return FlatMemory(layout: layout, region: mappings.main.bytes, readOnlyRegion: mappings.readOnly?.bytes,
                          readOnlyRegionWritable: mappings.readOnly?.writable ?? true, guard: guardian, owner: MappingsOwner(mappings))
    }
}

/// Keeps both mappings alive with the ``FlatMemory`` over them.
private final class MappingsOwner: Sendable {
    let mappings: SharedRegion.Mappings
    init(_ mappings: SharedRegion.Mappings) { self.mappings = mappings }
}

/// Writers take the robust process-shared mutex and bump the seqlock around their stores;
/// readers never block and retry a copy that overlapped a write. Chosen over a mutex for
/// every access because readers dominate an S7 load (docs/architecture.md has the numbers).
struct SharedGuard: RegionGuard {
    let mutex: RobustMutex
    let seqlock: SeqLock

    func read<T>(_ body: () -> T) -> T { seqlock.read(body) }

    func write<T>(_ body: () -> T) -> T {
        // A dead previous owner is recovered by lock(); its half-finished item is what a
        // power loss would leave too, and the seqlock is made even again below.
        let locked = (try? mutex.lock()) != nil
        if seqlock.counter.pointee & 1 == 1 { seqlock.writeEnd() }  // a writer died mid-write
        defer { if locked { try? mutex.unlock() } }
        return seqlock.write(body)
    }
}

/// A failure of the runtime that ends the process that meets it, with a sentence for the log.
public struct RuntimeError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
