#if canImport(Glibc)
import Glibc
#endif
import CLibcap
import CS7Sys
import SystemPackage

/// A privilege drop that did not end where it must.
public struct PrivilegeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public var problem: String

    public init(_ problem: String) { self.problem = problem }

    public var description: String { problem }
}

/// Dropping capabilities and changing to an unprivileged user, verified in /proc.
///
/// Capability sets, the bounding set and no-new-privileges belong to a *thread* on Linux:
/// drop them before the process starts a second thread, or the other threads keep them.
public enum Privileges {
    /// Drops every capability from the bounding set, while `CAP_SETPCAP` is effective.
    ///
    /// `prctl(PR_CAPBSET_DROP)` for each capability up to /proc/sys/kernel/cap_last_cap.
    /// Without `CAP_SETPCAP` the bounding set cannot change and is left as it is.
    ///
    /// - Returns: whether the bounding set was dropped.
    @discardableResult
    public static func dropBoundingSet() throws -> Bool {
        let status = try Capabilities.current()
        guard status.effective & Capabilities.bit(Capabilities.setPCap) != 0 else { return false }
        let last = try Capabilities.lastCapability()
        for capability in 0...last {
            _ = try retryingOnInterrupt("could not drop capability \(capability) from the bounding set (PR_CAPBSET_DROP)") {
                cs7_prctl(CS7_PR_CAPBSET_DROP, UInt(capability), 0, 0, 0)
            }
        }
        return true
    }

