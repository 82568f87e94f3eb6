import PLCMemory
import S7Sys
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The shared-memory segment: a flat header, then the ``MemoryLayout`` regions. Offsets only,
/// no pointers; every access goes through ``FlatMemory``'s bounds checks.
///
/// Header (all little-endian):
/// | offset | field |
/// |---|---|
/// | 0-7 | magic `S7CMDSHM` |
/// | 8-11 | version (1) |
/// | 16 | operating mode (``MemoryLayout/operatingModeOffset``) |
/// | 24-31 | CPU clock offset, ms (``MemoryLayout/clockOffsetOffset``) |
/// | 32-39 | total size of the segment |
/// | 40-47 | layout fingerprint (FNV-1a of every placement) |
/// | 64-71 | seqlock counter (readers) |
/// | 128-… | robust process-shared mutex (writers) |
public enum SharedRegion {
    public static let magic: [UInt8] = Array("S7CMDSHM".utf8)
    public static let version: UInt32 = 1
    static let versionOffset = 8
    static let sizeOffset = 32
    static let fingerprintOffset = 40
    static let seqlockOffset = 64
    static let mutexOffset = 128

    /// A fingerprint of where every region sits, so a process attaching with another
    /// configuration is refused instead of reading the wrong bytes.
    public static func fingerprint(_ layout: MemoryLayout) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        func mix(_ value: Int) {
            var v = UInt64(bitPattern: Int64(value))
            for _ in 0..<8 {
                hash = (hash ^ (v & 0xFF)) &* 0x0000_0100_0000_01B3
                v >>= 8
            }
        }
        mix(layout.totalSize)
        for (n, p) in layout.dataBlocks.sorted(by: { $0.key < $1.key }) { mix(Int(n)); mix(p.offset); mix(p.size); mix(p.readOnly ? 1 : 0) }
        for (a, p) in layout.areas.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            mix(PLCArea.allCases.firstIndex(of: a) ?? -1); mix(p.offset); mix(p.size)
        }
        return hash
    }

    /// Creates a sealed memfd for `layout`, initialises the header and the mutex.
    public static func create(_ layout: MemoryLayout) throws -> (FileDescriptor, SharedMemory.Mapping) {
        precondition(MemoryLayout.headerSize >= mutexOffset + RobustMutex.size, "header too small for the mutex")
        let fd = try SharedMemory.create(name: "s7commd-plc-memory", size: layout.totalSize)
        let mapping = try SharedMemory.map(descriptor: fd, size: layout.totalSize).retainForProcessLifetime()
        let base = mapping.bytes
        for (i, b) in magic.enumerated() { base[i] = b }
        base.storeBytes(of: version.littleEndian, toByteOffset: versionOffset, as: UInt32.self)
        base.storeBytes(of: UInt64(layout.totalSize).littleEndian, toByteOffset: sizeOffset, as: UInt64.self)
        base.storeBytes(of: fingerprint(layout).littleEndian, toByteOffset: fingerprintOffset, as: UInt64.self)
        base[MemoryLayout.operatingModeOffset] = OperatingMode.run.rawValue
        _ = try RobustMutex.initialize(at: base.baseAddress! + mutexOffset)
        return (fd, mapping)
    }

    /// Maps a segment another process created and checks that it was laid out for `layout`.
    public static func attach(_ fd: FileDescriptor, _ layout: MemoryLayout) throws -> SharedMemory.Mapping {
        let size = try SharedMemory.size(of: fd)
        guard size == layout.totalSize else {
            throw RuntimeError("the PLC memory segment is \(size) bytes, the configuration needs \(layout.totalSize): the processes were started with different configurations")
        }
        let seals = try SharedMemory.seals(of: fd)
        guard seals.contains(.shrink), seals.contains(.grow) else {
            throw RuntimeError("the PLC memory segment is not sealed against resizing; refusing to map it")
        }
        let mapping = try SharedMemory.map(descriptor: fd, size: size).retainForProcessLifetime()
        let base = mapping.bytes
        guard Array(base[0..<8]) == magic,
              UInt32(littleEndian: base.load(fromByteOffset: versionOffset, as: UInt32.self)) == version else {
            throw RuntimeError("the PLC memory segment has no s7commd header of version \(version)")
        }
        guard UInt64(littleEndian: base.load(fromByteOffset: fingerprintOffset, as: UInt64.self)) == fingerprint(layout) else {
            throw RuntimeError("the PLC memory segment was laid out for another configuration")
        }
        return mapping
    }

    /// PLC memory over a mapped segment, synchronised across processes.
    public static func memory(_ layout: MemoryLayout, _ mapping: SharedMemory.Mapping) -> FlatMemory {
        let base = mapping.bytes.baseAddress!
        let guardian = SharedGuard(mutex: RobustMutex(existingAt: base + mutexOffset), seqlock: SeqLock(counterAt: base + seqlockOffset))
        return FlatMemory(layout: layout, region: mapping.bytes, guard: guardian, owner: mapping)
    }
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
