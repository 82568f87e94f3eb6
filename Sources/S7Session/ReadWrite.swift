import PLCMemory
import S7Wire

/// An S7ANY item resolved to a place in PLC memory.
struct ResolvedItem {
    var area: PLCArea
    var db: UInt16
    var offset: Int
    var byteCount: Int
    /// The bit number for a bit access, nil otherwise.
    var bit: Int?
    var transportSize: S7TransportSize

    var label: String {
        let place = area == .dataBlock ? "DB\(db)." : area.rawValue
        if let bit { return "\(place)\(offset).\(bit)" }
        return "\(place)\(offset) (\(byteCount) bytes)"
    }
}

extension S7ReturnCode {
    /// The one place a memory failure becomes an item return code.
    init(_ error: MemoryAccessError) {
        switch error {
        case .objectDoesNotExist: self = .objectDoesNotExist
        case .addressOutOfRange: self = .addressOutOfRange
        case .readOnly: self = .accessDenied
        }
    }
}

extension S7Session {
    /// Checks an item's syntax, type and area, then its range against the layout, in that order.
    func resolve(_ spec: S7VarSpec, writing: Bool) -> Result<ResolvedItem, S7ReturnCode> {
        guard spec.syntaxID == 0x10 else { return .failure(.addressOutOfRange) }
        guard let ts = S7TransportSize(rawValue: spec.transportSize) else { return .failure(.dataTypeNotSupported) }
        let area: PLCArea
        switch S7AreaCode(rawValue: spec.area) {
        case .inputs: area = .inputs
        case .outputs: area = .outputs
        case .flags: area = .flags
        case .dataBlock: area = .dataBlock
        case .timer: area = .timers
        case .counter: area = .counters
        default: return .failure(.objectDoesNotExist)
        }
        let count = Int(spec.count)
        guard count >= 1 else { return .failure(.addressOutOfRange) }
        var item = ResolvedItem(area: area, db: area == .dataBlock ? spec.dbNumber : 0, offset: 0, byteCount: 0, bit: nil, transportSize: ts)
        switch (area, ts) {
        case (.timers, .timer), (.counters, .counter):
            item.offset = Int(spec.address) * 2
            item.byteCount = count * 2
        case (.timers, _), (.counters, _), (_, .timer), (_, .counter):
            return .failure(.dataTypeNotSupported)
        case (_, .bit):
            guard count == 1 else { return .failure(.dataTypeInconsistent) }
            item.offset = Int(spec.address >> 3)
            item.bit = Int(spec.address & 7)
            item.byteCount = 1
        default:
            guard spec.address & 7 == 0 else { return .failure(.addressOutOfRange) }
            item.offset = Int(spec.address >> 3)
            item.byteCount = count * ts.elementSize
        }
        guard let placement = memory.layout.placement(area, db: item.db) else { return .failure(.objectDoesNotExist) }
        guard item.offset + item.byteCount <= placement.size else { return .failure(.addressOutOfRange) }
        if writing && placement.readOnly { return .failure(.accessDenied) }
        return .success(item)
    }

    /// Answers Read Var, resolving each item once: its answer is written while the running
    /// answer size fits the agreed PDU; when the whole answer does not fit, what was written
    /// (and logged) is taken back and the request answered with the PDU size error instead.
    mutating func readVar(_ ref: UInt16, _ specs: [S7VarSpec], _ agreed: Int, _ out: inout [UInt8]) {
        let frameStart = out.count
        let eventsBefore = events.count
        var size = S7Limits.longHeaderLength + 2
        var f = S7FrameBuilder(&out, rosctr: .ackData, pduReference: ref, error: S7HeaderError(errorClass: 0, code: 0))
        out.append(S7Function.readVar.rawValue)
        out.append(UInt8(specs.count))
        f.beginData(&out)
        for (i, spec) in specs.enumerated() {
            let resolved = resolve(spec, writing: false)
            let fill: Bool
            switch resolved {
            case .failure:
                size += 4
                fill = false
            case .success(let item):
                fill = item.byteCount % 2 == 1 && i < specs.count - 1
                size += 4 + item.byteCount + (fill ? 1 : 0)
            }
            // Past the agreed PDU only the size is counted, for the event.
            guard size <= agreed else { continue }
            let itemStart = out.count
            var code = S7ReturnCode.success
            switch resolved {
            case .failure(let c):
                code = c
            case .success(let item):
                out.append(S7ReturnCode.success.rawValue)
                let rts = item.transportSize.responseTransportSize
                out.append(rts.rawValue)
                out.appendU16(rts.lengthInBits && item.bit == nil ? item.byteCount * 8 : item.byteCount)
                do throws(MemoryAccessError) {
                    if let bit = item.bit {
                        out.append(try memory.readBit(item.area, db: item.db, offset: item.offset, bit: bit) ? 1 : 0)
                    } else {
                        try memory.read(item.area, db: item.db, offset: item.offset, count: item.byteCount, into: &out)
                    }
                    if fill { out.append(0) }
                } catch {
                    out.removeSubrange(itemStart...)
                    code = S7ReturnCode(error)
                }
                logAccess(write: false, item.label, code)
            }
            if code != .success {
                out.append(contentsOf: [code.rawValue, 0, 0, 0])
            }
        }
        guard size <= agreed else {
            out.removeSubrange(frameStart...)
            events.removeSubrange(eventsBefore...)
            events.append(.exceededPDU(what: "Read Var answer", size: size, agreed: agreed))
            writeJobError(ref, function: S7Function.readVar.rawValue, error: .incorrectPDUSize, &out)
            return
        }
        f.finish(&out)
    }

    mutating func writeVar(_ ref: UInt16, _ specs: [S7VarSpec], _ items: [S7DataItem], _ out: inout [UInt8]) {
        var f = S7FrameBuilder(&out, rosctr: .ackData, pduReference: ref, error: S7HeaderError(errorClass: 0, code: 0))
        out.append(S7Function.writeVar.rawValue)
        out.append(UInt8(specs.count))
        f.beginData(&out)
        for (spec, data) in zip(specs, items) {
            let code: S7ReturnCode
            switch resolve(spec, writing: true) {
            case .failure(let c):
                code = c
            case .success(let item):
                code = store(item, data)
                logAccess(write: true, item.label, code)
            }
            out.append(code.rawValue)
        }
        f.finish(&out)
    }

    private func store(_ item: ResolvedItem, _ data: S7DataItem) -> S7ReturnCode {
        guard let ts = S7DataTransportSize(rawValue: data.transportSize), ts != .null else {
            return .dataTypeNotSupported
        }
        guard data.data.count == item.byteCount, (ts == .bit) == (item.bit != nil) else {
            return .dataTypeInconsistent
        }
        do throws(MemoryAccessError) {
            if let bit = item.bit {
                try memory.writeBit(item.area, db: item.db, offset: item.offset, bit: bit, value: data.data.first.map { $0 & 1 == 1 } ?? false)
            } else {
                try memory.write(item.area, db: item.db, offset: item.offset, bytes: data.data)
            }
            return .success
        } catch {
            return S7ReturnCode(error)
        }
    }

    private mutating func logAccess(write: Bool, _ label: @autoclosure () -> String, _ code: S7ReturnCode) {
        if configuration.logDataAccess {
            events.append(.dataAccess(write: write, item: label(), returnCode: code.rawValue))
        }
    }
}
