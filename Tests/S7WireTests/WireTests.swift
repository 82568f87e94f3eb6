import Testing
@testable import S7Wire

func bytes(_ hex: String) -> [UInt8] {
    let d = Array(hex.filter { $0.isHexDigit })
    return stride(from: 0, to: d.count, by: 2).map { UInt8(String(d[$0...$0 + 1]), radix: 16)! }
}

func header(_ length: Int) -> [UInt8] { [3, 0, UInt8(length >> 8), UInt8(length & 0xFF)] }

@Suite("TPKT")
struct TPKTTests {
    @Test func minimumFrameLength() throws {
        let n = S7Limits.minimumFrameLength
        #expect(try TPKT.peek(header(n)[...]) == .frame(length: n))
        #expect(throws: S7WireError.badTPKTLength(n - 1)) { try TPKT.peek(header(n - 1)[...]) }
    }

    @Test func maximumFrameLength() throws {
        let n = S7Limits.maximumFrameLength
        #expect(n == 1028)
        #expect(try TPKT.peek(header(n)[...]) == .frame(length: n))
        #expect(throws: S7WireError.badTPKTLength(n + 1)) { try TPKT.peek(header(n + 1)[...]) }
    }

    @Test func shortHeaderAndVersion() throws {
        #expect(try TPKT.peek([3, 0, 0][...]) == .needMoreHeader)
        #expect(throws: S7WireError.badTPKTVersion(0x47)) { try TPKT.peek(Array("GET ".utf8)[...]) }
        #expect(S7WireError.badTPKTVersion(0x47).description == "not an ISO-on-TCP frame: TPKT version byte is 0x47, expected 0x03")
    }

    @Test func peekOnASliceWithOffset() throws {
        let stream: [UInt8] = [9, 9] + header(20)
        #expect(try TPKT.peek(stream[2...]) == .frame(length: 20))
    }

    @Test func beginFinishPatchesLength() {
        var out: [UInt8] = [0xEE]
        let start = TPKT.begin(&out)
        out += [1, 2, 3]
        TPKT.finish(&out, start: start)
        #expect(out == [0xEE, 3, 0, 0, 7, 1, 2, 3])
    }
}

@Suite("COTP")
struct COTPTests {
    static let snap7CR = bytes("03 00 00 16 11 E0 00 00 00 01 00 C0 01 0A C1 02 01 00 C2 02 01 01")

    @Test func decodesSnap7ConnectionRequest() throws {
        guard case .connectionRequest(let p) = try COTPPDU.decode(Self.snap7CR.dropFirst(4)) else {
            Issue.record("not a CR")
            return
        }
        #expect(p.destinationReference == 0)
        #expect(p.sourceReference == 1)
        #expect(p.tpduSizeCode == 0x0A)
        #expect(p.callingTSAP == [0x01, 0x00])
        #expect(p.calledTSAP == [0x01, 0x01])
        #expect(p.connectionType == 1 && p.rack == 0 && p.slot == 1)
    }

    @Test func rackAndSlotFromTSAP() {
        let p = COTPConnectionParameters(destinationReference: 0, sourceReference: 1, calledTSAP: [0x03, 0x45])
        #expect(p.connectionType == 3 && p.rack == 2 && p.slot == 5)
        let odd = COTPConnectionParameters(destinationReference: 0, sourceReference: 1, calledTSAP: [0x03, 0x45, 0x00])
        #expect(odd.rack == nil && odd.slot == nil && odd.connectionType == nil)
    }

    @Test func encodesConnectionConfirm() {
        var out: [UInt8] = []
        COTPPDU.connectionConfirm(COTPConnectionParameters(destinationReference: 1, sourceReference: 1, tpduSizeCode: 0x0A,
                                                          callingTSAP: [1, 0], calledTSAP: [1, 2])).encodeFrame(into: &out)
        #expect(out == bytes("03 00 00 16 11 D0 00 01 00 01 00 C0 01 0A C1 02 01 00 C2 02 01 02"))
    }

    /// A CR whose calling TSAP has `length` bytes.
    func cr(tsapLength length: Int) -> [UInt8] {
        let params: [UInt8] = [0xC1, UInt8(length)] + [UInt8](repeating: 0x01, count: length) + [0xC2, 2, 1, 1]
        let cotp: [UInt8] = [UInt8(6 + params.count), 0xE0, 0, 0, 0, 1, 0] + params
        return cotp
    }

    @Test func tsapLengthLimit() throws {
        let n = S7Limits.maximumTSAPLength
        guard case .connectionRequest(let p) = try COTPPDU.decode(cr(tsapLength: n)[...]) else {
            Issue.record("not a CR")
            return
        }
        #expect(p.callingTSAP?.count == n)
        #expect(throws: S7WireError.badCOTPParameter(0xC1)) { try COTPPDU.decode(cr(tsapLength: n + 1)[...]) }
        #expect(throws: S7WireError.badCOTPParameter(0xC1)) { try COTPPDU.decode(cr(tsapLength: 0)[...]) }
    }

