/// ISO 8073 class 0 transport (COTP) as S7 uses it.
public enum COTPType: UInt8, Sendable {
    case connectionRequest = 0xE0
    case connectionConfirm = 0xD0
    case disconnectRequest = 0x80
    case disconnectConfirm = 0xC0
    case data = 0xF0
    case error = 0x70
}

/// The parameters of a connection request or confirm.
public struct COTPConnectionParameters: Equatable, Sendable {
    public var destinationReference: UInt16
    public var sourceReference: UInt16
    public var classOption: UInt8
    /// TPDU size code (0x07 = 128 ... 0x0D = 8192); nil when absent.
    public var tpduSizeCode: UInt8?
    /// Parameter 0xC1: the calling (client's own) TSAP.
    public var callingTSAP: [UInt8]?
    /// Parameter 0xC2: the called (server's) TSAP; for S7 its second byte is rack * 32 + slot.
    public var calledTSAP: [UInt8]?

    public init(
        destinationReference: UInt16, sourceReference: UInt16, classOption: UInt8 = 0,
        tpduSizeCode: UInt8? = nil, callingTSAP: [UInt8]? = nil, calledTSAP: [UInt8]? = nil
    ) {
        self.destinationReference = destinationReference
        self.sourceReference = sourceReference
        self.classOption = classOption
        self.tpduSizeCode = tpduSizeCode
        self.callingTSAP = callingTSAP
        self.calledTSAP = calledTSAP
    }

    /// The connection type in the called TSAP's first byte (1 PG, 2 OP, 3 S7 basic, ...).
    public var connectionType: UInt8? { calledTSAP.flatMap { $0.count == 2 ? $0[0] : nil } }
    /// The rack in the called TSAP (bits 5-7 of its second byte).
    public var rack: Int? { calledTSAP.flatMap { $0.count == 2 ? Int($0[1] >> 5) : nil } }
    /// The slot in the called TSAP (bits 0-4 of its second byte).
    public var slot: Int? { calledTSAP.flatMap { $0.count == 2 ? Int($0[1] & 0x1F) : nil } }

    /// The TPDU size in bytes for a size code, nil for a code outside 0x07...0x0D.
    public static func tpduSize(code: UInt8) -> Int? {
        (0x07...0x0D).contains(code) ? 1 << Int(code) : nil
    }
}

/// One COTP TPDU.
public enum COTPPDU: Equatable, Sendable {
    case connectionRequest(COTPConnectionParameters)
    case connectionConfirm(COTPConnectionParameters)
    /// A data TPDU; `endOfTransmission` is false on every segment but the last.
    case data(endOfTransmission: Bool, payload: ArraySlice<UInt8>)
    case disconnectRequest(destinationReference: UInt16, sourceReference: UInt16, reason: UInt8)
    case disconnectConfirm(destinationReference: UInt16, sourceReference: UInt16)

    /// Decodes the TPDU that fills `bytes` (a TPKT frame without its 4-byte header).
    public static func decode(_ bytes: ArraySlice<UInt8>) throws(S7WireError) -> COTPPDU {
        var r = ByteReader(bytes)
        let li = Int(try r.u8("COTP length indicator"))
        guard li >= 2, li < bytes.count else { throw .badCOTPLength(li) }
        let code = try r.u8("COTP TPDU code")
        switch code & 0xF0 {
        case COTPType.data.rawValue:
            // Class 0 data TPDU: length indicator 2, then EOT flag and TPDU number.
            guard li == 2 else { throw .badCOTPLength(li) }
            let nr = try r.u8("COTP TPDU number")
            return .data(endOfTransmission: nr & 0x80 != 0, payload: r.rest())
        case COTPType.connectionRequest.rawValue, COTPType.connectionConfirm.rawValue:
            guard li >= 6 else { throw .badCOTPLength(li) }
            var p = COTPConnectionParameters(
                destinationReference: try r.u16("COTP destination reference"),
                sourceReference: try r.u16("COTP source reference"),
                classOption: try r.u8("COTP class"))
            let end = bytes.startIndex + 1 + li
            while r.index < end {
                let pcode = try r.u8("COTP parameter code")
                let plen = Int(try r.u8("COTP parameter length"))
                guard r.index + plen <= end else { throw .badCOTPParameter(pcode) }
                let value = try r.take(plen, "COTP parameter")
                switch pcode {
                case 0xC0:
                    guard plen == 1 else { throw .badCOTPParameter(pcode) }
                    p.tpduSizeCode = value.first
                case 0xC1, 0xC2:
                    guard plen >= 1, plen <= S7Limits.maximumTSAPLength else { throw .badCOTPParameter(pcode) }
                    if pcode == 0xC1 { p.callingTSAP = Array(value) } else { p.calledTSAP = Array(value) }
                default:
                    break  // other options (checksum, version, ...) carry nothing S7 needs
                }
            }
            guard r.remaining == 0 else { throw .badCOTPLength(li) }
            return code & 0xF0 == COTPType.connectionRequest.rawValue ? .connectionRequest(p) : .connectionConfirm(p)
        case COTPType.disconnectRequest.rawValue:
            guard li >= 6 else { throw .badCOTPLength(li) }
            let d = try r.u16("COTP destination reference")
            let s = try r.u16("COTP source reference")
            return .disconnectRequest(destinationReference: d, sourceReference: s, reason: try r.u8("COTP reason"))
        case COTPType.disconnectConfirm.rawValue:
            guard li >= 5 else { throw .badCOTPLength(li) }
            let d = try r.u16("COTP destination reference")
            return .disconnectConfirm(destinationReference: d, sourceReference: try r.u16("COTP source reference"))
        default:
            throw .unknownTPDU(code)
        }
    }

    /// Appends this TPDU, framed in TPKT, to `out`.
    public func encodeFrame(into out: inout [UInt8]) {
        let start = TPKT.begin(&out)
        switch self {
        case .connectionRequest(let p), .connectionConfirm(let p):
            let liIndex = out.count
            out.append(0)
            if case .connectionRequest = self {
                out.append(COTPType.connectionRequest.rawValue)
            } else {
                out.append(COTPType.connectionConfirm.rawValue)
            }
            out.appendU16(p.destinationReference)
            out.appendU16(p.sourceReference)
            out.append(p.classOption)
            if let size = p.tpduSizeCode { out.append(contentsOf: [0xC0, 1, size]) }
            if let t = p.callingTSAP { out.append(0xC1); out.append(UInt8(t.count)); out.append(contentsOf: t) }
            if let t = p.calledTSAP { out.append(0xC2); out.append(UInt8(t.count)); out.append(contentsOf: t) }
            out[liIndex] = UInt8(out.count - liIndex - 1)
        case .data(let eot, let payload):
            COTPPDU.appendDataHeader(&out, endOfTransmission: eot)
            out.append(contentsOf: payload)
        case .disconnectRequest(let d, let s, let reason):
            out.append(contentsOf: [6, COTPType.disconnectRequest.rawValue])
            out.appendU16(d)
            out.appendU16(s)
            out.append(reason)
        case .disconnectConfirm(let d, let s):
            out.append(contentsOf: [5, COTPType.disconnectConfirm.rawValue])
            out.appendU16(d)
            out.appendU16(s)
        }
        TPKT.finish(&out, start: start)
    }

    /// Appends the 3-byte class 0 data header.
    @inlinable public static func appendDataHeader(_ out: inout [UInt8], endOfTransmission: Bool = true) {
        out.append(2)
        out.append(COTPType.data.rawValue)
        out.append(endOfTransmission ? 0x80 : 0x00)
    }
}
