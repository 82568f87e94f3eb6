import ArgumentParser
import Foundation
import PLCMemory
import S7Wire

#if canImport(Glibc)
import Glibc
#endif

/// `s7commd probe`: a small S7 client, so a technician can test any S7 endpoint (s7commd, a
/// real CPU, snap7) from the runtime host without another tool.
struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect to an S7 server, negotiate, and print its identity, CPU state and agreed PDU.",
        discussion: """
            Connects like an S7 programming device (COTP TPDU 1024, calling TSAP 01.00, \
            called TSAP 01.<rack*32+slot>), negotiates the PDU (Setup Communication), reads the \
            identification lists SZL 0x0011 and 0x001C and the CPU state (SZL 0x0424), and with --read \
            reads one address (DB1.DBW4, DB1.DBX0.3, MW10, MD4, IB0, QW2, T5, C5). Works against any S7 \
            server: s7commd, a Siemens CPU, snap7. A list the server does not answer is printed as \
            "not answered".

            Exit status 0 when the connection and the PDU negotiation worked, 1 otherwise (a failed \
            --read is reported but does not change it).
            """)

    @Argument(help: ArgumentHelp("The server: HOST, HOST:PORT, [IPv6]:PORT (default port 102).", valueName: "host[:port]"))
    var target: String

    @Option(help: ArgumentHelp("Rack of the CPU (0-7).", valueName: "R")) var rack: Int = 0
    @Option(help: ArgumentHelp("Slot of the CPU (0-31; S7-300: 2, S7-1200/1500: 1 or 0).", valueName: "S")) var slot: Int = 1
    @Option(help: ArgumentHelp("PDU size to propose in Setup Communication.", valueName: "N")) var pdu: Int = 480
    @Option(help: ArgumentHelp("Also read this address, e.g. DB1.DBW0, DB1.DBX0.3, MD4.", valueName: "ADDRESS")) var read: String?
    @Option(help: ArgumentHelp("Seconds to wait for the connection and for each answer.", valueName: "SECONDS")) var timeout: Double = 5
    @Flag(help: "Print JSON for scripts.") var json = false

    func validate() throws {
        guard (0...7).contains(rack) else { throw ValidationError("--rack \(rack): a rack is 0 to 7") }
        guard (0...31).contains(slot) else { throw ValidationError("--slot \(slot): a slot is 0 to 31") }
        guard (S7Limits.minimumNegotiablePDUSize...8192).contains(pdu) else {
            throw ValidationError("--pdu \(pdu): propose \(S7Limits.minimumNegotiablePDUSize) to 8192 (CPUs agree 240, 480 or 960)")
        }
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout \(timeout): give 0 < seconds <= 3600") }
        if let read, PLCAddress(read) == nil {
            throw ValidationError("\(read) is not an address: write it like DB1.DBW4, DB1.DBX0.3, MW10, MD4, M0.3, IB0, Q0.3, T5 or C5")
        }
        _ = try ProbeEndpoint(target)
    }

    func run() throws {
        let endpoint = try ProbeEndpoint(target)
        var report = ProbeReport(endpoint: endpoint, rack: rack, slot: slot, proposedPDU: pdu)
        var client = ProbeClient(timeout: timeout)
        defer { client.close() }
        do {
            try client.connect(endpoint, &report)
            try client.setup(UInt16(pdu), &report)
        } catch let failure as ProbeFailure {
            report.failure = failure
            emit(report)
            throw ExitCode(1)
        }
        report.moduleIdentification = client.readSZL(id: 0x0011, index: 0x0000)
        report.componentIdentification = client.readSZL(id: 0x001C, index: 0x0000)
        report.cpuStatus = client.readSZL(id: 0x0424, index: 0x0000)
        if let read, let address = PLCAddress(read) {
            report.read = client.read(address)
        }
        emit(report)
    }

    private func emit(_ report: ProbeReport) {
        if json {
            if let data = try? JSONSerialization.data(withJSONObject: report.json(), options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]),
               let s = String(data: data, encoding: .utf8) {
                print(s)
            }
        } else {
            print(report.text(), terminator: "")
        }
        if let f = report.failure {
            FileHandle.standardError.write(Data(f.text().utf8))
        }
    }
}

// MARK: - Endpoint

struct ProbeEndpoint: CustomStringConvertible {
    var host: String
    var port: UInt16

