/// The S7 header: 10 bytes for job and userdata, 12 for ack and ack_data.
public struct S7Header: Equatable, Sendable {
    public var rosctr: UInt8
    public var redundancyID: UInt16
    public var pduReference: UInt16
    public var parameterLength: Int
    public var dataLength: Int
    /// Error class and code; present (non-nil) only in ack and ack_data.
    public var error: S7HeaderError?

    public init(rosctr: UInt8, pduReference: UInt16, parameterLength: Int, dataLength: Int, error: S7HeaderError? = nil, redundancyID: UInt16 = 0) {
        self.rosctr = rosctr
        self.redundancyID = redundancyID
        self.pduReference = pduReference
        self.parameterLength = parameterLength
        self.dataLength = dataLength
        self.error = error
    }

    public var length: Int {
        rosctr == S7ROSCTR.ack.rawValue || rosctr == S7ROSCTR.ackData.rawValue
            ? S7Limits.longHeaderLength : S7Limits.shortHeaderLength
    }

    /// Decodes the header at the start of `bytes`; checks only what every PDU must satisfy.
    public static func decode(_ bytes: ArraySlice<UInt8>) throws(S7WireError) -> S7Header {
        var r = ByteReader(bytes)
        let id = try r.u8("S7 protocol id")
        guard id == 0x32 else { throw .badProtocolID(id) }
        let rosctr = try r.u8("S7 ROSCTR")
        var h = S7Header(rosctr: rosctr, pduReference: 0, parameterLength: 0, dataLength: 0)
        h.redundancyID = try r.u16("S7 header")
        h.pduReference = try r.u16("S7 header")
        h.parameterLength = Int(try r.u16("S7 header"))
        h.dataLength = Int(try r.u16("S7 header"))
        if h.length == S7Limits.longHeaderLength {
            h.error = S7HeaderError(errorClass: try r.u8("S7 error class"), code: try r.u8("S7 error code"))
        }
        let declared = h.length + h.parameterLength + h.dataLength
        guard declared == bytes.count else { throw .lengthMismatch(declared: declared, actual: bytes.count) }
        return h
    }

    public func encode(into out: inout [UInt8]) {
        out.append(0x32)
        out.append(rosctr)
        out.appendU16(redundancyID)
        out.appendU16(pduReference)
        out.appendU16(parameterLength)
        out.appendU16(dataLength)
        if length == S7Limits.longHeaderLength {
            out.append(error?.errorClass ?? 0)
            out.append(error?.code ?? 0)
        }
    }
}

/// An S7ANY variable address: what a Read Var / Write Var item asks for.
public struct S7VarSpec: Equatable, Sendable {
    /// The raw syntax id (0x10 for S7ANY; others are answered per item).
    public var syntaxID: UInt8
    /// The raw transport size; see ``S7TransportSize``.
    public var transportSize: UInt8
    /// Number of elements.
    public var count: UInt16
    public var dbNumber: UInt16
    /// The raw area code; see ``S7AreaCode``.
    public var area: UInt8
    /// Bit address (byte * 8 + bit) for byte areas, element number for timers and counters.
    public var address: UInt32

    public init(syntaxID: UInt8 = 0x10, transportSize: UInt8, count: UInt16, dbNumber: UInt16, area: UInt8, address: UInt32) {
        self.syntaxID = syntaxID
        self.transportSize = transportSize
        self.count = count
        self.dbNumber = dbNumber
        self.area = area
        self.address = address
    }

    static func decode(_ r: inout ByteReader) throws(S7WireError) -> S7VarSpec {
        let specType = try r.u8("item specification")
        let length = try r.u8("item length")
        guard specType == 0x12, length == 0x0A else {
            throw .malformed("variable specification 0x\(hex(specType)) of length \(length) is not an S7ANY item (0x12, 10 bytes)")
        }
        return S7VarSpec(
            syntaxID: try r.u8("item syntax id"), transportSize: try r.u8("item transport size"),
            count: try r.u16("item length"), dbNumber: try r.u16("item DB number"),
            area: try r.u8("item area"), address: try r.u24("item address"))
    }

