/// An error class and code in the S7 header of an ack / ack_data.
///
/// The values are the ones Wireshark's s7comm dissector names; each failure a session can
/// meet maps to exactly one of them here, and nowhere else.
public struct S7HeaderError: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var errorClass: UInt8
    public var code: UInt8

    public init(errorClass: UInt8, code: UInt8) {
        self.errorClass = errorClass
        self.code = code
    }

    public var value: UInt16 { UInt16(errorClass) << 8 | UInt16(code) }

    /// 0x8104: context not supported — function not implemented or error in the telegram.
    public static let functionNotImplemented = S7HeaderError(errorClass: 0x81, code: 0x04)
    /// 0x8500: incorrect PDU size — the request or its answer exceeds the agreed PDU.
    public static let incorrectPDUSize = S7HeaderError(errorClass: 0x85, code: 0x00)
    /// 0x8702: address invalid.
    public static let addressInvalid = S7HeaderError(errorClass: 0x87, code: 0x02)
    /// 0xD241: protection violation — the operation needs a protection level this CPU withholds.
    public static let protectionViolation = S7HeaderError(errorClass: 0xD2, code: 0x41)
    /// 0xD240: coordination rules violated (a PLC control request not allowed in this state).
    public static let coordinationRulesViolated = S7HeaderError(errorClass: 0xD2, code: 0x40)

    /// 0x8402: the service cannot execute owing to the status of the object (already in that mode).
    public static let serviceCannotExecuteInState = S7HeaderError(errorClass: 0x84, code: 0x02)

    public var description: String { "0x" + String(value, radix: 16, uppercase: true) }
}

/// Error codes in the userdata parameter block of a response.
public enum S7UserDataError {
    /// 0xD401: the requested SZL ID or index does not exist (information function unavailable).
    public static let szlNotAvailable: UInt16 = 0xD401
    /// 0xD402: invalid SZL index.
    public static let invalidSZLIndex: UInt16 = 0xD402
    /// 0xD0A1: invalid block type / error in the block number.
    public static let invalidBlockNumber: UInt16 = 0xD0A1
    /// 0xD209: the requested block was not found.
    public static let blockNotFound: UInt16 = 0xD209
    /// 0xD20E: no block available of the requested type (in the list-of-type answer).
    public static let noBlockAvailable: UInt16 = 0xD20E
    /// 0xD241: protection violation (password, clock set, ... when not allowed).
    public static let protectionViolation: UInt16 = 0xD241
    /// 0x8104: function not implemented.
    public static let functionNotImplemented: UInt16 = 0x8104
    /// 0xDC01: the date and/or time given is invalid.
    public static let invalidDateTime: UInt16 = 0xDC01
}

/// Builds one S7 frame (TPKT + COTP DT + S7 header + parameters + data) in a caller's buffer,
/// patching the lengths at the end, so a response is written once with no intermediate copies.
public struct S7FrameBuilder {
    public let frameStart: Int
    public let headerStart: Int
    public let parameterStart: Int
    public private(set) var dataStart: Int

    /// Appends the TPKT, COTP and S7 headers; lengths are filled in by ``finish(_:)``.
    public init(_ out: inout [UInt8], rosctr: S7ROSCTR, pduReference: UInt16, error: S7HeaderError? = nil) {
        frameStart = TPKT.begin(&out)
        COTPPDU.appendDataHeader(&out)
        headerStart = out.count
        S7Header(rosctr: rosctr.rawValue, pduReference: pduReference, parameterLength: 0, dataLength: 0, error: error)
            .encode(into: &out)
        parameterStart = out.count
        dataStart = out.count
    }

    /// Marks the end of the parameters and the start of the data.
    public mutating func beginData(_ out: inout [UInt8]) { dataStart = out.count }

    /// Patches the S7 parameter and data lengths and the TPKT length.
    public func finish(_ out: inout [UInt8]) {
        out.setU16(dataStart - parameterStart, at: headerStart + 6)
        out.setU16(out.count - dataStart, at: headerStart + 8)
        TPKT.finish(&out, start: frameStart)
    }
}