    @Test func tpduSizeCodes() {
        #expect(COTPConnectionParameters.tpduSize(code: 0x06) == nil)
        #expect(COTPConnectionParameters.tpduSize(code: 0x07) == 128)
        #expect(COTPConnectionParameters.tpduSize(code: S7Limits.maximumTPDUSizeCode) == S7Limits.maximumTPDUSize)
        #expect(COTPConnectionParameters.tpduSize(code: 0x0D) == 8192)
        #expect(COTPConnectionParameters.tpduSize(code: 0x0E) == nil)
    }

    @Test func dataTPDU() throws {
        #expect(try COTPPDU.decode(bytes("02 F0 80 32 01")[...]) == .data(endOfTransmission: true, payload: [0x32, 0x01][...]))
        #expect(try COTPPDU.decode(bytes("02 F0 00")[...]) == .data(endOfTransmission: false, payload: [][...]))
        #expect(throws: S7WireError.badCOTPLength(3)) { try COTPPDU.decode(bytes("03 F0 80 00 00")[...]) }
    }

    @Test func disconnect() throws {
        #expect(try COTPPDU.decode(bytes("06 80 00 01 00 03 00")[...]) == .disconnectRequest(destinationReference: 1, sourceReference: 3, reason: 0))
        var out: [UInt8] = []
        COTPPDU.disconnectConfirm(destinationReference: 3, sourceReference: 1).encodeFrame(into: &out)
        #expect(out == bytes("03 00 00 0A 05 C0 00 03 00 01"))
        #expect(try COTPPDU.decode(out.dropFirst(4)) == .disconnectConfirm(destinationReference: 3, sourceReference: 1))
    }

    @Test func malformedTPDUs() {
        #expect(throws: S7WireError.badCOTPLength(1)) { try COTPPDU.decode(bytes("01 F0 80")[...]) }
        #expect(throws: S7WireError.badCOTPLength(9)) { try COTPPDU.decode(bytes("09 F0 80")[...]) }
        #expect(throws: S7WireError.unknownTPDU(0x50)) { try COTPPDU.decode(bytes("02 50 80")[...]) }
        // A parameter running past the length indicator.
        #expect(throws: S7WireError.badCOTPParameter(0xC2)) { try COTPPDU.decode(bytes("08 E0 00 00 00 01 00 C2 05 01")[...]) }
        #expect(throws: S7WireError.badCOTPParameter(0xC0)) { try COTPPDU.decode(bytes("0A E0 00 00 00 01 00 C0 02 0A 0A")[...]) }
    }
}

@Suite("S7 PDUs")
struct S7PDUTests {
    func readPDU(items: Int, countByte: Int? = nil) -> [UInt8] {
        let item = bytes("12 0A 10 02 00 01 00 00 83 00 00 00")
        let params: [UInt8] = [0x04, UInt8(countByte ?? items)] + (0..<items).flatMap { _ in item }
        return [0x32, 1, 0, 0, 0, 1, UInt8(params.count >> 8), UInt8(params.count & 0xFF), 0, 0] + params
    }

    @Test func itemCountLimit() throws {
        let n = S7Limits.maximumVarItems
        #expect(n == 255)
        guard case .readVar(let specs) = try S7RequestPDU.decode(readPDU(items: n)[...]).request else {
            Issue.record("not a read")
            return
        }
        #expect(specs.count == n)
        // N+1 = 256 does not fit the count byte: it wraps to 0, which is refused.
        #expect(throws: S7WireError.self) { try S7RequestPDU.decode(self.readPDU(items: n + 1, countByte: (n + 1) & 0xFF)[...]) }
        #expect(throws: S7WireError.self) { try S7RequestPDU.decode(self.readPDU(items: 2, countByte: 3)[...]) }
    }

    @Test func setupCommunication() throws {
        let pdu = try S7RequestPDU.decode(bytes("32 01 00 00 12 34 00 08 00 00 F0 00 00 01 00 01 01 E0")[...])
        #expect(pdu.header.pduReference == 0x1234)
        #expect(pdu.request == .setupCommunication(maxAmQCalling: 1, maxAmQCalled: 1, pduSize: 480))
        #expect(throws: S7WireError.self) { try S7RequestPDU.decode(bytes("32 01 00 00 12 34 00 07 00 00 F0 00 00 01 00 01 01")[...]) }
    }

    @Test func headerChecks() {
        #expect(throws: S7WireError.badProtocolID(0x33)) { try S7Header.decode(bytes("33 01 00 00 00 01 00 00 00 00")[...]) }
        #expect(throws: S7WireError.lengthMismatch(declared: 12, actual: 10)) { try S7Header.decode(bytes("32 01 00 00 00 01 00 02 00 00")[...]) }
        #expect(throws: S7WireError.unknownROSCTR(3)) { try S7RequestPDU.decode(bytes("32 03 00 00 00 01 00 00 00 00 00 00")[...]) }
        var out: [UInt8] = []
        S7Header(rosctr: 3, pduReference: 5, parameterLength: 2, dataLength: 4, error: .incorrectPDUSize).encode(into: &out)
        #expect(out == bytes("32 03 00 00 00 05 00 02 00 04 85 00"))
    }