    public func encode(into out: inout [UInt8]) {
        out.append(contentsOf: [0x12, 0x0A, syntaxID, transportSize])
        out.appendU16(count)
        out.appendU16(dbNumber)
        out.append(area)
        out.appendU24(address)
    }
}

/// Which way the bytes being decoded travel. The decoders are shared by the server (which
/// reads requests) and `s7commd probe` (which reads answers); where the two differ, this says
/// which rules apply.
public enum S7Direction: Sendable {
    /// From a client to the CPU: Write Var data, userdata requests.
    case request
    /// From the CPU to a client: Read Var answers, userdata answers.
    case response
}

/// A data item of a Write Var request or a Read Var response.
public struct S7DataItem: Equatable, Sendable {
    public var returnCode: UInt8
    public var transportSize: UInt8
    /// The length field as sent (bits or bytes, depending on the transport size).
    public var length: UInt16
    public var data: ArraySlice<UInt8>

    public init(returnCode: UInt8, transportSize: UInt8, length: UInt16, data: ArraySlice<UInt8>) {
        self.returnCode = returnCode
        self.transportSize = transportSize
        self.length = length
        self.data = data
    }

    /// Decodes the `count` data items that fill `data`: Write Var data (`.request`) or a Read
    /// Var answer (`.response`).
    ///
    /// Each item is a return code, a transport size, a length (bits or bytes, as the transport
    /// size says) and its bytes, with a fill byte after an odd-length item that is not the last.
    /// In an answer, an item whose return code is not success carries no data whatever its
    /// length field says (snap7 writes 4). One fill byte after an odd last item is tolerated
    /// (some clients pad every item, and snap7's client accepts it in answers); anything more
    /// after the last item is malformed.
    public static func decodeList(_ data: ArraySlice<UInt8>, count: Int,
                                  direction: S7Direction) throws(S7WireError) -> [S7DataItem] {
        var r = ByteReader(data)
        var items: [S7DataItem] = []
        items.reserveCapacity(count)
        for i in 0..<count {
            let rc = try r.u8("data item return code")
            let ts = try r.u8("data item transport size")
            let length = try r.u16("data item length")
            let carriesData = direction == .request || rc == S7ReturnCode.success.rawValue
            let byteCount = carriesData ? (S7DataTransportSize(rawValue: ts) ?? .octetString).byteCount(length: Int(length)) : 0
            items.append(S7DataItem(returnCode: rc, transportSize: ts, length: length, data: try r.take(byteCount, "data item")))
            if i < count - 1, byteCount % 2 == 1 { try r.skip(1, "fill byte") }
        }
        let lastIsOdd = items.last.map { $0.data.count % 2 == 1 } ?? false
        guard r.remaining == 0 || (lastIsOdd && r.remaining == 1) else {
            let what = direction == .request ? "Write Var" : "Read Var answer"
            throw .malformed("\(what) carries \(r.remaining) bytes after its \(count) data items")
        }
        return items
    }
}

/// The userdata parameter block (4 bytes of head, then 4 or 8 bytes).
public struct S7UserDataParameters: Equatable, Sendable {
    /// 0x11 request, 0x12 response or follow-up request.
    public var method: UInt8
    /// High nibble: 0x4 request, 0x8 response, 0x0 push.
    public var type: UInt8
    public var group: UInt8
    public var subfunction: UInt8
    public var sequenceNumber: UInt8
    /// Present in 8-byte parameter blocks (responses and follow-up requests).
    public var dataUnitReference: UInt8?
    public var lastDataUnit: UInt8?
    public var errorCode: UInt16?

