import Foundation
import Testing
@testable import S7Wire

/// The S7 PDU inside a single-frame answer (TPKT 4 + COTP DT 3 bytes stripped).
private func pdu(_ hex: String) -> ArraySlice<UInt8> { bytes(hex).dropFirst(7) }

// Answers s7commd sends (from Tests/S7SessionTests/Fixtures/frames/*.hex).
private let connectionConfirm = "03 00 00 16 11 D0 00 01 00 01 00 C0 01 0A C1 02 01 00 C2 02 01 01"
private let disconnect = "03 00 00 0B 06 80 00 01 00 01 80"
private let setup480 = "03 00 00 1B 02 F0 80 32 03 00 00 00 01 00 08 00 00 00 00 F0 00 00 01 00 01 01 E0"
private let setup240 = "03 00 00 1B 02 F0 80 32 03 00 00 00 01 00 08 00 00 00 00 F0 00 00 01 00 01 00 F0"
private let plcStopRefused = "03 00 00 14 02 F0 80 32 03 00 00 00 02 00 01 00 00 D2 41 29"
private let readMulti = """
    03 00 00 38 02 F0 80 32 03 00 00 00 02 00 02 00 23 00 00 04 05 FF 04 00 08 80 00 FF 04 00 18 47 4E 55 00 \
    FF 04 00 10 12 13 FF 03 00 01 00 00 FF 09 00 05 83 84 85 86 87
    """
private let szl0424 = """
    03 00 00 3D 02 F0 80 32 07 00 00 00 09 00 0C 00 20 00 01 12 08 12 84 01 00 00 00 00 00 FF 09 00 1C 04 24 00 00 \
    00 14 00 01 43 02 FF 08 00 00 00 00 00 00 00 00 24 03 15 13 45 56 78 96
    """
private let szlNotAvailable = "03 00 00 21 02 F0 80 32 07 00 00 00 0A 00 0C 00 04 00 01 12 08 12 84 01 00 00 00 D4 01 0A 00 00 00"
private let szl0011 = """
    03 00 00 7D 02 F0 80 32 07 00 00 00 03 00 0C 00 60 00 01 12 08 12 84 01 00 00 00 00 00 FF 09 00 5C 00 11 00 00 \
    00 1C 00 03 00 01 36 45 53 37 20 33 31 35 2D 32 45 48 31 34 2D 30 41 42 30 20 00 C0 00 04 00 01 00 06 36 45 53 \
    37 20 33 31 35 2D 32 45 48 31 34 2D 30 41 42 30 20 00 C0 00 04 00 01 00 07 20 20 20 20 20 20 20 20 20 20 20 20 \
    20 20 20 20 20 20 20 20 00 C0 56 03 02 06
    """

@Suite("Client: COTP answers")
struct COTPAnswerTests {
    @Test func connectionConfirm_() throws {
        guard case .confirmed(let p) = try COTPConnectAnswer.decode(frame: bytes(connectionConfirm)[...]) else {
            Issue.record("not a confirm")
            return
        }
        #expect(p.tpduSizeCode == 0x0A)
        #expect(p.callingTSAP == [0x01, 0x00])
        #expect(p.calledTSAP == [0x01, 0x01])
        #expect(p.rack == 0 && p.slot == 1)
    }

    @Test func disconnectIsARefusal() throws {
        #expect(try COTPConnectAnswer.decode(frame: bytes(disconnect)[...]) == .refused(reason: 0x80))
        #expect(COTPConnectAnswer.reasonText(0x02).contains("TSAP"))
        #expect(COTPConnectAnswer.reasonText(0x42) == "reason 0x42")
    }

    @Test func dataIsNotAnAnswerToConnect() {
        #expect(throws: S7WireError.self) { try COTPConnectAnswer.decode(frame: bytes(setup480)[...]) }
    }

    @Test func frameLengthMustMatch() {
        var b = bytes(connectionConfirm)
        b.append(0)
        #expect(throws: S7WireError.badTPKTLength(0x16)) { try COTPPDU.decodeFrame(b[...]) }
        #expect(throws: S7WireError.badTPKTVersion(0x47)) { try COTPPDU.decodeFrame(Array("GET / HTTP/1.0".utf8)[...]) }
    }

