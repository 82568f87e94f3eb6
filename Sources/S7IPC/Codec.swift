/// Why bytes from a peer are not one of the messages it may send. Every case ends the peer:
/// the supervisor SIGKILLs a child that sent it, a child exits with
/// ``ChildExitStatus/protocolViolation``, a local tool reports it.
public enum IPCError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The message ended inside `field`.
    case truncated(field: String)
    /// `field` declares `length` elements or bytes, more than its bound `limit`.
    case oversized(field: String, length: Int, limit: Int)
    /// The whole message is larger than the channel's bound.
    case messageTooLarge(size: Int, limit: Int)
    /// The first byte names no message of this peer's set.
    case unknownTag(UInt8, peer: String)
    /// `field` holds a value outside its type (a Bool that is neither 0 nor 1, an enum code, bad UTF-8).
    case invalidValue(field: String)
    /// Bytes are left after the last field of `message`.
    case trailingBytes(message: String, count: Int)
    /// A message this peer may send, but not in its current state.
    case notAllowed(message: String, state: String)
    /// The message came with `received` descriptors; it carries exactly `expected`.
    case unexpectedDescriptors(message: String, received: Int, expected: Int)
    /// The transport failed (the text of the system call error).
    case transport(String)
    /// A non-blocking channel had no room for the message (the peer does not read), or no
    /// message although poll said there was one.
    case wouldBlock

    public var description: String {
        switch self {
        case .truncated(let field): "the message ends inside its \(field)"
        case .oversized(let field, let length, let limit): "its \(field) declares \(length), over the bound of \(limit)"
        case .messageTooLarge(let size, let limit): "a message of \(size) bytes, over the channel's bound of \(limit)"
        case .unknownTag(let tag, let peer): "tag 0x\(String(tag, radix: 16)) is no message a \(peer) sends"
        case .invalidValue(let field): "its \(field) holds an invalid value"
        case .trailingBytes(let message, let count): "\(count) bytes follow the end of a \(message) message"
        case .notAllowed(let message, let state): "a \(message) message is not allowed while \(state)"
        case .unexpectedDescriptors(let message, let received, let expected):
            "a \(message) message came with \(received) descriptors; it carries \(expected)"
        case .transport(let text): text
        case .wouldBlock: "the channel has no room (the peer does not read its messages)"
        }
    }
}

/// Appends fields in the fixed encoding: integers little-endian, Bool one byte (0 or 1),
/// strings and byte strings as a u32 length then the bytes, arrays as a u16 count then the
/// elements, optionals as one byte (0 absent, 1 present) then the value.
public struct IPCWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(tag: UInt8) { bytes = [tag] }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func i64(_ v: Int64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    /// A count or size that the decoder bounds; the encoder's values come from validated settings.
    public mutating func count(_ v: Int) { u32(UInt32(clamping: v)) }
    public mutating func data(_ v: [UInt8]) { count(v.count); bytes.append(contentsOf: v) }
    public mutating func string(_ v: String) { data(Array(v.utf8)) }
    public mutating func optional<T>(_ v: T?, _ body: (inout IPCWriter, T) -> Void) {
        bool(v != nil)
        if let v { body(&self, v) }
    }
    public mutating func array<T>(_ v: [T], _ body: (inout IPCWriter, T) -> Void) {
        u16(UInt16(clamping: v.count))
        for e in v { body(&self, e) }
    }
}

/// Reads fields written by ``IPCWriter``, every length checked against its bound before
/// anything is allocated, every value checked against its type.
public struct IPCReader: Sendable {
    private let bytes: [UInt8]
    private var position: Int
    public let message: String

    /// Starts after the tag byte.
    public init(_ bytes: [UInt8], message: String) {
        self.bytes = bytes
        self.message = message
        position = 1
    }

    /// For a set of one message: its tag must come first; reads on after it.
    public init(_ bytes: [UInt8], tag: UInt8, message: String, peer: String) throws(IPCError) {
        guard let first = bytes.first else { throw .truncated(field: "tag") }
        guard first == tag else { throw .unknownTag(first, peer: peer) }
        self.init(bytes, message: message)
    }

