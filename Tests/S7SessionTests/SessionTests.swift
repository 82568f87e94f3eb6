import Foundation
import PLCMemory
import S7Session
import S7Wire
import Testing

@Suite("Session state machine")
struct SessionTests {
    /// A Write Var PDU of exactly `size` bytes writing DB1 from byte 0.
    func writePDU(size: Int, ref: Int = 7) -> [UInt8] {
        let length = size - 10 - 14 - 4
        let item = Build.item(0x02, length, db: 1, area: 0x84, address: 0)
        return Build.jobPDU(ref, [0x05, 0x01] + item, [0x00, 0x04] + Build.u16(length * 8) + [UInt8](repeating: 0x5A, count: length))
    }

    @Test func cotpReassemblyAtTheBound() {
        let n = S7Limits.maximumReassembledPDU
        var s = readySession(pdu: 960, clientPDU: 960)
        var out: [UInt8] = []
        let pdu = writePDU(size: n)
        #expect(s.receive(Build.dt(Array(pdu[..<500]), eot: false), into: &out) == .open)
        #expect(out.isEmpty)
        #expect(s.hasPartialInput)
        #expect(s.bufferedBytes == 500)
        #expect(s.receive(Build.dt(Array(pdu[500...])), into: &out) == .open)
        #expect(Array(out.dropFirst(7)) == bytes("32 03 00 00 00 07 00 02 00 01 00 00 05 01 FF"))
        #expect(!s.hasPartialInput)
    }

    @Test func cotpReassemblyPastTheBoundCloses() {
        let n = S7Limits.maximumReassembledPDU
        var s = readySession(pdu: 960, clientPDU: 960)
        var out: [UInt8] = []
        let pdu = writePDU(size: n + 1)
        #expect(s.receive(Build.dt(Array(pdu[..<500]), eot: false), into: &out) == .open)
        let outcome = s.receive(Build.dt(Array(pdu[500...])), into: &out)
        guard case .close(let reason) = outcome else {
            Issue.record("expected close, got \(outcome)")
            return
        }
        #expect(reason.description.contains("COTP segments add up to more than \(n) bytes"))
        #expect(out.isEmpty)
        #expect(s.phase == .closed)
    }

    @Test func endlessSegmentsStayBounded() {
        var s = readySession()
        var out: [UInt8] = []
        var closed = false
        for _ in 0..<20 {
            if case .close = s.receive(Build.dt([UInt8](repeating: 0x32, count: 100), eot: false), into: &out) {
                closed = true
                break
            }
            #expect(s.bufferedBytes <= S7Limits.maximumReassembledPDU)
        }
        #expect(closed)
    }

    @Test func tpktLengthLimitsInASession() {
        var s = readySession()
        var out: [UInt8] = []
        // N+1 over the top: a header announcing 1029 bytes closes at once, before the body arrives.
        let over = S7Limits.maximumFrameLength + 1
        let outcome = s.receive([3, 0, UInt8(over >> 8), UInt8(over & 0xFF)], into: &out)
        #expect(outcome == .close(reason: .badInput("TPKT length \(over) is outside 7...1028")))
        var t = readySession()
        #expect(t.receive([3, 0, 0, 6, 2, 0xF0], into: &out) == .close(reason: .badInput("TPKT length 6 is outside 7...1028")))
        // N: a 7-byte frame (an empty DT) is accepted.
        var u = readySession()
        out.removeAll()
        #expect(u.receive([3, 0, 0, 7, 2, 0xF0, 0x00], into: &out) == .open)
        #expect(out.isEmpty)
    }

    @Test func garbageClosesWithAReason() {
        var s = makeSession()
        var out: [UInt8] = []
        let outcome = s.receive(Array("GET / HTTP/1.1\r\n\r\n".utf8), into: &out)
        #expect(outcome == .close(reason: .badInput("not an ISO-on-TCP frame: TPKT version byte is 0x47, expected 0x03")))
        #expect(out.isEmpty)
        #expect(s.receive([3], into: &out) == .close(reason: .badInput("connection already closed")))
    }

    @Test func orderOfConnectionStepsIsEnforced() {
        var out: [UInt8] = []
        var a = makeSession()
        #expect(a.receive(Build.setup(480), into: &out) == .close(reason: .badInput("COTP data before a connection request")))
        var b = makeSession()
        _ = b.receive(Build.connect, into: &out)
        #expect(b.receive(Build.read(1, [Build.item(2, 1, area: 0x83, address: 0)]), into: &out) == .close(reason: .badInput("S7 request before Setup Communication")))
        var c = readySession()
        #expect(c.receive(Build.connect, into: &out) == .close(reason: .badInput("second COTP connection request on a connected transport")))
    }

    @Test func malformedS7HeaderClosesButMalformedParametersAreAnswered() {
        var out: [UInt8] = []
        var s = readySession()
        // Parameter says 2 items but carries one: answered with 0x8104, connection stays.
        let params: [UInt8] = [0x04, 0x02] + Build.item(2, 1, area: 0x83, address: 0)
        #expect(s.receive(Build.job(9, params), into: &out) == .open)
        #expect(Array(out.dropFirst(7)) == bytes("32 03 00 00 00 09 00 02 00 00 81 04 04 00"))
        // Header lengths that do not add up: nothing to answer, the connection closes.
        out.removeAll()
        let broken = Build.dt([0x32, 1, 0, 0, 0, 1, 0, 9, 0, 0, 0x04])
        guard case .close(let reason) = s.receive(broken, into: &out) else {
            Issue.record("expected close")
            return
        }
        #expect(reason == .badInput("S7 header declares 19 bytes but the PDU has 11"))
    }

