/// TPKT framing (RFC 1006): version 3, a reserved byte, and a 16-bit length that counts the
/// four header bytes too.
public enum TPKT {
    /// What the first bytes of a stream say about the next frame.
    public enum Peek: Equatable, Sendable {
        /// Fewer than four bytes are there: read more.
        case needMoreHeader
        /// The header is valid; the whole frame is `length` bytes long.
        case frame(length: Int)
    }

    /// Looks at the TPKT header at the start of `bytes` without consuming anything.
    public static func peek(_ bytes: ArraySlice<UInt8>) throws(S7WireError) -> Peek {
        guard bytes.count >= S7Limits.tpktHeaderLength else { return .needMoreHeader }
        let start = bytes.startIndex
        guard bytes[start] == S7Limits.tpktVersion else { throw .badTPKTVersion(bytes[start]) }
        let length = Int(bytes[start + 2]) << 8 | Int(bytes[start + 3])
        guard length >= S7Limits.minimumFrameLength, length <= S7Limits.maximumFrameLength else {
            throw .badTPKTLength(length)
        }
        return .frame(length: length)
    }

    /// Starts a frame in `out`; returns the index to hand to ``finish(_:start:)``.
    @inlinable public static func begin(_ out: inout [UInt8]) -> Int {
        let start = out.count
        out.append(contentsOf: [S7Limits.tpktVersion, 0, 0, 0])
        return start
    }

    /// Patches the length of the frame begun at `start`.
    @inlinable public static func finish(_ out: inout [UInt8], start: Int) {
        out.setU16(out.count - start, at: start + 2)
    }
}
