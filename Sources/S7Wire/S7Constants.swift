/// Message types in the S7 header.
public enum S7ROSCTR: UInt8, Sendable {
    case job = 0x01
    case ack = 0x02
    case ackData = 0x03
    case userData = 0x07
}

/// Job function codes.
public enum S7Function: UInt8, Sendable {
    case cpuServices = 0x00
    case setupCommunication = 0xF0
    case readVar = 0x04
    case writeVar = 0x05
    case requestDownload = 0x1A
    case downloadBlock = 0x1B
    case downloadEnded = 0x1C
    case startUpload = 0x1D
    case upload = 0x1E
    case endUpload = 0x1F
    case piService = 0x28
    case plcStop = 0x29
}

/// Memory areas in an S7ANY item.
public enum S7AreaCode: UInt8, Sendable {
    case systemInfo200 = 0x03
    case systemFlags200 = 0x05
    case analogInputs200 = 0x06
    case analogOutputs200 = 0x07
    case counter = 0x1C
    case timer = 0x1D
    case iecCounter = 0x1E
    case iecTimer = 0x1F
    case peripheral = 0x80
    case inputs = 0x81
    case outputs = 0x82
    case flags = 0x83
    case dataBlock = 0x84
    case instanceDataBlock = 0x85
    case localData = 0x86
    case previousLocalData = 0x87
}

/// Transport sizes in a request item (the type of each element).
public enum S7TransportSize: UInt8, Sendable {
    case bit = 0x01
    case byte = 0x02
    case char = 0x03
    case word = 0x04
    case int = 0x05
    case dword = 0x06
    case dint = 0x07
    case real = 0x08
    case counter = 0x1C
    case timer = 0x1D

    /// Bytes per element; a bit access is one byte on the wire.
    public var elementSize: Int {
        switch self {
        case .bit, .byte, .char: return 1
        case .word, .int, .counter, .timer: return 2
        case .dword, .dint, .real: return 4
        }
    }

    /// The transport size of the data item that answers a read of this type.
    public var responseTransportSize: S7DataTransportSize {
        switch self {
        case .bit: return .bit
        case .byte, .word, .dword: return .byteWordDWord
        case .int, .dint: return .integer
        case .real: return .real
        case .char, .counter, .timer: return .octetString
        }
    }
}

/// Transport sizes in a data item (how its length field counts).
public enum S7DataTransportSize: UInt8, Sendable {
    case null = 0x00
    case bit = 0x03
    case byteWordDWord = 0x04
    case integer = 0x05
    case dinteger = 0x06
    case real = 0x07
    case octetString = 0x09

    /// True when the length field counts bits, false when it counts bytes.
    public var lengthInBits: Bool {
        switch self {
        case .bit, .byteWordDWord, .integer, .dinteger: return true
        case .null, .real, .octetString: return false
        }
    }

    /// The number of data bytes a length field announces.
    public func byteCount(length: Int) -> Int {
        lengthInBits ? (length + 7) / 8 : length
    }
}

/// Per-item return codes of Read Var / Write Var.
public enum S7ReturnCode: UInt8, Error, Sendable {
    case reserved = 0x00
    case hardwareFault = 0x01
    case accessDenied = 0x03
    case addressOutOfRange = 0x05
    case dataTypeNotSupported = 0x06
    case dataTypeInconsistent = 0x07
    case objectDoesNotExist = 0x0A
    case success = 0xFF
}

/// Userdata function groups.
public enum S7UserDataGroup: UInt8, Sendable {
    case programmerCommands = 0x0
    case modeTransition = 0x1
    case cyclicData = 0x2
    case blockFunctions = 0x3
    case cpuFunctions = 0x4
    case security = 0x5
    case pbc = 0x6
    case timeFunctions = 0x7
    case ncProgramming = 0xF
}