    /// Empties the ambient set (`PR_CAP_AMBIENT_CLEAR_ALL`).
    public static func clearAmbient() throws {
        _ = try retryingOnInterrupt("could not clear the ambient capability set (PR_CAP_AMBIENT_CLEAR_ALL)") {
            cs7_prctl(CS7_PR_CAP_AMBIENT, UInt(CS7_PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)
        }
    }

    /// Empties the inheritable, permitted and effective sets (libcap `cap_clear` and
    /// `cap_set_proc`).
    public static func clearCapabilitySets() throws {
        guard let capabilities = cap_get_proc() else {
            throw SystemCallError("could not read the capability sets (cap_get_proc)", errno: Errno(rawValue: errno))
        }
        defer { cap_free(UnsafeMutableRawPointer(capabilities)) }
        _ = try retryingOnInterrupt("could not clear a capability set in memory (cap_clear)") {
            cap_clear(capabilities)
        }
        _ = try retryingOnInterrupt("could not clear the capability sets (cap_set_proc)") {
            cap_set_proc(capabilities)
        }
    }

    /// Drops every capability from every set: the bounding set first (while `CAP_SETPCAP`
    /// is held, see ``dropBoundingSet()``), then the ambient set, then the inheritable,
    /// permitted and effective sets.
    ///
    /// - Returns: whether the bounding set was dropped too.
    @discardableResult
    public static func dropAllCapabilities() throws -> Bool {
        let droppedBoundingSet = try dropBoundingSet()
        try clearAmbient()
        try clearCapabilitySets()
        return droppedBoundingSet
    }

    /// Makes this process non-dumpable: no core dump, and no other process of the same user
    /// may ptrace it or open its /proc files beyond the world-readable ones.
    public static func setNonDumpable() throws {
        _ = try retryingOnInterrupt("could not clear the dumpable flag (PR_SET_DUMPABLE)") {
            cs7_prctl(4 /* PR_SET_DUMPABLE */, 0, 0, 0, 0)
        }
    }

    /// Whether this process is dumpable (`PR_GET_DUMPABLE`): 0 means no core dump and no
    /// ptrace or /proc/PID/mem by another process of its user.
    public static func isDumpable() throws -> Bool {
        try retryingOnInterrupt("could not read the dumpable flag (PR_GET_DUMPABLE)") {
            cs7_prctl(3 /* PR_GET_DUMPABLE */, 0, 0, 0, 0)
        } != 0
    }

    /// Sets no-new-privileges: no `execve` from now on grants a capability or a set-id.
    public static func setNoNewPrivileges() throws {
        _ = try retryingOnInterrupt("could not set no-new-privileges (PR_SET_NO_NEW_PRIVS)") {
            cs7_prctl(CS7_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        }
    }

    /// Turns this process for good into `uid`/`gid` with no capability in any set and
    /// no-new-privileges set, verified; any failure ends the process.
    ///
    /// In this order: drop the bounding set (it needs `CAP_SETPCAP`, which the uid change
    /// clears), `setgroups(0, NULL)`, `setresgid`, `setresuid`; verify with `getresuid` and
    /// `getresgid` that all three ids changed, that no supplementary group is left and that
    /// `setuid(0)` now fails; then clear the ambient, inheritable, permitted and effective
    /// sets, set no-new-privileges, and verify in /proc/self/task/*/status, for every thread,
    /// that CapInh, CapPrm, CapEff and CapAmb are 0, CapBnd is 0 when it could be dropped,
    /// NoNewPrivs is 1 and the ids are the new ones.
    ///
    /// Call it first thing in `main`, while the process has one thread (checked), as root
    /// or with `CAP_SETUID`, `CAP_SETGID` (and `CAP_SETPCAP` for the bounding set).
    ///
    /// On failure it writes `fatal: could not drop privileges: <why>` to standard error and
    /// exits with status 71 (`EX_OSERR`) without running exit handlers: a process that may
    /// still hold privileges must not go on.
    public static func demote(toUID uid: uid_t, gid: gid_t) {
        do {
            try demoteOrThrow(toUID: uid, gid: gid)
        } catch {
            fatal("could not drop privileges to uid \(uid), gid \(gid): \(error)")
        }
    }

    static func demoteOrThrow(toUID uid: uid_t, gid: gid_t) throws {
        guard uid != 0, gid != 0 else {
            throw PrivilegeError("refusing to demote to uid 0 or gid 0, which is root")
        }
        let threads = try threadStatusPaths()
        guard threads.count == 1 else {
            throw PrivilegeError(
                "the process has \(threads.count) threads; capabilities are per thread on Linux, "
                    + "so demote must run before any other thread starts"
            )
        }

        let droppedBoundingSet = try dropBoundingSet()

        _ = try retryingOnInterrupt("could not clear the supplementary groups (setgroups)") { cs7_setgroups_none() }
        _ = try retryingOnInterrupt("could not set the real, effective and saved gid to \(gid) (setresgid)") {
            cs7_setresgid(gid, gid, gid)
        }
        _ = try retryingOnInterrupt("could not set the real, effective and saved uid to \(uid) (setresuid)") {
            cs7_setresuid(uid, uid, uid)
        }

        var (realUID, effectiveUID, savedUID): (uid_t, uid_t, uid_t) = (0, 0, 0)
        var (realGID, effectiveGID, savedGID): (gid_t, gid_t, gid_t) = (0, 0, 0)
        _ = try retryingOnInterrupt("could not read the uids back (getresuid)") {
            cs7_getresuid(&realUID, &effectiveUID, &savedUID)
        }
        _ = try retryingOnInterrupt("could not read the gids back (getresgid)") {
            cs7_getresgid(&realGID, &effectiveGID, &savedGID)
        }
        guard realUID == uid, effectiveUID == uid, savedUID == uid else {
            throw PrivilegeError("the uids are \(realUID), \(effectiveUID), \(savedUID) after setresuid to \(uid)")
        }
        guard realGID == gid, effectiveGID == gid, savedGID == gid else {
            throw PrivilegeError("the gids are \(realGID), \(effectiveGID), \(savedGID) after setresgid to \(gid)")
        }
        let groups = getgroups(0, nil)
        guard groups == 0 else {
            throw PrivilegeError("\(groups) supplementary groups are left after setgroups(0, NULL)")
        }
        if setuid(0) != -1 {
            throw PrivilegeError("setuid(0) succeeded after the uid change: root can be regained")
        }

        try clearAmbient()
        try clearCapabilitySets()
        try setNoNewPrivileges()

        for path in try threadStatusPaths() {
            let status = try ProcessStatus.read(path: path)
            var problems: [String] = []
            if status.inheritable != 0 { problems.append("CapInh is \(hex(status.inheritable))") }
            if status.permitted != 0 { problems.append("CapPrm is \(hex(status.permitted))") }
            if status.effective != 0 { problems.append("CapEff is \(hex(status.effective))") }
            if status.ambient != 0 { problems.append("CapAmb is \(hex(status.ambient))") }
            if droppedBoundingSet && status.bounding != 0 { problems.append("CapBnd is \(hex(status.bounding))") }
            if !status.noNewPrivileges { problems.append("NoNewPrivs is 0") }
            if !status.uid.all(equal: uid) { problems.append("Uid is \(status.uid)") }
            if !status.gid.all(equal: gid) { problems.append("Gid is \(status.gid)") }
            if !problems.isEmpty {
                throw PrivilegeError("\(path) after the drop: " + problems.joined(separator: ", "))
            }
        }
    }

    /// /proc/self/task/TID/status for every thread of this process.
    static func threadStatusPaths() throws -> [String] {
        guard let directory = opendir("/proc/self/task") else {
            throw SystemCallError("could not list the threads in /proc/self/task (opendir)", errno: Errno(rawValue: errno))
        }
        defer { closedir(directory) }
        var paths: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.first?.isNumber == true {
                paths.append("/proc/self/task/\(name)/status")
            }
        }
        return paths
    }

    private static func hex(_ set: UInt64) -> String {
        let digits = String(set, radix: 16)
        return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }

    /// Writes `fatal: <message>` to standard error and exits at once with status 71.
    static func fatal(_ message: String) -> Never {
        let line = Array("fatal: \(message)\n".utf8)
        line.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                if written > 0 {
                    offset += written
                } else if written == -1 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
        }
        _exit(71)
    }
}
