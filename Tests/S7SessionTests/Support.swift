import Foundation
import PLCMemory
import S7Session
import S7Wire
import Testing

/// The memory every fixture session runs against. `make_fixtures.py` models the same bytes.
enum FixtureMemory {
    static func definition() -> MemoryDefinition {
        var d = MemoryDefinition()
        d.dataBlocks[1] = RegionDefinition(size: 1024)
        d.dataBlocks[2] = RegionDefinition(size: 16, readOnly: true, mapping: ImageMapping(table: .byteInput, startElement: 0))
        d.dataBlocks[3] = RegionDefinition(size: 8, mapping: ImageMapping(table: .intMemory, startElement: 10))
        d.inputs = RegionDefinition(size: 16)
        d.outputs = RegionDefinition(size: 16)
        d.flags = RegionDefinition(size: 32)
        d.timers = RegionDefinition(size: 32)
        d.counters = RegionDefinition(size: 32)
        return d
    }

    static func make() -> FlatMemory {
        guard let m = try? FlatMemory(definition()) else { fatalError("fixture layout") }
        func fill(_ area: PLCArea, db: UInt16 = 0, _ count: Int, _ value: (Int) -> Int) {
            let bytes = (0..<count).map { UInt8(truncatingIfNeeded: value($0)) }
            do { try m.write(area, db: db, offset: 0, bytes: bytes[...]) } catch { fatalError("fixture fill \(area)") }
        }
        fill(.inputs, 16) { 0x10 + $0 }
        fill(.outputs, 16) { 0x20 + $0 }
        fill(.flags, 32) { 0x80 + $0 }
        fill(.dataBlock, db: 1, 1024) { $0 * 7 + 1 }
        fill(.timers, 32) { 0x40 + $0 }
        fill(.counters, 32) { 0x60 + $0 }
        m.writeTable(.byteInput, element: 0, bytes: (0..<16).map { UInt8(0xA0 + $0) })
        m.writeTable(.intMemory, element: 10, bytes: [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0])
        return m
    }
}

let fixtureIdentity = PLCIdentity(
    name: "s7commd fixture", moduleType: "CPU 315-2 PN/DP", serialNumber: "S C-FIXTURE0001",
    copyright: "Original Siemens Equipment", moduleName: "fixture CPU", orderCode: "6ES7 315-2EH14-0AB0",
    firmwareVersion: (3, 2, 6), plantIdentification: "Plant 1")

/// 2024-03-15 13:45:56.789, a Friday.
let fixtureClock: @Sendable () -> PLCDateTime = {
    PLCDateTime(year: 2024, month: 3, day: 15, hour: 13, minute: 45, second: 56, millisecond: 789, weekday: 6)
}

func fixtureConfiguration(pdu: Int = 480) -> SessionConfiguration {
    SessionConfiguration(pduSize: pdu, identity: fixtureIdentity, maxClients: 7, clock: fixtureClock)
}

func makeSession(pdu: Int = 480, memory: FlatMemory = FixtureMemory.make()) -> S7Session {
    S7Session(configuration: fixtureConfiguration(pdu: pdu), memory: memory)
}

// MARK: - Hex

func bytes(_ hex: String) -> [UInt8] {
    let digits = hex.filter { $0.isHexDigit }
    precondition(digits.count % 2 == 0, "odd hex: \(hex)")
    var out: [UInt8] = []
    var i = digits.startIndex
    while i < digits.endIndex {
        let j = digits.index(i, offsetBy: 2)
        out.append(UInt8(digits[i..<j], radix: 16)!)
        i = j
    }
    return out
}

func hex<C: Collection>(_ b: C) -> String where C.Element == UInt8 {
    b.map { String(format: "%02X", $0) }.joined(separator: " ")
}

/// Splits a byte stream of TPKT frames into frames.
func splitFrames(_ stream: [UInt8]) -> [[UInt8]] {
    var frames: [[UInt8]] = []
    var i = 0
    while i + 4 <= stream.count {
        let length = Int(stream[i + 2]) << 8 | Int(stream[i + 3])
        guard length >= 4, i + length <= stream.count else { break }
        frames.append(Array(stream[i..<i + length]))
        i += length
    }
    return frames
}

// MARK: - Fixture scripts (Fixtures/frames/*.hex)

struct FixtureStep {
    var name: String
    var request: [UInt8]
    var responses: [[UInt8]] = []
    var closes = false
}

struct FixtureScript: CustomTestStringConvertible, Sendable {
    var name: String
    var pdu = 480
    var steps: [FixtureStep] = []
    var testDescription: String { name }

    var clientStream: [UInt8] { steps.flatMap(\.request) }
    var expectedStream: [UInt8] { steps.flatMap { $0.responses.flatMap { $0 } } }
}

extension FixtureStep: Sendable {}

