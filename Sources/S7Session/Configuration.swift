import PLCMemory
import S7Wire

/// What identification requests (SZL) answer: the `plc_identity` section of the configuration.
public struct PLCIdentity: Equatable, Sendable {
    /// Name of the automation system (SZL 0x001C index 1).
    public var name: String
    /// Module type name (SZL 0x001C index 7).
    public var moduleType: String
    /// Serial number of the module (SZL 0x001C index 5).
    public var serialNumber: String
    /// Copyright entry (SZL 0x001C index 4).
    public var copyright: String
    /// Module name (SZL 0x001C index 2).
    public var moduleName: String
    /// Order number (MLFB) of the module and basic hardware (SZL 0x0011).
    public var orderCode: String
    /// Firmware version, three numbers (SZL 0x0011 index 7).
    public var firmwareVersion: (UInt8, UInt8, UInt8)
    /// Plant identification (SZL 0x001C index 3).
    public var plantIdentification: String

    public init(name: String = "s7commd", moduleType: String = "CPU 315-2 PN/DP",
                serialNumber: String = "S C-S7COMMD00001", copyright: String = "Original Siemens Equipment",
                moduleName: String = "s7commd", orderCode: String = "6ES7 315-2EH14-0AB0",
                firmwareVersion: (UInt8, UInt8, UInt8) = (3, 2, 6), plantIdentification: String = "") {
        self.name = name
        self.moduleType = moduleType
        self.serialNumber = serialNumber
        self.copyright = copyright
        self.moduleName = moduleName
        self.orderCode = orderCode
        self.firmwareVersion = firmwareVersion
        self.plantIdentification = plantIdentification
    }

    public static func == (a: PLCIdentity, b: PLCIdentity) -> Bool {
        a.name == b.name && a.moduleType == b.moduleType && a.serialNumber == b.serialNumber
            && a.copyright == b.copyright && a.moduleName == b.moduleName && a.orderCode == b.orderCode
            && a.firmwareVersion == b.firmwareVersion && a.plantIdentification == b.plantIdentification
    }
}

/// A calendar time as the CPU clock reports it.
public struct PLCDateTime: Equatable, Sendable {
    public var year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, millisecond: Int
    /// 1 = Sunday ... 7 = Saturday, as S7 DATE_AND_TIME counts.
    public var weekday: Int

    public init(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, millisecond: Int, weekday: Int) {
        self.year = year
        self.month = month
        self.day = day
        self.hour = hour
        self.minute = minute
        self.second = second
        self.millisecond = millisecond
        self.weekday = weekday
    }

    /// Milliseconds since 1970-01-01 00:00 of this calendar time read as if it were UTC (the
    /// proleptic Gregorian calendar); only differences between two such values are used.
    public var civilMilliseconds: Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = Int64(era * 146_097 + doe - 719_468)
        return ((days * 24 + Int64(hour)) * 60 + Int64(minute)) * 60_000 + Int64(second) * 1000 + Int64(millisecond)
    }

    /// The calendar time `civilMilliseconds` milliseconds after 1970-01-01 00:00.
    public init(civilMilliseconds ms: Int64) {
        var days = ms / 86_400_000
        var rest = ms % 86_400_000
        if rest < 0 { rest += 86_400_000; days -= 1 }
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        // 1970-01-01 was a Thursday; S7 counts 1 = Sunday.
        let weekday = Int(((days % 7) + 7 + 4) % 7) + 1
        self.init(year: Int(y), month: Int(m), day: Int(d), hour: Int(rest / 3_600_000), minute: Int(rest / 60_000 % 60),
                  second: Int(rest / 1000 % 60), millisecond: Int(rest % 1000), weekday: weekday)
    }
}

/// Everything a session needs besides its memory: the negotiable limits, the identity and the
/// policy knobs. Immutable for the life of a connection.
public struct SessionConfiguration: Sendable {
    /// The PDU size offered (`server.pdu_size`).
    public var pduSize: Int
    public var identity: PLCIdentity
    /// Maximum number of simultaneous clients, reported in SZL 0x0131.
    public var maxClients: Int
    /// When non-empty, only these (rack, slot) pairs may connect; others get a COTP disconnect.
    public var allowedRackSlots: [RackSlot]
    /// Whether clients may stop and start the CPU (PLC stop, hot and cold start).
    public var allowPLCControl: Bool
    /// Whether clients may set the CPU clock (kept as an offset: the host clock is never changed).
    public var allowClockSet: Bool
    /// Whether every read and write becomes a ``SessionEvent/dataAccess(write:item:returnCode:)``.
    public var logDataAccess: Bool
    /// The clock the CPU reports (clock read, SZL time stamps). Injected so the session stays pure.
    public var clock: @Sendable () -> PLCDateTime

    public init(pduSize: Int = 480, identity: PLCIdentity = PLCIdentity(), maxClients: Int = 32,
                allowedRackSlots: [RackSlot] = [], allowPLCControl: Bool = false, allowClockSet: Bool = false,
                logDataAccess: Bool = false,
                clock: @escaping @Sendable () -> PLCDateTime = {
                    PLCDateTime(year: 2000, month: 1, day: 1, hour: 0, minute: 0, second: 0, millisecond: 0, weekday: 7)
                }) {
        self.pduSize = pduSize
        self.identity = identity
        self.maxClients = maxClients
        self.allowedRackSlots = allowedRackSlots
        self.allowPLCControl = allowPLCControl
        self.allowClockSet = allowClockSet
        self.logDataAccess = logDataAccess
        self.clock = clock
    }
}

public struct RackSlot: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var rack: Int
    public var slot: Int
    public init(rack: Int, slot: Int) {
        self.rack = rack
        self.slot = slot
    }
    public var description: String { "rack \(rack) slot \(slot)" }
}
