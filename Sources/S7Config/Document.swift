import Foundation
import S7Sys

/// A configuration file as a JSON tree, for editing one key at a time the way the editor saves
/// a field when it loses focus: change, validate the whole file, write atomically.
public struct ConfigDocument {
    public private(set) var root: [String: Any]

    public init(root: [String: Any] = [:]) {
        self.root = root
    }

    public init(data: Data, path: String) throws(ConfigurationError) {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw ConfigurationError(path: path, problems: [ConfigurationProblem(
                keyPath: "(file)", value: "not valid JSON", allowed: "a JSON object as in docs/configuration.md",
                meaning: (error as NSError).userInfo["NSDebugDescription"] as? String ?? "\(error)")])
        }
        guard let dict = object as? [String: Any] else {
            throw ConfigurationError(path: path, problems: [ConfigurationProblem(
                keyPath: "(file)", value: "a JSON \(type(of: object))", allowed: "a JSON object with sections server, plc_identity, ...",
                meaning: "the top level of the file")])
        }
        root = dict
    }

    /// The file's bytes: sorted keys, indented, with a final newline.
    public func data() -> Data {
        var d = (try? JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        d.append(0x0A)
        return d
    }

    /// Keys the schema does not know, with where they are.
    public func unknownKeys() -> [ConfigurationWarning] {
        var found: [ConfigurationWarning] = []
        func walk(_ value: Any, _ path: String) {
            if let dict = value as? [String: Any] {
                for (k, v) in dict.sorted(by: { $0.key < $1.key }) {
                    let p = path.isEmpty ? k : path + "." + k
                    if ConfigSchema.key(for: p) == nil {
                        found.append(ConfigurationWarning(keyPath: p, message: "unknown key, ignored: neither an OpenPLC s7comm plugin key nor an s7commd key (check its spelling against docs/configuration.md)"))
                    } else {
                        walk(v, p)
                    }
                }
            } else if let list = value as? [Any] {
                for (i, v) in list.enumerated() { walk(v, path + "[\(i)]") }
            }
        }
        walk(root, "")
        return found
    }

    /// Every value of a known key whose JSON type is wrong (a string for a number, a fraction for
    /// a whole number, null, ...), all at once, before the typed decoder stops at the first.
    public func typeProblems() -> [ConfigurationProblem] {
        var found: [ConfigurationProblem] = []
        func written(_ value: Any) -> String {
            if value is NSNull { return "null" }
            if let s = value as? String { return "\"\(s.prefix(40))\" (a string)" }
            let text = (try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .sortedKeys]))
                .flatMap { String(data: $0, encoding: .utf8) } ?? "?"
            let short = text.count > 40 ? String(text.prefix(40)) + "…" : text
            if value is [Any] { return short + " (a list)" }
            if value is [String: Any] { return short + " (an object)" }
            return short + (Self.isBoolean(value) ? " (a boolean)" : " (a number)")
        }
        func walk(_ value: Any, _ path: String) {
            if let key = ConfigSchema.key(for: path), !Self.matches(value, key.kind) {
                var allowed = key.allowed
                if case .int = key.kind { allowed = "a whole number " + allowed }
                if value is NSNull { allowed += "; to use the default, remove the key" }
                found.append(ConfigurationProblem(keyPath: path, value: written(value), allowed: allowed, meaning: key.meaning))
                return
            }
            if let dict = value as? [String: Any] {
                for (k, v) in dict.sorted(by: { $0.key < $1.key }) { walk(v, path.isEmpty ? k : path + "." + k) }
            } else if let list = value as? [Any] {
                for (i, v) in list.enumerated() { walk(v, path + "[\(i)]") }
            }
        }
        walk(root, "")
        return found
    }

    static func isBoolean(_ value: Any) -> Bool {
        String(describing: type(of: value)).contains("Boolean") || type(of: value) == Bool.self
    }

    static func matches(_ value: Any, _ kind: ConfigKey.Kind) -> Bool {
        switch kind {
        case .bool:
            return isBoolean(value)
        case .int:
            guard !isBoolean(value), let n = value as? NSNumber, !(value is String) else { return false }
            let d = n.doubleValue
            return d.rounded() == d && abs(d) < 9.0e15
        case .string, .address, .loopbackAddress, .mappingType, .version:
            return value is String
        case .object:
            return value is [String: Any]
        case .array:
            return value is [Any]
        }
    }

    // MARK: - Editing

    enum Segment: Equatable {
        case key(String)
        case index(Int)
        case append
        case dbNumber(Int)
    }

    /// Parses `server.port`, `data_blocks[2].size_bytes`, `data_blocks[db=10].mapping.type`,
    /// `data_blocks[+]`.
    static func segments(_ path: String) -> [Segment]? {
        var out: [Segment] = []
        for part in path.split(separator: ".", omittingEmptySubsequences: false) {
            var name = Substring(part)
            var brackets: [Substring] = []
            while name.last == "]", let open = name.lastIndex(of: "[") {
                brackets.insert(name[name.index(after: open)..<name.index(before: name.endIndex)], at: 0)
                name = name[..<open]
            }
            guard !name.isEmpty, !name.contains("["), !name.contains("]") else { return nil }
            out.append(.key(String(name)))
            for b in brackets {
                if b == "+" { out.append(.append) } else if let i = Int(b), i >= 0 { out.append(.index(i)) } else if b.hasPrefix("db="), let n = Int(b.dropFirst(3)) {
                    out.append(.dbNumber(n))
                } else { return nil }
            }
        }
        return out.isEmpty ? nil : out
    }

    /// Sets the value at `path`. `text` is read as JSON when it parses as JSON (numbers, true,
    /// false, null, objects, lists, "quoted strings") except for string-typed keys, where it is
    /// taken as it is.
    public mutating func set(_ path: String, text: String) throws(ConfigEditError) {
        let value: Any
        if case .string? = ConfigSchema.key(for: path)?.kind { value = text } else if case .address? = ConfigSchema.key(for: path)?.kind {
            value = text
        } else if case .loopbackAddress? = ConfigSchema.key(for: path)?.kind {
            value = text
        } else if case .mappingType? = ConfigSchema.key(for: path)?.kind { value = text } else if case .version? = ConfigSchema.key(for: path)?.kind {
            value = text
        } else if let parsed = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) {
            value = parsed
        } else {
            value = text
        }
        try set(path, value: value)
    }

    public mutating func set(_ path: String, value: Any) throws(ConfigEditError) {
        guard let segs = Self.segments(path) else { throw .badPath(path) }
        root = try Self.assign(root, segs[...], value, path) as? [String: Any] ?? root
    }

    /// Removes the key or list element at `path`.
    public mutating func unset(_ path: String) throws(ConfigEditError) {
        guard let segs = Self.segments(path) else { throw .badPath(path) }
        root = try Self.assign(root, segs[...], nil, path) as? [String: Any] ?? root
    }

    private static func assign(_ node: Any?, _ segs: ArraySlice<Segment>, _ value: Any?, _ path: String) throws(ConfigEditError) -> Any? {
        guard let seg = segs.first else { return value }
        let rest = segs.dropFirst()
        switch seg {
        case .key(let k):
            var dict: [String: Any]
            if node == nil { dict = [:] } else if let d = node as? [String: Any] { dict = d } else { throw .notAnObject(path) }
            if value == nil && rest.isEmpty {
                guard dict[k] != nil else { throw .noSuchKey(path) }
                dict.removeValue(forKey: k)
            } else {
                dict[k] = try assign(dict[k], rest, value, path)
            }
            return dict
        case .index, .append, .dbNumber:
            var list: [Any]
            if node == nil { list = [] } else if let l = node as? [Any] { list = l } else { throw .notAList(path) }
            let index: Int
            switch seg {
            case .index(let i):
                guard i < list.count else { throw .noSuchElement(path, count: list.count) }
                index = i
            case .dbNumber(let n):
                guard let i = list.firstIndex(where: { ($0 as? [String: Any])?["db_number"] as? Int == n }) else { throw .noSuchDB(path, n) }
                index = i
            default:
                guard value != nil else { throw .badPath(path) }
                list.append(try assign(nil, rest, value, path) as Any)
                return list
            }
            if value == nil && rest.isEmpty {
                list.remove(at: index)
            } else {
                list[index] = try assign(list[index], rest, value, path) as Any
            }
            return list
        }
    }

    // MARK: - Saving

    /// Writes the file atomically: a temporary file in the same directory, fsync, rename over
    /// the old file, fsync of the directory. On any error before the rename the old file is
    /// untouched.
    ///
    /// The test hook `S7COMMD_TEST_PAUSE_BEFORE_RENAME` (seconds) waits between the fsync and
    /// the rename so a test can kill the process there.
    public func write(to path: String) throws(ConfigEditError) {
        try Self.atomicWrite(data(), to: path)
    }

    /// Replaces the file at `path` with `bytes` through S7Sys's `AtomicFile`: the temporary
    /// file is `.NAME.tmp-PID` (those of processes that are gone are removed first), and the
    /// new file keeps the mode, owner and group of the file it replaces (root:s7commd 0640
    /// for the packaged file), so an edit by root never locks the service user out of its
    /// configuration; a new file gets 0644.
    ///
    /// A directory that cannot be flushed after the rename is an error, as for the retained
    /// data: a save that is not durable is not reported done. The file then already has the
    /// new contents, and the error says so.
    public static func atomicWrite(_ bytes: Data, to path: String) throws(ConfigEditError) {
        // Absolute, so that the messages name the temporary file wherever the command runs.
        let absolute = URL(fileURLWithPath: path).path
        let temporary = AtomicFile.temporaryPath(for: absolute)
        let replacement: AtomicFile.Replacement
        do {
            replacement = try AtomicFile.Replacement.begin(
                replacing: absolute, mode: 0o644, options: [.keepingModeAndOwner, .perProcessTemporary])
        } catch {
            throw .io("cannot create \(temporary)", errorNumber(error))
        }
        do {
            try replacement.write([UInt8](bytes))
        } catch {
            throw .io("cannot write \(temporary)", errorNumber(error))
        }
        if let pause = ProcessInfo.processInfo.environment["S7COMMD_TEST_PAUSE_BEFORE_RENAME"], let seconds = Double(pause) {
            usleep(UInt32(seconds * 1_000_000))
        }
        do {
            try replacement.commit()
        } catch {
            throw .io("cannot replace \(path)", errorNumber(error))
        }
        do {
            try replacement.flushDirectory()
        } catch {
            throw .io("\(path) was replaced but its directory cannot be flushed to disk, so the change may not survive a crash", errorNumber(error))
        }
    }

    /// The errno of a failed S7Sys call (`EIO` for an error that carries none).
    private static func errorNumber(_ error: any Error) -> CInt {
        (error as? SystemCallError)?.errno.rawValue ?? EIO
    }
}

/// Why an edit could not be made; nothing was written.
public enum ConfigEditError: Error, CustomStringConvertible {
    case badPath(String)
    case notAnObject(String)
    case notAList(String)
    case noSuchKey(String)
    case noSuchElement(String, count: Int)
    case noSuchDB(String, Int)
    case io(String, CInt)

    public var description: String {
        switch self {
        case .badPath(let p):
            return "\(p) is not a key path; write it like server.port, data_blocks[0].size_bytes, data_blocks[db=10].mapping.type or data_blocks[+]"
        case .notAnObject(let p): return "\(p) goes through a value that is not an object"
        case .notAList(let p): return "\(p) indexes a value that is not a list"
        case .noSuchKey(let p): return "\(p) is not set in the file, so there is nothing to remove"
        case .noSuchElement(let p, let n): return "\(p): the list has \(n) element(s), counted from 0"
        case .noSuchDB(let p, let n): return "\(p): no data block with db_number \(n)"
        case .io(let what, let e): return "\(what): \(String(cString: strerror(e)))"
        }
    }
}