    @Test func truncatedAtEveryLengthThrows() {
        for frame in [connectionConfirm, disconnect] {
            let b = bytes(frame)
            for n in 0..<b.count {
                #expect(throws: S7WireError.self, "prefix \(n) of \(frame)") { try COTPConnectAnswer.decode(frame: b.prefix(n)) }
            }
        }
    }
}

@Suite("Client: S7 answers")
struct S7AnswerTests {
    @Test func setupCommunication() throws {
        let r = try S7ResponsePDU.decode(pdu(setup480))
        #expect(r.header.rosctr == S7ROSCTR.ackData.rawValue)
        #expect(r.header.pduReference == 1)
        #expect(r.headerError == nil)
        #expect(r.data.isEmpty)
        #expect(try S7SetupCommunicationAnswer.decode(parameters: r.parameters)
            == S7SetupCommunicationAnswer(maxAmQCalling: 1, maxAmQCalled: 1, pduSize: 480))
        let r240 = try S7ResponsePDU.decode(pdu(setup240))
        #expect(try S7SetupCommunicationAnswer.decode(parameters: r240.parameters).pduSize == 240)
    }

    @Test func setupAnswerWithWrongFunctionOrLength() {
        #expect(throws: S7WireError.self) { try S7SetupCommunicationAnswer.decode(parameters: bytes("04 00 00 01 00 01 01 E0")[...]) }
        #expect(throws: S7WireError.self) { try S7SetupCommunicationAnswer.decode(parameters: bytes("F0 00 00 01 00 01 01 E0 00")[...]) }
    }

    @Test func headerErrorIsNamed() throws {
        let r = try S7ResponsePDU.decode(pdu(plcStopRefused))
        #expect(r.headerError == .protectionViolation)
        #expect(S7ErrorText.describe(r.headerError!.value) == "0xD241 (function not permitted in the current protection level)")
        #expect(S7ErrorText.describe(0x8500).hasPrefix("0x8500 (wrong PDU size"))
        #expect(S7ErrorText.describe(0x87FF) == "0x87FF (access error)")
        #expect(S7ErrorText.describe(0x1234) == "0x1234 (error class 0x12)")
    }

    @Test func ackWithoutData() throws {
        // snap7's server refusing an upload: ROSCTR 2, 12-byte header only.
        let r = try S7ResponsePDU.decode(bytes("32 02 00 00 00 07 00 00 00 00 D2 41")[...])
        #expect(r.header.rosctr == S7ROSCTR.ack.rawValue)
        #expect(r.headerError?.value == 0xD241)
        #expect(r.parameters.isEmpty && r.data.isEmpty)
    }

    @Test func requestsAreNotAnswers() {
        #expect(throws: S7WireError.self) {
            try S7ResponsePDU.decode(bytes("32 01 00 00 00 01 00 08 00 00 F0 00 00 01 00 01 01 E0")[...])
        }
    }

    @Test func readVarItemsWithFillBytes() throws {
        let r = try S7ResponsePDU.decode(pdu(readMulti))
        let a = try S7ReadVarAnswer.decode(parameters: r.parameters, data: r.data)
        #expect(a.items.count == 5)
        #expect(a.items.map(\.returnCode) == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(a.items.map(\.transportSize) == [0x04, 0x04, 0x04, 0x03, 0x09])
        #expect(a.items.map { Array($0.data) } == [[0x80], [0x47, 0x4E, 0x55], [0x12, 0x13], [0x00], [0x83, 0x84, 0x85, 0x86, 0x87]])
    }

    @Test func readVarErrorItems() throws {
        // s7commd's error item (RC 00 00 00) and snap7's (RC 00 00 04, no data), then data.
        let a = try S7ReadVarAnswer.decode(
            parameters: bytes("04 03")[...], data: bytes("0A 00 00 00 05 00 00 04 FF 04 00 10 12 34")[...])
        #expect(a.items.map(\.returnCode) == [0x0A, 0x05, 0xFF])
        #expect(a.items[0].data.isEmpty && a.items[1].data.isEmpty)
        #expect(Array(a.items[2].data) == [0x12, 0x34])
        #expect(S7ErrorText.returnCode(0x0A).contains("does not exist"))
    }

    @Test func readVarTrailingFillAfterOddLastItemIsTolerated() throws {
        let a = try S7ReadVarAnswer.decode(parameters: bytes("04 01")[...], data: bytes("FF 03 00 01 01 00")[...])
        #expect(Array(a.items[0].data) == [0x01])
        #expect(throws: S7WireError.self) {
            try S7ReadVarAnswer.decode(parameters: bytes("04 01")[...], data: bytes("FF 03 00 01 01 00 00")[...])
        }
        #expect(throws: S7WireError.self) {
            try S7ReadVarAnswer.decode(parameters: bytes("05 01")[...], data: bytes("FF 03 00 01 01")[...])
        }
    }

    @Test func truncatedAtEveryLengthThrows() {
        for frame in [setup480, plcStopRefused, readMulti, szl0424, szlNotAvailable, szl0011] {
            let p = pdu(frame)
            for n in 0..<p.count {
                #expect(throws: S7WireError.self, "prefix \(n) of \(frame.prefix(40))") { try S7ResponsePDU.decode(p.prefix(n)) }
            }
        }
        // The parts, cut inside an otherwise valid header.
        let setup = bytes("F0 00 00 01 00 01 01 E0")
        for n in 0..<setup.count {
            #expect(throws: S7WireError.self) { try S7SetupCommunicationAnswer.decode(parameters: setup.prefix(n)) }
        }
        let r = try! S7ResponsePDU.decode(pdu(readMulti))
        for n in 0..<r.data.count {
            #expect(throws: S7WireError.self, "read data prefix \(n)") {
                try S7ReadVarAnswer.decode(parameters: r.parameters, data: r.data.prefix(n))
            }
        }
        for n in 0..<r.parameters.count {
            #expect(throws: S7WireError.self) { try S7ReadVarAnswer.decode(parameters: r.parameters.prefix(n), data: r.data) }
        }
        for frame in [szl0424, szlNotAvailable, szl0011] {
            let u = try! S7ResponsePDU.decode(pdu(frame))
            for n in 0..<u.parameters.count {
                #expect(throws: S7WireError.self) { try S7UserDataAnswer.decode(parameters: u.parameters.prefix(n), data: u.data) }
            }
            for n in 0..<u.data.count {
                #expect(throws: S7WireError.self) { try S7UserDataAnswer.decode(parameters: u.parameters, data: u.data.prefix(n)) }
            }
        }
    }
}