enum Fixtures {
    /// The Fixtures folder: the copied resource, or the source tree as a fallback.
    static var directory: URL {
        if let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil) { return url }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    }

    static func files(_ sub: String, ext: String) -> [URL] {
        let dir = directory.appendingPathComponent(sub)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix("." + ext) }.sorted().map { dir.appendingPathComponent($0) }
    }

    static func parse(_ text: String, name: String) -> FixtureScript {
        var script = FixtureScript(name: name)
        var comment = ""
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") {
                comment = String(line.dropFirst()).trimmingCharacters(in: .whitespaces)
            } else if line.hasPrefix("! pdu ") {
                script.pdu = Int(line.dropFirst(6))!
            } else if line == "! closes" {
                script.steps[script.steps.count - 1].closes = true
            } else if line.hasPrefix(">") {
                script.steps.append(FixtureStep(name: comment, request: bytes(String(line.dropFirst()))))
            } else if line.hasPrefix("<") {
                script.steps[script.steps.count - 1].responses.append(bytes(String(line.dropFirst())))
            }
        }
        return script
    }

    static let scripts: [FixtureScript] = files("frames", ext: "hex").map { url in
        parse((try? String(contentsOf: url, encoding: .utf8)) ?? "", name: url.deletingPathExtension().lastPathComponent)
    }

    static func script(_ name: String) -> FixtureScript {
        guard let s = scripts.first(where: { $0.name == name }) else { fatalError("no fixture \(name)") }
        return s
    }
}

/// One step of a session run: the frame the client sent and what the session answered.
struct Exchange {
    var request: [UInt8]
    var response: [UInt8]
    var outcome: SessionOutcome
}

/// Runs a script through a fresh session, one request frame per `receive`.
func run(_ script: FixtureScript) -> [Exchange] {
    var session = makeSession(pdu: script.pdu)
    var result: [Exchange] = []
    for step in script.steps {
        var out: [UInt8] = []
        let outcome = session.receive(step.request, into: &out)
        result.append(Exchange(request: step.request, response: out, outcome: outcome))
    }
    return result
}

/// Feeds a whole client stream in the given chunk sizes (cycled); returns everything answered.
func feed(_ stream: [UInt8], pdu: Int, chunks: [Int]) -> (out: [UInt8], closed: Bool) {
    var session = makeSession(pdu: pdu)
    var out: [UInt8] = []
    var i = 0
    var turn = 0
    while i < stream.count {
        let n = min(max(1, chunks[turn % chunks.count]), stream.count - i)
        turn += 1
        if case .close = session.receive(Array(stream[i..<i + n]), into: &out) { return (out, true) }
        i += n
    }
    return (out, false)
}

// MARK: - Request builders

enum Build {
    static func tpkt(_ payload: [UInt8]) -> [UInt8] {
        [3, 0, UInt8((payload.count + 4) >> 8), UInt8((payload.count + 4) & 0xFF)] + payload
    }

    static func dt(_ s7: [UInt8], eot: Bool = true) -> [UInt8] { tpkt([2, 0xF0, eot ? 0x80 : 0x00] + s7) }

    static func u16(_ v: Int) -> [UInt8] { [UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

    static func jobPDU(_ ref: Int, _ params: [UInt8], _ data: [UInt8] = []) -> [UInt8] {
        [0x32, 1, 0, 0] + u16(ref) + u16(params.count) + u16(data.count) + params + data
    }

    static func job(_ ref: Int, _ params: [UInt8], _ data: [UInt8] = []) -> [UInt8] { dt(jobPDU(ref, params, data)) }

    static let connect = bytes("03 00 00 16 11 E0 00 00 00 01 00 C0 01 0A C1 02 01 00 C2 02 01 01")

    static func setup(_ pdu: Int, ref: Int = 1) -> [UInt8] { job(ref, [0xF0, 0, 0, 1, 0, 1] + u16(pdu)) }

    static func item(_ ts: UInt8, _ count: Int, db: Int = 0, area: UInt8, address: Int) -> [UInt8] {
        [0x12, 0x0A, 0x10, ts] + u16(count) + u16(db) + [area, UInt8((address >> 16) & 0xFF), UInt8((address >> 8) & 0xFF), UInt8(address & 0xFF)]
    }

    static func read(_ ref: Int, _ items: [[UInt8]]) -> [UInt8] { job(ref, [0x04, UInt8(items.count)] + items.flatMap { $0 }) }

    static func userData(_ ref: Int, _ params: [UInt8], _ data: [UInt8]) -> [UInt8] {
        dt([0x32, 7, 0, 0] + u16(ref) + u16(params.count) + u16(data.count) + params + data)
    }

    static func szl(_ ref: Int, id: Int, index: Int) -> [UInt8] {
        userData(ref, [0x00, 0x01, 0x12, 0x04, 0x11, 0x44, 0x01, 0x00], [0xFF, 0x09, 0x00, 0x04] + u16(id) + u16(index))
    }
}

/// A session that has connected and set up communication with `clientPDU`.
func readySession(pdu: Int = 480, clientPDU: Int = 960, memory: FlatMemory = FixtureMemory.make()) -> S7Session {
    var s = makeSession(pdu: pdu, memory: memory)
    var out: [UInt8] = []
    _ = s.receive(Build.connect, into: &out)
    _ = s.receive(Build.setup(clientPDU), into: &out)
    precondition(s.phase == .ready)
    return s
}