    @Test func rackSlotAllowList() {
        var out: [UInt8] = []
        var config = fixtureConfiguration()
        config.allowedRackSlots = [RackSlot(rack: 0, slot: 2)]
        var refused = S7Session(configuration: config, memory: FixtureMemory.make())
        let outcome = refused.receive(Build.connect, into: &out)
        #expect(outcome == .close(reason: .rackSlotRefused(asked: "rack 0 slot 1", allowed: "rack 0 slot 2")))
        #expect(out == bytes("03 00 00 0B 06 80 00 01 00 01 80"))
        var allowed = S7Session(configuration: config, memory: FixtureMemory.make())
        out.removeAll()
        let slot2 = bytes("03 00 00 16 11 E0 00 00 00 01 00 C0 01 0A C1 02 01 00 C2 02 01 02")
        #expect(allowed.receive(slot2, into: &out) == .open)
        #expect(allowed.events == [.connected(connectionType: 1, rack: 0, slot: 2, tpduSize: 1024)])
    }

    @Test func tpduSizeIsCappedAt1024() {
        var out: [UInt8] = []
        var s = makeSession()
        let cr = bytes("03 00 00 16 11 E0 00 00 00 01 00 C0 01 0D C1 02 01 00 C2 02 03 01")
        #expect(s.receive(cr, into: &out) == .open)
        #expect(out == bytes("03 00 00 16 11 D0 00 01 00 01 00 C0 01 0A C1 02 01 00 C2 02 03 01"))
        #expect(s.events == [.connected(connectionType: 3, rack: 0, slot: 1, tpduSize: 1024)])
    }

    @Test func dataAccessEvents() {
        var config = fixtureConfiguration()
        config.logDataAccess = true
        var s = S7Session(configuration: config, memory: FixtureMemory.make())
        var out: [UInt8] = []
        _ = s.receive(Build.connect, into: &out)
        _ = s.receive(Build.setup(480), into: &out)
        s.events.removeAll()
        _ = s.receive(Build.read(2, [Build.item(1, 1, area: 0x83, address: 8 * 3 + 2), Build.item(2, 2, db: 1, area: 0x84, address: 80)]), into: &out)
        #expect(s.events == [.dataAccess(write: false, item: "M3.2", returnCode: 0xFF),
                             .dataAccess(write: false, item: "DB1.10 (2 bytes)", returnCode: 0xFF)])
    }

    @Test func bitReadOfMoreThanOneElementIsRefused() {
        var s = readySession()
        var out: [UInt8] = []
        _ = s.receive(Build.read(3, [Build.item(1, 2, area: 0x83, address: 0)]), into: &out)
        #expect(Array(out.dropFirst(7)) == bytes("32 03 00 00 00 03 00 02 00 04 00 00 04 01 07 00 00 00"))
    }

    @Test func requestAtAndOverTheAgreedPDU() {
        // 19 items = 240 bytes is served at PDU 240; 20 items = 252 bytes gets 0x8500.
        var s = readySession(pdu: 240, clientPDU: 240)
        var out: [UInt8] = []
        _ = s.receive(Build.read(1, (0..<19).map { Build.item(2, 1, area: 0x83, address: 8 * $0) }), into: &out)
        #expect(out[7 + 10] == 0 && out[7 + 11] == 0)
        out.removeAll()
        s.events.removeAll()
        _ = s.receive(Build.read(2, (0..<20).map { Build.item(2, 1, area: 0x83, address: 8 * $0) }), into: &out)
        #expect(Array(out.dropFirst(7)) == bytes("32 03 00 00 00 02 00 02 00 00 85 00 04 00"))
        #expect(s.events == [.exceededPDU(what: "request", size: 252, agreed: 240)])
    }

    @Test func parallelJobsAtNAndNPlusOne() {
        let n = Int(S7Limits.maximumParallelJobs)
        for (asked, granted) in [(n, n), (n + 1, n), (1, 1), (0, 1)] {
            var s = makeSession()
            var out: [UInt8] = []
            _ = s.receive(Build.connect, into: &out)
            out.removeAll()
            _ = s.receive(Build.job(1, [0xF0, 0] + Build.u16(asked) + Build.u16(asked) + Build.u16(480)), into: &out)
            #expect(Array(out.suffix(6)) == Build.u16(granted) + Build.u16(granted) + Build.u16(480), "AmQ \(asked)")
        }
    }

    @Test func defaultTPDUSizeWithoutSizeParameter() {
        var s = makeSession()
        var out: [UInt8] = []
        let cr = bytes("03 00 00 13 0E E0 00 00 00 01 00 C1 02 01 00 C2 02 01 01")
        #expect(s.receive(cr, into: &out) == .open)
        #expect(out == bytes("03 00 00 16 11 D0 00 01 00 01 00 C0 01 07 C1 02 01 00 C2 02 01 01"))
        #expect(s.events == [.connected(connectionType: 1, rack: 0, slot: 1, tpduSize: 128)])
    }
}
