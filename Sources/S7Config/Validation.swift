import Foundation
import PLCMemory
import S7Session
import S7Wire

/// Something in a file that is accepted but deserves the user's attention.
public struct ConfigurationWarning: Equatable, Codable, Sendable, CustomStringConvertible {
    public var keyPath: String
    public var message: String

    public var description: String { "\(keyPath): \(message)" }
}

/// Collects problems while values are checked against ``ConfigSchema``.
struct Checker {
    var problems: [ConfigurationProblem] = []

    mutating func fail(_ path: String, _ value: String, _ meaning: String? = nil, allowed: String? = nil) {
        let key = ConfigSchema.key(for: path)
        problems.append(ConfigurationProblem(keyPath: path, value: value, allowed: allowed ?? key?.allowed ?? "see docs/configuration.md",
                                             meaning: meaning ?? key?.meaning ?? ""))
    }

    mutating func int(_ value: Int?, _ path: String, _ def: Int) -> Int {
        guard let v = value else { return def }
        guard case .int(let range)? = ConfigSchema.key(for: path)?.kind, range.contains(v) else {
            fail(path, "\(v)")
            return def
        }
        return v
    }

    mutating func required(_ value: Int?, _ path: String) -> Int? {
        guard let v = value else {
            fail(path, "(missing)")
            return nil
        }
        let checked = int(v, path, -1)
        return checked == -1 ? nil : checked
    }

    mutating func text(_ value: String?, _ path: String, _ def: String) -> String {
        guard let v = value else { return def }
        guard case .string(let max)? = ConfigSchema.key(for: path)?.kind, v.utf8.count <= max else {
            fail(path, "\"\(v.prefix(24))…\" (\(v.utf8.count) bytes)")
            return def
        }
        return v
    }
}

extension S7Configuration {
    /// Checks every value of `file` against the schema; collects every problem instead of
    /// stopping at the first, and never repairs a value silently.
    public static func validate(_ file: ConfigurationFile, path: String = "(text)") throws(ConfigurationError) -> S7Configuration {
        var c = Checker()
        let s = file.server
        var rackSlots: [RackSlot] = []
        for (i, e) in (s?.allowedRackSlots ?? []).enumerated() {
            let rack = c.int(e.rack, "server.allowed_rack_slots[\(i)].rack", -1)
            let slot = c.int(e.slot, "server.allowed_rack_slots[\(i)].slot", -1)
            if rack >= 0, slot >= 0 { rackSlots.append(RackSlot(rack: rack, slot: slot)) }
        }
        let bind = s?.bindAddress ?? Defaults.bindAddress
        if !isIPAddress(bind) { c.fail("server.bind_address", "\"\(bind)\"") }
        let server = Server(
            enabled: s?.enabled ?? Defaults.enabled,
            bindAddress: bind,
            port: c.int(s?.port, "server.port", Defaults.port),
            maxClients: c.int(s?.maxClients, "server.max_clients", Defaults.maxClients),
            maxClientsPerAddress: c.int(s?.maxClientsPerAddress, "server.max_clients_per_address", Defaults.maxClientsPerAddress),
            pduSize: c.int(s?.pduSize, "server.pdu_size", Defaults.pduSize),
            sendTimeoutMs: c.int(s?.sendTimeoutMs, "server.send_timeout_ms", Defaults.sendTimeoutMs),
            recvTimeoutMs: c.int(s?.recvTimeoutMs, "server.recv_timeout_ms", Defaults.recvTimeoutMs),
            pingTimeoutMs: c.int(s?.pingTimeoutMs, "server.ping_timeout_ms", Defaults.pingTimeoutMs),
            workIntervalMs: c.int(s?.workIntervalMs, "server.work_interval_ms", Defaults.workIntervalMs),
            allowedRackSlots: rackSlots,
            allowPLCControl: s?.allowPlcControl ?? false,
            allowClockSet: s?.allowClockSet ?? false)

        let i = file.plcIdentity
        let d = PLCIdentity()
        var version = d.firmwareVersion
        if let v = i?.firmwareVersion {
            if let parsed = parseVersion(v) { version = parsed } else { c.fail("plc_identity.firmware_version", "\"\(v)\"") }
        }
        let identity = PLCIdentity(
            name: c.text(i?.name, "plc_identity.name", d.name),
            moduleType: c.text(i?.moduleType, "plc_identity.module_type", d.moduleType),
            serialNumber: c.text(i?.serialNumber, "plc_identity.serial_number", d.serialNumber),
            copyright: c.text(i?.copyright, "plc_identity.copyright", d.copyright),
            moduleName: c.text(i?.moduleName, "plc_identity.module_name", d.moduleName),
            orderCode: c.text(i?.orderCode, "plc_identity.order_code", d.orderCode),
            firmwareVersion: version,
            plantIdentification: c.text(i?.plantIdentification, "plc_identity.plant_identification", d.plantIdentification))

        var memory = MemoryDefinition()
        var descriptions: [UInt16: String] = [:]
        for (n, db) in (file.dataBlocks ?? []).enumerated() {
            let key = "data_blocks[\(n)]"
            let description = c.text(db.description, key + ".description", "")
            guard let number = c.required(db.dbNumber, key + ".db_number") else { continue }
            guard memory.dataBlocks[UInt16(number)] == nil else {
                c.fail(key + ".db_number", "\(number)", "DB\(number) is already defined earlier in data_blocks")
                continue
            }
            guard let size = c.required(db.sizeBytes, key + ".size_bytes") else { continue }
            let m = mapping(db.mapping, key, size, &c)
            memory.dataBlocks[UInt16(number)] = RegionDefinition(
                size: size, readOnly: db.readOnly ?? (m?.table.isInput ?? false), retain: db.retain ?? false, mapping: m)
            descriptions[UInt16(number)] = description
        }
        let sa = file.systemAreas
        memory.inputs = area(sa?.peArea, "system_areas.pe_area", &c)
        memory.outputs = area(sa?.paArea, "system_areas.pa_area", &c)
        memory.flags = area(sa?.mkArea, "system_areas.mk_area", &c)
        memory.timers = counted(sa?.tmArea, "system_areas.tm_area", &c)
        memory.counters = counted(sa?.ctArea, "system_areas.ct_area", &c)

        let l = file.logging
        let logging = Logging(logConnections: l?.logConnections ?? true, logDataAccess: l?.logDataAccess ?? false, logErrors: l?.logErrors ?? true)
        let m = file.metrics
        let metrics = Metrics(enabled: m?.enabled ?? false, bindAddress: m?.bindAddress ?? "127.0.0.1",
                              port: c.int(m?.port, "metrics.port", 0))
        if !isLoopback(metrics.bindAddress) { c.fail("metrics.bind_address", "\"\(metrics.bindAddress)\"") }
        if metrics.enabled, metrics.port != 0, metrics.port == server.port, server.enabled,
           metrics.bindAddress == server.bindAddress || server.bindAddress == "0.0.0.0" || server.bindAddress == "::" {
            c.fail("metrics.port", "\(metrics.port)", "the metrics port must differ from server.port, which S7 clients use",
                   allowed: "0-65535 except \(server.port) (server.port)")
        }
        guard c.problems.isEmpty else { throw ConfigurationError(path: path, problems: c.problems) }
        var warnings: [ConfigurationWarning] = []
        if s?.enabled == nil {
            warnings.append(ConfigurationWarning(
                keyPath: "server.enabled",
                message: "not set, so the server is disabled (the editor's default for a new entry; the OpenPLC plugin treats a missing key as enabled); set it to true or false"))
        }
        return S7Configuration(server: server, identity: identity, memory: memory, dataBlockDescriptions: descriptions,
                               logging: logging, metrics: metrics, warnings: warnings)
    }