    public init(method: UInt8, type: UInt8, group: UInt8, subfunction: UInt8, sequenceNumber: UInt8,
                dataUnitReference: UInt8? = nil, lastDataUnit: UInt8? = nil, errorCode: UInt16? = nil) {
        self.method = method
        self.type = type
        self.group = group
        self.subfunction = subfunction
        self.sequenceNumber = sequenceNumber
        self.dataUnitReference = dataUnitReference
        self.lastDataUnit = lastDataUnit
        self.errorCode = errorCode
    }

    /// Decodes the parameter block `00 01 12 LL` + method, type and group, subfunction,
    /// sequence number (LL = 4) and data unit reference, last data unit, error code (LL = 8).
    /// A request may have either length; an answer always has the 8-byte form.
    static func decode(_ bytes: ArraySlice<UInt8>, direction: S7Direction) throws(S7WireError) -> S7UserDataParameters {
        var r = ByteReader(bytes)
        let head = try r.take(3, "userdata parameter head")
        guard head.elementsEqual([0x00, 0x01, 0x12]) else {
            throw .malformed("userdata parameter head is not 00 01 12")
        }
        let length = Int(try r.u8("userdata parameter length"))
        guard (length == 4 || length == 8), r.remaining == length else {
            throw .malformed("userdata parameter length \(length) does not match its \(r.remaining) bytes")
        }
        guard direction == .request || length == 8 else {
            throw .malformed("userdata answer parameter is 8 bytes; an answer has 12 (with error code)")
        }
        let method = try r.u8("userdata method")
        let tg = try r.u8("userdata type and group")
        var p = S7UserDataParameters(
            method: method, type: tg >> 4, group: tg & 0x0F,
            subfunction: try r.u8("userdata subfunction"), sequenceNumber: try r.u8("userdata sequence number"))
        if length == 8 {
            p.dataUnitReference = try r.u8("userdata data unit reference")
            p.lastDataUnit = try r.u8("userdata last data unit")
            p.errorCode = try r.u16("userdata error code")
        }
        return p
    }

    public var encodedLength: Int { dataUnitReference == nil ? 8 : 12 }

    public func encode(into out: inout [UInt8]) {
        out.append(contentsOf: [0x00, 0x01, 0x12, dataUnitReference == nil ? 4 : 8, method, type << 4 | group, subfunction, sequenceNumber])
        if let ref = dataUnitReference {
            out.append(ref)
            out.append(lastDataUnit ?? 0)
            out.appendU16(errorCode ?? 0)
        }
    }
}

/// The body of a userdata PDU, either way: the parameter block and the one data item (return
/// code, transport size, payload) behind it.
public struct S7UserData: Equatable, Sendable {
    public var parameters: S7UserDataParameters
    public var returnCode: UInt8
    public var transportSize: UInt8
    public var payload: ArraySlice<UInt8>

    public init(parameters: S7UserDataParameters, returnCode: UInt8, transportSize: UInt8, payload: ArraySlice<UInt8>) {
        self.parameters = parameters
        self.returnCode = returnCode
        self.transportSize = transportSize
        self.payload = payload
    }

    /// The error code in the parameters, nil when it is absent or 0.
    public var errorCode: UInt16? {
        guard let e = parameters.errorCode, e != 0 else { return nil }
        return e
    }

    /// True when more data units follow (last data unit byte 0x01).
    public var moreFollows: Bool { (parameters.lastDataUnit ?? 0) != 0 }

    /// Decodes a userdata PDU's parameter block and data (`RC TS LL LL` and LL bytes).
    public static func decode(parameters: ArraySlice<UInt8>, data: ArraySlice<UInt8>,
                              direction: S7Direction) throws(S7WireError) -> S7UserData {
        let p = try S7UserDataParameters.decode(parameters, direction: direction)
        var r = ByteReader(data)
        let rc = try r.u8("userdata return code")
        let ts = try r.u8("userdata transport size")
        let length = Int(try r.u16("userdata data length"))
        guard r.remaining == length else {
            throw .malformed("userdata data length \(length) does not match its \(r.remaining) bytes")
        }
        return S7UserData(parameters: p, returnCode: rc, transportSize: ts, payload: r.rest())
    }
}

