import PLCMemory
import S7Wire

/// The rest of a userdata answer that did not fit one PDU.
struct UserDataContinuation {
    var group: UInt8
    var subfunction: UInt8
    var sequenceNumber: UInt8
    var remaining: ArraySlice<UInt8>
}

/// The userdata state of an established session.
struct UserDataExchange {
    /// A userdata answer too long for one PDU, sent piece by piece; nil when none is pending.
    var continuation: UserDataContinuation?
    /// The sequence number the next long answer is sent under.
    var nextSequenceNumber: UInt8 = 1
}

/// Userdata functions served here, as group << 8 | subfunction.
enum UserDataFunction {
    static func key(_ group: UInt8, _ subfunction: UInt8) -> UInt16 { UInt16(group) << 8 | UInt16(subfunction) }
    static let readSZL = key(S7UserDataGroup.cpuFunctions.rawValue, 0x01)
    static let listBlocks = key(S7UserDataGroup.blockFunctions.rawValue, 0x01)
    static let listBlocksOfType = key(S7UserDataGroup.blockFunctions.rawValue, 0x02)
    static let blockInfo = key(S7UserDataGroup.blockFunctions.rawValue, 0x03)
    static let readClock = key(S7UserDataGroup.timeFunctions.rawValue, 0x01)
    static let setClock = key(S7UserDataGroup.timeFunctions.rawValue, 0x02)
    static let setClockAlternative = key(S7UserDataGroup.timeFunctions.rawValue, 0x04)
}

/// Bytes of the userdata parameter block and data header around each answer fragment.
private let userDataOverhead = S7Limits.shortHeaderLength + 12 + 4

extension S7Session {
    mutating func userData(_ ref: UInt16, _ p: S7UserDataParameters, _ payload: ArraySlice<UInt8>, _ agreed: Int,
                           _ exchange: inout UserDataExchange, _ out: inout [UInt8]) {
        // A follow-up request (8-byte parameters) asks for the next piece of a long answer.
        if p.dataUnitReference != nil {
            guard var c = exchange.continuation, c.group == p.group, c.subfunction == p.subfunction else {
                events.append(.refused(what: "userdata follow-up request", error: "no answer is pending"))
                writeUserDataError(ref, group: p.group, subfunction: p.subfunction, sequence: p.sequenceNumber,
                                   error: S7UserDataError.functionNotImplemented, &out)
                return
            }
            let piece = c.remaining.prefix(agreed - userDataOverhead)
            c.remaining = c.remaining.dropFirst(piece.count)
            let more = !c.remaining.isEmpty
            writeUserData(ref, group: p.group, subfunction: p.subfunction, sequence: c.sequenceNumber, more: more, piece, &out)
            exchange.continuation = more ? c : nil
            return
        }
        exchange.continuation = nil
        let answer: Result<[UInt8], UserDataRefusal>
        switch UserDataFunction.key(p.group, p.subfunction) {
        case UserDataFunction.readSZL:
            answer = readSZL(payload)
        case UserDataFunction.listBlocks:
            answer = .success(listBlocks())
        case UserDataFunction.listBlocksOfType:
            answer = listBlocksOfType(payload)
        case UserDataFunction.blockInfo:
            answer = blockInfo(payload)
        case UserDataFunction.readClock:
            answer = .success(clockBytes())
        case UserDataFunction.setClock, UserDataFunction.setClockAlternative:
            answer = setClock(payload)
        case _ where p.group == S7UserDataGroup.timeFunctions.rawValue:
            answer = .failure(UserDataRefusal(code: S7UserDataError.functionNotImplemented, why: "time function \(p.subfunction) is not implemented"))
        case _ where p.group == S7UserDataGroup.security.rawValue:
            answer = .failure(UserDataRefusal(code: S7UserDataError.protectionViolation, why: "passwords are not supported: the CPU has no protection to lift"))
        default:
            answer = .failure(UserDataRefusal(code: S7UserDataError.functionNotImplemented,
                                              why: "userdata group \(p.group) subfunction \(p.subfunction) is not implemented"))
        }
        switch answer {
        case .failure(let refusal):
            events.append(.refused(what: "userdata group \(p.group) subfunction \(p.subfunction)", error: refusal.why))
            writeUserDataError(ref, group: p.group, subfunction: p.subfunction, sequence: p.sequenceNumber, error: refusal.code, &out)
        case .success(let bytes):
            let room = agreed - userDataOverhead
            if bytes.count <= room {
                writeUserData(ref, group: p.group, subfunction: p.subfunction, sequence: p.sequenceNumber, more: false, bytes[...], &out)
            } else {
                let sequence = exchange.nextSequenceNumber
                exchange.nextSequenceNumber = sequence == 0xFF ? 1 : sequence + 1
                writeUserData(ref, group: p.group, subfunction: p.subfunction, sequence: sequence, more: true, bytes.prefix(room), &out)
                exchange.continuation = UserDataContinuation(group: p.group, subfunction: p.subfunction, sequenceNumber: sequence,
                                                    remaining: bytes.dropFirst(room))
            }
        }
    }

