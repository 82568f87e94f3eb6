import ArgumentParser
import Foundation
import PLCMemory
import S7Sys
import S7Wire

#if canImport(Glibc)
import Glibc
#endif

/// A blocking S7 client over one TCP socket; every wait is bounded by `timeout`.
struct ProbeClient {
    var timeout: Double
    private var connection: TCPConnection?
    private var pduReference: UInt16 = 0
    private var closedBecause: String?
    private var endpoint = ""
    private var agreedPDU = 0

    init(timeout: Double) { self.timeout = timeout }

    mutating func close() {
        connection?.close()
        connection = nil
    }

    private var timeoutText: String { timeout == timeout.rounded() ? "\(Int(timeout)) s" : "\(timeout) s" }

    // MARK: Connect

    mutating func connect(_ e: ProbeEndpoint, _ report: inout ProbeReport) throws {
        endpoint = e.description
        let addresses: [TCPConnection.Address]
        switch TCPConnection.resolve(host: e.host, port: Int(e.port)) {
        case .addresses(let found):
            addresses = found
        case .failed(let message):
            throw ProbeFailure(
                stage: "resolve", what: "cannot resolve \(e.host): \(message)",
                why: "the name is not in DNS or /etc/hosts, or this host has no name service",
                fix: "give the CPU's IP address (e.g. 192.168.0.1), or fix the name in DNS or /etc/hosts")
        }
        do {
            let connected = try TCPConnection.connect(to: addresses, timeoutMilliseconds: Int(timeout * 1000))
            connection = connected
            report.connectedAddress = connected.peer.numericHost
        } catch let error as SystemCallError {
            throw connectFailure(e, error.errno.rawValue)
        }

        // COTP: connect to the CPU's TSAP.
        let called = report.calledTSAP
        let where_ = "TSAP \(ProbeReport.tsap(called)) (rack \(report.rack), slot \(report.slot))"
        let rackSlotFix = "give the rack and slot of the CPU: --rack R --slot S (S7-300: rack 0 slot 2; S7-400: the slot in the hardware configuration; S7-1200/1500 and s7commd: rack 0 slot 1, or 0). For s7commd, server.allowed_rack_slots lists the pairs it accepts; an S7-1200/1500 also needs PUT/GET access allowed in its protection settings"
        try send(S7ClientRequest.connect(callingTSAP: report.callingTSAP, calledTSAP: called), stage: "cotp")
        let frame: [UInt8]
        do {
            frame = try receiveFrame(stage: "cotp")
        } catch let f as ProbeFailure where f.stage == "cotp-closed" {
            throw ProbeFailure(
                stage: "cotp", what: "\(endpoint) accepted the TCP connection but closed it when asked for \(where_)",
                why: "the server refuses that TSAP (no CPU at that rack and slot, or connections of this type are not allowed), or the service on that port is not ISO-on-TCP",
                fix: rackSlotFix)
        }
        let answer: COTPConnectAnswer
        do {
            answer = try COTPConnectAnswer.decode(frame: frame[...])
        } catch {
            throw notS7("cotp", "its answer to the COTP connection request is not valid: \(error)")
        }
        switch answer {
        case .refused(let reason):
            throw ProbeFailure(
                stage: "cotp", what: "\(endpoint) refused the COTP connection to \(where_): \(COTPConnectAnswer.reasonText(reason)) (disconnect reason 0x\(String(format: "%02X", reason)))",
                why: "no CPU answers at that rack and slot, or the server allows only other rack/slot pairs or TSAPs",
                fix: rackSlotFix)
        case .confirmed:
            break
        }
    }

