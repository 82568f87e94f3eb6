/// What is wrong with bytes a peer sent. Each case reads as a sentence for the log line that
/// names the peer.
public enum S7WireError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(StaticString)
    case badTPKTVersion(UInt8)
    case badTPKTLength(Int)
    case badCOTPLength(Int)
    case badCOTPParameter(UInt8)
    case unknownTPDU(UInt8)
    case badProtocolID(UInt8)
    case unknownROSCTR(UInt8)
    case lengthMismatch(declared: Int, actual: Int)
    case malformed(String)

    public static func == (lhs: S7WireError, rhs: S7WireError) -> Bool {
        lhs.description == rhs.description
    }

    public var description: String {
        switch self {
        case .truncated(let what):
            return "frame ends inside the \(what)"
        case .badTPKTVersion(let v):
            return "not an ISO-on-TCP frame: TPKT version byte is 0x\(hex(v)), expected 0x03"
        case .badTPKTLength(let n):
            return "TPKT length \(n) is outside \(S7Limits.minimumFrameLength)...\(S7Limits.maximumFrameLength)"
        case .badCOTPLength(let n):
            return "COTP length indicator \(n) does not fit the frame"
        case .badCOTPParameter(let code):
            return "COTP parameter 0x\(hex(code)) is malformed"
        case .unknownTPDU(let t):
            return "COTP TPDU type 0x\(hex(t)) is not supported"
        case .badProtocolID(let p):
            return "not an S7comm PDU: protocol id 0x\(hex(p)), expected 0x32"
        case .unknownROSCTR(let r):
            return "S7 ROSCTR 0x\(hex(r)) is not a request a CPU answers"
        case .lengthMismatch(let declared, let actual):
            return "S7 header declares \(declared) bytes but the PDU has \(actual)"
        case .malformed(let why):
            return why
        }
    }
}

@inlinable func hex(_ v: UInt8) -> String {
    let s = String(v, radix: 16, uppercase: true)
    return s.count == 1 ? "0" + s : s
}
