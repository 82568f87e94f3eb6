import Foundation
import PLCMemory

extension S7Configuration {
    /// One line of `config show`: a key, its effective value, and what the schema says of it.
    public struct ShownSetting: Codable, Equatable, Sendable {
        public var key: String
        public var value: String
        public var defaultValue: String
        public var applies: String
        public var meaning: String
    }

    /// The effective value of every scalar key, in schema order (data blocks one by one).
    public func shownSettings() -> [ShownSetting] {
        var values: [String: String] = [
            "server.enabled": "\(server.enabled)",
            "server.bind_address": server.bindAddress,
            "server.port": "\(server.port)",
            "server.max_clients": "\(server.maxClients)",
            "server.max_clients_per_address": "\(server.maxClientsPerAddress)",
            "server.pdu_size": "\(server.pduSize)",
            "server.send_timeout_ms": "\(server.sendTimeoutMs)",
            "server.recv_timeout_ms": "\(server.recvTimeoutMs)",
            "server.ping_timeout_ms": "\(server.pingTimeoutMs)",
            "server.work_interval_ms": "\(server.workIntervalMs)",
            "server.allowed_rack_slots": server.allowedRackSlots.isEmpty ? "[] (any)" : server.allowedRackSlots.map(\.description).joined(separator: ", "),
            "server.allow_plc_control": "\(server.allowPLCControl)",
            "server.allow_clock_set": "\(server.allowClockSet)",
            "plc_identity.name": identity.name,
            "plc_identity.module_type": identity.moduleType,
            "plc_identity.serial_number": identity.serialNumber,
            "plc_identity.copyright": identity.copyright,
            "plc_identity.module_name": identity.moduleName,
            "plc_identity.order_code": identity.orderCode,
            "plc_identity.firmware_version": "V\(identity.firmwareVersion.0).\(identity.firmwareVersion.1).\(identity.firmwareVersion.2)",
            "plc_identity.plant_identification": identity.plantIdentification,
            "logging.log_connections": "\(logging.logConnections)",
            "logging.log_data_access": "\(logging.logDataAccess)",
            "logging.log_errors": "\(logging.logErrors)",
            "metrics.enabled": "\(metrics.enabled)",
            "metrics.bind_address": metrics.bindAddress,
            "metrics.port": "\(metrics.port)",
        ]
        func region(_ prefix: String, _ r: RegionDefinition?, counted: Bool = false) {
            values[prefix + ".enabled"] = "\(r != nil)"
            guard let r else { return }
            if counted {
                values[prefix + ".count"] = "\(r.size / 2)"
            } else {
                values[prefix + ".size_bytes"] = "\(r.size)"
                values[prefix + ".mapping"] = r.mapping.map { "\($0.table.rawValue) from element \($0.startElement)" } ?? "none: own storage"
                values[prefix + ".read_only"] = "\(r.readOnly)"
            }
            values[prefix + ".retain"] = "\(r.retain)"
        }
        region("system_areas.pe_area", memory.inputs)
        region("system_areas.pa_area", memory.outputs)
        region("system_areas.mk_area", memory.flags)
        region("system_areas.tm_area", memory.timers, counted: true)
        region("system_areas.ct_area", memory.counters, counted: true)
        var shown: [ShownSetting] = []
        for key in ConfigSchema.keys where !key.path.contains("[]") {
            guard let value = values[key.path] else { continue }
            shown.append(ShownSetting(key: key.path, value: value, defaultValue: key.defaultValue, applies: key.applies.rawValue, meaning: key.meaning))
        }
        for (number, db) in memory.dataBlocks.sorted(by: { $0.key < $1.key }) {
            let p = "data_blocks[db=\(number)]"
            let rows: [(String, String)] = [
                ("size_bytes", "\(db.size)"),
                ("description", dataBlockDescriptions[number] ?? ""),
                ("mapping", db.mapping.map { "\($0.table.rawValue) from element \($0.startElement)" } ?? "none: own storage"),
                ("read_only", "\(db.readOnly)"),
                ("retain", "\(db.retain)"),
            ]
            for (k, v) in rows {
                let key = ConfigSchema.key(for: "data_blocks[]." + k)
                shown.append(ShownSetting(key: p + "." + k, value: v, defaultValue: key?.defaultValue ?? "",
                                          applies: key?.applies.rawValue ?? "restart", meaning: key?.meaning ?? ""))
            }
        }
        return shown
    }

    /// Keys whose value differs between two configurations, split by where the change applies.
    public func changes(to new: S7Configuration) -> (live: [String], restart: [String]) {
        let old = Dictionary(shownSettings().map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let updated = Dictionary(new.shownSettings().map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        var live: [String] = []
        var restart: [String] = []
        let addedOrRemoved = Set(memory.dataBlocks.keys).symmetricDifference(new.memory.dataBlocks.keys)
        for number in addedOrRemoved.sorted() {
            restart.append("data_blocks[db=\(number)] (\(new.memory.dataBlocks[number] == nil ? "removed" : "added"))")
        }
        for key in Set(old.keys).union(updated.keys).sorted() where old[key]?.value != updated[key]?.value {
            if addedOrRemoved.contains(where: { key.hasPrefix("data_blocks[db=\($0)]") }) { continue }
            let applies = updated[key]?.applies ?? old[key]?.applies ?? "restart"
            if applies == ConfigKey.Applies.live.rawValue { live.append(key) } else { restart.append(key) }
        }
        return (live, restart)
    }

    /// The file `config init` writes: the defaults of the editor's help page, server disabled.
    public static let initialJSON = """
        {
          "server": {"enabled": false, "bind_address": "0.0.0.0", "port": 102, "max_clients": 32, "pdu_size": 480,
                     "send_timeout_ms": 3000, "recv_timeout_ms": 3000, "ping_timeout_ms": 10000, "work_interval_ms": 100},
          "plc_identity": {"name": "s7commd", "module_type": "CPU 315-2 PN/DP", "serial_number": "S C-S7COMMD00001",
                           "copyright": "Original Siemens Equipment", "module_name": "s7commd"},
          "data_blocks": [],
          "system_areas": {
            "pe_area": {"enabled": false, "size_bytes": 1024},
            "pa_area": {"enabled": false, "size_bytes": 1024},
            "mk_area": {"enabled": false, "size_bytes": 1024}
          },
          "logging": {"log_connections": true, "log_data_access": false, "log_errors": true}
        }
        """
}
