import Foundation
import PLCMemory
import S7Session
import S7Wire
import Testing

/// Replays every Fixtures/frames/*.hex script and compares each answer byte for byte with the
/// expected frames (computed independently by make_fixtures.py from the protocol notes).
@Suite("Byte fixtures")
struct FrameFixtureTests {
    @Test func fixturesArePresent() {
        let names = Set(Fixtures.scripts.map(\.name))
        for required in ["cotp_pg_slot1", "cotp_pg_slot2", "cotp_op_slot1", "cotp_basic_rack1_slot3", "cotp_segmented",
                         "setup_pdu240", "setup_pdu480", "setup_pdu960", "read_types", "read_multi", "write_multi",
                         "pdu_limits", "jobs_refused", "userdata_szl", "userdata_szl_pdu240"] {
            #expect(names.contains(required), "missing fixture frames/\(required).hex")
        }
        #expect(Fixtures.scripts.allSatisfy { !$0.steps.isEmpty })
    }

    @Test("each request answered exactly", arguments: Fixtures.scripts)
    func replay(_ script: FixtureScript) {
        let exchanges = run(script)
        for (step, exchange) in zip(script.steps, exchanges) {
            let expected = step.responses.flatMap { $0 }
            #expect(hex(exchange.response) == hex(expected), "\(script.name): \(step.name)")
            if step.closes {
                #expect(exchange.outcome != .open, "\(script.name): \(step.name) must close")
            } else {
                #expect(exchange.outcome == .open, "\(script.name): \(step.name) must keep the connection")
            }
        }
    }

    @Test("one piece, byte by byte and random splits give the same answers", arguments: Fixtures.scripts)
    func splits(_ script: FixtureScript) {
        let stream = script.clientStream
        let expected = hex(script.expectedStream)
        let closes = script.steps.last?.closes ?? false
        let whole = feed(stream, pdu: script.pdu, chunks: [stream.count])
        #expect(hex(whole.out) == expected, "\(script.name) in one piece")
        #expect(whole.closed == closes)
        let single = feed(stream, pdu: script.pdu, chunks: [1])
        #expect(hex(single.out) == expected, "\(script.name) one byte at a time")
        #expect(single.closed == closes)
        var rng = SplitMix(seed: UInt64(script.name.utf8.reduce(5381) { ($0 &* 33) &+ Int($1) } & 0xFFFF))
        for round in 0..<8 {
            let chunks = (0..<16).map { _ in 1 + Int(rng.next() % 40) }
            let random = feed(stream, pdu: script.pdu, chunks: chunks)
            #expect(hex(random.out) == expected, "\(script.name) random split round \(round): \(chunks)")
        }
    }

    @Test func setupAnswerIsExactly20Bytes() {
        for configured in [240, 480, 960] {
            for proposal in [240, 480, 960, 1000] {
                var s = makeSession(pdu: configured)
                var out: [UInt8] = []
                _ = s.receive(Build.connect, into: &out)
                out.removeAll()
                _ = s.receive(Build.setup(proposal, ref: 0x1234), into: &out)
                let agreed = min(proposal, configured)
                #expect(out.count == 7 + 20)
                #expect(Array(out.dropFirst(7)) == bytes("32 03 00 00 12 34 00 08 00 00 00 00 F0 00 00 01 00 01") + Build.u16(agreed))
                #expect(s.agreedPDUSize == agreed)
                #expect(s.events.contains(.negotiated(proposed: proposal, agreed: agreed)))
            }
        }
    }

    @Test func setupBelowMinimumIsRefusedAtNMinusOne() {
        let n = S7Limits.minimumNegotiablePDUSize
        var s = makeSession(pdu: 480)
        var out: [UInt8] = []
        _ = s.receive(Build.connect, into: &out)
        out.removeAll()
        #expect(s.receive(Build.setup(n - 1), into: &out) == .open)
        #expect(Array(out.dropFirst(7)) == bytes("32 03 00 00 00 01 00 08 00 00 85 00 F0 00 00 01 00 01 01 E0"))
        #expect(s.agreedPDUSize == nil)
        #expect(s.events.contains(.pduRefused(proposed: n - 1)))
        out.removeAll()
        _ = s.receive(Build.setup(n), into: &out)
        #expect(s.agreedPDUSize == n)
        #expect(Array(out.suffix(2)) == Build.u16(n))
    }

    /// The split SZL 0x001C answer at PDU 240 reassembles to the unsplit answer at PDU 480.
    @Test func splitSZLReassemblesToTheWholeAnswer() {
        func payload(_ frame: [UInt8]) -> (data: [UInt8], last: UInt8, sequence: UInt8) {
            let s7 = Array(frame.dropFirst(7))
            let data = Array(s7.dropFirst(10 + 12))
            #expect(Array(data.prefix(2)) == [0xFF, 0x09])
            let length = Int(data[2]) << 8 | Int(data[3])
            #expect(data.count == 4 + length)
            return (Array(data.dropFirst(4)), s7[10 + 9], s7[10 + 7])
        }
        var big = readySession(pdu: 480, clientPDU: 480)
        var out: [UInt8] = []
        _ = big.receive(Build.szl(1, id: 0x001C, index: 0), into: &out)
        let whole = payload(out)
        #expect(whole.last == 0)
        #expect(whole.data.count == 8 + 8 * 34)

        var small = readySession(pdu: 240, clientPDU: 480)
        out.removeAll()
        _ = small.receive(Build.szl(1, id: 0x001C, index: 0), into: &out)
        var piece = payload(out)
        #expect(out.count - 7 <= 240)
        var assembled = piece.data
        var rounds = 0
        while piece.last == 0x01 && rounds < 10 {
            rounds += 1
            out.removeAll()
            let followUp = Build.userData(2 + rounds, [0x00, 0x01, 0x12, 0x08, 0x12, 0x44, 0x01, piece.sequence, 0x00, 0x00, 0x00, 0x00],
                                          [0x0A, 0x00, 0x00, 0x00])
            _ = small.receive(followUp, into: &out)
            #expect(out.count - 7 <= 240)
            piece = payload(out)
            assembled += piece.data
        }
        #expect(rounds >= 1)
        #expect(piece.last == 0x00)
        #expect(assembled == whole.data)
    }
}

/// A small deterministic generator for reproducible random splits.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