    private mutating func take(_ n: Int, _ field: String) throws(IPCError) -> ArraySlice<UInt8> {
        guard n >= 0, bytes.count - position >= n else { throw .truncated(field: field) }
        defer { position += n }
        return bytes[position..<position + n]
    }

    private mutating func integer<T: FixedWidthInteger>(_: T.Type, _ field: String) throws(IPCError) -> T {
        let slice = try take(MemoryLayout<T>.size, field)
        var v: T = 0
        for (i, b) in slice.enumerated() { v |= T(b) << (8 * i) }
        return v
    }

    public mutating func u8(_ field: String) throws(IPCError) -> UInt8 { try take(1, field).first! }
    public mutating func u16(_ field: String) throws(IPCError) -> UInt16 { try integer(UInt16.self, field) }
    public mutating func u32(_ field: String) throws(IPCError) -> UInt32 { try integer(UInt32.self, field) }
    public mutating func i64(_ field: String) throws(IPCError) -> Int64 { try integer(Int64.self, field) }

    public mutating func bool(_ field: String) throws(IPCError) -> Bool {
        switch try u8(field) {
        case 0: return false
        case 1: return true
        default: throw .invalidValue(field: field)
        }
    }

    /// A u32 within `range`.
    public mutating func count(_ field: String, _ range: ClosedRange<Int>) throws(IPCError) -> Int {
        let v = Int(try u32(field))
        guard v <= range.upperBound else { throw .oversized(field: field, length: v, limit: range.upperBound) }
        guard v >= range.lowerBound else { throw .invalidValue(field: field) }
        return v
    }

    public mutating func data(_ field: String, limit: Int) throws(IPCError) -> [UInt8] {
        let n = try count(field, 0...limit)
        return Array(try take(n, field))
    }

    public mutating func string(_ field: String, limit: Int) throws(IPCError) -> String {
        let raw = try data(field, limit: limit)
        guard let s = String(validating: raw, as: UTF8.self) else { throw .invalidValue(field: field) }
        return s
    }

    public mutating func optional<T>(_ field: String, _ body: (inout IPCReader) throws(IPCError) -> T) throws(IPCError) -> T? {
        try bool(field) ? try body(&self) : nil
    }

    public mutating func array<T>(_ field: String, limit: Int, _ body: (inout IPCReader) throws(IPCError) -> T) throws(IPCError) -> [T] {
        let n = Int(try u16(field))
        guard n <= limit else { throw .oversized(field: field, length: n, limit: limit) }
        var out: [T] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try body(&self)) }
        return out
    }

    /// The message must end here.
    public func finish() throws(IPCError) {
        guard position == bytes.count else { throw .trailingBytes(message: message, count: bytes.count - position) }
    }
}

/// One peer's closed set of messages.
public protocol IPCMessage: Sendable, Equatable {
    /// Who sends this set, for errors ("S7 worker").
    static var sender: String { get }
    /// The message's name in logs and errors.
    var kind: String { get }
    /// How many descriptors travel with it (exactly).
    var descriptorCount: Int { get }
    func encoded() -> [UInt8]
    static func decode(_ bytes: [UInt8]) throws(IPCError) -> Self
}

extension IPCMessage {
    /// Decodes `bytes` that arrived with `descriptors` descriptors: the tag, every field, no
    /// trailing byte, and exactly the descriptors the message carries.
    public static func decode(_ bytes: [UInt8], descriptors: Int) throws(IPCError) -> Self {
        let message = try decode(bytes)
        guard descriptors == message.descriptorCount else {
            throw .unexpectedDescriptors(message: message.kind, received: descriptors, expected: message.descriptorCount)
        }
        return message
    }
}

/// A message set with a table of what may arrive in each phase of its channel.
public protocol IPCPhasedMessage: IPCMessage {
    /// Whether this message may arrive while the channel is in `phase`.
    func allowed(in phase: ChannelPhase) -> Bool
}

extension IPCPhasedMessage {
    /// Refuses this message with a typed error when the table does not allow it in `phase`.
    public func check(in phase: ChannelPhase) throws(IPCError) {
        guard allowed(in: phase) else { throw .notAllowed(message: kind, state: phase.description) }
    }
}