    private static func mapping(_ m: ConfigurationFile.Mapping?, _ owner: String, _ size: Int, _ c: inout Checker) -> ImageMapping? {
        guard let m else { return nil }
        let key = owner + ".mapping"
        guard let name = m.type, let table = ImageTable(rawValue: name) else {
            c.fail(key + ".type", m.type.map { "\"\($0)\"" } ?? "(missing)")
            return nil
        }
        let start = c.int(m.startBuffer, key + ".start_buffer", 0)
        let mapping = ImageMapping(table: table, startElement: start, bitAddressing: m.bitAddressing ?? false)
        if size > mapping.availableBytes {
            c.fail(owner + ".size_bytes", "\(size)",
                   "a mapped region must end inside its image table: \(table.rawValue) from element \(start) has \(mapping.availableBytes) bytes")
        }
        return mapping
    }

    private static func area(_ a: ConfigurationFile.Area?, _ key: String, _ c: inout Checker) -> RegionDefinition? {
        guard let a, a.enabled ?? false else { return nil }
        guard let size = c.required(a.sizeBytes, key + ".size_bytes") else { return nil }
        let m = mapping(a.mapping, key, size, &c)
        return RegionDefinition(size: size, readOnly: a.readOnly ?? (m?.table.isInput ?? false), retain: a.retain ?? false, mapping: m)
    }

    private static func counted(_ a: ConfigurationFile.CountedArea?, _ key: String, _ c: inout Checker) -> RegionDefinition? {
        guard let a, a.enabled ?? false else { return nil }
        guard let count = c.required(a.count, key + ".count") else { return nil }
        return RegionDefinition(size: count * 2, retain: a.retain ?? false)
    }

    static func parseVersion(_ text: String) -> (UInt8, UInt8, UInt8)? {
        var t = Substring(text)
        if t.first == "V" || t.first == "v" { t = t.dropFirst() }
        let parts = t.split(separator: ".", omittingEmptySubsequences: false).map { UInt8($0) }
        guard parts.count == 3, let a = parts[0], let b = parts[1], let c = parts[2] else { return nil }
        return (a, b, c)
    }

    /// 127.0.0.0/8 or ::1: what the metrics endpoint may listen on.
    static func isLoopback(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return false }
        return withUnsafeBytes(of: &v6) { Array($0) } == Array(repeating: 0, count: 15) + [1]
    }

    static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    /// The session settings this configuration implies.
    public func sessionConfiguration(clock: @escaping @Sendable () -> PLCDateTime) -> SessionConfiguration {
        SessionConfiguration(pduSize: server.pduSize, identity: identity, maxClients: server.maxClients,
                             allowedRackSlots: server.allowedRackSlots, allowPLCControl: server.allowPLCControl,
                             allowClockSet: server.allowClockSet, logDataAccess: logging.logDataAccess, clock: clock)
    }
}

extension ImageTable {
    /// Input tables belong to the I/O side: clients may read them, not write them.
    public var isInput: Bool { rawValue.hasSuffix("_input") }
}