@Suite("Client: userdata and SZL answers")
struct UserDataAnswerTests {
    @Test func szlAnswer() throws {
        let a = try S7UserDataAnswer.decode(pdu: try S7ResponsePDU.decode(pdu(szl0424)))
        #expect(a.parameters.method == 0x12)
        #expect(a.parameters.type == 0x8 && a.parameters.group == 0x4 && a.parameters.subfunction == 0x01)
        #expect(a.parameters.sequenceNumber == 0 && a.parameters.dataUnitReference == 0 && a.parameters.lastDataUnit == 0)
        #expect(a.errorCode == nil && !a.moreFollows)
        #expect(a.returnCode == 0xFF && a.transportSize == 0x09)
        let list = try S7SZLList.decode(a.payload)
        #expect(list.id == 0x0424 && list.index == 0 && list.recordLength == 20 && list.records.count == 1)
        #expect(list.records[0][list.records[0].startIndex + 3] == 0x08)  // RUN
    }

    @Test func szlNotAvailableCarriesTheErrorCode() throws {
        let a = try S7UserDataAnswer.decode(pdu: try S7ResponsePDU.decode(pdu(szlNotAvailable)))
        #expect(a.errorCode == 0xD401)
        #expect(a.returnCode == 0x0A && a.transportSize == 0 && a.payload.isEmpty)
        #expect(S7ErrorText.describe(0xD401).contains("information function unavailable"))
    }

    @Test func continuationFragment() throws {
        // s7commd at PDU 240: the first fragment of SZL 0x001C announces more (last data unit 0x01).
        let params = bytes("00 01 12 08 12 84 01 01 01 01 00 00")
        let a = try S7UserDataAnswer.decode(parameters: params[...], data: bytes("FF 09 00 02 00 1C")[...])
        #expect(a.moreFollows)
        #expect(a.parameters.sequenceNumber == 1 && a.parameters.dataUnitReference == 1)
    }

