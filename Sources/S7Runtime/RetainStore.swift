import Foundation
import PLCMemory
import S7Sys

/// Retained data blocks and areas on disk: one file, replaced atomically (temporary file,
/// fsync, rename, fsync of the directory), with a CRC-32 over everything, so a torn or
/// corrupt file is detected and never loaded.
///
/// Layout (little-endian): magic `S7CMDRET`, version u32, entry count u32; per entry kind u8
/// (0 DB, 1 I, 2 Q, 3 M, 4 T, 5 C), reserved u8, number u16, size u32, the bytes; then the
/// CRC-32 of all that.
public struct RetainStore: Sendable {
    public static let magic = Array("S7CMDRET".utf8)
    public static let version: UInt32 = 1
    public let path: String

    public init(directory: String) {
        path = directory + "/retain.bin"
    }

    public struct Key: Hashable, Sendable, CustomStringConvertible {
        public var area: PLCArea
        public var number: UInt16
        public var description: String { area == .dataBlock ? "DB\(number)" : area.rawValue }
    }

    static let kinds: [PLCArea] = [.dataBlock, .inputs, .outputs, .flags, .timers, .counters]

    /// The regions marked retain in a layout.
    public static func retained(_ layout: PLCMemory.MemoryLayout) -> [Key] {
        layout.dataBlocks.filter { $0.value.retain }.keys.sorted().map { Key(area: .dataBlock, number: $0) }
            + layout.areas.filter { $0.value.retain }.keys.sorted { $0.rawValue < $1.rawValue }.map { Key(area: $0, number: 0) }
    }

    /// A snapshot of every retained region, each read whole.
    public static func snapshot(_ memory: FlatMemory, _ keys: [Key]) -> [(Key, [UInt8])] {
        keys.compactMap { key in
            guard let p = memory.layout.placement(key.area, db: key.number) else { return nil }
            var bytes: [UInt8] = []
            do { try memory.read(key.area, db: key.number, offset: 0, count: p.size, into: &bytes) } catch { return nil }
            return (key, bytes)
        }
    }

    public func save(_ entries: [(Key, [UInt8])]) throws {
        var out = Self.magic
        func u16(_ v: UInt16) { out.append(UInt8(v & 0xFF)); out.append(UInt8(v >> 8)) }
        func u32(_ v: UInt32) { for i in 0..<4 { out.append(UInt8((v >> (8 * UInt32(i))) & 0xFF)) } }
        u32(Self.version)
        u32(UInt32(entries.count))
        for (key, bytes) in entries {
            out.append(UInt8(Self.kinds.firstIndex(of: key.area) ?? 0))
            out.append(0)
            u16(key.number)
            u32(UInt32(bytes.count))
            out.append(contentsOf: bytes)
        }
        u32(crc32(out))
        try atomicWrite(out)
    }

    public enum LoadError: Error, CustomStringConvertible {
        case corrupt(String, String)
        public var description: String {
            switch self {
            case .corrupt(let path, let why): return "retained data file \(path) is corrupt (\(why))"
            }
        }
    }

    /// The saved entries; empty when there is no file; throws when it is torn or corrupt.
    public func load() throws -> [Key: [UInt8]] {
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        let b = [UInt8](data)
        func fail(_ why: String) -> LoadError { .corrupt(path, why) }
        guard b.count >= 20, Array(b[0..<8]) == Self.magic else { throw fail("no s7commd header") }
        func u32(_ i: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[i + $1]) << (8 * UInt32($1)) } }
        let stored = u32(b.count - 4)
        guard crc32(Array(b[0..<(b.count - 4)])) == stored else { throw fail("checksum mismatch: torn or damaged") }
        guard u32(8) == Self.version else { throw fail("version \(u32(8)), expected \(Self.version)") }
        var entries: [Key: [UInt8]] = [:]
        var i = 16
        for _ in 0..<u32(12) {
            guard i + 8 <= b.count - 4 else { throw fail("truncated entry") }
            let kind = Int(b[i])
            let number = UInt16(b[i + 2]) | UInt16(b[i + 3]) << 8
            let size = Int(u32(i + 4))
            i += 8
            guard kind < Self.kinds.count, size >= 0, i + size <= b.count - 4 else { throw fail("bad entry") }
            entries[Key(area: Self.kinds[kind], number: number)] = Array(b[i..<(i + size)])
            i += size
        }
        guard i == b.count - 4 else { throw fail("\(b.count - 4 - i) stray bytes") }
        return entries
    }

    /// Moves a corrupt file aside (never deletes it) and returns its new name.
    ///
    /// - Throws: S7Sys's `SystemCallError` when the rename fails; the file then stays where
    ///   it is.
    public func setAside() throws -> String {
        let aside = path + ".corrupt-\(Int(Date().timeIntervalSince1970))"
        try AtomicFile.rename(path, to: aside)
        return aside
    }

    /// Temporary file, fsync, rename, fsync of the directory (S7Sys.AtomicFile): a failing
    /// directory fsync is an error, so a save is only reported done once it is on disk.
    private func atomicWrite(_ bytes: [UInt8]) throws {
        try AtomicFile.write(bytes, to: path, mode: 0o600)
    }
}

private let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
    var c = UInt32(n)
    for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    return c
}

/// CRC-32 (IEEE 802.3), as zlib computes it.
func crc32(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
    return c ^ 0xFFFF_FFFF
}