    @Test func writeVarItemsWithFillBytes() throws {
        let items = bytes("12 0A 10 02 00 01 00 00 83 00 00 00 12 0A 10 02 00 01 00 00 83 00 00 08")
        let data = bytes("00 04 00 08 AA 00 00 04 00 08 BB")
        let params: [UInt8] = [0x05, 0x02] + items
        let pdu: [UInt8] = [0x32, 1, 0, 0, 0, 1, 0, UInt8(params.count), 0, UInt8(data.count)] + params + data
        guard case .writeVar(let specs, let values) = try S7RequestPDU.decode(pdu[...]).request else {
            Issue.record("not a write")
            return
        }
        #expect(specs.count == 2 && specs[1].address == 8)
        #expect(values.map { Array($0.data) } == [[0xAA], [0xBB]])
        // One fill byte after the last odd-length item is tolerated (some clients pad every item) ...
        let padded: [UInt8] = [0x32, 1, 0, 0, 0, 1, 0, UInt8(params.count), 0, UInt8(data.count + 1)] + params + data + [0]
        guard case .writeVar(_, let paddedValues) = try S7RequestPDU.decode(padded[...]).request else {
            Issue.record("padded write not decoded")
            return
        }
        #expect(paddedValues.map { Array($0.data) } == [[0xAA], [0xBB]])
        // ... but two bytes after the last item are not.
        let overlong: [UInt8] = [0x32, 1, 0, 0, 0, 1, 0, UInt8(params.count), 0, UInt8(data.count + 2)] + params + data + [0, 0]
        #expect(throws: S7WireError.malformed("Write Var carries 2 bytes after its 2 data items")) { try S7RequestPDU.decode(overlong[...]) }
    }

    @Test func userDataParameters() throws {
        let first = try S7RequestPDU.decode(bytes("32 07 00 00 00 01 00 08 00 08 00 01 12 04 11 44 01 00 FF 09 00 04 00 11 00 00")[...])
        guard case .userData(let p, let rc, let ts, let payload) = first.request else {
            Issue.record("not userdata")
            return
        }
        #expect(p == S7UserDataParameters(method: 0x11, type: 4, group: 4, subfunction: 1, sequenceNumber: 0))
        #expect(rc == 0xFF && ts == 0x09 && Array(payload) == [0, 0x11, 0, 0])
        let follow = try S7RequestPDU.decode(bytes("32 07 00 00 00 02 00 0C 00 04 00 01 12 08 12 44 01 03 00 00 00 00 0A 00 00 00")[...])
        guard case .userData(let q, _, _, let empty) = follow.request else {
            Issue.record("not userdata")
            return
        }
        #expect(q.sequenceNumber == 3 && q.dataUnitReference == 0 && q.lastDataUnit == 0 && q.errorCode == 0)
        #expect(empty.isEmpty)
        #expect(throws: S7WireError.self) { try S7RequestPDU.decode(bytes("32 07 00 00 00 02 00 08 00 04 00 01 12 05 11 44 01 00 0A 00 00 00")[...]) }
        var out: [UInt8] = []
        q.encode(into: &out)
        #expect(out == bytes("00 01 12 08 12 44 01 03 00 00 00 00"))
    }

    @Test func transportSizes() {
        let expected: [(S7TransportSize, Int, S7DataTransportSize)] = [
            (.bit, 1, .bit), (.byte, 1, .byteWordDWord), (.char, 1, .octetString), (.word, 2, .byteWordDWord),
            (.int, 2, .integer), (.dword, 4, .byteWordDWord), (.dint, 4, .integer), (.real, 4, .real),
            (.counter, 2, .octetString), (.timer, 2, .octetString),
        ]
        for (ts, size, response) in expected {
            #expect(ts.elementSize == size)
            #expect(ts.responseTransportSize == response)
        }
        #expect(S7DataTransportSize.byteWordDWord.byteCount(length: 24) == 3)
        #expect(S7DataTransportSize.bit.byteCount(length: 1) == 1)
        #expect(S7DataTransportSize.real.byteCount(length: 4) == 4)
        #expect(S7DataTransportSize.octetString.byteCount(length: 5) == 5)
    }

    @Test func frameBuilder() {
        var out: [UInt8] = []
        var f = S7FrameBuilder(&out, rosctr: .ackData, pduReference: 9, error: S7HeaderError(errorClass: 0, code: 0))
        out += [0x04, 0x01]
        f.beginData(&out)
        out += [0xFF, 0x04, 0x00, 0x08, 0x42]
        f.finish(&out)
        #expect(out == bytes("03 00 00 1A 02 F0 80 32 03 00 00 00 09 00 02 00 05 00 00 04 01 FF 04 00 08 42"))
    }

    @Test func readerNeverTraps() throws {
        var r = ByteReader([1, 2, 3][...])
        #expect(try r.u24() == 0x010203)
        #expect(throws: S7WireError.truncated("byte")) { try r.u8() }
        var s = ByteReader([1][...])
        #expect(throws: S7WireError.self) { try s.u16() }
        #expect(throws: S7WireError.self) { try s.take(-1) }
        #expect(try s.take(1) == [1][...])
    }
}
