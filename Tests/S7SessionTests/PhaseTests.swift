import PLCMemory
import S7Session
import S7Wire
import Testing

/// What each phase holds, and that it goes when the phase goes.
@Suite("Session phases")
struct PhaseTests {
    @Test func eachPhaseShowsOnlyWhatItHolds() {
        var s = makeSession(pdu: 480)
        var out: [UInt8] = []
        #expect(s.phase == .awaitingConnectionRequest)
        #expect(s.connection == nil && s.agreedPDUSize == nil && s.grantedAmQ == nil && s.closeReason == nil)
        _ = s.receive(Build.connect, into: &out)
        #expect(s.phase == .awaitingSetup)
        #expect(s.connection?.calledTSAP == [0x01, 0x01])
        #expect(s.agreedPDUSize == nil && s.grantedAmQ == nil)
        _ = s.receive(Build.job(1, [0xF0, 0] + Build.u16(3) + Build.u16(3) + Build.u16(960)), into: &out)
        #expect(s.phase == .ready)
        #expect(s.connection?.calledTSAP == [0x01, 0x01])
        #expect(s.agreedPDUSize == 480 && s.grantedAmQ == 3)
        // A second Setup Communication renegotiates in place.
        _ = s.receive(Build.job(2, [0xF0, 0] + Build.u16(1) + Build.u16(1) + Build.u16(240)), into: &out)
        #expect(s.agreedPDUSize == 240 && s.grantedAmQ == 1)
        // A refused one leaves what was agreed.
        _ = s.receive(Build.setup(S7Limits.minimumNegotiablePDUSize - 1, ref: 3), into: &out)
        #expect(s.phase == .ready && s.agreedPDUSize == 240)
        _ = s.receive(bytes("03 00 00 0B 06 80 00 01 00 01 00"), into: &out)
        #expect(s.phase == .closed)
        #expect(s.closeReason == .clientDisconnected("COTP disconnect request"))
        #expect(s.connection == nil && s.agreedPDUSize == nil)
    }

    @Test func aSegmentedSetupCarriesItsTransportIntoTheEstablishedPhase() {
        var s = makeSession(pdu: 480)
        var out: [UInt8] = []
        _ = s.receive(Build.connect, into: &out)
        out.removeAll()
        let setup = Build.jobPDU(1, [0xF0, 0, 0, 1, 0, 1] + Build.u16(480))
        #expect(s.receive(Build.dt(Array(setup.prefix(5)), eot: false), into: &out) == .open)
        #expect(s.bufferedBytes == 5 && s.phase == .awaitingSetup)
        #expect(s.receive(Build.dt(Array(setup.dropFirst(5))), into: &out) == .open)
        #expect(s.phase == .ready && s.agreedPDUSize == 480 && s.bufferedBytes == 0)
        // The reassembly buffer still works in the new phase.
        out.removeAll()
        let read = Build.jobPDU(2, [0x04, 0x01] + Build.item(2, 2, area: 0x83, address: 0))
        _ = s.receive(Build.dt(Array(read.prefix(7)), eot: false), into: &out)
        #expect(s.bufferedBytes == 7)
        _ = s.receive(Build.dt(Array(read.dropFirst(7))), into: &out)
        #expect(Array(out.dropFirst(7)) == bytes("32 03 00 00 00 02 00 02 00 06 00 00 04 01 FF 04 00 10 80 81"))
        #expect(!s.hasPartialInput)
    }

    @Test func aReadVarAnswerOverThePDULogsNoAccess() {
        // DB1 bytes 51 (with its fill byte) and 54: 12 + 2 + 56 + 58 = 128 bytes of answer fit
        // PDU 128; with 55 for the second (129), the first, already read, is taken back.
        var config = fixtureConfiguration(pdu: 480)
        config.logDataAccess = true
        var s = S7Session(configuration: config, memory: FixtureMemory.make())
        var out: [UInt8] = []
        _ = s.receive(Build.connect, into: &out)
        _ = s.receive(Build.setup(128), into: &out)
        s.events.removeAll()
        out.removeAll()
        func items(_ second: Int) -> [[UInt8]] {
            [Build.item(2, 51, db: 1, area: 0x84, address: 0), Build.item(2, second, db: 1, area: 0x84, address: 8 * 100)]
        }
        _ = s.receive(Build.read(1, items(54)), into: &out)
        #expect(out.count == 7 + 128)
        #expect(s.events == [.dataAccess(write: false, item: "DB1.0 (51 bytes)", returnCode: 0xFF),
                             .dataAccess(write: false, item: "DB1.100 (54 bytes)", returnCode: 0xFF)])
        s.events.removeAll()
        out.removeAll()
        _ = s.receive(Build.read(2, items(55)), into: &out)
        #expect(Array(out.dropFirst(7)) == bytes("32 03 00 00 00 02 00 02 00 00 85 00 04 00"))
        #expect(s.events == [.exceededPDU(what: "Read Var answer", size: 129, agreed: 128)])
    }
}