    private func connectFailure(_ e: ProbeEndpoint, _ err: Int32) -> ProbeFailure {
        let port = e.port
        switch err {
        case ECONNREFUSED:
            return ProbeFailure(
                stage: "connect", what: "cannot connect to \(e): connection refused",
                why: "nothing listens on TCP port \(port) at \(e.host), or a firewall there rejects the connection",
                fix: "check that the S7 server runs and listens on port \(port) (for s7commd: `s7commd status`, or `ss -ltnp` on that host), that the address and port are right (S7 uses 102), and that the firewall lets TCP port \(port) through")
        case ETIMEDOUT:
            return ProbeFailure(
                stage: "connect", what: "cannot connect to \(e): no answer within \(timeoutText)",
                why: "the host is down or not at that address, or a firewall drops the packets to port \(port)",
                fix: "check the address (`ping \(e.host)`), the cabling and the route to it, and that a firewall lets TCP port \(port) through; a slow link may need a longer --timeout")
        case EHOSTUNREACH, ENETUNREACH:
            return ProbeFailure(
                stage: "connect", what: "cannot connect to \(e): \(String(cString: strerror(err)))",
                why: "this host has no route to \(e.host) (wrong subnet, interface down, or the host is off)",
                fix: "check the address and that this host has an address in the CPU's subnet (`ip addr`, `ip route`)")
        default:
            return ProbeFailure(
                stage: "connect", what: "cannot connect to \(e): \(String(cString: strerror(err)))",
                why: "the operating system refused or aborted the TCP connection",
                fix: "check the address and port, the network, and the firewall between this host and \(e.host)")
        }
    }

    private func notS7(_ stage: String, _ what: String) -> ProbeFailure {
        ProbeFailure(
            stage: stage, what: "\(endpoint) does not speak S7comm: \(what)",
            why: "the service on that port is not an S7 server (ISO-on-TCP, RFC 1006), or it answered something this probe cannot read",
            fix: "check the port (S7 uses 102) and that the device is an S7 CPU or S7 server")
    }

    // MARK: Setup Communication

    mutating func setup(_ proposed: UInt16, _ report: inout ProbeReport) throws {
        let ref = nextReference()
        let pdu = try exchange(S7ClientRequest.setupCommunication(pduReference: ref, pduSize: proposed), ref, stage: "setup")
        if let e = pdu.headerError {
            throw ProbeFailure(
                stage: "setup", what: "\(endpoint) refused the PDU negotiation (Setup Communication, PDU \(proposed)): error \(S7ErrorText.describe(e.value))",
                why: "the CPU does not accept this request; some CPUs refuse sizes they do not support",
                fix: "try --pdu 240 (every S7 CPU accepts it) or --pdu 480")
        }
        do {
            let answer = try S7SetupCommunicationAnswer.decode(parameters: pdu.parameters)
            guard answer.pduSize > 0 else { throw S7WireError.malformed("the agreed PDU size is 0") }
            agreedPDU = Int(answer.pduSize)
            report.agreedPDU = agreedPDU
        } catch let e as S7WireError {
            throw notS7("setup", "its answer to Setup Communication is not valid: \(e)")
        }
    }

    // MARK: SZL

    /// Reads an SZL partial list, following continuations; a failure is "not answered".
    mutating func readSZL(id: UInt16, index: UInt16) -> SZLOutcome {
        if let why = closedBecause { return .notAnswered(why) }
        var collected: [UInt8] = []
        var ref = nextReference()
        var request = S7ClientRequest.readSZL(pduReference: ref, id: id, index: index)
        for _ in 0..<256 {
            let pdu: S7ResponsePDU
            do {
                pdu = try exchange(request, ref, stage: "szl")
            } catch let f as ProbeFailure {
                return .notAnswered(f.what)
            } catch {
                return .notAnswered("\(error)")
            }
            if let e = pdu.headerError { return .notAnswered("error \(S7ErrorText.describe(e.value))") }
            let answer: S7UserDataAnswer
            do {
                answer = try S7UserDataAnswer.decode(pdu: pdu)
            } catch {
                return .notAnswered("invalid answer: \(error)")
            }
            if let e = answer.errorCode { return .notAnswered("error \(S7ErrorText.describe(e))") }
            guard answer.returnCode == S7ReturnCode.success.rawValue else {
                return .notAnswered("return code 0x\(String(format: "%02X", answer.returnCode)): \(S7ErrorText.returnCode(answer.returnCode))")
            }
            collected.append(contentsOf: answer.payload)
            guard collected.count <= 65536 else { return .notAnswered("the answer is longer than 64 KiB") }
            if !answer.moreFollows { break }
            ref = nextReference()
            request = S7ClientRequest.readSZLFollowUp(pduReference: ref, sequenceNumber: answer.parameters.sequenceNumber)
        }
        do {
            let list = try S7SZLList.decode(collected[...])
            guard list.id == id || list.id == 0 || collected.count < 4 else {
                return .notAnswered(String(format: "the server answered SZL 0x%04X instead", list.id))
            }
            return .answered(list)
        } catch {
            return .notAnswered("invalid list: \(error)")
        }
    }

