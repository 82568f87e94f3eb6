#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import SystemPackage

/// The credentials and capability sets of a process, as /proc/PID/status shows them.
public struct ProcessStatus: Equatable, Sendable {
    /// Real, effective, saved and file-system ids (the `Uid:` or `Gid:` line).
    public struct IDs: Equatable, Sendable, CustomStringConvertible {
        public var real: UInt32
        public var effective: UInt32
        public var saved: UInt32
        public var fileSystem: UInt32

        /// True when all four are `id`.
        public func all(equal id: UInt32) -> Bool {
            real == id && effective == id && saved == id && fileSystem == id
        }

        public var description: String { "\(real) \(effective) \(saved) \(fileSystem)" }
    }

    /// Inheritable set (`CapInh`), one bit per capability number.
    public var inheritable: UInt64
    /// Permitted set (`CapPrm`).
    public var permitted: UInt64
    /// Effective set (`CapEff`).
    public var effective: UInt64
    /// Bounding set (`CapBnd`).
    public var bounding: UInt64
    /// Ambient set (`CapAmb`).
    public var ambient: UInt64
    /// Whether no-new-privileges is set (`NoNewPrivs`).
    public var noNewPrivileges: Bool
    /// The `Uid:` line.
    public var uid: IDs
    /// The `Gid:` line.
    public var gid: IDs
    /// The seccomp mode (`Seccomp`): 0 none, 1 strict, 2 filter; nil when the kernel has no seccomp.
    public var seccompMode: Int?
    /// How many seccomp filters are attached (`Seccomp_filters`, Linux 5.9 and later).
    public var seccompFilters: Int?
    /// How many threads the process has (`Threads`).
    public var threads: Int?

    /// Reads /proc/PID/status of process `pid`.
    public static func read(pid: pid_t) throws -> ProcessStatus {
        try read(path: "/proc/\(pid)/status")
    }

    /// Why process `pid` is not an unprivileged child of this supervisor, or nil when it is: all
    /// four uids `uid` and gids `gid`, no capability in any set but the bounding one, and
    /// no-new-privileges set.
    public static func privilegeProblem(pid: pid_t, uid: uid_t, gid: gid_t) -> String? {
        guard let status = try? read(pid: pid) else { return "cannot be checked (its /proc/\(pid)/status is unreadable)" }
        guard status.uid.all(equal: uid), status.gid.all(equal: gid) else {
            return "runs as uid \(status.uid) gid \(status.gid), not \(uid) and \(gid)"
        }
        guard status.permitted == 0, status.effective == 0, status.inheritable == 0, status.ambient == 0, status.noNewPrivileges else {
            return "holds capabilities or lacks no-new-privileges"
        }
        return nil
    }

    /// Reads a status file such as /proc/self/status or /proc/self/task/TID/status.
    public static func read(path: String) throws -> ProcessStatus {
        let text = String(decoding: try readWholeFile(path), as: UTF8.self)
        do {
            return try ProcessStatus(parsing: text)
        } catch {
            throw ProcessStatusError(path: path, problem: error.problem)
        }
    }

    /// Reads a status file opened earlier (e.g. /proc/self/status opened before a sandbox
    /// that refuses open), from its start.
    public static func read(descriptor: FileDescriptor, name: String) throws -> ProcessStatus {
        let text = String(decoding: try readFromStart(descriptor.rawValue, name: name), as: UTF8.self)
        do {
            return try ProcessStatus(parsing: text)
        } catch {
            throw ProcessStatusError(path: name, problem: error.problem)
        }
    }

    /// Parses the text of a status file; lines it does not know are ignored.
    public init(parsing text: String) throws(ProcessStatusError) {
        var fields: [Substring: Substring] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon]] = line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
        }
        func capabilities(_ key: Substring) throws(ProcessStatusError) -> UInt64 {
            guard let value = fields[key], let set = UInt64(value, radix: 16) else {
                throw ProcessStatusError(path: nil, problem: "no valid \(key) line")
            }
            return set
        }
        func ids(_ key: Substring) throws(ProcessStatusError) -> IDs {
            let values = (fields[key] ?? "").split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { UInt32($0) }
            guard values.count == 4 else {
                throw ProcessStatusError(path: nil, problem: "no valid \(key) line")
            }
            return IDs(real: values[0], effective: values[1], saved: values[2], fileSystem: values[3])
        }
        inheritable = try capabilities("CapInh")
        permitted = try capabilities("CapPrm")
        effective = try capabilities("CapEff")
        bounding = try capabilities("CapBnd")
        ambient = try capabilities("CapAmb")
        switch fields["NoNewPrivs"] {
        case "0": noNewPrivileges = false
        case "1": noNewPrivileges = true
        default: throw ProcessStatusError(path: nil, problem: "no valid NoNewPrivs line")
        }
        uid = try ids("Uid")
        gid = try ids("Gid")
        seccompMode = fields["Seccomp"].flatMap { Int($0) }
        seccompFilters = fields["Seccomp_filters"].flatMap { Int($0) }
        threads = fields["Threads"].flatMap { Int($0) }
    }
}

/// A status file that does not have the expected lines.
public struct ProcessStatusError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file, when it was read from one.
    public var path: String?
    /// What is wrong with it.
    public var problem: String

    /// Creates an error for `path` (nil when the text did not come from a file).
    public init(path: String?, problem: String) {
        self.path = path
        self.problem = problem
    }

    public var description: String {
        "could not understand \(path ?? "a process status"): \(problem)"
    }
}

/// The capability sets of this process.
public enum Capabilities {
    /// `CAP_SETGID`.
    public static let setGID = Int(CS7_CAP_SETGID)
    /// `CAP_SETUID`.
    public static let setUID = Int(CS7_CAP_SETUID)
    /// `CAP_KILL`: signals to processes of other users (the supervisor's to a worker of its own user).
    public static let kill = Int(CS7_CAP_KILL)
    /// `CAP_SETPCAP`: needed to drop capabilities from the bounding set.
    public static let setPCap = Int(CS7_CAP_SETPCAP)
    /// `CAP_NET_BIND_SERVICE`: binding a port below 1024 (S7's 102).
    public static let netBindService = 10

    /// The bit of `capability` in a set.
    public static func bit(_ capability: Int) -> UInt64 { 1 << UInt64(capability) }

    /// This process's status (/proc/self/status, which shows the main thread).
    public static func current() throws -> ProcessStatus {
        try ProcessStatus.read(path: "/proc/self/status")
    }

    /// The highest capability number the kernel knows (/proc/sys/kernel/cap_last_cap).
    public static func lastCapability() throws -> Int {
        let path = "/proc/sys/kernel/cap_last_cap"
        let text = String(decoding: try readWholeFile(path), as: UTF8.self)
        guard let last = Int(text.filter { !$0.isWhitespace }), (0..<64).contains(last) else {
            throw ProcessStatusError(path: path, problem: "not a capability number: \(text)")
        }
        return last
    }
}
