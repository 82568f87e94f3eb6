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
        try dropBoundingSet(keeping: [])
    }

    /// Drops every capability but `kept` from the bounding set, while `CAP_SETPCAP` is
    /// effective (see ``dropBoundingSet()``).
    ///
    /// - Returns: whether the bounding set was dropped.
    @discardableResult
    public static func dropBoundingSet(keeping kept: Set<Int>) throws -> Bool {
        let status = try Capabilities.current()
        guard status.effective & Capabilities.bit(Capabilities.setPCap) != 0 else { return false }
        let last = try Capabilities.lastCapability()
        for capability in 0...last where !kept.contains(capability) {
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
        try setCapabilitySets(keeping: [])
    }

    /// Empties the inheritable set and leaves exactly `kept` in the permitted and effective
    /// sets (libcap `cap_clear`, `cap_set_flag` and `cap_set_proc`). Each of `kept` must be
    /// permitted already: a set can only shrink.
    static func setCapabilitySets(keeping kept: Set<Int>) throws {
        guard let capabilities = cap_get_proc() else {
            throw SystemCallError("could not read the capability sets (cap_get_proc)", errno: Errno(rawValue: errno))
        }
        defer { cap_free(UnsafeMutableRawPointer(capabilities)) }
        _ = try retryingOnInterrupt("could not clear a capability set in memory (cap_clear)") {
            cap_clear(capabilities)
        }
        if !kept.isEmpty {
            let values = kept.sorted().map { cap_value_t($0) }
            for flag in [CAP_PERMITTED, CAP_EFFECTIVE] {
                _ = try retryingOnInterrupt("could not set capabilities \(names(kept)) in memory (cap_set_flag)") {
                    cap_set_flag(capabilities, flag, CInt(values.count), values, CAP_SET)
                }
            }
        }
        let what = kept.isEmpty ? "clear the capability sets" : "keep only \(names(kept)) in the capability sets"
        _ = try retryingOnInterrupt("could not \(what) (cap_set_proc)") {
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

    /// Drops every capability but `kept` from every set, for a start that is not root and got
    /// its capabilities from systemd (`User=` with `AmbientCapabilities=`), e.g. keeping
    /// `CAP_SETUID` and `CAP_SETGID` out of those and `CAP_NET_BIND_SERVICE` once the port is
    /// bound: the bounding set keeps only `kept` (while `CAP_SETPCAP` is held, see
    /// ``dropBoundingSet(keeping:)``), the ambient and inheritable sets are emptied, and the
    /// permitted and effective sets are exactly `kept`; then verified in
    /// /proc/self/task/*/status for every thread: CapPrm and CapEff are `kept`, CapInh and
    /// CapAmb are 0, CapBnd is `kept` when it could be dropped. No-new-privileges is left to
    /// the caller, as with ``dropAllCapabilities()``.
    ///
    /// Call it while the process has one thread (capabilities are per thread; another thread
    /// would keep them, which the verification reports).
    ///
    /// - Returns: whether the bounding set was dropped too.
    /// - Throws: a ``PrivilegeError`` when one of `kept` is not permitted now, or the sets
    ///   are not what they must be afterwards; a ``SystemCallError`` when a call fails.
    @discardableResult
    public static func dropAllCapabilities(keeping kept: Set<Int>) throws -> Bool {
        try checkPermitted(kept)
        let droppedBoundingSet = try dropBoundingSet(keeping: kept)
        try clearAmbient()
        try setCapabilitySets(keeping: kept)
        try verifyEveryThread(
            after: "dropping every capability but \(names(kept))", kept: kept, droppedBoundingSet: droppedBoundingSet
        )
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

    /// Sets the real gid to the effective one (`setresgid(egid, egid, egid)`), after a secure
    /// exec (``Spawn/Identity/execRealGID``); nothing to do when they are equal already.
    public static func evenGroupIDs() throws {
        let effective = getegid()
        guard getgid() != effective else { return }
        _ = try retryingOnInterrupt("could not set the real gid to the effective gid \(effective) (setresgid)") {
            cs7_setresgid(effective, effective, effective)
        }
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
        demote(toUID: uid, gid: gid, keeping: [])
    }

    /// Turns this process for good into `uid`/`gid` as ``demote(toUID:gid:)`` does, but keeps
    /// the capabilities `kept` (e.g. `CAP_SETUID` and `CAP_SETGID`, to spawn a child as
    /// another user with ``Spawn/Identity``) permitted and effective across the uid change,
    /// and only those.
    ///
    /// `PR_SET_KEEPCAPS` is set around the uid change (and cleared after it), the bounding
    /// set keeps only `kept`, the ambient and inheritable sets are emptied and the permitted
    /// and effective sets set to exactly `kept`. The verification is that of
    /// ``demote(toUID:gid:)`` with CapPrm and CapEff equal to `kept` and CapBnd equal to
    /// `kept` when it could be dropped; `setuid(0)` is only tried when `CAP_SETUID` is not
    /// kept (with it, any uid can be set, 0 too: that is what keeping it means).
    ///
    /// Needs each of `kept` permitted (root has them); any failure ends the process as in
    /// ``demote(toUID:gid:)``.
    public static func demote(toUID uid: uid_t, gid: gid_t, keeping kept: Set<Int>) {
        do {
            try demoteOrThrow(toUID: uid, gid: gid, keeping: kept)
        } catch {
            let keeping = kept.isEmpty ? "" : " keeping \(names(kept))"
            fatal("could not drop privileges to uid \(uid), gid \(gid)\(keeping): \(error)")
        }
    }

    static func demoteOrThrow(toUID uid: uid_t, gid: gid_t, keeping kept: Set<Int> = []) throws {
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
        try checkPermitted(kept)

        let droppedBoundingSet = try dropBoundingSet(keeping: kept)

        if !kept.isEmpty {
            // Else a change of every uid away from 0 empties the permitted set.
            try setKeepCapabilities(true)
        }
        _ = try retryingOnInterrupt("could not clear the supplementary groups (setgroups)") { cs7_setgroups_none() }
        _ = try retryingOnInterrupt("could not set the real, effective and saved gid to \(gid) (setresgid)") {
            cs7_setresgid(gid, gid, gid)
        }
        _ = try retryingOnInterrupt("could not set the real, effective and saved uid to \(uid) (setresuid)") {
            cs7_setresuid(uid, uid, uid)
        }
        if !kept.isEmpty {
            try setKeepCapabilities(false)
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
        if !kept.contains(Capabilities.setUID), setuid(0) != -1 {
            throw PrivilegeError("setuid(0) succeeded after the uid change: root can be regained")
        }

        try clearAmbient()
        try setCapabilitySets(keeping: kept)
        try setNoNewPrivileges()

        try verifyEveryThread(after: "the drop", kept: kept, droppedBoundingSet: droppedBoundingSet, noNewPrivileges: true, ids: (uid, gid))
    }

    /// Checks /proc/self/task/*/status of every thread: CapPrm and CapEff exactly `kept`,
    /// CapInh and CapAmb 0, CapBnd `kept` when the bounding set was dropped, and, when given,
    /// NoNewPrivs set and all four uids and gids `ids`.
    private static func verifyEveryThread(
        after what: String,
        kept: Set<Int>,
        droppedBoundingSet: Bool,
        noNewPrivileges: Bool = false,
        ids: (uid: uid_t, gid: gid_t)? = nil
    ) throws {
        let keptSet = kept.reduce(UInt64(0)) { $0 | Capabilities.bit($1) }
        for path in try threadStatusPaths() {
            let status = try ProcessStatus.read(path: path)
            var problems: [String] = []
            if status.inheritable != 0 { problems.append("CapInh is \(hex(status.inheritable))") }
            if status.permitted != keptSet { problems.append("CapPrm is \(hex(status.permitted))") }
            if status.effective != keptSet { problems.append("CapEff is \(hex(status.effective))") }
            if status.ambient != 0 { problems.append("CapAmb is \(hex(status.ambient))") }
            if droppedBoundingSet && status.bounding != keptSet { problems.append("CapBnd is \(hex(status.bounding))") }
            if noNewPrivileges && !status.noNewPrivileges { problems.append("NoNewPrivs is 0") }
            if let ids {
                if !status.uid.all(equal: ids.uid) { problems.append("Uid is \(status.uid)") }
                if !status.gid.all(equal: ids.gid) { problems.append("Gid is \(status.gid)") }
            }
            if !problems.isEmpty {
                let expected = kept.isEmpty ? "" : " (expected \(hex(keptSet)), \(names(kept)))"
                throw PrivilegeError("\(path) after \(what): " + problems.joined(separator: ", ") + expected)
            }
        }
    }

    /// Throws unless every capability of `kept` is a valid number and permitted now.
    private static func checkPermitted(_ kept: Set<Int>) throws {
        guard !kept.isEmpty else { return }
        let last = try Capabilities.lastCapability()
        if let invalid = kept.sorted().first(where: { !(0...last).contains($0) }) {
            throw PrivilegeError("capability \(invalid) does not exist (the last is \(last))")
        }
        let permitted = try Capabilities.current().permitted
        let missing = kept.filter { permitted & Capabilities.bit($0) == 0 }
        guard missing.isEmpty else {
            throw PrivilegeError("cannot keep \(names(missing)): not permitted (CapPrm is \(hex(permitted)))")
        }
    }

    /// Sets or clears `PR_SET_KEEPCAPS`, verified with `PR_GET_KEEPCAPS`.
    private static func setKeepCapabilities(_ keep: Bool) throws {
        _ = try retryingOnInterrupt("could not \(keep ? "set" : "clear") keep-capabilities (PR_SET_KEEPCAPS)") {
            cs7_prctl(8 /* PR_SET_KEEPCAPS */, keep ? 1 : 0, 0, 0, 0)
        }
        let now = try retryingOnInterrupt("could not read keep-capabilities (PR_GET_KEEPCAPS)") {
            cs7_prctl(7 /* PR_GET_KEEPCAPS */, 0, 0, 0, 0)
        }
        guard (now == 1) == keep else {
            throw PrivilegeError("keep-capabilities is \(now) after PR_SET_KEEPCAPS \(keep ? 1 : 0)")
        }
    }

    /// "CAP_SETGID (6), CAP_SETUID (7)" for the known numbers, else the numbers.
    static func names(_ capabilities: Set<Int>) -> String {
        capabilities.sorted().map { capability in
            switch capability {
            case Capabilities.setGID: "CAP_SETGID (\(capability))"
            case Capabilities.setUID: "CAP_SETUID (\(capability))"
            case Capabilities.setPCap: "CAP_SETPCAP (\(capability))"
            case Capabilities.netBindService: "CAP_NET_BIND_SERVICE (\(capability))"
            default: "capability \(capability)"
            }
        }.joined(separator: ", ")
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