    func writeUserData(_ ref: UInt16, group: UInt8, subfunction: UInt8, sequence: UInt8, more: Bool,
                       _ payload: ArraySlice<UInt8>, _ out: inout [UInt8]) {
        var f = S7FrameBuilder(&out, rosctr: .userData, pduReference: ref)
        S7UserDataParameters(method: 0x12, type: 0x8, group: group, subfunction: subfunction, sequenceNumber: sequence,
                             dataUnitReference: more ? sequence : 0, lastDataUnit: more ? 1 : 0, errorCode: 0)
            .encode(into: &out)
        f.beginData(&out)
        out.append(S7ReturnCode.success.rawValue)
        out.append(S7DataTransportSize.octetString.rawValue)
        out.appendU16(payload.count)
        out.append(contentsOf: payload)
        f.finish(&out)
    }

    func writeUserDataError(_ ref: UInt16, group: UInt8, subfunction: UInt8, sequence: UInt8, error: UInt16, _ out: inout [UInt8]) {
        var f = S7FrameBuilder(&out, rosctr: .userData, pduReference: ref)
        S7UserDataParameters(method: 0x12, type: 0x8, group: group, subfunction: subfunction, sequenceNumber: sequence,
                             dataUnitReference: 0, lastDataUnit: 0, errorCode: error)
            .encode(into: &out)
        f.beginData(&out)
        out.append(contentsOf: [S7ReturnCode.objectDoesNotExist.rawValue, S7DataTransportSize.null.rawValue, 0, 0])
        f.finish(&out)
    }

    // MARK: - Clock

    /// The CPU clock: the host clock plus the offset a client's clock set left.
    func cpuTime() -> PLCDateTime {
        let offset = memory.clockOffsetMilliseconds
        let host = configuration.clock()
        return offset == 0 ? host : PLCDateTime(civilMilliseconds: host.civilMilliseconds + offset)
    }

    /// Sets the CPU clock when allowed, as an offset from the host clock (which stays as it is).
    mutating func setClock(_ payload: ArraySlice<UInt8>) -> Result<[UInt8], UserDataRefusal> {
        guard configuration.allowClockSet else {
            return .failure(UserDataRefusal(code: S7UserDataError.protectionViolation,
                                            why: "setting the CPU clock is not allowed (server.allow_clock_set is false)"))
        }
        let b = Array(payload)
        func bcd(_ v: UInt8) -> Int? { v >> 4 < 10 && v & 0x0F < 10 ? Int(v >> 4) * 10 + Int(v & 0x0F) : nil }
        guard b.count == 10, let yy = bcd(b[2]), let month = bcd(b[3]), let day = bcd(b[4]), let hour = bcd(b[5]),
              let minute = bcd(b[6]), let second = bcd(b[7]), let msHigh = bcd(b[8]), b[9] >> 4 < 10,
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 60 else {
            return .failure(UserDataRefusal(code: S7UserDataError.invalidDateTime, why: "clock set with an invalid date or time"))
        }
        let wanted = PLCDateTime(year: yy < 90 ? 2000 + yy : 1900 + yy, month: month, day: day, hour: hour, minute: minute,
                                 second: second, millisecond: msHigh * 10 + Int(b[9] >> 4), weekday: 0)
        memory.setClockOffset(milliseconds: wanted.civilMilliseconds - configuration.clock().civilMilliseconds)
        events.append(.control("CPU clock set to \(wanted.year)-\(wanted.month)-\(wanted.day) \(wanted.hour):\(wanted.minute):\(wanted.second) (the host clock is unchanged)"))
        return .success([])
    }