    // MARK: Read Var

    mutating func read(_ a: PLCAddress) -> ReadOutcome {
        var out = ReadOutcome(address: a)
        if let why = closedBecause {
            out.problem = why
            return out
        }
        let area: S7AreaCode
        switch a.area {
        case .inputs: area = .inputs
        case .outputs: area = .outputs
        case .flags: area = .flags
        case .dataBlock: area = .dataBlock
        case .timers: area = .timer
        case .counters: area = .counter
        }
        let spec: S7VarSpec
        let expected: Int
        switch (a.area, a.width) {
        case (.timers, _), (.counters, _):
            spec = S7VarSpec(transportSize: a.area == .timers ? S7TransportSize.timer.rawValue : S7TransportSize.counter.rawValue,
                             count: 1, dbNumber: 0, area: area.rawValue, address: UInt32(a.offset))
            expected = 2
        case (_, .bit(let bit)):
            spec = S7VarSpec(transportSize: S7TransportSize.bit.rawValue, count: 1, dbNumber: a.db, area: area.rawValue,
                             address: UInt32(a.offset * 8 + bit))
            expected = 1
        default:
            spec = S7VarSpec(transportSize: S7TransportSize.byte.rawValue, count: UInt16(a.byteCount), dbNumber: a.db,
                             area: area.rawValue, address: UInt32(a.offset * 8))
            expected = a.byteCount
        }
        let ref = nextReference()
        do {
            let pdu = try exchange(S7ClientRequest.readVar(pduReference: ref, [spec]), ref, stage: "read")
            if let e = pdu.headerError {
                out.problem = "the server refused the read: error \(S7ErrorText.describe(e.value))"
                return out
            }
            let answer = try S7ReadVarAnswer.decode(parameters: pdu.parameters, data: pdu.data)
            guard let item = answer.items.first, answer.items.count == 1 else {
                out.problem = "the answer carries \(answer.items.count) items for 1 requested"
                return out
            }
            guard item.returnCode == S7ReturnCode.success.rawValue else {
                out.problem = "the server answered return code 0x\(String(format: "%02X", item.returnCode)): \(S7ErrorText.returnCode(item.returnCode))"
                    + (item.returnCode == 0x0A || item.returnCode == 0x05 ? "; check that \(a.area == .dataBlock ? "DB\(a.db)" : "the \(a.area) area") exists and is large enough" : "")
                return out
            }
            guard item.data.count == expected else {
                out.problem = "the server answered \(item.data.count) bytes for \(expected) requested"
                return out
            }
            out.bytes = Array(item.data)
        } catch let f as ProbeFailure {
            out.problem = f.what
        } catch {
            out.problem = "invalid answer: \(error)"
        }
        return out
    }

    // MARK: Frames

    private mutating func nextReference() -> UInt16 {
        pduReference = pduReference == 0xFFFF ? 1 : pduReference + 1
        return pduReference
    }

    /// Sends a request and returns the S7 answer that carries its PDU reference (stale answers
    /// to requests that timed out earlier are skipped).
    private mutating func exchange(_ frame: [UInt8], _ ref: UInt16, stage: String) throws -> S7ResponsePDU {
        try send(frame, stage: stage)
        for _ in 0..<16 {
            let bytes = try receivePDU(stage: stage)
            let pdu: S7ResponsePDU
            do {
                pdu = try S7ResponsePDU.decode(bytes[...])
            } catch {
                throw notS7(stage, "invalid S7 answer: \(error)")
            }
            if pdu.header.pduReference == ref { return pdu }
        }
        throw notS7(stage, "16 answers in a row carry another PDU reference than the request's \(ref)")
    }

    private mutating func send(_ bytes: [UInt8], stage: String) throws {
        guard let connection else { throw lost(stage, closedBecause ?? "not connected") }
        do {
            try connection.send(all: bytes)
        } catch let error as SystemCallError {
            let why = "sending failed: \(String(cString: strerror(error.errno.rawValue)))"
            closedBecause = why
            throw lost(stage, why)
        }
    }

