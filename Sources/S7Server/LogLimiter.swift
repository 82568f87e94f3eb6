import Logging
import NIOCore
import Synchronization

/// Log lines a client cannot flood: for each reason and peer address, the first
/// ``LogLimiter/burst`` events of a ``LogLimiter/window`` are logged in full; the rest are
/// counted, and one line at the end of the window says how many were left out
/// ("refused 1873 more connections from 127.0.0.1 in the last 10 s (max_clients, ...)").
final class LogLimiter: Sendable {
    static let window: TimeAmount = .seconds(10)
    /// Detailed lines per reason and address in one window.
    static let burst = 5
    /// Detailed connection lines (connected, ISO connection, setup, disconnect) per address in
    /// one window: four make one connection's story.
    static let connectionBurst = 20
    /// Addresses tracked at once; beyond, events are counted under "other addresses".
    static let maximumKeys = 1024

    struct Key: Hashable, Sendable {
        var reason: String
        var address: String
    }

    private struct Entry {
        var windowEnd: NIODeadline
        var logged = 0
        var suppressed = 0
        var flushScheduled = false
        var summary: @Sendable (Int, String) -> String = { _, _ in "" }
        var level: Logger.Level = .warning
    }

    private let entries = Mutex<[Key: Entry]>([:])
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    /// Whether this event may be logged in full. When it may not, it is counted, and
    /// `summary(count, address)` is logged once at the end of the window on `loop`.
    func allow(reason: String, address: String, burst: Int = LogLimiter.burst, level: Logger.Level = .warning,
               on loop: any EventLoop, summary: @escaping @Sendable (Int, String) -> String) -> Bool {
        let now = loop.now
        var scheduleAt: NIODeadline?
        var key = Key(reason: reason, address: address)
        let allowed = entries.withLock { table -> Bool in
            if table[key] == nil, table.count >= Self.maximumKeys {
                table = table.filter { $0.value.windowEnd > now || $0.value.flushScheduled }
                if table.count >= Self.maximumKeys { key.address = "other addresses" }
            }
            var entry = table[key] ?? Entry(windowEnd: now + Self.window)
            if entry.windowEnd <= now, !entry.flushScheduled {
                entry = Entry(windowEnd: now + Self.window)
            }
            defer { table[key] = entry }
            if entry.logged < burst, entry.suppressed == 0, entry.windowEnd > now {
                entry.logged += 1
                return true
            }
            entry.suppressed += 1
            entry.summary = summary
            entry.level = level
            if !entry.flushScheduled {
                entry.flushScheduled = true
                scheduleAt = entry.windowEnd
            }
            return false
        }
        if let scheduleAt {
            let flushed = key
            loop.scheduleTask(deadline: scheduleAt) { [self] in self.flush(flushed) }
        }
        return allowed
    }

    private func flush(_ key: Key) {
        let due = entries.withLock { table -> (Int, @Sendable (Int, String) -> String, Logger.Level)? in
            guard let entry = table.removeValue(forKey: key), entry.suppressed > 0 else { return nil }
            return (entry.suppressed, entry.summary, entry.level)
        }
        if let (count, summary, level) = due {
            logger.log(level: level, "\(summary(count, key.address))")
        }
    }
}
