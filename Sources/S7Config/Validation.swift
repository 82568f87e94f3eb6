import Foundation
import PLCMemory
import S7Session
import S7Wire

extension S7Configuration {
    /// Checks every value of `file` against its range; collects every problem instead of
    /// stopping at the first, and never repairs a value silently.
    public static func validate(_ file: ConfigurationFile, path: String = "(text)") throws(ConfigurationError) -> S7Configuration {
        var problems: [ConfigurationProblem] = []
        func int(_ value: Int?, _ key: String, _ def: Int, _ range: ClosedRange<Int>, _ meaning: String) -> Int {
            guard let v = value else { return def }
            guard range.contains(v) else {
                problems.append(ConfigurationProblem(keyPath: key, value: "\(v)", allowed: "\(range.lowerBound)-\(range.upperBound)", meaning: meaning))
                return def
            }
            return v
        }
        func text(_ value: String?, _ key: String, _ def: String, _ meaning: String) -> String {
            guard let v = value else { return def }
            guard v.utf8.count <= Defaults.maximumStringLength else {
                problems.append(ConfigurationProblem(keyPath: key, value: "\"\(v.prefix(20))…\" (\(v.utf8.count) bytes)",
                                                     allowed: "at most \(Defaults.maximumStringLength) bytes", meaning: meaning))
                return def
            }
            return v
        }
        let timeoutRange = Defaults.minimumTimeoutMs...86_400_000
        let s = file.server
        let rackSlots = (s?.allowedRackSlots ?? []).enumerated().compactMap { (i, e) -> RackSlot? in
            guard (0...7).contains(e.rack), (0...31).contains(e.slot) else {
                problems.append(ConfigurationProblem(keyPath: "server.allowed_rack_slots[\(i)]", value: "rack \(e.rack) slot \(e.slot)",
                                                     allowed: "rack 0-7, slot 0-31", meaning: "a rack/slot pair clients may connect to"))
                return nil
            }
            return RackSlot(rack: e.rack, slot: e.slot)
        }
        let bind = s?.bindAddress ?? Defaults.bindAddress
        if !isIPAddress(bind) {
            problems.append(ConfigurationProblem(keyPath: "server.bind_address", value: "\"\(bind)\"",
                                                 allowed: "0.0.0.0, 127.0.0.1 or another IPv4/IPv6 address of this host",
                                                 meaning: "the network interface the listener binds to"))
        }
        let server = Server(
            enabled: s?.enabled ?? Defaults.enabled,
            bindAddress: bind,
            port: int(s?.port, "server.port", Defaults.port, Defaults.portRange, "TCP port for S7 clients; 102 is the S7 standard"),
            maxClients: int(s?.maxClients, "server.max_clients", Defaults.maxClients, Defaults.maxClientsRange, "simultaneously connected S7 clients"),
            pduSize: int(s?.pduSize, "server.pdu_size", Defaults.pduSize, Defaults.pduRange, "largest PDU offered in bytes; clients get the smaller of theirs and this"),
            sendTimeoutMs: int(s?.sendTimeoutMs, "server.send_timeout_ms", Defaults.sendTimeoutMs, timeoutRange, "a client that takes no data for this long is dropped"),
            recvTimeoutMs: int(s?.recvTimeoutMs, "server.recv_timeout_ms", Defaults.recvTimeoutMs, timeoutRange, "a request left incomplete for this long is dropped"),
            pingTimeoutMs: int(s?.pingTimeoutMs, "server.ping_timeout_ms", Defaults.pingTimeoutMs, timeoutRange, "a client silent for this long is dropped"),
            workIntervalMs: int(s?.workIntervalMs, "server.work_interval_ms", Defaults.workIntervalMs, 1...60_000, "accepted for compatibility; s7commd is event driven"),
            allowedRackSlots: rackSlots)

        let i = file.plcIdentity
        var version: (UInt8, UInt8, UInt8) = (3, 2, 6)
        if let v = i?.firmwareVersion {
            if let parsed = parseVersion(v) { version = parsed } else {
                problems.append(ConfigurationProblem(keyPath: "plc_identity.firmware_version", value: "\"\(v)\"",
                                                     allowed: "V<major>.<minor>.<patch>, each 0-255", meaning: "firmware version reported to clients"))
            }
        }
        let d = PLCIdentity()
        let identity = PLCIdentity(
            name: text(i?.name, "plc_identity.name", d.name, "name of the automation system"),
            moduleType: text(i?.moduleType, "plc_identity.module_type", d.moduleType, "module type name"),
            serialNumber: text(i?.serialNumber, "plc_identity.serial_number", d.serialNumber, "serial number of the module"),
            copyright: text(i?.copyright, "plc_identity.copyright", d.copyright, "copyright entry"),
            moduleName: text(i?.moduleName, "plc_identity.module_name", d.moduleName, "module name"),
            orderCode: text(i?.orderCode, "plc_identity.order_code", d.orderCode, "order number (MLFB)"),
            firmwareVersion: version,
            plantIdentification: text(i?.plantIdentification, "plc_identity.plant_identification", d.plantIdentification, "plant identification"))

        var memory = MemoryDefinition()
        var descriptions: [UInt16: String] = [:]
        func mapping(_ m: ConfigurationFile.Mapping?, _ key: String) -> ImageMapping? {
            guard let m else { return nil }
            guard let name = m.type, let table = ImageTable(rawValue: name) else {
                problems.append(ConfigurationProblem(keyPath: key + ".type", value: m.type.map { "\"\($0)\"" } ?? "(missing)",
                                                     allowed: ImageTable.allCases.map(\.rawValue).joined(separator: ", "),
                                                     meaning: "the PLC image table the bytes are a view of"))
                return nil
            }
            let start = int(m.startBuffer, key + ".start_buffer", 0, 0...(ImageTable.elementCount - 1), "first element of the image table")
            return ImageMapping(table: table, startElement: start, bitAddressing: m.bitAddressing ?? false)
        }
        func fits(_ size: Int, _ m: ImageMapping?, _ key: String) {
            if let m, size > m.availableBytes {
                problems.append(ConfigurationProblem(keyPath: key + ".size_bytes", value: "\(size)",
                                                     allowed: "1-\(m.availableBytes) for \(m.table.rawValue) from element \(m.startElement)",
                                                     meaning: "bytes of the block; a mapped block must end inside its image table"))
            }
        }
        for (n, db) in (file.dataBlocks ?? []).enumerated() {
            let key = "data_blocks[\(n)]"
            guard let number = db.dbNumber else {
                problems.append(ConfigurationProblem(keyPath: key + ".db_number", value: "(missing)", allowed: "1-65535, unique", meaning: "the DB number clients address"))
                continue
            }
            guard Defaults.dbNumberRange.contains(number) else {
                problems.append(ConfigurationProblem(keyPath: key + ".db_number", value: "\(number)", allowed: "1-65535, unique", meaning: "the DB number clients address"))
                continue
            }
            guard memory.dataBlocks[UInt16(number)] == nil else {
                problems.append(ConfigurationProblem(keyPath: key + ".db_number", value: "\(number)", allowed: "1-65535, unique",
                                                     meaning: "DB\(number) is already defined earlier in data_blocks"))
                continue
            }
            guard let size = db.sizeBytes else {
                problems.append(ConfigurationProblem(keyPath: key + ".size_bytes", value: "(missing)", allowed: "1-65535", meaning: "bytes of the block"))
                continue
            }
            let checked = int(size, key + ".size_bytes", 1, Defaults.sizeRange, "bytes of the block")
            let m = mapping(db.mapping, key + ".mapping")
            fits(checked, m, key)
            memory.dataBlocks[UInt16(number)] = RegionDefinition(size: checked, readOnly: db.readOnly ?? false, retain: db.retain ?? false, mapping: m)
            descriptions[UInt16(number)] = text(db.description, key + ".description", "", "what the block holds")
        }
        func area(_ a: ConfigurationFile.Area?, _ key: String, _ meaning: String) -> RegionDefinition? {
            guard let a, a.enabled ?? true else { return nil }
            let size = int(a.sizeBytes, key + ".size_bytes", 1024, Defaults.sizeRange, meaning)
            let m = mapping(a.mapping, key + ".mapping")
            fits(size, m, key)
            return RegionDefinition(size: size, readOnly: a.readOnly ?? false, retain: a.retain ?? false, mapping: m)
        }
        func counted(_ a: ConfigurationFile.CountedArea?, _ key: String, _ meaning: String) -> RegionDefinition? {
            guard let a, a.enabled ?? true else { return nil }
            let count = int(a.count, key + ".count", 256, Defaults.countRange, meaning)
            return RegionDefinition(size: count * 2, retain: a.retain ?? false)
        }
        let sa = file.systemAreas
        memory.inputs = area(sa?.peArea, "system_areas.pe_area", "bytes of the process inputs (I)")
        memory.outputs = area(sa?.paArea, "system_areas.pa_area", "bytes of the process outputs (Q)")
        memory.flags = area(sa?.mkArea, "system_areas.mk_area", "bytes of the flags / markers (M)")
        memory.timers = counted(sa?.tmArea, "system_areas.tm_area", "number of timers (T), 2 bytes each")
        memory.counters = counted(sa?.ctArea, "system_areas.ct_area", "number of counters (C), 2 bytes each")

        let l = file.logging
        let logging = Logging(logConnections: l?.logConnections ?? true, logDataAccess: l?.logDataAccess ?? false, logErrors: l?.logErrors ?? true)
        guard problems.isEmpty else { throw ConfigurationError(path: path, problems: problems) }
        return (S7Configuration(server: server, identity: identity, memory: memory, dataBlockDescriptions: descriptions, logging: logging))
    }

    static func parseVersion(_ text: String) -> (UInt8, UInt8, UInt8)? {
        var t = Substring(text)
        if t.first == "V" || t.first == "v" { t = t.dropFirst() }
        let parts = t.split(separator: ".", omittingEmptySubsequences: false).map { UInt8($0) }
        guard parts.count == 3, let a = parts[0], let b = parts[1], let c = parts[2] else { return nil }
        return (a, b, c)
    }

    static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    /// The session settings this configuration implies.
    public func sessionConfiguration(clock: @escaping @Sendable () -> PLCDateTime) -> SessionConfiguration {
        SessionConfiguration(pduSize: server.pduSize, identity: identity, maxClients: server.maxClients,
                             allowedRackSlots: server.allowedRackSlots, logDataAccess: logging.logDataAccess, clock: clock)
    }
}
