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
    /// Whether every read and write becomes a ``SessionEvent/dataAccess(write:item:returnCode:)``.
    public var logDataAccess: Bool
    /// The clock the CPU reports (clock read, SZL time stamps). Injected so the session stays pure.
    public var clock: @Sendable () -> PLCDateTime

    public init(pduSize: Int = 480, identity: PLCIdentity = PLCIdentity(), maxClients: Int = 32,
                allowedRackSlots: [RackSlot] = [], logDataAccess: Bool = false,
                clock: @escaping @Sendable () -> PLCDateTime = {
                    PLCDateTime(year: 2000, month: 1, day: 1, hour: 0, minute: 0, second: 0, millisecond: 0, weekday: 7)
                }) {
        self.pduSize = pduSize
        self.identity = identity
        self.maxClients = maxClients
        self.allowedRackSlots = allowedRackSlots
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