    private mutating func lost(_ stage: String, _ why: String) -> ProbeFailure {
        ProbeFailure(
            stage: stage, what: "the connection to \(endpoint) was lost: \(why)",
            why: "the server closed the connection (it may limit clients or time them out) or the network dropped it",
            fix: "run the probe again; if it repeats, look at the server's log (for s7commd: `journalctl -u s7commd`)")
    }

    /// Reads exactly `count` bytes, waiting at most `timeout` in all.
    private mutating func receive(_ count: Int, deadline: Double, stage: String) throws -> [UInt8] {
        guard let connection else { throw lost(stage, closedBecause ?? "not connected") }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            let left = deadline - Self.now()
            let received: TCPConnection.Received
            do {
                received = left <= 0 ? .timedOut
                    : try connection.receive(max: count - out.count, timeoutMilliseconds: max(1, Int(left * 1000)))
            } catch let error as SystemCallError {
                let why = String(cString: strerror(error.errno.rawValue))
                closedBecause = "connection lost: \(why)"
                if stage == "cotp" { throw ProbeFailure(stage: "cotp-closed", what: why, why: "", fix: "") }
                throw lost(stage, why)
            }
            switch received {
            case .bytes(let bytes):
                out.append(contentsOf: bytes)
            case .timedOut:
                throw ProbeFailure(
                    stage: stage, what: "\(endpoint) did not answer within \(timeoutText)\(stage == "cotp" ? " (COTP connection request)" : "")",
                    why: stage == "cotp"
                        ? "the service on that port accepted TCP but does not speak ISO-on-TCP (RFC 1006), or it is overloaded"
                        : "the server does not implement this request, or it is overloaded",
                    fix: stage == "cotp" ? "check the port (S7 uses 102); a slow link may need a longer --timeout" : "try a longer --timeout")
            case .closed:
                closedBecause = "the server closed the connection"
                if stage == "cotp" { throw ProbeFailure(stage: "cotp-closed", what: "closed", why: "", fix: "") }
                throw lost(stage, "the server closed the connection")
            }
        }
        return out
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Reads one TPKT frame (header included).
    private mutating func receiveFrame(stage: String, deadline: Double? = nil) throws -> [UInt8] {
        let deadline = deadline ?? Self.now() + timeout
        let head = try receive(S7Limits.tpktHeaderLength, deadline: deadline, stage: stage)
        let length: Int
        do throws(S7WireError) {
            guard case .frame(let l) = try TPKT.peek(head[...], maximumFrameLength: TPKT.largestFrameLength) else {
                preconditionFailure("a whole TPKT header was read")
            }
            length = l
        } catch .badTPKTVersion {
            closedBecause = "the server sent something other than ISO-on-TCP"
            throw notS7(stage, String(format: "its answer starts with 0x%02X 0x%02X, not a TPKT header (0x03 0x00)", head[0], head[1]))
        } catch .badTPKTLength(let n) {
            closedBecause = "the server sent a malformed frame"
            throw notS7(stage, "TPKT length \(n) is too short for a COTP TPDU")
        } catch {
            closedBecause = "the server sent a malformed frame"
            throw notS7(stage, error.description)
        }
        return head + (try receive(length - S7Limits.tpktHeaderLength, deadline: deadline, stage: stage))
    }

    /// Reads COTP data TPDUs up to the one marked end-of-transmission; returns the S7 PDU.
    private mutating func receivePDU(stage: String) throws -> [UInt8] {
        let deadline = Self.now() + timeout
        var pdu: [UInt8] = []
        while true {
            let frame = try receiveFrame(stage: stage, deadline: deadline)
            let tpdu: COTPPDU
            do {
                tpdu = try COTPPDU.decodeFrame(frame[...])
            } catch {
                throw notS7(stage, "invalid COTP TPDU: \(error)")
            }
            switch tpdu {
            case .data(let eot, let payload):
                pdu.append(contentsOf: payload)
                guard pdu.count <= 65536 else { throw notS7(stage, "an S7 PDU longer than 64 KiB") }
                if eot { return pdu }
            case .disconnectRequest(_, _, let reason):
                closedBecause = "the server disconnected (COTP disconnect, \(COTPConnectAnswer.reasonText(reason)))"
                throw lost(stage, closedBecause!)
            default:
                throw notS7(stage, "a COTP TPDU other than data in the middle of the connection")
            }
        }
    }
}