    init(_ text: String) throws {
        var host = text
        var portText: String?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw ValidationError("\(text): an IPv6 address goes in brackets, e.g. [fe80::1]:102") }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.hasPrefix(":") { portText = String(rest.dropFirst()) } else if !rest.isEmpty {
                throw ValidationError("\(text): write [IPv6]:PORT")
            }
        } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            host = String(text[..<colon])
            portText = String(text[text.index(after: colon)...])
        }
        guard !host.isEmpty else { throw ValidationError("\(text): no host; write HOST or HOST:PORT, e.g. 192.168.0.10 or plc1:102") }
        var port: UInt16 = 102
        if let portText {
            guard let p = UInt16(portText), p > 0 else { throw ValidationError("\(text): the port must be 1 to 65535") }
            port = p
        }
        self.host = host
        self.port = port
    }

    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

// MARK: - Failures

/// A failure, told as what happened, why, and what to do.
struct ProbeFailure: Error {
    var stage: String
    var what: String
    var why: String
    var fix: String

    func text() -> String {
        "s7commd probe: \(what)\n  why: \(why)\n  what to do: \(fix)\n"
    }

    var json: [String: Any] { ["stage": stage, "what": what, "why": why, "fix": fix] }
}

// MARK: - Report

/// What one SZL request gave.
enum SZLOutcome {
    case answered(S7SZLList)
    case notAnswered(String)

    var list: S7SZLList? { if case .answered(let l) = self { return l } else { return nil } }
    var problem: String? { if case .notAnswered(let p) = self { return p } else { return nil } }
}

struct ReadOutcome {
    var address: PLCAddress
    var bytes: [UInt8]?
    var problem: String?
}

struct ProbeReport {
    var endpoint: ProbeEndpoint
    var rack: Int
    var slot: Int
    var proposedPDU: Int
    var connectedAddress: String?
    var callingTSAP: UInt16 = 0x0100
    var calledTSAP: UInt16 { S7ClientRequest.calledTSAP(rack: rack, slot: slot) }
    var agreedPDU: Int?
    var moduleIdentification: SZLOutcome?
    var componentIdentification: SZLOutcome?
    var cpuStatus: SZLOutcome?
    var read: ReadOutcome?
    var failure: ProbeFailure?

    static func tsap(_ t: UInt16) -> String { String(format: "%02X.%02X", t >> 8, t & 0xFF) }

    // Identity from SZL 0x0011 (module identification).
    var orderCode: String? {
        guard let l = moduleIdentification?.list else { return nil }
        guard let rec = l.record(index: 0x0001) ?? l.records.first else { return nil }
        return S7SZLList.text(rec, offset: 2, length: 20)
    }

    /// The firmware version: record 7 (basic firmware) `'V' V1 V2 V3` in its last four bytes;
    /// as snap7's client reads it, the last three bytes of the list otherwise.
    var firmwareVersion: String? {
        guard let l = moduleIdentification?.list else { return nil }
        if let rec = l.record(index: 0x0007), rec.count >= 28 {
            let b = Array(rec.suffix(4))
            if b[0] == 0x56 { return "V\(b[1]).\(b[2]).\(b[3])" }
        }
        guard let last = l.records.last, last.count >= 3 else { return nil }
        let b = Array(last.suffix(3))
        return "V\(b[0]).\(b[1]).\(b[2])"
    }

    // Identity from SZL 0x001C (component identification).
    func component(_ index: UInt16, _ length: Int) -> String? {
        guard let l = componentIdentification?.list, let rec = l.record(index: index) else { return nil }
        return S7SZLList.text(rec, offset: 2, length: length)
    }

    var cpuState: String? {
        guard let l = cpuStatus?.list, let rec = l.records.first, rec.count >= 4 else { return nil }
        switch rec[rec.startIndex + 3] {
        case 0x08: return "RUN"
        case 0x04: return "STOP"
        case 0x00: return "unknown (0x00)"
        case let v: return String(format: "0x%02X (neither RUN 0x08 nor STOP 0x04)", v)
        }
    }

    /// The identity fields: label, JSON key, value, and the SZL that carries it.
    var identity: [(String, String, String?, SZLOutcome?)] {
        [
            ("order code", "order_code", orderCode, moduleIdentification),
            ("firmware", "firmware_version", firmwareVersion, moduleIdentification),
            ("module type", "module_type", component(0x0007, 32), componentIdentification),
            ("AS name", "as_name", component(0x0001, 24), componentIdentification),
            ("module name", "module_name", component(0x0002, 24), componentIdentification),
            ("plant id", "plant_identification", component(0x0003, 32), componentIdentification),
            ("copyright", "copyright", component(0x0004, 26), componentIdentification),
            ("serial number", "serial_number", component(0x0005, 24), componentIdentification),
        ]
    }

