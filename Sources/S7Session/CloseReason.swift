/// Why a connection ended: decided by the session (bad input, a refused rack/slot, the client's
/// own disconnect) or by the server around it (a deadline, eviction, a socket error, shutdown).
/// Metrics and status count closes by ``kind``; the log prints ``description``.
public enum CloseReason: Equatable, Sendable, CustomStringConvertible {
    /// The client sent a COTP disconnect request or closed its end of the TCP connection.
    case clientDisconnected(String)
    /// Bytes that are not a usable TPKT / COTP / S7 stream; the text says what was wrong.
    case badInput(String)
    /// The connection request named a rack/slot outside `server.allowed_rack_slots`.
    case rackSlotRefused(asked: String, allowed: String)
    /// COTP connect and Setup Communication not done within `server.recv_timeout_ms` of accept.
    case setupTimeout(milliseconds: Int)
    /// An incomplete frame or segmented PDU not completed within `server.recv_timeout_ms` of its
    /// first byte.
    case receiveTimeout(milliseconds: Int)
    /// No complete request for `server.ping_timeout_ms`.
    case idleTimeout(milliseconds: Int)
    /// Answers left unsent for `server.send_timeout_ms` after output stopped draining.
    case sendTimeout(milliseconds: Int)
    /// Closed to admit a new connection when every slot was taken, because it had been waiting
    /// longest: for its setup, for the rest of a request, or for its client to take answers.
    case evicted(waiting: Waiting, forMilliseconds: Int, maxClients: Int)
    /// The socket reported an error.
    case socketError(String)
    /// The server is stopping.
    case shutdown

    /// What an evictable connection waits for. A client that keeps to the protocol is in none
    /// of these states for longer than a round trip: its requests arrive whole, and it never
    /// has more requests in flight than the AmQ granted (so its answers never back up).
    public enum Waiting: String, Sendable, Equatable {
        /// COTP connect and Setup Communication are not done.
        case setup = "not set up"
        /// Part of a frame or of a segmented PDU has arrived, the rest has not.
        case request = "a request incomplete"
        /// Its unread answers exceed the output bound (more jobs in flight than granted).
        case answers = "answers unread"
    }

    /// The reason without its details, for counters and metric labels.
    public enum Kind: String, CaseIterable, Sendable, Codable {
        case client
        case badInput = "bad_input"
        case rackSlot = "rack_slot"
        case setupTimeout = "setup_timeout"
        case receiveTimeout = "receive_timeout"
        case idleTimeout = "idle_timeout"
        case sendTimeout = "send_timeout"
        case evicted
        case socketError = "socket_error"
        case shutdown
    }

    public var kind: Kind {
        switch self {
        case .clientDisconnected: return .client
        case .badInput: return .badInput
        case .rackSlotRefused: return .rackSlot
        case .setupTimeout: return .setupTimeout
        case .receiveTimeout: return .receiveTimeout
        case .idleTimeout: return .idleTimeout
        case .sendTimeout: return .sendTimeout
        case .evicted: return .evicted
        case .socketError: return .socketError
        case .shutdown: return .shutdown
        }
    }

    /// True when the server decided the close (an error event, logged with log_errors).
    public var isServerDecided: Bool {
        switch self {
        case .clientDisconnected, .shutdown: return false
        default: return true
        }
    }

    /// The setting that decided the close and its value, as `key=value`, or nil.
    public var limit: String? {
        switch self {
        case .setupTimeout(let ms), .receiveTimeout(let ms): return "server.recv_timeout_ms=\(ms)"
        case .idleTimeout(let ms): return "server.ping_timeout_ms=\(ms)"
        case .sendTimeout(let ms): return "server.send_timeout_ms=\(ms)"
        case .evicted(_, _, let max): return "server.max_clients=\(max)"
        case .rackSlotRefused: return "server.allowed_rack_slots"
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .clientDisconnected(let how): return "client disconnected (\(how))"
        case .badInput(let what): return what
        case .rackSlotRefused(let asked, let allowed): return "connection to \(asked) refused: allowed are \(allowed)"
        case .setupTimeout(let ms): return "not set up within \(ms) ms of connecting (server.recv_timeout_ms=\(ms))"
        case .receiveTimeout(let ms): return "request incomplete \(ms) ms after its first byte (server.recv_timeout_ms=\(ms))"
        case .idleTimeout(let ms): return "no request for \(ms) ms (server.ping_timeout_ms=\(ms))"
        case .sendTimeout(let ms): return "took none of its answers for \(ms) ms (server.send_timeout_ms=\(ms))"
        case .evicted(let waiting, let age, let max):
            return "evicted: \(waiting.rawValue) after \(age) ms when all server.max_clients=\(max) slots were taken and another client connected (server.max_clients=\(max))"
        case .socketError(let what): return "socket error: \(what)"
        case .shutdown: return "the server is stopping"
        }
    }
}

/// Text from a client, made safe for a log line: C0 and C1 control characters, DEL and ESC
/// become `\xNN`, a backslash becomes `\\`, and at most ``maximumCharacters`` characters are
/// kept (then `...`), so a client can neither forge log lines nor steer a terminal.
public enum LogText {
    public static let maximumCharacters = 64

    public static func escaped<S: Sequence>(bytes: S) -> String where S.Element == UInt8 {
        escaped(String(decoding: Array(bytes), as: UTF8.self))
    }

    public static func escaped(_ text: String) -> String {
        var result = ""
        var count = 0
        for scalar in text.unicodeScalars {
            if count == maximumCharacters {
                result += "..."
                break
            }
            count += 1
            let v = scalar.value
            if v < 0x20 || (0x7F...0x9F).contains(v) {
                result += "\\x" + (v < 0x10 ? "0" : "") + String(v, radix: 16)
            } else if scalar == "\\" {
                result += "\\\\"
            } else if (0x2028...0x2029).contains(v) || v == 0xFFFD || (0x200B...0x200F).contains(v) || (0x202A...0x202E).contains(v) {
                // Line/paragraph separators, replacement and bidirectional controls: shown by code.
                result += "\\u{" + String(v, radix: 16) + "}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }
}
