/// A bounds-checked reader over a slice of bytes. Every read throws ``S7WireError/truncated``
/// instead of trapping, so no input can crash the decoder.
public struct ByteReader {
    public let bytes: ArraySlice<UInt8>
    public private(set) var index: Int

    public init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.index = bytes.startIndex
    }

    public var remaining: Int { bytes.endIndex - index }

    public mutating func u8(_ what: StaticString = "byte") throws(S7WireError) -> UInt8 {
        guard index < bytes.endIndex else { throw .truncated(what) }
        defer { index += 1 }
        return bytes[index]
    }

    public mutating func u16(_ what: StaticString = "word") throws(S7WireError) -> UInt16 {
        guard remaining >= 2 else { throw .truncated(what) }
        defer { index += 2 }
        return UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
    }

    public mutating func u24(_ what: StaticString = "address") throws(S7WireError) -> UInt32 {
        guard remaining >= 3 else { throw .truncated(what) }
        defer { index += 3 }
        return UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
    }

    public mutating func take(_ count: Int, _ what: StaticString = "bytes") throws(S7WireError) -> ArraySlice<UInt8> {
        guard count >= 0, remaining >= count else { throw .truncated(what) }
        defer { index += count }
        return bytes[index..<index + count]
    }

    public mutating func skip(_ count: Int, _ what: StaticString = "bytes") throws(S7WireError) {
        _ = try take(count, what)
    }

    public func rest() -> ArraySlice<UInt8> { bytes[index...] }
}

/// Big-endian appends used by every encoder.
extension Array where Element == UInt8 {
    @inlinable public mutating func appendU16(_ value: UInt16) {
        append(UInt8(truncatingIfNeeded: value >> 8))
        append(UInt8(truncatingIfNeeded: value))
    }

    @inlinable public mutating func appendU16(_ value: Int) { appendU16(UInt16(truncatingIfNeeded: value)) }

    @inlinable public mutating func appendU24(_ value: UInt32) {
        append(UInt8(truncatingIfNeeded: value >> 16))
        append(UInt8(truncatingIfNeeded: value >> 8))
        append(UInt8(truncatingIfNeeded: value))
    }

    @inlinable public mutating func appendU32(_ value: UInt32) {
        append(UInt8(truncatingIfNeeded: value >> 24))
        appendU24(value)
    }

    @inlinable public mutating func setU16(_ value: Int, at index: Int) {
        self[index] = UInt8(truncatingIfNeeded: value >> 8)
        self[index + 1] = UInt8(truncatingIfNeeded: value)
    }
}
