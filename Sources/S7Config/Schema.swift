/// Every key of the configuration file: its type, default, allowed values, what it means and
/// whether a running server can apply a change without a restart. Validation, `config show`,
/// the unknown-key warnings and docs/configuration.md all read this one table.
public struct ConfigKey: Sendable {
    public enum Kind: Sendable, Equatable {
        case bool
        case int(ClosedRange<Int>)
        case string(maxBytes: Int)
        case address
        case loopbackAddress
        case mappingType
        case version
        case object
        case array
    }

    /// Where a change takes effect.
    public enum Applies: String, Sendable {
        /// At once on SIGHUP / `s7commd reload`, for connections opened afterwards.
        case live
        /// At the next start.
        case restart
    }

    /// Dotted path; `[]` stands for any element of a list (`data_blocks[].size_bytes`).
    public let path: String
    public let kind: Kind
    public let defaultValue: String
    public let meaning: String
    public let applies: Applies
    /// True for keys s7commd adds to the OpenPLC plugin's format.
    public let s7commdOnly: Bool

    public var allowed: String {
        switch kind {
        case .bool: return "true or false"
        case .int(let r): return "\(r.lowerBound)-\(r.upperBound)"
        case .string(let n): return "a string of at most \(n) bytes"
        case .address: return "0.0.0.0, 127.0.0.1, or an IPv4/IPv6 address of this host"
        case .loopbackAddress: return "a loopback address: 127.0.0.1 (any of 127.0.0.0/8) or ::1"
        case .mappingType: return ImageTableNames.all
        case .version: return "V<major>.<minor>.<patch>, each 0-255"
        case .object: return "an object"
        case .array: return "a list"
        }
    }
}

enum ImageTableNames {
    static let all = "bool_input, bool_output, bool_memory, byte_input, byte_output, byte_memory, int_input, int_output, "
        + "int_memory, dint_input, dint_output, dint_memory, lint_input, lint_output, lint_memory"
}

public enum ConfigSchema {
    /// The largest server.max_clients.
    public static let maximumClients = 1024

    private static func key(_ path: String, _ kind: ConfigKey.Kind, _ def: String, _ applies: ConfigKey.Applies,
                            _ meaning: String, s7commd: Bool = false) -> ConfigKey {
        ConfigKey(path: path, kind: kind, defaultValue: def, meaning: meaning, applies: applies, s7commdOnly: s7commd)
    }