    func clockBytes() -> [UInt8] {
        let t = cpuTime()
        func bcd(_ v: Int) -> UInt8 { UInt8((v / 10 % 10) << 4 | v % 10) }
        return [
            0x00, bcd(t.year / 100), bcd(t.year % 100), bcd(t.month), bcd(t.day),
            bcd(t.hour), bcd(t.minute), bcd(t.second), bcd(t.millisecond / 10), UInt8((t.millisecond % 10) << 4 | t.weekday & 0x0F),
        ]
    }

    // MARK: - Blocks

    /// Block type codes as S7 writes them ('8' OB, 'A' DB, ...).
    static let blockTypes: [UInt8] = [0x38, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46]
    static let dbBlockType: UInt8 = 0x41

    func listBlocks() -> [UInt8] {
        var out: [UInt8] = []
        for type in S7Session.blockTypes {
            out.append(0x30)
            out.append(type)
            out.appendU16(type == S7Session.dbBlockType ? memory.layout.dataBlocks.count : 0)
        }
        return out
    }

    func listBlocksOfType(_ payload: ArraySlice<UInt8>) -> Result<[UInt8], UserDataRefusal> {
        guard payload.count == 2, payload.first == 0x30, let type = payload.last, S7Session.blockTypes.contains(type) else {
            return .failure(UserDataRefusal(code: S7UserDataError.invalidBlockNumber, why: "unknown block type in list-of-type request"))
        }
        guard type == S7Session.dbBlockType, !memory.layout.dataBlocks.isEmpty else {
            return .failure(UserDataRefusal(code: S7UserDataError.noBlockAvailable, why: "no block of type 0x\(String(type, radix: 16))"))
        }
        var out: [UInt8] = []
        for number in memory.layout.dataBlocks.keys.sorted() {
            out.appendU16(number)
            out.append(0x22)  // flags as a CPU reports them for a DB in load memory
            out.append(0x05)  // language: DB
        }
        return .success(out)
    }

    func blockInfo(_ payload: ArraySlice<UInt8>) -> Result<[UInt8], UserDataRefusal> {
        let bytes = Array(payload)
        guard bytes.count == 8, bytes[0] == 0x30, S7Session.blockTypes.contains(bytes[1]),
              bytes[2...6].allSatisfy({ (0x30...0x39).contains($0) }),
              let number = Int(String(decoding: bytes[2...6], as: UTF8.self)), number <= 0xFFFF
        else {
            return .failure(UserDataRefusal(code: S7UserDataError.invalidBlockNumber, why: "malformed block-info request"))
        }
        guard bytes[1] == S7Session.dbBlockType, let db = memory.layout.dataBlocks[UInt16(number)] else {
            return .failure(UserDataRefusal(code: S7UserDataError.blockNotFound, why: "block \(Character(UnicodeScalar(bytes[1])))\(number) does not exist"))
        }
        var out: [UInt8] = [0x01, 0x00, 0x00, 0x4A, 0x00, 0x22, 0x70, 0x70, 0x01]
        out.append(0x01)  // block flags
        out.append(0x05)  // language DB
        out.append(0x0A)  // sub block type DB
        out.appendU16(number)
        out.appendU32(UInt32(db.size + 92))  // load memory: the data plus the block header and footer
        out.appendU32(0)  // block security: none
        out.appendU32(0)  // code time (ms)
        out.appendU16(0x2E3C)  // code date: days since 1984-01-01 (2016-05-10)
        out.appendU32(0)  // interface time (ms)
        out.appendU16(0x2E3C)  // interface date
        out.appendU16(0x14)  // SBB length
        out.appendU16(0)  // ADD length
        out.appendU16(0)  // local data
        out.appendU16(db.size)  // MC7 size: the data bytes
        out.append(contentsOf: padded("S7COMMD", 8, fill: 0x20))  // author
        out.append(contentsOf: padded("DB", 8, fill: 0x20))  // family
        out.append(contentsOf: padded("DB\(number)", 8, fill: 0x20))  // name
        out.append(0x01)  // version 0.1
        out.append(0x00)
        out.appendU16(0)  // checksum
        out.append(contentsOf: [UInt8](repeating: 0, count: 8))
        return .success(out)
    }
}

struct UserDataRefusal: Error {
    var code: UInt16
    var why: String
}

/// `text` as bytes, cut or padded to `length`.
func padded(_ text: String, _ length: Int, fill: UInt8 = 0) -> [UInt8] {
    var bytes = Array(text.utf8.prefix(length))
    bytes.append(contentsOf: [UInt8](repeating: fill, count: length - bytes.count))
    return bytes
}