    @Test func requestParametersAreNotAnAnswer() {
        #expect(throws: S7WireError.self) {
            try S7UserDataAnswer.decode(parameters: bytes("00 01 12 04 11 44 01 00")[...], data: bytes("FF 09 00 00")[...])
        }
    }

    @Test func moduleIdentification() throws {
        let a = try S7UserDataAnswer.decode(pdu: try S7ResponsePDU.decode(pdu(szl0011)))
        let list = try S7SZLList.decode(a.payload)
        #expect(list.id == 0x0011 && list.recordLength == 28 && list.announcedCount == 3 && !list.isTruncated)
        #expect(S7SZLList.text(list.record(index: 1)!, offset: 2, length: 20) == "6ES7 315-2EH14-0AB0")
        let fw = Array(list.record(index: 7)!.suffix(4))
        #expect(fw == [0x56, 3, 2, 6])
        #expect(list.record(index: 9) == nil)
    }

    @Test func truncatedListKeepsWholeRecords() throws {
        // snap7's server cuts long lists to one PDU but keeps N_DR: decode what is there.
        let b = bytes("00 1C 00 00 00 04 00 03 00 01 41 42 00 02 43")
        let list = try S7SZLList.decode(b[...])
        #expect(list.records.count == 1 && list.announcedCount == 3 && list.isTruncated)
        #expect(S7SZLList.text(list.records[0], offset: 2, length: 2) == "AB")
        for n in 0..<8 { #expect(throws: S7WireError.self) { try S7SZLList.decode(b.prefix(n)) } }
        for n in 8...b.count { _ = try S7SZLList.decode(b.prefix(n)) }
        // Zero-length records do not loop.
        #expect(try S7SZLList.decode(bytes("00 11 00 00 00 00 FF FF")[...]).records.isEmpty)
    }

    @Test func textIsCutAtNULAndTrimmed() {
        let rec = bytes("00 01 20 41 42 20 00 43")[...]
        #expect(S7SZLList.text(rec, offset: 2, length: 6) == "AB")
        #expect(S7SZLList.text(rec, offset: 2, length: 100) == "AB")
        #expect(S7SZLList.text(rec, offset: 50, length: 4) == "")
        #expect(S7SZLList.text(bytes("00 01 C3 A9 07")[...], offset: 2, length: 3) == "???")
    }
}

@Suite("Client: requests")
struct ClientRequestTests {
    // What snap7's client sends, as in the session fixtures.
    @Test func connect() {
        #expect(S7ClientRequest.connect(callingTSAP: 0x0100, calledTSAP: S7ClientRequest.calledTSAP(rack: 0, slot: 1))
            == bytes("03 00 00 16 11 E0 00 00 00 01 00 C0 01 0A C1 02 01 00 C2 02 01 01"))
        #expect(S7ClientRequest.calledTSAP(rack: 1, slot: 3) == 0x0123)
        #expect(S7ClientRequest.calledTSAP(rack: 7, slot: 31) == 0x01FF)
    }

    @Test func setupCommunication() {
        #expect(S7ClientRequest.setupCommunication(pduReference: 1, pduSize: 480)
            == bytes("03 00 00 19 02 F0 80 32 01 00 00 00 01 00 08 00 00 F0 00 00 01 00 01 01 E0"))
    }

    @Test func readSZLAndFollowUp() {
        #expect(S7ClientRequest.readSZL(pduReference: 3, id: 0x0011, index: 0)
            == bytes("03 00 00 21 02 F0 80 32 07 00 00 00 03 00 08 00 08 00 01 12 04 11 44 01 00 FF 09 00 04 00 11 00 00"))
        #expect(S7ClientRequest.readSZLFollowUp(pduReference: 0x0D, sequenceNumber: 1)
            == bytes("03 00 00 21 02 F0 80 32 07 00 00 00 0D 00 0C 00 04 00 01 12 08 12 44 01 01 00 00 00 00 0A 00 00 00"))
    }

    @Test func readVar() {
        let spec = S7VarSpec(transportSize: 0x01, count: 1, dbNumber: 0, area: 0x81, address: 0x14)
        #expect(S7ClientRequest.readVar(pduReference: 2, [spec])
            == bytes("03 00 00 1F 02 F0 80 32 01 00 00 00 02 00 0E 00 00 04 01 12 0A 10 01 00 01 00 00 81 00 00 14"))
    }
}

