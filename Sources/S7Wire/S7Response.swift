/// What a CPU answers, decoded for a client (`s7commd probe`).
///
/// Everything here is pure and bounds-checked: any input either decodes or throws an
/// ``S7WireError``; nothing traps. Errors the CPU reports (header error class and code, item
/// return codes, userdata error codes) are values in the decoded answer, not thrown: the caller
/// decides what they mean for it.

// MARK: - COTP

extension COTPPDU {
    /// Decodes a whole TPKT frame (header included) into its TPDU. A client takes any frame
    /// length the header can declare (``TPKT/largestFrameLength``), not only what s7commd sends.
    public static func decodeFrame(_ frame: ArraySlice<UInt8>) throws(S7WireError) -> COTPPDU {
        try COTPPDU.decode(TPKT.tpdu(ofFrame: frame, maximumFrameLength: TPKT.largestFrameLength))
    }
}

/// The answer to a COTP connection request.
public enum COTPConnectAnswer: Equatable, Sendable {
    /// CC: the server accepted the connection.
    case confirmed(COTPConnectionParameters)
    /// DR: the server refused it, with the ISO 8073 reason code.
    case refused(reason: UInt8)

    /// Decodes a whole TPKT frame sent in answer to a connection request.
    public static func decode(frame: ArraySlice<UInt8>) throws(S7WireError) -> COTPConnectAnswer {
        switch try COTPPDU.decodeFrame(frame) {
        case .connectionConfirm(let p): return .confirmed(p)
        case .disconnectRequest(_, _, let reason): return .refused(reason: reason)
        case .connectionRequest: throw .malformed("the server answered a connection request with a connection request")
        case .data: throw .malformed("the server answered a connection request with data")
        case .disconnectConfirm: throw .malformed("the server answered a connection request with a disconnect confirm")
        }
    }

    /// The ISO 8073 disconnect reasons, as sentences.
    public static func reasonText(_ reason: UInt8) -> String {
        switch reason {
        case 0x00: return "reason not specified"
        case 0x01: return "congestion at the server's transport entity"
        case 0x02: return "session entity not attached to the TSAP (no such rack/slot or TSAP)"
        case 0x03: return "address unknown"
        case 0x80: return "normal disconnect by the server"
        case 0x81: return "remote transport entity congestion"
        case 0x82: return "connection negotiation failed"
        case 0x83: return "duplicate source reference"
        case 0x84: return "mismatched references"
        case 0x85: return "protocol error"
        case 0x87: return "reference overflow"
        case 0x88: return "connection request refused on this network connection"
        case 0x8A: return "header or parameter length invalid"
        default: return "reason 0x" + hex(reason)
        }
    }
}

// MARK: - S7 PDU

/// A decoded S7 PDU as a CPU sends it: ack, ack_data or userdata.
public struct S7ResponsePDU: Equatable, Sendable {
    public var header: S7Header
    public var parameters: ArraySlice<UInt8>
    public var data: ArraySlice<UInt8>

    /// The error class and code in the header (ack / ack_data), or nil when there is none or it is 0.
    public var headerError: S7HeaderError? {
        guard let e = header.error, e.value != 0 else { return nil }
        return e
    }

    /// Decodes a whole S7 PDU (the reassembled COTP payload).
    public static func decode(_ bytes: ArraySlice<UInt8>) throws(S7WireError) -> S7ResponsePDU {
        let header = try S7Header.decode(bytes)
        guard header.rosctr == S7ROSCTR.ack.rawValue || header.rosctr == S7ROSCTR.ackData.rawValue
                || header.rosctr == S7ROSCTR.userData.rawValue else {
            throw .malformed("S7 ROSCTR 0x\(hex(header.rosctr)) is not an answer (ack, ack_data or userdata)")
        }
        // S7Header.decode checked that header + parameters + data is exactly the PDU.
        let p = bytes.startIndex + header.length
        let d = p + header.parameterLength
        return S7ResponsePDU(header: header, parameters: bytes[p..<d], data: bytes[d...])
    }
}

/// The answer to Setup Communication: what the CPU agreed to.
public struct S7SetupCommunicationAnswer: Equatable, Sendable {
    public var maxAmQCalling: UInt16
    public var maxAmQCalled: UInt16
    public var pduSize: UInt16

    public init(maxAmQCalling: UInt16, maxAmQCalled: UInt16, pduSize: UInt16) {
        self.maxAmQCalling = maxAmQCalling
        self.maxAmQCalled = maxAmQCalled
        self.pduSize = pduSize
    }

