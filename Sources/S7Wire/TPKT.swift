/// TPKT framing (RFC 1006): version 3, a reserved byte, and a 16-bit length that counts the
/// four header bytes too.
///
/// The one TPKT header decoder: the session's framing, the client's (`s7commd probe`) and the
/// fuzz harness's output check all read the header through ``peek(_:maximumFrameLength:)``.
public enum TPKT {
    /// What the first bytes of a stream say about the next frame.
    public enum Peek: Equatable, Sendable {
        /// Fewer than four bytes are there: read more.
        case needMoreHeader
        /// The header is valid; the whole frame is `length` bytes long.
        case frame(length: Int)
    }

    /// The largest frame the 16-bit length field can declare. A client reading a server it
    /// does not configure accepts up to this; s7commd itself accepts only
    /// ``S7Limits/maximumFrameLength``.
    public static let largestFrameLength = Int(UInt16.max)

    /// Looks at the TPKT header at the start of `bytes` without consuming anything.
    ///
    /// Throws ``S7WireError/badTPKTVersion(_:)`` for a version byte other than 3 and
    /// ``S7WireError/badTPKTLength(_:)`` for a length outside
    /// ``S7Limits/minimumFrameLength``...`maximumFrameLength`.
    public static func peek(_ bytes: ArraySlice<UInt8>,
                            maximumFrameLength: Int = S7Limits.maximumFrameLength) throws(S7WireError) -> Peek {
        guard bytes.count >= S7Limits.tpktHeaderLength else { return .needMoreHeader }
        let start = bytes.startIndex
        guard bytes[start] == S7Limits.tpktVersion else { throw .badTPKTVersion(bytes[start]) }
        let length = Int(bytes[start + 2]) << 8 | Int(bytes[start + 3])
        guard length >= S7Limits.minimumFrameLength, length <= maximumFrameLength else {
            throw .badTPKTLength(length)
        }
        return .frame(length: length)
    }

    /// The TPDU inside `frame`, which must be exactly one whole frame (header included).
    public static func tpdu(ofFrame frame: ArraySlice<UInt8>,
                            maximumFrameLength: Int = S7Limits.maximumFrameLength) throws(S7WireError) -> ArraySlice<UInt8> {
        guard case .frame(let length) = try peek(frame, maximumFrameLength: maximumFrameLength) else {
            throw .truncated("TPKT header")
        }
        guard length == frame.count else { throw .badTPKTLength(length) }
        return frame.dropFirst(S7Limits.tpktHeaderLength)
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
