import Foundation
import PLCMemory
import Testing
@testable import S7Config

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

func server(_ key: String, _ value: Any) -> String { "{\"server\": {\"\(key)\": \(value)}}" }

func dataBlock(_ fields: String) -> String { "{\"data_blocks\": [\(fields)]}" }

@Suite("Configuration")
struct ConfigTests {
    /// `valid` values load; `invalid` values give exactly one problem naming `keyPath`.
    func check(_ keyPath: String, valid: [String], invalid: [String], _ make: (String) -> String) {
        for v in valid {
            #expect(problems(make(v)).isEmpty, "\(keyPath) = \(v) must be accepted")
        }
        for v in invalid {
            let found = problems(make(v))
            #expect(found.map(\.keyPath) == [keyPath], "\(keyPath) = \(v) must be refused: \(found)")
        }
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
        #expect(p.first?.description == "server.pdu_size = 961: allowed 240-960 (largest PDU offered in bytes; clients get the smaller of theirs and this)")
    }

    @Test func duplicateDBNumber() {
        let p = problems(dataBlock("{\"db_number\": 7, \"size_bytes\": 4}, {\"db_number\": 8, \"size_bytes\": 4}, {\"db_number\": 7, \"size_bytes\": 2}"))
        #expect(p.map(\.keyPath) == ["data_blocks[2].db_number"])
        #expect(p.first?.meaning == "DB7 is already defined earlier in data_blocks")
        #expect(problems(dataBlock("{\"size_bytes\": 4}")).map(\.keyPath) == ["data_blocks[0].db_number"])
        #expect(problems(dataBlock("{\"db_number\": 1}")).map(\.keyPath) == ["data_blocks[0].size_bytes"])
    }

    @Test func stringLengths() {
        let ok = String(repeating: "x", count: 64)
        let long = String(repeating: "x", count: 65)
        let twoByteChars = String(repeating: "ä", count: 33)  // 66 bytes in UTF-8
        for key in ["name", "module_type", "serial_number", "copyright", "module_name", "order_code", "plant_identification"] {
            check("plc_identity.\(key)", valid: ["\"\(ok)\""], invalid: ["\"\(long)\"", "\"\(twoByteChars)\""]) { "{\"plc_identity\": {\"\(key)\": \($0)}}" }
        }
        check("data_blocks[0].description", valid: ["\"\(ok)\""], invalid: ["\"\(long)\""]) { dataBlock("{\"db_number\": 1, \"size_bytes\": 4, \"description\": \($0)}") }
    }

    @Test func mappingType() {
        let p = problems(dataBlock("{\"db_number\": 1, \"size_bytes\": 4, \"mapping\": {\"type\": \"float_memory\", \"start_buffer\": 0}}"))
        #expect(p.map(\.keyPath) == ["data_blocks[0].mapping.type"])
        #expect(p.first?.value == "\"float_memory\"")
        #expect(p.first?.allowed.contains("int_memory") == true)
        check("system_areas.pe_area.mapping.type", valid: ["\"bool_input\""], invalid: ["\"bool\"", "null"]) {
            "{\"system_areas\": {\"pe_area\": {\"size_bytes\": 4, \"mapping\": {\"type\": \($0)}}}}"
        }
        check("data_blocks[0].mapping.start_buffer", valid: ["0", "1023"], invalid: ["-1", "1024"]) {
            dataBlock("{\"db_number\": 1, \"size_bytes\": 2, \"mapping\": {\"type\": \"int_memory\", \"start_buffer\": \($0)}}")
        }
    }

    @Test func mappingMustEndInsideItsTable() {
        check("data_blocks[0].size_bytes", valid: ["48"], invalid: ["49"]) {
            dataBlock("{\"db_number\": 3, \"size_bytes\": \($0), \"mapping\": {\"type\": \"int_memory\", \"start_buffer\": 1000}}")
        }
    }

    @Test func everyProblemAtOnce() throws {
        let json = """
            {"server": {"port": 0, "pdu_size": 100, "bind_address": "example.com"},
             "plc_identity": {"firmware_version": "3.2"},
             "data_blocks": [{"db_number": 0, "size_bytes": 1}]}
            """
        let keys = problems(json).map(\.keyPath)
        #expect(Set(keys) == ["server.port", "server.pdu_size", "server.bind_address", "plc_identity.firmware_version", "data_blocks[0].db_number"])
        do {
            _ = try S7Configuration.parse(Data(json.utf8), path: "/etc/s7commd/x.json")
        } catch let error as ConfigurationError {
            #expect(error.description.hasPrefix("configuration /etc/s7commd/x.json is not valid (5 problems); nothing was started:"))
        }
    }

    @Test func wrongTypesNameTheKey() {
        #expect(problems(server("port", "\"102\"")).map(\.keyPath) == ["server.port"])
        #expect(problems("{\"data_blocks\": [{\"db_number\": 1, \"size_bytes\": true}]}").map(\.keyPath) == ["data_blocks[0].size_bytes"])
        #expect(problems("{\"server\": ").map(\.keyPath) == ["(file)"])
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
        #expect(empty.memory.inputs == nil && empty.memory.dataBlocks.isEmpty)
    }

    @Test func areasAndRackSlots() throws {
        let c = try S7Configuration.parse(Data("""
            {"server": {"allowed_rack_slots": [{"rack": 0, "slot": 2}]},
             "system_areas": {"pe_area": {"size_bytes": 8, "read_only": true}, "pa_area": {"enabled": false},
                              "tm_area": {"count": 10}, "ct_area": {"enabled": true}}}
            """.utf8))
        #expect(c.memory.inputs == RegionDefinition(size: 8, readOnly: true))
        #expect(c.memory.outputs == nil)
        #expect(c.memory.timers?.size == 20)
        #expect(c.memory.counters?.size == 512)
        #expect(c.server.allowedRackSlots.map(\.description) == ["rack 0 slot 2"])
        #expect(problems("{\"server\": {\"allowed_rack_slots\": [{\"rack\": 8, \"slot\": 0}]}}").map(\.keyPath) == ["server.allowed_rack_slots[0]"])
    }

    @Test func loadMissingFile() {
        #expect(throws: ConfigurationError.self) { try S7Configuration.load(path: "/nonexistent/s7commd.json") }
    }
}