    /// Decodes the 8-byte parameter block `F0 00 CC CC DD DD PP PP`.
    public static func decode(parameters: ArraySlice<UInt8>) throws(S7WireError) -> S7SetupCommunicationAnswer {
        var r = ByteReader(parameters)
        let function = try r.u8("Setup Communication function")
        guard function == S7Function.setupCommunication.rawValue else {
            throw .malformed("answer to Setup Communication carries function 0x\(hex(function)), expected 0xF0")
        }
        try r.skip(1, "reserved byte")
        let answer = S7SetupCommunicationAnswer(
            maxAmQCalling: try r.u16("Max AmQ calling"), maxAmQCalled: try r.u16("Max AmQ called"),
            pduSize: try r.u16("PDU size"))
        guard r.remaining == 0 else { throw .malformed("Setup Communication answer parameter is \(parameters.count) bytes, expected 8") }
        return answer
    }
}

/// The answer to Read Var: one data item per requested item.
public struct S7ReadVarAnswer: Equatable, Sendable {
    public var items: [S7DataItem]

    public init(items: [S7DataItem]) { self.items = items }

    /// Decodes the parameter block `04 NN` and the NN data items (with fill bytes after odd ones).
    public static func decode(parameters: ArraySlice<UInt8>, data: ArraySlice<UInt8>) throws(S7WireError) -> S7ReadVarAnswer {
        var p = ByteReader(parameters)
        let function = try p.u8("Read Var function")
        guard function == S7Function.readVar.rawValue else {
            throw .malformed("answer to Read Var carries function 0x\(hex(function)), expected 0x04")
        }
        let count = Int(try p.u8("item count"))
        guard p.remaining == 0 else { throw .malformed("Read Var answer parameter is \(parameters.count) bytes, expected 2") }
        let items = try S7DataItem.decodeList(data, count: count, direction: .response)
        return S7ReadVarAnswer(items: items)
    }
}

/// A userdata answer: parameters (sequence number, data unit reference, last data unit,
/// error code) and the data item (return code, transport size, payload). The same decoder as
/// the server's for requests (``S7UserData``), with the rules for an answer.
public typealias S7UserDataAnswer = S7UserData

extension S7UserData {
    /// Decodes a userdata answer's parameter block (the 12-byte form) and data.
    public static func decode(parameters: ArraySlice<UInt8>, data: ArraySlice<UInt8>) throws(S7WireError) -> S7UserData {
        try decode(parameters: parameters, data: data, direction: .response)
    }

    /// Decodes a whole userdata answer PDU.
    public static func decode(pdu: S7ResponsePDU) throws(S7WireError) -> S7UserData {
        guard pdu.header.rosctr == S7ROSCTR.userData.rawValue else {
            throw .malformed("expected a userdata answer, got ROSCTR 0x\(hex(pdu.header.rosctr))")
        }
        return try decode(parameters: pdu.parameters, data: pdu.data, direction: .response)
    }
}

// MARK: - SZL

/// A system status list (SZL) partial list, reassembled from one or more userdata answers.
public struct S7SZLList: Equatable, Sendable {
    public var id: UInt16
    public var index: UInt16
    public var recordLength: Int
    /// The record count the list header announces.
    public var announcedCount: Int
    public var records: [ArraySlice<UInt8>]

    /// True when the list announces more records than its bytes hold (snap7's server cuts long
    /// lists to one PDU).
    public var isTruncated: Bool { records.count < announcedCount }

    /// Decodes `ID(2) INDEX(2) LENTHDR(2) N_DR(2) records...`.
    public static func decode(_ bytes: ArraySlice<UInt8>) throws(S7WireError) -> S7SZLList {
        var r = ByteReader(bytes)
        let id = try r.u16("SZL id")
        let index = try r.u16("SZL index")
        let length = Int(try r.u16("SZL record length"))
        let count = Int(try r.u16("SZL record count"))
        var records: [ArraySlice<UInt8>] = []
        if length > 0 {
            let fit = min(count, r.remaining / length)
            records.reserveCapacity(fit)
            for _ in 0..<fit { records.append(try r.take(length, "SZL record")) }
        }
        return S7SZLList(id: id, index: index, recordLength: length, announcedCount: count, records: records)
    }

    /// The record whose first word (its index) is `index`.
    public func record(index: UInt16) -> ArraySlice<UInt8>? {
        records.first { $0.count >= 2 && UInt16($0[$0.startIndex]) << 8 | UInt16($0[$0.startIndex + 1]) == index }
    }

