import Foundation
import PLCMemory
import S7Session
import Testing

/// Runs every fixture session, writes requests and the session's real answers as a pcap, and
/// has Wireshark's dissectors (tshark) check them.
@Suite("tshark")
struct TsharkTests {
    static func findTshark() -> String? {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        for dir in paths + ["/usr/bin", "/usr/local/bin"] {
            let candidate = dir + "/tshark"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    static func tshark(_ path: String, _ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = NSTemporaryDirectory()  // no user preferences
        p.environment = env
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test func wiresharkDecodesEverySessionCleanly() throws {
        guard let tshark = Self.findTshark() else {
            Issue.record("tshark is not installed: install it (Debian: apt-get install tshark) — this test must not be skipped")
            return
        }
        var pcap = Pcap()
        var serverS7Frames = 0
        var clientS7Frames = 0
        for (n, script) in Fixtures.scripts.enumerated() {
            var stream = pcap.openStream(clientPort: UInt16(40000 + n))
            for exchange in run(script) {
                pcap.send(&stream, fromClient: true, exchange.request)
                if exchange.request.count > 7, exchange.request[5] == 0xF0, exchange.request[7] == 0x32 { clientS7Frames += 1 }
                for frame in splitFrames(exchange.response) {
                    pcap.send(&stream, fromClient: false, frame)
                    if frame.count > 7, frame[5] == 0xF0, frame[7] == 0x32 { serverS7Frames += 1 }
                }
            }
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("s7commd-fixtures-\(getpid()).pcap")
        try Data(pcap.bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }

        let fields = try Self.tshark(tshark, ["-r", file.path, "-o", "tcp.desegment_tcp_streams:TRUE",
                                              "-T", "fields", "-E", "separator=|",
                                              "-e", "frame.number", "-e", "tcp.srcport", "-e", "_ws.malformed",
                                              "-e", "_ws.expert.severity", "-e", "_ws.expert.message", "-e", "s7comm.header.rosctr"])
        let rows = fields.split(separator: "\n").map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
        #expect(rows.count == pcap.packets, "tshark printed \(rows.count) rows for \(pcap.packets) packets")
        var s7FromServer = 0
        var s7FromClient = 0
        for row in rows where row.count >= 6 {
            if !row[2].isEmpty { Issue.record("frame \(row[0]) is malformed: \(row[2]) \(row[4])") }
            // Expert severities: 0x00600000 warning, 0x00800000 error.
            for severity in row[3].split(separator: ",").compactMap({ Int($0) }) where severity >= 0x0060_0000 {
                Issue.record("frame \(row[0]): expert info of severity 0x\(String(severity, radix: 16)): \(row[4])")
            }
            if !row[5].isEmpty {
                if row[1] == "102" { s7FromServer += row[5].split(separator: ",").count } else { s7FromClient += row[5].split(separator: ",").count }
            }
        }
        #expect(s7FromServer == serverS7Frames, "s7comm decoded \(s7FromServer) server frames of \(serverS7Frames)")
        #expect(s7FromClient == clientS7Frames, "s7comm decoded \(s7FromClient) client frames of \(clientS7Frames)")

        let expert = try Self.tshark(tshark, ["-r", file.path, "-o", "tcp.desegment_tcp_streams:TRUE", "-q", "-z", "expert"])
        #expect(!expert.contains("Errors ("), "tshark expert errors:\n\(expert)")
        #expect(!expert.contains("Warns ("), "tshark expert warnings:\n\(expert)")
    }
}

/// A pcap of raw IPv4 + TCP packets (LINKTYPE_RAW) with consistent sequence numbers.
struct Pcap {
    struct Stream {
        var clientPort: UInt16
        var clientSeq: UInt32 = 1000
        var serverSeq: UInt32 = 500_000
    }

    private(set) var bytes: [UInt8] = []
    private(set) var packets = 0
    private var ipID: UInt16 = 1

    init() {
        le32(0xA1B2_C3D4); le16(2); le16(4); le32(0); le32(0); le32(65535); le32(101)
    }

    static let client: [UInt8] = [10, 0, 0, 1]
    static let server: [UInt8] = [10, 0, 0, 2]

    mutating func openStream(clientPort: UInt16) -> Stream {
        var s = Stream(clientPort: clientPort)
        packet(s, fromClient: true, flags: 0x02, seq: s.clientSeq, ack: 0, [])
        packet(s, fromClient: false, flags: 0x12, seq: s.serverSeq, ack: s.clientSeq + 1, [])
        s.clientSeq += 1
        s.serverSeq += 1
        packet(s, fromClient: true, flags: 0x10, seq: s.clientSeq, ack: s.serverSeq, [])
        return s
    }

    mutating func send(_ s: inout Stream, fromClient: Bool, _ payload: [UInt8]) {
        if fromClient {
            packet(s, fromClient: true, flags: 0x18, seq: s.clientSeq, ack: s.serverSeq, payload)
            s.clientSeq &+= UInt32(payload.count)
        } else {
            packet(s, fromClient: false, flags: 0x18, seq: s.serverSeq, ack: s.clientSeq, payload)
            s.serverSeq &+= UInt32(payload.count)
        }
    }

    private mutating func packet(_ s: Stream, fromClient: Bool, flags: UInt8, seq: UInt32, ack: UInt32, _ payload: [UInt8]) {
        let (src, dst) = fromClient ? (Pcap.client, Pcap.server) : (Pcap.server, Pcap.client)
        let (sport, dport) = fromClient ? (s.clientPort, UInt16(102)) : (UInt16(102), s.clientPort)
        var tcp: [UInt8] = []
        tcp += be16(sport) + be16(dport) + be32(seq) + be32(ack) + [0x50, flags] + be16(65535) + [0, 0, 0, 0]
        tcp += payload
        let pseudo = src + dst + [0, 6] + be16(UInt16(tcp.count))
        let tcpSum = Pcap.checksum(pseudo + tcp)
        tcp[16] = UInt8(tcpSum >> 8)
        tcp[17] = UInt8(tcpSum & 0xFF)
        var ip: [UInt8] = [0x45, 0] + be16(UInt16(20 + tcp.count)) + be16(ipID) + [0x40, 0, 64, 6, 0, 0] + src + dst
        ipID &+= 1
        let ipSum = Pcap.checksum(ip)
        ip[10] = UInt8(ipSum >> 8)
        ip[11] = UInt8(ipSum & 0xFF)
        let packet = ip + tcp
        packets += 1
        le32(1_700_000_000); le32(UInt32(packets)); le32(UInt32(packet.count)); le32(UInt32(packet.count))
        bytes += packet
    }

    static func checksum(_ data: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        while i + 1 < data.count {
            sum += UInt32(data[i]) << 8 | UInt32(data[i + 1])
            i += 2
        }
        if i < data.count { sum += UInt32(data[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }

    private func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    private func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
    private mutating func le16(_ v: UInt16) { bytes += [UInt8(v & 0xFF), UInt8(v >> 8)] }
    private mutating func le32(_ v: UInt32) { bytes += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)] }
}