@Suite("Client: every answer s7commd sends decodes")
struct FixtureAnswerTests {
    static let framesDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("S7SessionTests/Fixtures/frames")

    /// Splits a line of answer bytes into TPKT frames.
    static func frames(_ b: [UInt8]) -> [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        var i = 0
        while i + 4 <= b.count {
            let n = Int(b[i + 2]) << 8 | Int(b[i + 3])
            guard n >= 4, i + n <= b.count else { break }
            out.append(b[i..<i + n])
            i += n
        }
        return out
    }

    @Test func allFixtureAnswers() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.framesDirectory.path).filter { $0.hasSuffix(".hex") }
        #expect(files.count >= 10)
        var decoded = 0
        for file in files {
            let text = try String(contentsOf: Self.framesDirectory.appendingPathComponent(file), encoding: .utf8)
            for line in text.split(separator: "\n") where line.hasPrefix("<") {
                var pduBytes: [UInt8] = []
                for frame in Self.frames(bytes(String(line.dropFirst()))) {
                    switch try COTPPDU.decodeFrame(frame) {
                    case .connectionConfirm:
                        _ = try COTPConnectAnswer.decode(frame: frame)
                    case .data(let eot, let payload):
                        pduBytes += payload
                        guard eot else { continue }
                        let r = try S7ResponsePDU.decode(pduBytes[...])
                        if r.header.rosctr == S7ROSCTR.userData.rawValue {
                            let u = try S7UserDataAnswer.decode(pdu: r)
                            if u.returnCode == 0xFF, u.payload.count >= 8, u.parameters.lastDataUnit == 0, u.parameters.sequenceNumber == 0 {
                                _ = try S7SZLList.decode(u.payload)
                            }
                        } else if r.headerError == nil, r.parameters.first == S7Function.readVar.rawValue {
                            _ = try S7ReadVarAnswer.decode(parameters: r.parameters, data: r.data)
                        } else if r.headerError == nil, r.parameters.first == S7Function.setupCommunication.rawValue {
                            _ = try S7SetupCommunicationAnswer.decode(parameters: r.parameters)
                        }
                        // Every shorter prefix of the PDU is refused, never a trap.
                        for n in 0..<pduBytes.count {
                            #expect(throws: S7WireError.self, "\(file): prefix \(n)") { try S7ResponsePDU.decode(pduBytes.prefix(n)) }
                        }
                        pduBytes = []
                        decoded += 1
                    default:
                        break
                    }
                }
            }
        }
        #expect(decoded > 50)
    }
}

@Suite("Client: arbitrary bytes")
struct ResponseFuzzTests {
    /// Deterministic pseudo-random bytes into every decoder: each answer decodes or throws.
    @Test func randomInputNeverTraps() {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt8 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
        let seeds = [setup480, readMulti, szl0424, szl0011, connectionConfirm].map { bytes($0) }
        for round in 0..<4000 {
            var b = seeds[round % seeds.count]
            // Flip a few bytes, sometimes cut.
            for _ in 0..<(1 + round % 4) { b[Int(next()) % b.count] = next() }
            if round % 3 == 0 { b = Array(b.prefix(Int(next()) % (b.count + 1))) }
            _ = try? COTPPDU.decodeFrame(b[...])
            _ = try? COTPConnectAnswer.decode(frame: b[...])
            let p = b.dropFirst(min(7, b.count))
            if let r = try? S7ResponsePDU.decode(p) {
                _ = try? S7SetupCommunicationAnswer.decode(parameters: r.parameters)
                _ = try? S7ReadVarAnswer.decode(parameters: r.parameters, data: r.data)
                if let u = try? S7UserDataAnswer.decode(pdu: r) { _ = try? S7SZLList.decode(u.payload) }
            }
            _ = try? S7ReadVarAnswer.decode(parameters: p.prefix(2), data: p.dropFirst(2))
            _ = try? S7UserDataAnswer.decode(parameters: p.prefix(12), data: p.dropFirst(12))
            _ = try? S7SZLList.decode(p)
        }
    }
}