    /// Text in a record from `offset`, up to `length` bytes, cut at the first NUL and trimmed.
    public static func text(_ record: ArraySlice<UInt8>, offset: Int, length: Int) -> String {
        guard offset >= 0, length >= 0, offset < record.count else { return "" }
        let start = record.startIndex + offset
        let field = record[start..<min(start + length, record.endIndex)]
        let cut = field.prefix { $0 != 0 }
        let scalars = cut.map { (0x20...0x7E).contains($0) ? Character(UnicodeScalar($0)) : "?" }
        return String(scalars).trimmingSpaces()
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}

// MARK: - Requests a client sends

/// The requests `s7commd probe` sends, as whole TPKT frames.
public enum S7ClientRequest {
    /// COTP CR with TPDU 1024, the calling TSAP and the called TSAP.
    public static func connect(callingTSAP: UInt16, calledTSAP: UInt16, tpduSizeCode: UInt8 = S7Limits.maximumTPDUSizeCode) -> [UInt8] {
        var out: [UInt8] = []
        COTPPDU.connectionRequest(COTPConnectionParameters(
            destinationReference: 0, sourceReference: 0x0001, classOption: 0, tpduSizeCode: tpduSizeCode,
            callingTSAP: [UInt8(callingTSAP >> 8), UInt8(callingTSAP & 0xFF)],
            calledTSAP: [UInt8(calledTSAP >> 8), UInt8(calledTSAP & 0xFF)]))
            .encodeFrame(into: &out)
        return out
    }

    /// The called TSAP for a PG connection (type 1) to rack and slot.
    public static func calledTSAP(rack: Int, slot: Int, connectionType: UInt8 = 0x01) -> UInt16 {
        UInt16(connectionType) << 8 | UInt16((rack & 0x07) * 32 + (slot & 0x1F))
    }

    public static func setupCommunication(pduReference: UInt16, pduSize: UInt16, maxAmQ: UInt16 = 1) -> [UInt8] {
        var out: [UInt8] = []
        var f = S7FrameBuilder(&out, rosctr: .job, pduReference: pduReference)
        out.append(contentsOf: [S7Function.setupCommunication.rawValue, 0x00])
        out.appendU16(maxAmQ)
        out.appendU16(maxAmQ)
        out.appendU16(pduSize)
        f.beginData(&out)
        f.finish(&out)
        return out
    }

    public static func readVar(pduReference: UInt16, _ specs: [S7VarSpec]) -> [UInt8] {
        var out: [UInt8] = []
        var f = S7FrameBuilder(&out, rosctr: .job, pduReference: pduReference)
        out.append(S7Function.readVar.rawValue)
        out.append(UInt8(truncatingIfNeeded: specs.count))
        for s in specs { s.encode(into: &out) }
        f.beginData(&out)
        f.finish(&out)
        return out
    }

    /// The first request for an SZL partial list.
    public static func readSZL(pduReference: UInt16, id: UInt16, index: UInt16) -> [UInt8] {
        var out: [UInt8] = []
        var f = S7FrameBuilder(&out, rosctr: .userData, pduReference: pduReference)
        S7UserDataParameters(method: 0x11, type: 0x4, group: S7UserDataGroup.cpuFunctions.rawValue, subfunction: 0x01, sequenceNumber: 0)
            .encode(into: &out)
        f.beginData(&out)
        out.append(contentsOf: [S7ReturnCode.success.rawValue, S7DataTransportSize.octetString.rawValue, 0x00, 0x04])
        out.appendU16(id)
        out.appendU16(index)
        f.finish(&out)
        return out
    }