    public static let keys: [ConfigKey] = [
        key("server", .object, "", .restart, "the S7 listener"),
        key("server.enabled", .bool, "false", .restart,
            "when false the server is disabled: s7commd keeps PLC memory and all settings but opens no listener; when true the listener starts with the runtime"),
        key("server.bind_address", .address, "0.0.0.0", .restart,
            "the network interface to listen on: 0.0.0.0 for every interface, 127.0.0.1 for clients on this host only"),
        key("server.port", .int(1...65535), "102", .restart,
            "TCP port for S7 clients; 102 is the S7 standard and most HMIs cannot change it"),
        key("server.max_clients", .int(1...maximumClients), "32", .live, "simultaneously connected S7 clients (1-1024)"),
        key("server.max_clients_per_address", .int(0...1024), "0", .live,
            "connections one IP address may hold at once; a further one is closed at once; 0: no limit", s7commd: true),
        key("server.pdu_size", .int(240...960), "480", .live,
            "largest S7 telegram offered, in bytes (240-960); each client gets the smaller of its own and this"),
        key("server.send_timeout_ms", .int(100...30_000), "3000", .live, "answers the client leaves unread this long after it stopped taking them: it is dropped"),
        key("server.recv_timeout_ms", .int(100...30_000), "3000", .live, "a deadline, never extended by trickled bytes: COTP connect and Setup Communication this long after connecting, each request this long after its first byte; else the client is dropped"),
        key("server.ping_timeout_ms", .int(100...60_000), "10000", .live, "a client that completes no request for this long is dropped, freeing its slot (empty data TPDUs do not count)"),
        key("server.work_interval_ms", .int(10...1000), "100", .live, "accepted for compatibility; s7commd is event driven and does not poll"),
        key("server.allowed_rack_slots", .array, "[] (any)", .live,
            "when not empty, only these {\"rack\", \"slot\"} pairs may connect; others get a COTP disconnect", s7commd: true),
        key("server.allowed_rack_slots[].rack", .int(0...7), "(required)", .live, "rack number clients may connect to", s7commd: true),
        key("server.allowed_rack_slots[].slot", .int(0...31), "(required)", .live, "slot number clients may connect to", s7commd: true),
        key("server.allow_plc_control", .bool, "false", .live,
            "clients may stop and start the CPU (PLC stop, hot / cold start); when false these are refused as by a protected CPU", s7commd: true),
        key("server.allow_clock_set", .bool, "false", .live,
            "clients may set the CPU clock (kept as an offset; the host clock is never changed); when false it is refused", s7commd: true),
        key("plc_identity", .object, "", .live, "what identification requests (SZL) report"),
        key("plc_identity.name", .string(maxBytes: 64), "s7commd", .live, "name of the automation system (SZL 0x001C index 1)"),
        key("plc_identity.module_type", .string(maxBytes: 64), "CPU 315-2 PN/DP", .live, "module type name (SZL 0x001C index 7)"),
        key("plc_identity.serial_number", .string(maxBytes: 64), "S C-S7COMMD00001", .live, "serial number of the module (SZL 0x001C index 5)"),
        key("plc_identity.copyright", .string(maxBytes: 64), "Original Siemens Equipment", .live, "copyright entry (SZL 0x001C index 4)"),
        key("plc_identity.module_name", .string(maxBytes: 64), "s7commd", .live, "module name (SZL 0x001C index 2)"),
        key("plc_identity.order_code", .string(maxBytes: 64), "6ES7 315-2EH14-0AB0", .live, "order number (MLFB) of module and hardware (SZL 0x0011)", s7commd: true),
        key("plc_identity.firmware_version", .version, "V3.2.6", .live, "firmware version reported to clients (SZL 0x0011)", s7commd: true),
        key("plc_identity.plant_identification", .string(maxBytes: 64), "", .live, "plant identification (SZL 0x001C index 3)", s7commd: true),
        key("data_blocks", .array, "[]", .restart, "the data blocks (DBs) clients can address"),
        key("data_blocks[].db_number", .int(1...65535), "(required)", .restart, "the DB number clients address (1-65535, unique)"),
        key("data_blocks[].description", .string(maxBytes: 128), "\"\"", .restart, "what the block holds"),
        key("data_blocks[].size_bytes", .int(1...65535), "(required)", .restart, "bytes of the block (1-65535)"),
        key("data_blocks[].mapping", .object, "none: own storage", .restart,
            "the PLC image table the block is a big-endian view of; without it the block has storage of its own"),
        key("data_blocks[].mapping.type", .mappingType, "(required)", .restart, "the PLC image table the bytes are a view of"),
        key("data_blocks[].mapping.start_buffer", .int(0...1023), "0", .restart, "first element of the image table"),
        key("data_blocks[].mapping.bit_addressing", .bool, "false", .restart, "bool tables: each DB bit is one %X bit (always so in s7commd)"),
        key("data_blocks[].read_only", .bool, "false (true for *_input mappings)", .restart,
            "clients may read but not write; a write gets \"access denied\"", s7commd: true),
        key("data_blocks[].retain", .bool, "false", .restart, "the contents survive restarts", s7commd: true),
        key("system_areas", .object, "", .restart, "the I, Q, M, T and C areas"),
    ] + area("pe_area", "process inputs (I)") + area("pa_area", "process outputs (Q)") + area("mk_area", "flags / markers (M)")
        + counted("tm_area", "timers (T)") + counted("ct_area", "counters (C)") + [
            key("logging", .object, "", .live, "what is logged"),
            key("logging.log_connections", .bool, "true", .live, "a line per connect, negotiation and disconnect with its reason"),
            key("logging.log_data_access", .bool, "false", .live, "a line per read and write item (verbose: for diagnosis)"),
            key("logging.log_errors", .bool, "true", .live, "refused requests, PDU overruns and malformed input"),
            key("metrics", .object, "disabled", .restart, "the Prometheus metrics endpoint (GET /metrics)", s7commd: true),
            key("metrics.enabled", .bool, "false", .restart,
                "serve metrics (requests, errors, bytes, clients, restarts, latency) on metrics.sock in the runtime directory (mode 0660)", s7commd: true),
            key("metrics.bind_address", .loopbackAddress, "127.0.0.1", .restart,
                "the loopback address of the metrics TCP port; metrics are never served to the network", s7commd: true),
            key("metrics.port", .int(0...65535), "0", .restart,
                "also serve the metrics on this TCP port of metrics.bind_address, for a Prometheus scraper; 0: the Unix socket only", s7commd: true),
        ]

    private static func area(_ name: String, _ what: String) -> [ConfigKey] {
        let p = "system_areas." + name
        return [
            key(p, .object, "disabled", .restart, "the \(what) area"),
            key(p + ".enabled", .bool, "false", .restart, "whether clients can address the \(what) area"),
            key(p + ".size_bytes", .int(1...65535), "(required when enabled)", .restart, "bytes of the \(what) area"),
            key(p + ".mapping", .object, "none: own storage", .restart, "the PLC image table the area is a view of"),
            key(p + ".mapping.type", .mappingType, "(required)", .restart, "the PLC image table the bytes are a view of"),
            key(p + ".mapping.start_buffer", .int(0...1023), "0", .restart, "first element of the image table"),
            key(p + ".mapping.bit_addressing", .bool, "false", .restart, "bool tables: each bit is one %X bit (always so in s7commd)"),
            key(p + ".read_only", .bool, "false (true for *_input mappings)", .restart, "clients may read but not write", s7commd: true),
            key(p + ".retain", .bool, "false", .restart, "the contents survive restarts", s7commd: true),
        ]
    }

    private static func counted(_ name: String, _ what: String) -> [ConfigKey] {
        let p = "system_areas." + name
        return [
            key(p, .object, "disabled", .restart, "the \(what)", s7commd: true),
            key(p + ".enabled", .bool, "false", .restart, "whether clients can address the \(what)", s7commd: true),
            key(p + ".count", .int(1...65535), "(required when enabled)", .restart, "number of \(what), 2 bytes each", s7commd: true),
            key(p + ".retain", .bool, "false", .restart, "the values survive restarts", s7commd: true),
        ]
    }

    private static let byPath: [String: ConfigKey] = Dictionary(keys.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })

    /// The schema entry for a concrete path (`data_blocks[3].size_bytes` finds `data_blocks[].size_bytes`).
    public static func key(for path: String) -> ConfigKey? {
        byPath[generic(path)]
    }

    /// `data_blocks[3].x` → `data_blocks[].x`.
    public static func generic(_ path: String) -> String {
        var out = ""
        var inBracket = false
        for c in path {
            if c == "[" { inBracket = true; out.append("[") } else if c == "]" { inBracket = false; out.append("]") } else if !inBracket { out.append(c) }
        }
        return out
    }
}
