import Testing
@testable import S7Wire

/// The decoders the server and `s7commd probe` share: one TPKT header decoder, one data item
/// list decoder and one userdata decoder, parameterised by direction where the rules differ.
@Suite("Shared decoders")
struct SharedDecoderTests {
    // MARK: TPKT

    @Test func tpduOfAWholeFrame() throws {
        let frame = bytes("03 00 00 07 02 F0 80")
        #expect(Array(try TPKT.tpdu(ofFrame: frame[...])) == [0x02, 0xF0, 0x80])
        for n in 0..<S7Limits.tpktHeaderLength {
            #expect(throws: S7WireError.truncated("TPKT header")) { try TPKT.tpdu(ofFrame: frame.prefix(n)) }
        }
        // A frame cut short, or with a byte beyond its declared length, is not one whole frame.
        #expect(throws: S7WireError.badTPKTLength(7)) { try TPKT.tpdu(ofFrame: frame.prefix(6)) }
        #expect(throws: S7WireError.badTPKTLength(7)) { try TPKT.tpdu(ofFrame: (frame + [0])[...]) }
    }

    @Test func maximumFrameLengthIsAParameter() throws {
        // The server's limit by default (N accepted, N + 1 refused), a client's when it asks.
        let n = S7Limits.maximumFrameLength
        #expect(throws: S7WireError.badTPKTLength(n + 1)) { try TPKT.peek(header(n + 1)[...]) }
        #expect(try TPKT.peek(header(n + 1)[...], maximumFrameLength: TPKT.largestFrameLength) == .frame(length: n + 1))
        #expect(try TPKT.peek(header(0xFFFF)[...], maximumFrameLength: TPKT.largestFrameLength) == .frame(length: 0xFFFF))
        #expect(throws: S7WireError.badTPKTLength(S7Limits.minimumFrameLength - 1)) {
            try TPKT.peek(header(S7Limits.minimumFrameLength - 1)[...], maximumFrameLength: TPKT.largestFrameLength)
        }
        // decodeFrame is the client's: a frame longer than s7commd sends is still read.
        let long = header(n + 4) + [0x02, 0xF0, 0x80] + [UInt8](repeating: 0x55, count: n - 3)
        guard case .data(let eot, let payload) = try COTPPDU.decodeFrame(long[...]) else {
            Issue.record("not a data TPDU")
            return
        }
        #expect(eot && payload.count == n - 3)
    }

    // MARK: Data items

    @Test func dataItemsEitherWay() throws {
        // Byte 0xAA (odd, so a fill byte), then a word: the same bytes decode the same either way.
        let data = bytes("FF 04 00 08 AA 00 FF 04 00 10 12 34")
        for direction in [S7Direction.request, .response] {
            let items = try S7DataItem.decodeList(data[...], count: 2, direction: direction)
            #expect(items.map { Array($0.data) } == [[0xAA], [0x12, 0x34]])
            #expect(items.map(\.length) == [8, 16])
        }
    }

    @Test func aFailedItemCarriesDataOnlyInARequest() throws {
        // snap7 answers a failed item with length 4 and no data; in Write Var data the return
        // code is not read, so the length counts.
        let data = bytes("05 00 00 04 FF 04 00 08 AA")
        let answer = try S7DataItem.decodeList(data[...], count: 2, direction: .response)
        #expect(answer.map(\.returnCode) == [0x05, 0xFF])
        #expect(answer[0].data.isEmpty && Array(answer[1].data) == [0xAA])
        #expect(throws: S7WireError.self) { try S7DataItem.decodeList(data[...], count: 2, direction: .request) }
        let write = try S7DataItem.decodeList(bytes("00 04 00 08 AA")[...], count: 1, direction: .request)
        #expect(Array(write[0].data) == [0xAA])
    }

    @Test func truncatedDataItemsThrowEveryWhere() {
        let data = bytes("FF 04 00 08 AA 00 FF 04 00 10 12 34")
        for direction in [S7Direction.request, .response] {
            for n in 0..<data.count {
                #expect(throws: S7WireError.self, "\(direction) prefix \(n)") {
                    try S7DataItem.decodeList(data.prefix(n), count: 2, direction: direction)
                }
            }
        }
        // A missing fill byte between items is named as such.
        #expect(throws: S7WireError.truncated("fill byte")) {
            try S7DataItem.decodeList(bytes("FF 04 00 08 AA")[...], count: 2, direction: .request)
        }
        // A length far beyond the data is truncation, not a trap.
        #expect(throws: S7WireError.truncated("data item")) {
            try S7DataItem.decodeList(bytes("00 09 FF FF 01")[...], count: 1, direction: .request)
        }
    }

    @Test func oneFillByteAfterTheLastItemAndNoMore() throws {
        let odd = bytes("FF 04 00 08 AA")
        for direction in [S7Direction.request, .response] {
            #expect(try S7DataItem.decodeList((odd + [0])[...], count: 1, direction: direction).count == 1)
        }
        #expect(throws: S7WireError.malformed("Write Var carries 2 bytes after its 1 data items")) {
            try S7DataItem.decodeList((odd + [0, 0])[...], count: 1, direction: .request)
        }
        #expect(throws: S7WireError.malformed("Read Var answer carries 2 bytes after its 1 data items")) {
            try S7DataItem.decodeList((odd + [0, 0])[...], count: 1, direction: .response)
        }
        // No fill byte after an even last item.
        #expect(throws: S7WireError.malformed("Read Var answer carries 1 bytes after its 1 data items")) {
            try S7DataItem.decodeList(bytes("FF 04 00 10 12 34 00")[...], count: 1, direction: .response)
        }
    }

    // MARK: Userdata

    private let request = bytes("00 01 12 04 11 44 01 00")
    private let followUp = bytes("00 01 12 08 12 44 01 03 00 00 00 00")
    private let answer = bytes("00 01 12 08 12 84 01 05 05 01 D4 01")

    @Test func userDataEitherWay() throws {
        let r = try S7UserData.decode(parameters: request[...], data: bytes("FF 09 00 04 00 11 00 00")[...], direction: .request)
        #expect(r.parameters == S7UserDataParameters(method: 0x11, type: 4, group: 4, subfunction: 1, sequenceNumber: 0))
        #expect(r.returnCode == 0xFF && r.transportSize == 0x09 && Array(r.payload) == [0, 0x11, 0, 0])
        let f = try S7UserData.decode(parameters: followUp[...], data: bytes("0A 00 00 00")[...], direction: .request)
        #expect(f.parameters.sequenceNumber == 3 && f.parameters.dataUnitReference == 0 && f.payload.isEmpty)
        let a = try S7UserData.decode(parameters: answer[...], data: bytes("0A 00 00 00")[...], direction: .response)
        #expect(a.parameters.type == 8 && a.parameters.sequenceNumber == 5)
        #expect(a.parameters.dataUnitReference == 5 && a.moreFollows && a.errorCode == 0xD401)
        // The client's name for it decodes with the answer's rules.
        #expect(try S7UserDataAnswer.decode(parameters: answer[...], data: bytes("0A 00 00 00")[...]) == a)
    }

    @Test func anAnswerHasTheLongParameterBlock() {
        #expect(throws: S7WireError.malformed("userdata answer parameter is 8 bytes; an answer has 12 (with error code)")) {
            try S7UserData.decode(parameters: self.request[...], data: bytes("FF 09 00 00")[...], direction: .response)
        }
    }

    @Test func truncatedOrOversizedUserDataThrows() {
        let data = bytes("FF 09 00 04 00 11 00 00")
        for direction in [S7Direction.request, .response] {
            let params = direction == .request ? request : answer
            for n in 0..<params.count {
                #expect(throws: S7WireError.self, "\(direction) parameters prefix \(n)") {
                    try S7UserData.decode(parameters: params.prefix(n), data: data[...], direction: direction)
                }
            }
            for n in 0..<data.count {
                #expect(throws: S7WireError.self, "\(direction) data prefix \(n)") {
                    try S7UserData.decode(parameters: params[...], data: data.prefix(n), direction: direction)
                }
            }
            #expect(throws: S7WireError.malformed("userdata data length 4 does not match its 5 bytes")) {
                try S7UserData.decode(parameters: params[...], data: (data + [0])[...], direction: direction)
            }
            #expect(throws: S7WireError.malformed("userdata parameter length 4 does not match its 5 bytes")) {
                try S7UserData.decode(parameters: (request + [0])[...], data: data[...], direction: direction)
            }
        }
        #expect(throws: S7WireError.malformed("userdata parameter head is not 00 01 12")) {
            try S7UserData.decode(parameters: bytes("00 01 13 04 11 44 01 00")[...], data: data[...], direction: .request)
        }
    }

    // MARK: S7 request with its header

    @Test func requestDecodedWithItsHeader() throws {
        let pdu = bytes("32 01 00 00 12 34 00 08 00 00 F0 00 00 01 00 01 01 E0")
        let header = try S7Header.decode(pdu[...])
        #expect(try S7RequestPDU.decode(pdu[...], header: header) == S7RequestPDU.decode(pdu[...]))
        // A header that is not these bytes' is refused, not trusted.
        #expect(throws: S7WireError.lengthMismatch(declared: 18, actual: 17)) {
            try S7RequestPDU.decode(pdu.dropLast(), header: header)
        }
    }
}
