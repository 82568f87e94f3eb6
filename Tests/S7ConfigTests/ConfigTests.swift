import Foundation
import PLCMemory
import Testing
@testable import S7Config

// MARK: - Helpers

/// Problems of a configuration text, empty when it is valid.
func problems(_ json: String) -> [ConfigurationProblem] {
    do {
        _ = try S7Configuration.parse(Data(json.utf8))
        return []
    } catch let error as ConfigurationError {
        return error.problems
    } catch {
        Issue.record("unexpected error \(error)")
        return []
    }
}

func parsed(_ json: String, sourceLocation: SourceLocation = #_sourceLocation) -> S7Configuration? {
    do {
        return try S7Configuration.parse(Data(json.utf8))
    } catch {
        Issue.record("\(json) must be accepted: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

func server(_ key: String, _ value: Any) -> String { "{\"server\": {\"\(key)\": \(value)}}" }

func dataBlock(_ fields: String) -> String { "{\"data_blocks\": [\(fields)]}" }

/// A JSON tree built from (path, raw JSON text) assignments, so every test value is written
/// into the file exactly as given (no JSONSerialization round trip in between).
indirect enum JSONTree {
    case raw(String)
    case object([String: JSONTree])
    case list([JSONTree])

    enum Segment { case key(String), index(Int) }

    static func segments(_ path: String) -> [Segment] {
        var out: [Segment] = []
        for part in path.split(separator: ".") {
            var name = Substring(part)
            var indices: [Int] = []
            while name.last == "]", let open = name.lastIndex(of: "[") {
                indices.insert(Int(name[name.index(after: open)..<name.index(before: name.endIndex)])!, at: 0)
                name = name[..<open]
            }
            out.append(.key(String(name)))
            out += indices.map { .index($0) }
        }
        return out
    }

    static func build(_ assignments: [(String, String)]) -> JSONTree {
        var tree = JSONTree.object([:])
        for (path, raw) in assignments { tree = tree.setting(segments(path)[...], raw) }
        return tree
    }

    func setting(_ segs: ArraySlice<Segment>, _ raw: String) -> JSONTree {
        guard let first = segs.first else { return .raw(raw) }
        switch (first, self) {
        case (.key(let k), .object(var d)):
            d[k] = (d[k] ?? (segs.dropFirst().first.map { if case .index = $0 { return .list([]) } else { return .object([:]) } } ?? .raw("null")))
                .setting(segs.dropFirst(), raw)
            return .object(d)
        case (.index(let i), .list(var l)):
            while l.count <= i { l.append(.object([:])) }
            l[i] = l[i].setting(segs.dropFirst(), raw)
            return .list(l)
        default:
            return JSONTree.object([:]).setting(segs, raw)
        }
    }

    var text: String {
        switch self {
        case .raw(let r): return r
        case .object(let d): return "{" + d.keys.sorted().map { "\"\($0)\": \(d[$0]!.text)" }.joined(separator: ", ") + "}"
        case .list(let l): return "[" + l.map(\.text).joined(separator: ", ") + "]"
        }
    }
}

extension ConfigKey.Kind {
    var isScalar: Bool {
        switch self {
        case .object, .array: return false
        default: return true
        }
    }
}

/// `data_blocks[].x` → `data_blocks[0].x`.
func concrete(_ path: String) -> String { path.replacingOccurrences(of: "[]", with: "[0]") }

/// The sibling keys a key needs to be checked on its own: the entry or area it belongs to,
/// enabled and with its required keys, and a mapping when the key is part of one.
func context(for path: String) -> [(String, String)] {
    let mapped = path.contains(".mapping.")
    if path.hasPrefix("data_blocks[]") {
        return [("data_blocks[0].db_number", "1"), ("data_blocks[0].size_bytes", "2")]
            + (mapped ? [("data_blocks[0].mapping.type", "\"int_memory\""), ("data_blocks[0].mapping.start_buffer", "0")] : [])
    }
    for area in ["pe_area", "pa_area", "mk_area"] where path.hasPrefix("system_areas.\(area).") {
        let p = "system_areas.\(area)"
        return [(p + ".enabled", "true"), (p + ".size_bytes", "2")] + (mapped ? [(p + ".mapping.type", "\"int_memory\""), (p + ".mapping.start_buffer", "0")] : [])
    }
    for area in ["tm_area", "ct_area"] where path.hasPrefix("system_areas.\(area).") {
        return [("system_areas.\(area).enabled", "true"), ("system_areas.\(area).count", "1")]
    }
    if path.hasPrefix("server.allowed_rack_slots[].") {
        return [("server.allowed_rack_slots[0].rack", "0"), ("server.allowed_rack_slots[0].slot", "0")]
    }
    return []
}

/// The file text with `path` set to `raw` (or left out when `raw` is nil) in its context.
func file(_ path: String, _ raw: String?) -> String {
    let target = concrete(path)
    var assignments = context(for: path).filter { $0.0 != target }
    if let raw { assignments.append((target, raw)) }
    return JSONTree.build(assignments).text
}

/// The effective value of a scalar key as text, nil when the configuration has no such value.
func effective(_ path: String, _ c: S7Configuration) -> String? {
    func region(_ p: String) -> RegionDefinition? {
        if p.hasPrefix("data_blocks[]") { return c.memory.dataBlocks.values.first }
        if p.hasPrefix("system_areas.pe_area") { return c.memory.inputs }
        if p.hasPrefix("system_areas.pa_area") { return c.memory.outputs }
        if p.hasPrefix("system_areas.mk_area") { return c.memory.flags }
        if p.hasPrefix("system_areas.tm_area") { return c.memory.timers }
        if p.hasPrefix("system_areas.ct_area") { return c.memory.counters }
        return nil
    }
    let last = path.split(separator: ".").suffix(2).joined(separator: ".")
    switch path {
    case "data_blocks[].db_number": return c.memory.dataBlocks.keys.first.map { "\($0)" }
    case "data_blocks[].description": return c.dataBlockDescriptions.values.first
    case "server.allowed_rack_slots[].rack": return c.server.allowedRackSlots.first.map { "\($0.rack)" }
    case "server.allowed_rack_slots[].slot": return c.server.allowedRackSlots.first.map { "\($0.slot)" }
    default: break
    }
    if path.hasPrefix("data_blocks[]") || path.hasPrefix("system_areas.") {
        let r = region(path)
        switch last {
        case _ where path.hasSuffix(".enabled"): return "\(r != nil)"
        case _ where path.hasSuffix(".size_bytes"): return r.map { "\($0.size)" }
        case _ where path.hasSuffix(".count"): return r.map { "\($0.size / 2)" }
        case "mapping.type": return r?.mapping?.table.rawValue
        case "mapping.start_buffer": return r?.mapping.map { "\($0.startElement)" }
        case "mapping.bit_addressing": return r?.mapping.map { "\($0.bitAddressing)" }
        case _ where path.hasSuffix(".read_only"): return r.map { "\($0.readOnly)" }
        case _ where path.hasSuffix(".retain"): return r.map { "\($0.retain)" }
        default: return nil
        }
    }
    return c.shownSettings().first { $0.key == path }?.value
}

/// The text of the schema's default: `false (true for *_input mappings)` → `false`, `""` → empty.
/// nil for keys that are required (no default).
func defaultText(_ key: ConfigKey) -> String? {
    let d = key.defaultValue
    if d.hasPrefix("(required") { return nil }
    if d == "\"\"" { return "" }
    if let paren = d.range(of: " (") { return String(d[..<paren.lowerBound]) }
    return d
}

/// One problem, at `keyPath`, whose description names the value, what is allowed and the meaning.
func expectOneProblem(_ json: String, at keyPath: String, naming value: String, key: ConfigKey,
                      sourceLocation: SourceLocation = #_sourceLocation) {
    let found = problems(json)
    #expect(found.count == 1, "\(json): expected one problem at \(keyPath), got \(found)", sourceLocation: sourceLocation)
    guard found.count == 1, let p = found.first else { return }
    #expect(p.keyPath == keyPath, "\(json): \(p)", sourceLocation: sourceLocation)
    #expect(p.description.contains(value), "\(p) must name the value \(value)", sourceLocation: sourceLocation)
    #expect(p.description.contains(key.allowed), "\(p) must name what is allowed: \(key.allowed)", sourceLocation: sourceLocation)
    #expect(!key.meaning.isEmpty && p.description.contains(key.meaning), "\(p) must name the meaning: \(key.meaning)",
            sourceLocation: sourceLocation)
}

let allMappingTypes = ["bool_input", "bool_output", "bool_memory", "byte_input", "byte_output", "byte_memory",
                       "int_input", "int_output", "int_memory", "dint_input", "dint_output", "dint_memory",
                       "lint_input", "lint_output", "lint_memory"]

// MARK: - Every key of the schema

@Suite("Every schema key")
struct SchemaKeyTests {
    static let scalarKeys = ConfigSchema.keys.filter { $0.kind.isScalar }

    @Test func schemaHasEveryScalarKeyOnce() {
        let paths = ConfigSchema.keys.map(\.path)
        #expect(Set(paths).count == paths.count, "a path is listed twice")
        #expect(Self.scalarKeys.count >= 50)
        for key in ConfigSchema.keys {
            #expect(!key.meaning.isEmpty, "\(key.path) has no meaning text")
            #expect(ConfigSchema.key(for: concrete(key.path))?.path == key.path)
        }
    }

    @Test(arguments: scalarKeys.map(\.path))
    func defaultWhenMissing(_ path: String) throws {
        let key = try #require(ConfigSchema.key(for: path))
        let json = file(path, nil)
        if let expected = defaultText(key) {
            guard let c = parsed(json) else { return }
            #expect(effective(path, c) == expected, "\(path) missing in \(json): default must be \(expected)")
        } else {
            expectOneProblem(json, at: concrete(path), naming: "(missing)", key: key)
        }
    }

    @Test(arguments: scalarKeys.map(\.path))
    func acceptedValues(_ path: String) throws {
        let key = try #require(ConfigSchema.key(for: path))
        var accepted: [(raw: String, effective: String)] = []
        switch key.kind {
        case .bool:
            accepted = [("true", "true"), ("false", "false")]
        case .int(let r):
            accepted = [("\(r.lowerBound)", "\(r.lowerBound)"), ("\(r.upperBound)", "\(r.upperBound)")]
        case .string(let max):
            let longest = String(repeating: "x", count: max)
            let umlauts = String(repeating: "ä", count: max / 2)
            accepted = [("\"\"", ""), ("\"\(longest)\"", longest), ("\"\(umlauts)\"", umlauts)]
        case .address:
            accepted = [("\"0.0.0.0\"", "0.0.0.0"), ("\"127.0.0.1\"", "127.0.0.1"), ("\"::1\"", "::1"), ("\"::\"", "::")]
        case .loopbackAddress:
            accepted = [("\"127.0.0.1\"", "127.0.0.1"), ("\"127.8.9.10\"", "127.8.9.10"), ("\"::1\"", "::1")]
        case .mappingType:
            accepted = allMappingTypes.map { ("\"\($0)\"", $0) }
        case .version:
            accepted = [("\"V0.0.0\"", "V0.0.0"), ("\"V255.255.255\"", "V255.255.255"), ("\"V3.2.6\"", "V3.2.6")]
        case .object, .array:
            Issue.record("not scalar")
        }
        for (raw, expected) in accepted {
            guard let c = parsed(file(path, raw)) else { continue }
            #expect(effective(path, c) == expected, "\(path) = \(raw)")
        }
    }

    @Test(arguments: scalarKeys.map(\.path))
    func refusedValues(_ path: String) throws {
        let key = try #require(ConfigSchema.key(for: path))
        var refused: [(raw: String, named: String)] = []
        switch key.kind {
        case .bool:
            break
        case .int(let r):
            refused = [("\(r.lowerBound - 1)", "\(r.lowerBound - 1)"), ("\(r.upperBound + 1)", "\(r.upperBound + 1)")]
        case .string(let max):
            refused = [("\"\(String(repeating: "x", count: max + 1))\"", "(\(max + 1) bytes)"),
                       ("\"\(String(repeating: "ä", count: max / 2 + 1))\"", "(\(max + 2) bytes)")]
        case .address:
            refused = [("\"example.com\"", "\"example.com\""), ("\"256.1.1.1\"", "\"256.1.1.1\""), ("\"\"", "\"\"")]
        case .loopbackAddress:
            refused = [("\"0.0.0.0\"", "\"0.0.0.0\""), ("\"192.0.2.1\"", "\"192.0.2.1\""), ("\"::\"", "\"::\""),
                       ("\"128.0.0.1\"", "\"128.0.0.1\""), ("\"localhost\"", "\"localhost\"")]
        case .mappingType:
            refused = [("\"float_memory\"", "\"float_memory\""), ("\"BOOL_INPUT\"", "\"BOOL_INPUT\""), ("\"\"", "\"\"")]
        case .version:
            refused = [("\"V256.0.0\"", "\"V256.0.0\""), ("\"3.2\"", "\"3.2\""), ("\"V3.2.6.1\"", "\"V3.2.6.1\"")]
        case .object, .array:
            Issue.record("not scalar")
        }
        for (raw, named) in refused {
            expectOneProblem(file(path, raw), at: concrete(path), naming: named, key: key)
        }
    }

    @Test(arguments: scalarKeys.map(\.path))
    func wrongJSONType(_ path: String) throws {
        let key = try #require(ConfigSchema.key(for: path))
        var wrong: [String] = []
        switch key.kind {
        case .bool: wrong = ["1", "\"true\""]
        case .int: wrong = ["\"5\"", "true", "1.5"]
        case .string, .address, .loopbackAddress, .mappingType, .version: wrong = ["5", "false"]
        case .object, .array: Issue.record("not scalar")
        }
        for raw in wrong {
            expectOneProblem(file(path, raw), at: concrete(path), naming: raw, key: key)
        }
    }

    /// `config show` and the unknown-key warnings read the schema: every shown row carries the
    /// schema's default and meaning, and every key of a full file is known.
    @Test func helperTextsComeFromTheSchema() throws {
        let c = try S7Configuration.demo()
        let shown = c.shownSettings()
        for row in shown {
            let key = try #require(ConfigSchema.key(for: row.key.replacingOccurrences(of: "[db=", with: "[")))
            #expect(row.meaning == key.meaning && row.defaultValue == key.defaultValue && row.applies == key.applies.rawValue, "\(row.key)")
        }
        let shownKeys = Set(shown.map(\.key))
        for key in ConfigSchema.keys where key.kind.isScalar && !key.path.contains("[]") && !key.path.contains(".mapping.") {
            #expect(shownKeys.contains(key.path), "config show leaves out \(key.path)")
        }
        #expect(c.warnings.isEmpty)
        let p = problems(server("pdu_size", 961))
        #expect(p.first?.description == "server.pdu_size = 961: allowed 240-960 (\(ConfigSchema.key(for: "server.pdu_size")!.meaning))")
    }
}

// MARK: - Rules across keys

@Suite("Configuration")
struct ConfigTests {
    /// `valid` values load; `invalid` values give exactly one problem naming `keyPath`.
    func check(_ keyPath: String, valid: [String], invalid: [String], sourceLocation: SourceLocation = #_sourceLocation,
               _ make: (String) -> String) {
        for v in valid {
            #expect(problems(make(v)).isEmpty, "\(keyPath) = \(v) must be accepted: \(problems(make(v)))", sourceLocation: sourceLocation)
        }
        for v in invalid {
            let found = problems(make(v))
            #expect(found.map(\.keyPath) == [keyPath], "\(keyPath) = \(v) must be refused: \(found)", sourceLocation: sourceLocation)
        }
    }

    /// The metrics port may not be the S7 port while both listen; off by default, loopback only.
    @Test func metricsPortAndAddress() throws {
        check("metrics.port", valid: ["0", "9102", "103"], invalid: ["102"]) { port in
            #"{"server": {"enabled": true, "port": 102}, "metrics": {"enabled": true, "port": \#(port)}}"#
        }
        let clash = problems(#"{"server": {"enabled": true, "port": 1102}, "metrics": {"enabled": true, "port": 1102}}"#)
        #expect(clash.first?.description.contains("allowed 0-65535 except 1102 (server.port)") == true, "\(clash)")
        // a disabled server or disabled metrics listen on nothing: no clash
        #expect(problems(#"{"server": {"enabled": false, "port": 102}, "metrics": {"enabled": true, "port": 102}}"#).isEmpty)
        #expect(problems(#"{"server": {"enabled": true, "port": 102}, "metrics": {"enabled": false, "port": 102}}"#).isEmpty)
        let defaults = try #require(parsed(#"{"server": {"enabled": false}}"#))
        #expect(defaults.metrics == S7Configuration.Metrics(enabled: false, bindAddress: "127.0.0.1", port: 0))
        #expect(defaults.metrics.tcpEndpoint == nil)
        let v6 = try #require(parsed(#"{"server": {"enabled": false}, "metrics": {"enabled": true, "bind_address": "::1", "port": 9102}}"#))
        #expect(v6.metrics.tcpEndpoint == "http://[::1]:9102/metrics")
    }

    @Test func ranges() {
        check("server.port", valid: ["1", "65535"], invalid: ["0", "65536"]) { server("port", $0) }
        check("server.max_clients", valid: ["1", "1024"], invalid: ["0", "1025"]) { server("max_clients", $0) }
        check("server.pdu_size", valid: ["240", "960"], invalid: ["239", "961"]) { server("pdu_size", $0) }
        check("data_blocks[0].db_number", valid: ["1", "65535"], invalid: ["0", "65536"]) { dataBlock("{\"db_number\": \($0), \"size_bytes\": 4}") }
        check("data_blocks[0].size_bytes", valid: ["1", "65535"], invalid: ["0", "65536"]) { dataBlock("{\"db_number\": 1, \"size_bytes\": \($0)}") }
        check("system_areas.mk_area.size_bytes", valid: ["1", "65535"], invalid: ["0", "65536"]) {
            "{\"system_areas\": {\"mk_area\": {\"enabled\": true, \"size_bytes\": \($0)}}}"
        }
        check("system_areas.tm_area.count", valid: ["1", "65535"], invalid: ["0", "65536"]) {
            "{\"system_areas\": {\"tm_area\": {\"enabled\": true, \"count\": \($0)}}}"
        }
    }

    @Test func rangeErrorMessage() {
        let p = problems(server("pdu_size", 961))
        let meaning = ConfigSchema.key(for: "server.pdu_size")!.meaning
        #expect(p.first?.description == "server.pdu_size = 961: allowed 240-960 (\(meaning))")
        #expect(meaning.contains("240-960"))
    }

    @Test func duplicateDBNumber() {
        let p = problems(dataBlock("{\"db_number\": 7, \"size_bytes\": 4}, {\"db_number\": 8, \"size_bytes\": 4}, {\"db_number\": 7, \"size_bytes\": 2}"))
        #expect(p.map(\.keyPath) == ["data_blocks[2].db_number"])
        #expect(p.first?.value == "7")
        #expect(p.first?.meaning == "DB7 is already defined earlier in data_blocks")
        #expect(p.first?.allowed == "1-65535")
        #expect(problems(dataBlock("{\"size_bytes\": 4}")).map(\.keyPath) == ["data_blocks[0].db_number"])
        #expect(problems(dataBlock("{\"db_number\": 1}")).map(\.keyPath) == ["data_blocks[0].size_bytes"])
        // Two duplicates: both reported.
        let two = problems(dataBlock("{\"db_number\": 1, \"size_bytes\": 4}, {\"db_number\": 1, \"size_bytes\": 4}, {\"db_number\": 1, \"size_bytes\": 4}"))
        #expect(two.map(\.keyPath) == ["data_blocks[1].db_number", "data_blocks[2].db_number"])
    }

    @Test func stringLengths() {
        let ok = String(repeating: "x", count: 64)
        let long = String(repeating: "x", count: 65)
        let twoByteChars = String(repeating: "ä", count: 33)  // 66 bytes in UTF-8
        for key in ["name", "module_type", "serial_number", "copyright", "module_name", "order_code", "plant_identification"] {
            check("plc_identity.\(key)", valid: ["\"\(ok)\""], invalid: ["\"\(long)\"", "\"\(twoByteChars)\""]) { "{\"plc_identity\": {\"\(key)\": \($0)}}" }
        }
        // Descriptions: up to 128 bytes (the plugin's limit).
        let desc128 = String(repeating: "d", count: 128)
        let desc129 = String(repeating: "d", count: 129)
        check("data_blocks[0].description", valid: ["\"\(ok)\"", "\"\(long)\"", "\"\(desc128)\""], invalid: ["\"\(desc129)\""]) {
            dataBlock("{\"db_number\": 1, \"size_bytes\": 4, \"description\": \($0)}")
        }
    }

    @Test func mappingType() {
        let p = problems(dataBlock("{\"db_number\": 1, \"size_bytes\": 4, \"mapping\": {\"type\": \"float_memory\", \"start_buffer\": 0}}"))
        #expect(p.map(\.keyPath) == ["data_blocks[0].mapping.type"])
        #expect(p.first?.value == "\"float_memory\"")
        for t in allMappingTypes { #expect(p.first?.allowed.contains(t) == true) }
        check("system_areas.pe_area.mapping.type", valid: ["\"bool_input\""], invalid: ["\"bool\"", "null"]) {
            "{\"system_areas\": {\"pe_area\": {\"enabled\": true, \"size_bytes\": 4, \"mapping\": {\"type\": \($0)}}}}"
        }
        check("data_blocks[0].mapping.start_buffer", valid: ["0", "1023"], invalid: ["-1", "1024"]) {
            dataBlock("{\"db_number\": 1, \"size_bytes\": 2, \"mapping\": {\"type\": \"int_memory\", \"start_buffer\": \($0)}}")
        }
    }

    @Test(arguments: allMappingTypes)
    func everyMappingTypeForADBAndForPE(_ type: String) throws {
        let table = try #require(ImageTable(rawValue: type))
        let json = """
            {"data_blocks": [{"db_number": 5, "size_bytes": 16, "mapping": {"type": "\(type)", "start_buffer": 3}}],
             "system_areas": {"pe_area": {"enabled": true, "size_bytes": 8, "mapping": {"type": "\(type)", "start_buffer": 0}}}}
            """
        guard let c = parsed(json) else { return }
        #expect(c.memory.dataBlocks[5]?.mapping == ImageMapping(table: table, startElement: 3))
        #expect(c.memory.inputs?.mapping == ImageMapping(table: table, startElement: 0))
        // The whole table, from element 0, fits exactly; one byte more does not.
        check("data_blocks[0].size_bytes", valid: ["\(table.byteSize)"], invalid: ["\(table.byteSize + 1)"]) {
            dataBlock("{\"db_number\": 1, \"size_bytes\": \($0), \"mapping\": {\"type\": \"\(type)\"}}")
        }
    }

    @Test func byteMemoryIsAnExtensionThatLoads() throws {
        let c = try #require(parsed(dataBlock("{\"db_number\": 1, \"size_bytes\": 1024, \"mapping\": {\"type\": \"byte_memory\"}}")))
        #expect(c.memory.dataBlocks[1]?.mapping?.table == .byteMemory)
    }

    @Test func unknownMappingType() {
        for bad in ["float_memory", "word_input", "int", "Int_Memory", "int_memory "] {
            let json = "{\"system_areas\": {\"pa_area\": {\"enabled\": true, \"size_bytes\": 4, \"mapping\": {\"type\": \"\(bad)\"}}}}"
            expectOneProblem(json, at: "system_areas.pa_area.mapping.type", naming: "\"\(bad)\"",
                             key: ConfigSchema.key(for: "system_areas.pa_area.mapping.type")!)
        }
    }

    @Test func mappingMustEndInsideItsTable() {
        check("data_blocks[0].size_bytes", valid: ["48"], invalid: ["49"]) {
            dataBlock("{\"db_number\": 3, \"size_bytes\": \($0), \"mapping\": {\"type\": \"int_memory\", \"start_buffer\": 1000}}")
        }
        check("system_areas.mk_area.size_bytes", valid: ["8"], invalid: ["9"]) {
            "{\"system_areas\": {\"mk_area\": {\"enabled\": true, \"size_bytes\": \($0), \"mapping\": {\"type\": \"lint_memory\", \"start_buffer\": 1023}}}}"
        }
        let p = problems(dataBlock("{\"db_number\": 3, \"size_bytes\": 49, \"mapping\": {\"type\": \"int_memory\", \"start_buffer\": 1000}}"))
        #expect(p.first?.value == "49")
        #expect(p.first?.meaning.contains("int_memory from element 1000 has 48 bytes") == true)
    }

    @Test func inputMappingsAreReadOnlyByDefault() throws {
        for type in allMappingTypes {
            let c = try #require(parsed("""
                {"data_blocks": [{"db_number": 1, "size_bytes": 4, "mapping": {"type": "\(type)"}},
                                 {"db_number": 2, "size_bytes": 4, "mapping": {"type": "\(type)"}, "read_only": false},
                                 {"db_number": 3, "size_bytes": 4, "mapping": {"type": "\(type)"}, "read_only": true}],
                 "system_areas": {"pe_area": {"enabled": true, "size_bytes": 4, "mapping": {"type": "\(type)"}},
                                  "pa_area": {"enabled": true, "size_bytes": 4, "mapping": {"type": "\(type)"}, "read_only": false}}}
                """))
            let isInput = type.hasSuffix("_input")
            #expect(c.memory.dataBlocks[1]?.readOnly == isInput, "\(type)")
            #expect(c.memory.dataBlocks[2]?.readOnly == false, "\(type)")
            #expect(c.memory.dataBlocks[3]?.readOnly == true, "\(type)")
            #expect(c.memory.inputs?.readOnly == isInput, "\(type)")
            #expect(c.memory.outputs?.readOnly == false, "\(type)")
        }
        let own = try #require(parsed(dataBlock("{\"db_number\": 1, \"size_bytes\": 4}")))
        #expect(own.memory.dataBlocks[1]?.readOnly == false)
    }

    @Test func everyProblemAtOnce() throws {
        let json = """
            {"server": {"port": 0, "pdu_size": 100, "bind_address": "example.com"},
             "plc_identity": {"firmware_version": "3.2"},
             "data_blocks": [{"db_number": 0, "size_bytes": 1}]}
            """
        let keys = problems(json).map(\.keyPath)
        #expect(Set(keys) == ["server.port", "server.pdu_size", "server.bind_address", "plc_identity.firmware_version", "data_blocks[0].db_number"])
        #expect(keys.count == 5)
        do {
            _ = try S7Configuration.parse(Data(json.utf8), path: "/etc/s7commd/x.json")
            Issue.record("must be refused")
        } catch let error as ConfigurationError {
            #expect(error.description.hasPrefix("configuration /etc/s7commd/x.json is not valid (5 problems):\n"))
            #expect(error.description.split(separator: "\n").filter { $0.hasPrefix("  - ") }.count == 5)
            #expect(!error.description.contains("nothing was started"))
        }
    }

    @Test func wrongTypesNameTheKey() {
        #expect(problems(server("port", "\"102\"")).map(\.keyPath) == ["server.port"])
        #expect(problems("{\"data_blocks\": [{\"db_number\": 1, \"size_bytes\": true}]}").map(\.keyPath) == ["data_blocks[0].size_bytes"])
        #expect(problems("{\"data_blocks\": [{}, {\"db_number\": 1, \"size_bytes\": \"4\"}]}").map(\.keyPath).last == "data_blocks[1].size_bytes")
        #expect(problems("{\"server\": ").map(\.keyPath) == ["(file)"])
        #expect(problems("[1, 2]").map(\.keyPath) == ["(file)"])
        #expect(problems("{\"server\": 5}").map(\.keyPath) == ["server"])
        #expect(problems("{\"data_blocks\": {\"db_number\": 1}}").map(\.keyPath) == ["data_blocks"])
    }

    @Test func demoAndDefaults() throws {
        let demo = try S7Configuration.demo()
        #expect(demo.server.port == 102 && demo.server.pduSize == 480 && demo.server.enabled)
        #expect(demo.memory.dataBlocks.keys.sorted() == [1, 2, 10])
        #expect(demo.memory.dataBlocks[10]?.mapping == ImageMapping(table: .intMemory, startElement: 0))
        #expect(demo.identity.firmwareVersion == (3, 2, 6))
        _ = try FlatMemory(demo.memory)

        let empty = try S7Configuration.parse(Data("{}".utf8))
        #expect(empty.server.port == 102 && empty.server.maxClients == 32 && empty.server.pduSize == 480 && !empty.server.enabled)
        #expect(empty.server.bindAddress == "0.0.0.0")
        #expect(empty.memory.inputs == nil && empty.memory.outputs == nil && empty.memory.flags == nil && empty.memory.dataBlocks.isEmpty)

        let initial = try S7Configuration.parse(Data(S7Configuration.initialJSON.utf8))
        #expect(!initial.server.enabled && initial.server.bindAddress == "0.0.0.0" && initial.server.port == 102)
        #expect(initial.server.maxClients == 32 && initial.server.pduSize == 480)
        #expect(initial.warnings.isEmpty)
    }

    @Test func areasAreDisabledUnlessEnabled() throws {
        let c = try #require(parsed("""
            {"server": {"allowed_rack_slots": [{"rack": 0, "slot": 2}]},
             "system_areas": {"pe_area": {"size_bytes": 8, "read_only": true}, "pa_area": {"enabled": false},
                              "mk_area": {"enabled": true, "size_bytes": 16},
                              "tm_area": {"count": 10}, "ct_area": {"enabled": true, "count": 256}}}
            """))
        #expect(c.memory.inputs == nil, "pe_area without enabled: true is disabled")
        #expect(c.memory.outputs == nil)
        #expect(c.memory.flags == RegionDefinition(size: 16))
        #expect(c.memory.timers == nil)
        #expect(c.memory.counters?.size == 512)
        #expect(c.server.allowedRackSlots.map(\.description) == ["rack 0 slot 2"])
        #expect(problems("{\"server\": {\"allowed_rack_slots\": [{\"rack\": 8, \"slot\": 0}]}}").map(\.keyPath) == ["server.allowed_rack_slots[0].rack"])
        // Enabled areas need their size.
        #expect(problems("{\"system_areas\": {\"pe_area\": {\"enabled\": true}}}").map(\.keyPath) == ["system_areas.pe_area.size_bytes"])
        #expect(problems("{\"system_areas\": {\"ct_area\": {\"enabled\": true}}}").map(\.keyPath) == ["system_areas.ct_area.count"])
    }

    @Test func loadMissingFile() {
        #expect(throws: ConfigurationError.self) { try S7Configuration.load(path: "/nonexistent/s7commd.json") }
    }

    // MARK: Warnings

    @Test func unknownKeysAreWarnings() throws {
        let c = try #require(parsed("""
            {"sever": {"port": 1},
             "server": {"enabled": true, "prot": 1102, "allowed_rack_slots": [{"rack": 0, "slot": 1, "slto": 2}]},
             "plc_identity": {"nmae": "x"},
             "data_blocks": [{"db_number": 1, "size_bytes": 4}, {"db_number": 2, "size_bytes": 4, "sizebytes": 8,
                              "mapping": {"type": "int_memory", "startbuffer": 4}}],
             "system_areas": {"pe_area": {"enabled": true, "size_bytes": 4, "mapping": {"type": "bool_input", "bit_adressing": true}},
                              "xx_area": {}},
             "logging": {"log_everything": true}}
            """))
        let keys = c.warnings.map(\.keyPath)
        #expect(Set(keys) == ["sever", "server.prot", "server.allowed_rack_slots[0].slto", "plc_identity.nmae",
                              "data_blocks[1].sizebytes", "data_blocks[1].mapping.startbuffer",
                              "system_areas.pe_area.mapping.bit_adressing", "system_areas.xx_area", "logging.log_everything"])
        #expect(keys.count == 9)
        for w in c.warnings { #expect(w.message.contains("unknown key"), "\(w)") }
        // The known values next to them are used.
        #expect(c.server.enabled && c.server.port == 102)
        #expect(c.memory.dataBlocks[2]?.size == 4 && c.memory.dataBlocks[2]?.mapping?.startElement == 0)
    }

    @Test func missingServerEnabledWarns() throws {
        for json in ["{}", "{\"server\": {\"port\": 1102}}"] {
            let c = try #require(parsed(json))
            #expect(!c.server.enabled)
            #expect(c.warnings.map(\.keyPath) == ["server.enabled"], "\(json)")
            #expect(c.warnings.first?.message.contains("disabled") == true)
        }
        for value in ["true", "false"] {
            let c = try #require(parsed(server("enabled", value)))
            #expect(c.warnings.isEmpty)
            #expect(c.server.enabled == (value == "true"))
        }
    }

    // MARK: OpenPLC plugin file

    @Test func openPLCPluginFileLoadsUnchanged() throws {
        let url = try #require(Bundle.module.url(forResource: "openplc_plugin", withExtension: "json", subdirectory: "Fixtures"))
        let c = try S7Configuration.load(path: url.path)
        #expect(c.warnings.isEmpty, "\(c.warnings)")
        let s = c.server
        #expect(s.enabled && s.bindAddress == "0.0.0.0" && s.port == 102 && s.maxClients == 16)
        #expect(s.workIntervalMs == 50 && s.sendTimeoutMs == 2000 && s.recvTimeoutMs == 2500 && s.pingTimeoutMs == 5000 && s.pduSize == 480)
        #expect(s.allowedRackSlots.isEmpty)
        #expect(c.identity.name == "OpenPLC Mixed I/O" && c.identity.moduleType == "CPU 315-2 PN/DP")
        // Omitted identity keys keep their defaults.
        for (path, value) in [("plc_identity.serial_number", c.identity.serialNumber), ("plc_identity.copyright", c.identity.copyright),
                              ("plc_identity.module_name", c.identity.moduleName), ("plc_identity.order_code", c.identity.orderCode),
                              ("plc_identity.plant_identification", c.identity.plantIdentification)] {
            #expect(value == defaultText(ConfigSchema.key(for: path)!), "\(path)")
        }
        #expect(c.identity.firmwareVersion == (3, 2, 6))
        #expect(c.memory.dataBlocks.keys.sorted() == [1, 2, 10])
        #expect(c.memory.dataBlocks[1] == RegionDefinition(size: 128, readOnly: true, mapping: ImageMapping(table: .intInput, startElement: 0)))
        #expect(c.memory.dataBlocks[2] == RegionDefinition(size: 64, readOnly: false, mapping: ImageMapping(table: .intOutput, startElement: 0)))
        #expect(c.memory.dataBlocks[10] == RegionDefinition(size: 200, readOnly: false, mapping: ImageMapping(table: .intMemory, startElement: 100)))
        #expect(c.dataBlockDescriptions == [1: "Analog inputs (%IW)", 2: "Analog outputs (%QW)", 10: "Memory words (%MW100 onwards)"])
        #expect(c.memory.inputs == RegionDefinition(size: 128, readOnly: true,
                                                    mapping: ImageMapping(table: .boolInput, startElement: 0, bitAddressing: true)))
        #expect(c.memory.outputs == RegionDefinition(size: 128, readOnly: false,
                                                     mapping: ImageMapping(table: .boolOutput, startElement: 0, bitAddressing: true)))
        #expect(c.memory.flags == RegionDefinition(size: 256, readOnly: false,
                                                   mapping: ImageMapping(table: .boolMemory, startElement: 16, bitAddressing: true)))
        #expect(c.memory.timers == nil && c.memory.counters == nil)
        #expect(c.logging == S7Configuration.Logging(logConnections: true, logDataAccess: true, logErrors: false))
        _ = try FlatMemory(c.memory)
        #expect(c.hostProblems().isEmpty)
    }

    // MARK: Editing

    func document(_ json: String) throws -> ConfigDocument {
        try ConfigDocument(data: Data(json.utf8), path: "(test)")
    }

    func reparsed(_ d: ConfigDocument) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: d.data())) as? [String: Any] ?? [:]
    }

    @Test func documentKeyPaths() throws {
        var d = ConfigDocument()
        try d.set("server.port", text: "1102")
        try d.set("server.enabled", text: "true")
        try d.set("plc_identity.name", text: "Press 3")
        try d.set("plc_identity.serial_number", text: "1234")   // text key: stays a string
        try d.set("server.bind_address", text: "127.0.0.1")
        try d.set("data_blocks[+]", text: "{\"db_number\": 4, \"size_bytes\": 8}")
        try d.set("data_blocks[+]", text: "{\"db_number\": 10, \"size_bytes\": 8, \"mapping\": {\"type\": \"int_memory\"}}")
        try d.set("data_blocks[+]", text: "{\"db_number\": 11, \"size_bytes\": 8}")
        try d.set("data_blocks[2].size_bytes", text: "16")
        try d.set("data_blocks[db=10].mapping.type", text: "dint_memory")
        try d.set("data_blocks[db=10].mapping.start_buffer", text: "7")
        let c = try S7Configuration.parse(d.data())
        #expect(c.server.port == 1102 && c.server.enabled && c.server.bindAddress == "127.0.0.1")
        #expect(c.identity.name == "Press 3" && c.identity.serialNumber == "1234")
        #expect(c.memory.dataBlocks[11]?.size == 16)
        #expect(c.memory.dataBlocks[10]?.mapping == ImageMapping(table: .dintMemory, startElement: 7))
        // Booleans and numbers survive the JSON round trip as such.
        let root = reparsed(d)
        let serverRoot = root["server"] as? [String: Any]
        #expect(String(data: d.data(), encoding: .utf8)!.contains("\"enabled\" : true"))
        #expect(serverRoot?["port"] as? Int == 1102)

        try d.unset("server.port")
        try d.unset("data_blocks[db=4]")
        try d.unset("data_blocks[0].mapping")
        let after = try S7Configuration.parse(d.data())
        #expect(after.server.port == 102)
        #expect(after.memory.dataBlocks.keys.sorted() == [10, 11])
        #expect(after.memory.dataBlocks[10]?.mapping == nil)
    }

    @Test func documentBadPaths() throws {
        var d = try document("{\"server\": {\"port\": 102}, \"data_blocks\": [{\"db_number\": 1, \"size_bytes\": 4}]}")
        let before = d.data()
        for bad in ["", ".", "server.", ".port", "server..port", "data_blocks[x]", "data_blocks[-1]", "data_blocks[]",
                    "data_blocks[db=]", "data_blocks[db=x]", "server]", "ser[ver.port", "data_blocks[0"] {
            #expect(throws: ConfigEditError.self, "\(bad)") { try d.set(bad, text: "1") }
            #expect(throws: ConfigEditError.self, "\(bad)") { try d.unset(bad) }
        }
        #expect(throws: ConfigEditError.self) { try d.set("data_blocks[5].size_bytes", text: "1") }
        #expect(throws: ConfigEditError.self) { try d.set("data_blocks[db=99].size_bytes", text: "1") }
        #expect(throws: ConfigEditError.self) { try d.set("server.port.x", text: "1") }
        #expect(throws: ConfigEditError.self) { try d.set("server[0]", text: "1") }
        #expect(throws: ConfigEditError.self) { try d.unset("server.pdu_size") }
        #expect(throws: ConfigEditError.self) { try d.unset("data_blocks[+]") }
        #expect(throws: ConfigEditError.self) { try d.unset("data_blocks[1]") }
        #expect(d.data() == before, "a refused edit changes nothing")
        do {
            try d.set("data_blocks[db=99].size_bytes", text: "1")
        } catch {
            guard case .noSuchDB(_, 99) = error else { Issue.record("\(error)"); return }
            #expect(error.description.contains("no data block with db_number 99"))
        }
        do {
            try d.set("data_blocks[3].size_bytes", text: "1")
        } catch {
            guard case .noSuchElement(_, count: 1) = error else { Issue.record("\(error)"); return }
        }
        do {
            try d.unset("server.pdu_size")
        } catch {
            guard case .noSuchKey = error else { Issue.record("\(error)"); return }
        }
        do {
            try d.set("server..port", text: "1")
        } catch {
            guard case .badPath = error else { Issue.record("\(error)"); return }
            #expect(error.description.contains("data_blocks[db=10].mapping.type"))
        }
        #expect(ConfigDocument.segments("data_blocks[db=10].mapping.type") == [.key("data_blocks"), .dbNumber(10), .key("mapping"), .key("type")])
        #expect(ConfigDocument.segments("data_blocks[+]") == [.key("data_blocks"), .append])
        #expect(ConfigDocument.segments("data_blocks[2].size_bytes") == [.key("data_blocks"), .index(2), .key("size_bytes")])
    }

    @Test func documentEditsThatMakeTheFileInvalidAreCaught() throws {
        var d = try document(S7Configuration.initialJSON)
        try d.set("data_blocks[+]", text: "{\"db_number\": 4, \"size_bytes\": 8}")
        try d.set("data_blocks[+]", text: "{\"db_number\": 4, \"size_bytes\": 8}")
        #expect(throws: ConfigurationError.self) { try S7Configuration.parse(d.data()) }
        var e = try document(S7Configuration.initialJSON)
        try e.set("server.port", text: "70000")
        #expect(throws: ConfigurationError.self) { try S7Configuration.parse(e.data()) }
    }

    @Test func atomicWriteReplacesAndKeepsMode() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("s7cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("s7commd.json").path
        try ConfigDocument.atomicWrite(Data("{}\n".utf8), to: path)
        chmod(path, 0o600)
        var d = try document("{}")
        try d.set("server.port", text: "1102")
        try d.write(to: path)
        #expect(try S7Configuration.load(path: path).server.port == 1102)
        var st = stat()
        stat(path, &st)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["s7commd.json"], "no temporary file is left")
        #expect(throws: ConfigEditError.self) { try d.write(to: dir.path + "/missing-dir/x.json") }
    }

    // MARK: Live and restart changes

    @Test func changesAreClassifiedLiveOrRestart() throws {
        let base = """
            {"server": {"enabled": true, "port": 1102, "max_clients": 8, "pdu_size": 480},
             "plc_identity": {"name": "A"},
             "data_blocks": [{"db_number": 1, "size_bytes": 4}, {"db_number": 2, "size_bytes": 4}],
             "logging": {"log_data_access": false}}
            """
        let old = try S7Configuration.parse(Data(base.utf8))
        func changes(_ edits: [(String, String)]) throws -> (live: [String], restart: [String]) {
            var d = try document(base)
            for (k, v) in edits { try d.set(k, text: v) }
            return old.changes(to: try S7Configuration.parse(d.data()))
        }
        #expect(try changes([]) == ([], []))
        #expect(try changes([("server.max_clients", "1")]) == (["server.max_clients"], []))
        #expect(try changes([("server.pdu_size", "240"), ("plc_identity.name", "B"), ("logging.log_data_access", "true")])
                == (["logging.log_data_access", "plc_identity.name", "server.pdu_size"], []))
        #expect(try changes([("server.port", "1103")]) == ([], ["server.port"]))
        #expect(try changes([("server.bind_address", "127.0.0.1"), ("server.enabled", "false")])
                == ([], ["server.bind_address", "server.enabled"]))
        #expect(try changes([("data_blocks[db=2].size_bytes", "8")]) == ([], ["data_blocks[db=2].size_bytes"]))
        #expect(try changes([("data_blocks[+]", "{\"db_number\": 3, \"size_bytes\": 4}")]) == ([], ["data_blocks[db=3] (added)"]))
        let mixed = try changes([("server.max_clients", "2"), ("server.port", "1104")])
        #expect(mixed.live == ["server.max_clients"] && mixed.restart == ["server.port"])
        var removed = try document(base)
        try removed.unset("data_blocks[db=1]")
        #expect(old.changes(to: try S7Configuration.parse(removed.data())) == ([], ["data_blocks[db=1] (removed)"]))
        // Every live key of the schema is one the reload applies: server timeouts/limits, identity, logging.
        for key in ConfigSchema.keys where key.applies == .live {
            #expect(key.path.hasPrefix("server.") || key.path.hasPrefix("plc_identity") || key.path.hasPrefix("logging"), "\(key.path)")
            #expect(!["server.port", "server.bind_address", "server.enabled"].contains(key.path))
        }
    }

    // MARK: Host addresses

    func bound(_ address: String) throws -> S7Configuration {
        try S7Configuration.parse(Data(server("bind_address", "\"\(address)\"").utf8))
    }

    @Test func hostAddresses() throws {
        for a in ["0.0.0.0", "127.0.0.1", "::1", "::", "0:0:0:0:0:0:0:1"] {
            #expect(try bound(a).hostProblems().isEmpty, "\(a)")
        }
        let host = HostAddresses.current()
        #expect(!host.isEmpty)
        for (address, interface) in host {
            #expect(try bound(address).hostProblems().isEmpty, "\(address) (\(interface))")
        }
        for foreign in ["192.0.2.123", "198.51.100.7", "2001:db8::1"] {
            let p = try bound(foreign).hostProblems()
            #expect(p.map(\.keyPath) == ["server.bind_address"])
            #expect(p.first?.value == "\"\(foreign)\"")
            for (address, interface) in host {
                #expect(p.first?.allowed.contains("\(address) (\(interface))") == true, "\(p)")
            }
            #expect(p.first?.description.contains("not configured on any interface") == true)
        }
    }
}

@Suite("Configuration type errors")
struct ConfigTypeErrorTests {
    @Test func everyTypeErrorAtOnceWithNullAndFractions() {
        let found = problems("""
            {"server": {"port": "102", "enabled": 1, "pdu_size": 480.5, "max_clients": null},
             "plc_identity": {"name": 7},
             "data_blocks": [{"db_number": 1, "size_bytes": true}]}
            """)
        #expect(found.map(\.keyPath) == ["data_blocks[0].size_bytes", "plc_identity.name", "server.enabled",
                                         "server.max_clients", "server.pdu_size", "server.port"])
        #expect(found.first { $0.keyPath == "server.max_clients" }?.allowed.contains("remove the key") == true)
        #expect(found.first { $0.keyPath == "server.port" }?.value == "\"102\" (a string)")
        #expect(found.first { $0.keyPath == "server.pdu_size" }?.value == "480.5 (a number)")
    }
}