    /// The follow-up request for the next data unit of a long SZL answer, as snap7 sends it:
    /// 12-byte parameters with the answer's sequence number, data `0A 00 00 00`.
    public static func readSZLFollowUp(pduReference: UInt16, sequenceNumber: UInt8) -> [UInt8] {
        var out: [UInt8] = []
        var f = S7FrameBuilder(&out, rosctr: .userData, pduReference: pduReference)
        S7UserDataParameters(method: 0x12, type: 0x4, group: S7UserDataGroup.cpuFunctions.rawValue, subfunction: 0x01,
                             sequenceNumber: sequenceNumber, dataUnitReference: 0, lastDataUnit: 0, errorCode: 0)
            .encode(into: &out)
        f.beginData(&out)
        out.append(contentsOf: [S7ReturnCode.objectDoesNotExist.rawValue, 0x00, 0x00, 0x00])
        f.finish(&out)
        return out
    }
}

// MARK: - Names

/// The meanings of the codes a CPU answers with, as Wireshark's s7comm dissector names them.
public enum S7ErrorText {
    /// Header error classes (the high byte of an ack's error word).
    public static func errorClass(_ c: UInt8) -> String {
        switch c {
        case 0x00: return "no error"
        case 0x81: return "application relationship error"
        case 0x82: return "object definition error"
        case 0x83: return "no resources available"
        case 0x84: return "error on service processing"
        case 0x85: return "error on supplies"
        case 0x87: return "access error"
        case 0xD2: return "block function error"
        case 0xD4: return "information function error"
        case 0xD6: return "security error"
        default: return "error class 0x" + hex(c)
        }
    }

    /// Header and userdata parameter error codes (class << 8 | code); nil for one not known here.
    public static func code(_ v: UInt16) -> String? {
        switch v {
        case 0x0000: return "no error"
        case 0x0110: return "invalid block number"
        case 0x0111: return "invalid request length"
        case 0x0112: return "invalid parameter"
        case 0x0113: return "invalid block type"
        case 0x0114: return "block not found"
        case 0x0115: return "block already exists"
        case 0x0116: return "block is write-protected"
        case 0x0119: return "incorrect password entered"
        case 0x011C: return "protocol error"
        case 0x011F: return "result buffer too small"
        case 0x0140: return "insufficient memory"
        case 0x0141: return "job cannot be processed (lack of resources)"
        case 0x8001: return "service cannot be performed while the block is in its current status"
        case 0x8100: return "service unknown to the remote module"
        case 0x8104: return "service not implemented on the module, or a frame error was reported"
        case 0x8204: return "type specification inconsistent"
        case 0x8301: return "insufficient memory"
        case 0x8302: return "too few resources"
        case 0x8305: return "function not available"
        case 0x8401: return "invalid service sequence"
        case 0x8402: return "service cannot execute owing to the status of the object"
        case 0x8404: return "the function cannot be performed"
        case 0x8500: return "wrong PDU size: the request or its answer does not fit the agreed PDU"
        case 0x8503: return "service cancelled prematurely"
        case 0x8701: return "error addressing the object (e.g. area length error)"
        case 0x8702: return "address invalid / service not supported by the module"
        case 0x8703: return "access to the object refused"
        case 0x8704: return "object damaged"
        case 0xD081: return "function not permitted in the current mode"
        case 0xD0A1: return "function not permitted in the current protection level"
        case 0xD201: return "syntax error in block name"
        case 0xD202: return "syntax error in function parameters"
        case 0xD209: return "one of the given blocks not found on the module"
        case 0xD20E: return "no (further) block available"
        case 0xD210: return "invalid block number"
        case 0xD240: return "coordination rules violated"
        case 0xD241: return "function not permitted in the current protection level"
        case 0xD401: return "information function unavailable (this SZL ID is not provided)"
        case 0xD402: return "information function unavailable (this SZL index is not provided)"
        case 0xD405: return "service not supported or syntax error"
        case 0xD406: return "required information currently unavailable"
        case 0xD601: return "syntax error in function parameter"
        case 0xD602: return "incorrect password entered"
        case 0xD603: return "connection already legitimized"
        case 0xD604: return "connection already enabled"
        case 0xD605: return "legitimization not possible because the password does not exist"
        case 0xDC01: return "date and/or time invalid"
        default: return nil
        }
    }

    /// `0x8104 (service not implemented on the module, ...)`: the code and what it means.
    public static func describe(_ v: UInt16) -> String {
        let h = "0x" + hex(UInt8(v >> 8)) + hex(UInt8(v & 0xFF))
        if let name = code(v) { return "\(h) (\(name))" }
        return "\(h) (\(errorClass(UInt8(v >> 8))))"
    }

    /// Read Var / Write Var item return codes.
    public static func returnCode(_ rc: UInt8) -> String {
        switch rc {
        case 0x00: return "reserved (no result)"
        case 0x01: return "hardware fault"
        case 0x03: return "access to the object not allowed"
        case 0x05: return "invalid address (out of range for this area or block)"
        case 0x06: return "data type not supported"
        case 0x07: return "data type inconsistent"
        case 0x0A: return "object does not exist (no such data block or area)"
        case 0xFF: return "success"
        default: return "return code 0x" + hex(rc)
        }
    }
}
