import PLCMemory
import S7Wire

/// The system status lists (SZL) s7commd answers, built from ``PLCIdentity`` the way an
/// S7-300/400 CPU lays them out.
enum SZL {
    /// Every SZL ID answered, as reported by SZL 0x0000.
    static let supportedIDs: [UInt16] = [0x0000, 0x0011, 0x0111, 0x001C, 0x011C, 0x0131, 0x0232, 0x0424]

    static let moduleIdentificationIndices: [UInt16] = [0x0001, 0x0006, 0x0007]
    static let componentIndices: [UInt16] = [0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0007, 0x0008, 0x0009]
}

extension S7Session {
    func readSZL(_ payload: ArraySlice<UInt8>) -> Result<[UInt8], UserDataRefusal> {
        var r = ByteReader(payload)
        guard payload.count == 4, let id = try? r.u16("SZL id"), let index = try? r.u16("SZL index") else {
            return .failure(UserDataRefusal(code: S7UserDataError.szlNotAvailable, why: "SZL request data is not an id and an index"))
        }
        guard let (recordLength, records) = szlRecords(id: id, index: index) else {
            let known = SZL.supportedIDs.contains(id)
            return .failure(UserDataRefusal(
                code: known ? S7UserDataError.invalidSZLIndex : S7UserDataError.szlNotAvailable,
                why: known ? "SZL 0x\(hex4(id)) has no index 0x\(hex4(index))" : "SZL 0x\(hex4(id)) is not available"))
        }
        var out: [UInt8] = []
        out.appendU16(id)
        out.appendU16(index)
        out.appendU16(recordLength)
        out.appendU16(records.count)
        for record in records { out.append(contentsOf: record) }
        return .success(out)
    }

    /// The records of one partial list, or nil when the ID or index is not served.
    func szlRecords(id: UInt16, index: UInt16) -> (Int, [[UInt8]])? {
        let identity = configuration.identity
        switch id {
        case 0x0000:
            return (2, SZL.supportedIDs.map { [UInt8($0 >> 8), UInt8($0 & 0xFF)] })
        case 0x0011, 0x0111:
            let all = SZL.moduleIdentificationIndices.map { moduleIdentification(index: $0, identity) }
            if id == 0x0011 { return (28, all) }
            guard let i = SZL.moduleIdentificationIndices.firstIndex(of: index) else { return nil }
            return (28, [all[i]])
        case 0x001C, 0x011C:
            let all = SZL.componentIndices.map { componentIdentification(index: $0, identity) }
            if id == 0x001C { return (34, all) }
            guard let i = SZL.componentIndices.firstIndex(of: index) else { return nil }
            return (34, [all[i]])
        case 0x0131:
            guard index == 0x0001 else { return nil }
            var rec: [UInt8] = []
            rec.appendU16(0x0001)
            rec.appendU16(configuration.pduSize)  // largest PDU
            rec.appendU16(configuration.maxClients)  // connections
            rec.appendU32(187_500)  // MPI rate (bit/s), as a 300 reports it
            rec.appendU32(1_500_000)  // communication bus rate
            rec.append(contentsOf: [UInt8](repeating: 0, count: 26))
            return (40, [rec])
        case 0x0232:
            guard index == 0x0004 else { return nil }
            var rec: [UInt8] = []
            for word: UInt16 in [0x0004, 1, 0, 1, 1, 0] { rec.appendU16(word) }  // index, level by switch 1, no password, valid 1, switch RUN, startup 0
            rec.append(contentsOf: [UInt8](repeating: 0, count: 28))
            return (40, [rec])
        case 0x0424:
            let mode = memory.operatingMode
            // Event: the last mode transition (0x4302 STARTUP to RUN, 0x4304 to STOP); then the mode.
            var rec: [UInt8] = [0x43, mode == .run ? 0x02 : 0x04, 0xFF, mode.rawValue, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]
            rec.append(contentsOf: dateAndTime())
            return (20, [rec])
        default:
            return nil
        }
    }

    /// A 28-byte record of SZL 0x0011: index, order number, module type, versions.
    private func moduleIdentification(index: UInt16, _ identity: PLCIdentity) -> [UInt8] {
        var rec: [UInt8] = []
        rec.appendU16(index)
        let (v1, v2, v3) = identity.firmwareVersion
        switch index {
        case 0x0007:
            // Basic firmware: no order number, 'V' and the three version numbers. It is the
            // last record, which is where clients read the version from.
            rec.append(contentsOf: [UInt8](repeating: 0x20, count: 20))
            rec.append(contentsOf: [0x00, 0xC0, 0x56, v1, v2, v3])
        default:
            rec.append(contentsOf: padded(identity.orderCode, 20, fill: 0x20))
            rec.append(contentsOf: [0x00, 0xC0, 0x00, 0x04, 0x00, 0x01])
        }
        return rec
    }

    /// A 34-byte record of SZL 0x001C: index and a NUL-padded text.
    private func componentIdentification(index: UInt16, _ identity: PLCIdentity) -> [UInt8] {
        var rec: [UInt8] = []
        rec.appendU16(index)
        switch index {
        case 0x0001: rec.append(contentsOf: padded(identity.name, 24) + padded("", 8))
        case 0x0002: rec.append(contentsOf: padded(identity.moduleName, 24) + padded("", 8))
        case 0x0003: rec.append(contentsOf: padded(identity.plantIdentification, 32))
        case 0x0004: rec.append(contentsOf: padded(identity.copyright, 26) + padded("", 6))
        case 0x0005: rec.append(contentsOf: padded(identity.serialNumber, 24) + padded("", 8))
        case 0x0007: rec.append(contentsOf: padded(identity.moduleType, 32))
        case 0x0009: rec.append(contentsOf: [0x00, 0x2A, 0xF6, 0x00, 0x00, 0x01] + padded("", 26))  // Siemens, profile, type
        default: rec.append(contentsOf: padded("", 32))
        }
        return rec
    }

    /// The current time as an 8-byte S7 DATE_AND_TIME (BCD).
    func dateAndTime() -> [UInt8] {
        Array(clockBytes().dropFirst(2))
    }
}

func hex4(_ v: UInt16) -> String {
    let s = String(v, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, 4 - s.count)) + s
}
