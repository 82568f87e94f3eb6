import Foundation
import Logging

/// Where log lines go: standard error, one event a line. Under systemd (JOURNAL_STREAM is set)
/// each line starts with its syslog priority (`<6>`), so the journal records the level, and
/// names the process role; elsewhere swift-log's usual stream format. Metadata (`peer=…`)
/// follows as key=value fields either way.
enum LogSetup {
    /// `journal`: the journal's format; by default when JOURNAL_STREAM is set (the children
    /// get `--journal` instead: their standard error is a pipe to the supervisor).
    static func bootstrap(level: Logger.Level, journal: Bool = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil) {
        LoggingSystem.bootstrap { label in
            if journal {
                var h = JournalLogHandler(label: label)
                h.logLevel = level
                return h
            }
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}

/// `<priority>label: message key=value …` on standard error, written whole with one write(2).
struct JournalLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    func log(event: LogEvent) {
        let level = event.level
        let message = event.message
        let explicit = event.metadata
        var fields = metadata
        if let explicit { fields.merge(explicit) { $1 } }
        var text = "<\(Self.priority(level))>\(label): \(message)"
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            let v = "\(value)"
            text += " \(key)=" + (v.contains(" ") ? "\"\(v.replacingOccurrences(of: "\"", with: "\\\""))\"" : v)
        }
        // One event, one line: a message that spans lines is joined.
        text = text.replacingOccurrences(of: "\n", with: " | ") + "\n"
        _ = text.utf8CString.withUnsafeBufferPointer { Foundation.write(2, $0.baseAddress, $0.count - 1) }
    }
}