/// A request a client sends to a CPU, decoded.
public enum S7Request: Equatable, Sendable {
    case setupCommunication(maxAmQCalling: UInt16, maxAmQCalled: UInt16, pduSize: UInt16)
    case readVar([S7VarSpec])
    /// Items and their data; the counts may differ in a malformed request and are checked by the session.
    case writeVar([S7VarSpec], [S7DataItem])
    /// Any other job function (PLC control, upload, download, ...) with its whole parameter block.
    case otherJob(function: UInt8, parameters: ArraySlice<UInt8>)
    /// A userdata request: parameters and the data item (return code, transport size, payload).
    case userData(S7UserDataParameters, returnCode: UInt8, transportSize: UInt8, payload: ArraySlice<UInt8>)
}

/// A decoded S7 PDU as a client sends it.
public struct S7RequestPDU: Equatable, Sendable {
    public var header: S7Header
    public var request: S7Request

    /// Decodes a whole S7 PDU (the reassembled COTP payload).
    ///
    /// Checks in the order Wireshark's dissector reads: header, function, item syntax, count.
    /// Ranges, areas and memory are the session's to check.
    public static func decode(_ bytes: ArraySlice<UInt8>) throws(S7WireError) -> S7RequestPDU {
        try decode(bytes, header: S7Header.decode(bytes))
    }

    /// Decodes the PDU `bytes` whose header, already decoded from them, is `header` (the session
    /// keeps the header to answer a request whose parameters are malformed).
    public static func decode(_ bytes: ArraySlice<UInt8>, header: S7Header) throws(S7WireError) -> S7RequestPDU {
        let declared = header.length + header.parameterLength + header.dataLength
        guard declared == bytes.count else { throw .lengthMismatch(declared: declared, actual: bytes.count) }
        let paramStart = bytes.startIndex + header.length
        let params = bytes[paramStart..<paramStart + header.parameterLength]
        let data = bytes[(paramStart + header.parameterLength)...]
        switch header.rosctr {
        case S7ROSCTR.job.rawValue:
            return S7RequestPDU(header: header, request: try decodeJob(params, data))
        case S7ROSCTR.userData.rawValue:
            let u = try S7UserData.decode(parameters: params, data: data, direction: .request)
            return S7RequestPDU(header: header, request: .userData(
                u.parameters, returnCode: u.returnCode, transportSize: u.transportSize, payload: u.payload))
        default:
            throw .unknownROSCTR(header.rosctr)
        }
    }

    static func decodeJob(_ params: ArraySlice<UInt8>, _ data: ArraySlice<UInt8>) throws(S7WireError) -> S7Request {
        var r = ByteReader(params)
        let function = try r.u8("job function")
        switch function {
        case S7Function.setupCommunication.rawValue:
            guard params.count == 8 else { throw .malformed("Setup Communication parameter is \(params.count) bytes, expected 8") }
            try r.skip(1, "reserved byte")
            return .setupCommunication(
                maxAmQCalling: try r.u16("Max AmQ calling"), maxAmQCalled: try r.u16("Max AmQ called"),
                pduSize: try r.u16("PDU size"))
        case S7Function.readVar.rawValue, S7Function.writeVar.rawValue:
            let count = Int(try r.u8("item count"))
            guard count >= 1, count <= S7Limits.maximumVarItems, r.remaining == count * S7Limits.varItemLength else {
                throw .malformed("item count \(count) does not match a parameter of \(params.count) bytes")
            }
            var specs: [S7VarSpec] = []
            specs.reserveCapacity(count)
            for _ in 0..<count { specs.append(try S7VarSpec.decode(&r)) }
            if function == S7Function.readVar.rawValue {
                guard data.isEmpty else { throw .malformed("Read Var carries \(data.count) data bytes") }
                return .readVar(specs)
            }
            let items = try S7DataItem.decodeList(data, count: count, direction: .request)
            return .writeVar(specs, items)
        default:
            return .otherJob(function: function, parameters: params)
        }
    }
}