    private func absent(_ outcome: SZLOutcome?) -> String {
        switch outcome {
        case .none: return "not asked"
        case .notAnswered(let why)?: return "not answered (\(why))"
        case .answered?: return "not in the answer"
        }
    }

    func text() -> String {
        var lines: [(String, String)] = []
        lines.append(("endpoint", endpoint.description + (connectedAddress.map { $0 == endpoint.host ? "" : " (\($0))" } ?? "")))
        lines.append(("TSAPs", "calling \(Self.tsap(callingTSAP)), called \(Self.tsap(calledTSAP)) (PG, rack \(rack), slot \(slot))"))
        if agreedPDU != nil || failure?.stage == "setup" {
            lines.append(("PDU", "proposed \(proposedPDU) → " + (agreedPDU.map { "agreed \($0)" } ?? "not agreed")))
        }
        if failure == nil {
            for (label, _, value, outcome) in identity {
                lines.append((label, value.map { $0.isEmpty ? "(empty)" : $0 } ?? absent(outcome)))
            }
            lines.append(("CPU state", cpuState ?? absent(cpuStatus)))
            if let r = read { lines.append((r.address.description, Self.readText(r))) }
        }
        let width = lines.map(\.0.count).max() ?? 0
        return lines.map { $0.0.padding(toLength: width + 2, withPad: " ", startingAt: 0) + $0.1 + "\n" }.joined()
    }

    static func hexString(_ b: [UInt8]) -> String { b.map { String(format: "%02X", $0) }.joined() }

    /// The natural values of the bytes read at an address.
    static func values(_ a: PLCAddress, _ b: [UInt8]) -> [(String, Any)] {
        let u = b.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        if case .bit = a.width { return [("bool", (b.first ?? 0) & 1 != 0)] }
        if a.area == .timers || a.area == .counters || b.count == 2 {
            return [("int16", Int(Int16(bitPattern: UInt16(truncatingIfNeeded: u))))]
        }
        switch b.count {
        case 1: return [("byte", Int(u))]
        case 4:
            let f = Float(bitPattern: u)
            return [("int32", Int(Int32(bitPattern: u))), ("real", f.isFinite ? Double(f) as Any : f.description as Any)]
        default: return []
        }
    }

    static func readText(_ r: ReadOutcome) -> String {
        guard let b = r.bytes else { return "not read: " + (r.problem ?? "no answer") }
        let parts = values(r.address, b).map { key, value -> String in
            if key == "real", let d = value as? Double { return "\(Float(d)) (real)" }
            return "\(value) (\(key))"
        }
        return "0x" + hexString(b) + (parts.isEmpty ? "" : " = " + parts.joined(separator: " = "))
    }

    func json() -> [String: Any] {
        var out: [String: Any] = [
            "ok": failure == nil,
            "endpoint": endpoint.description, "host": endpoint.host, "port": Int(endpoint.port),
            "rack": rack, "slot": slot,
            "tsap": ["calling": Self.tsap(callingTSAP), "called": Self.tsap(calledTSAP)],
            "pdu": ["proposed": proposedPDU, "agreed": agreedPDU.map { $0 as Any } ?? NSNull()],
        ]
        if let f = failure { out["error"] = f.json }
        guard failure == nil else { return out }
        var identityJSON: [String: Any] = [:]
        for (_, key, value, _) in identity { identityJSON[key] = value ?? NSNull() }
        out["identity"] = identityJSON
        out["cpu_state"] = cpuState ?? NSNull()
        var szl: [String: Any] = [:]
        for (key, outcome) in [("0x0011", moduleIdentification), ("0x001C", componentIdentification), ("0x0424", cpuStatus)] {
            switch outcome {
            case .answered(let l)?:
                szl[key] = ["answered": true, "records": l.records.count, "record_length": l.recordLength,
                            "truncated": l.isTruncated] as [String: Any]
            case .notAnswered(let why)?: szl[key] = ["answered": false, "problem": why] as [String: Any]
            case nil: break
            }
        }
        out["szl"] = szl
        if let r = read {
            var o: [String: Any] = ["address": r.address.description]
            if let b = r.bytes {
                o["hex"] = Self.hexString(b)
                for (k, v) in Self.values(r.address, b) { o[k] = v }
            } else {
                o["problem"] = r.problem ?? "no answer"
            }
            out["read"] = o
        }
        return out
    }
}

// MARK: - Client
