#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import SystemPackage

/// A path that a process started as root refuses to use, because another user could use it
/// to redirect what the process writes, or because it is not what the process would create.
///
/// The description says what was found, why that is refused and what to do, e.g. "/run/x is
/// owned by uid 1000, not root (uid 0) or s7commd (uid 998): a directory another user
/// controls could redirect s7commd's files; remove it, or choose a path in a directory owned
/// by root". A caller that knows the option behind the path can replace ``remedy`` (e.g.
/// "pass --pid-file in a directory owned by root") and throw the error on.
public struct UnsafePathError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The path.
    public var path: String
    /// What was found there, e.g. "is a symbolic link to /etc/shadow".
    public var found: String
    /// Why that is refused.
    public var reason: String
    /// What the operator can do.
    public var remedy: String

    /// Creates an error for `path`.
    public init(path: String, found: String, reason: String, remedy: String) {
        self.path = path
        self.found = found
        self.reason = reason
        self.remedy = remedy
    }

    public var description: String {
        "\(path) \(found): \(reason); \(remedy)"
    }
}

/// A directory only trusted users can change, such as the runtime directory of a root start.
public enum PrivateDirectory {
    /// Whether ``ensure(_:owner:mode:trustedOwners:)`` made the directory.
    public enum Created: Equatable, Sendable {
        /// It did not exist and was created.
        case created
        /// It existed and passed the checks; it was left as it was.
        case existing
    }

    /// Makes sure `path` is a directory that only trusted users can change.
    ///
    /// A missing `path` is created — only the last component, never a parent — with
    /// `mkdir`, then opened with `O_NOFOLLOW | O_DIRECTORY`, given `owner` (`fchown`, when
    /// given) and exactly `mode` (`fchmod`, so the umask does not matter).
    ///
    /// An existing `path` is checked with `lstat` and never changed (no chmod, no chown): it
    /// is refused when it is a symbolic link, not a directory, owned by a uid that is not in
    /// `trustedOwners`, or writable by its group or by others (`S_IWGRP | S_IWOTH`, also
    /// with the sticky bit).
    ///
    /// The parents are not checked: name a path whose parents only root can change (such as
    /// /run or /var/lib).
    ///
    /// - Parameters:
    ///   - path: the directory.
    ///   - owner: the uid and gid a directory created here gets; nil keeps this process's.
    ///   - mode: the permission bits a directory created here gets, e.g. 0o750.
    ///   - trustedOwners: the uids an existing directory may be owned by (e.g. root and the
    ///     service user).
    /// - Throws: ``UnsafePathError`` for an existing path that is refused or a missing
    ///   parent; ``SystemCallError`` when a call fails.
    @discardableResult
    public static func ensure(
        _ path: String,
        owner: (uid: uid_t, gid: gid_t)?,
        mode: mode_t,
        trustedOwners: [uid_t]
    ) throws -> Created {
        precondition(!path.isEmpty, "PrivateDirectory.ensure needs a path")
        if mkdir(path, 0o700) == 0 {
            try adopt(path, owner: owner, mode: mode)
            return .created
        }
        let code = Glibc.errno
        switch code {
        case EEXIST:
            try check(existing: path, trustedOwners: trustedOwners)
            return .existing
        case ENOENT:
            let parent = parentDirectory(of: path)
            throw UnsafePathError(
                path: path,
                found: "cannot be created because its parent \(parent) does not exist",
                reason: "s7commd creates only the last component of a directory, never the directories above it",
                remedy: "create \(parent) first (owned by root), or choose a path in an existing directory"
            )
        default:
            throw SystemCallError("could not create the directory \(path) (mkdir)", errno: Errno(rawValue: code))
        }
    }

    /// Gives a directory this process has just created its owner and mode, through a
    /// descriptor, so that a path swapped in the meantime is not followed.
    private static func adopt(_ path: String, owner: (uid: uid_t, gid: gid_t)?, mode: mode_t) throws {
        let raw = try retryingOnInterrupt("could not open the directory \(path) it just created (open O_DIRECTORY|O_NOFOLLOW)") {
            open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        }
        let descriptor = FileDescriptor(rawValue: raw)
        defer { try? descriptor.close() }
        if let owner {
            _ = try retryingOnInterrupt("could not give the new directory \(path) to uid \(owner.uid), gid \(owner.gid) (fchown)") {
                fchown(raw, owner.uid, owner.gid)
            }
        }
        _ = try retryingOnInterrupt("could not set the mode of the new directory \(path) to \(octal(mode)) (fchmod)") {
            fchmod(raw, mode)
        }
    }

    private static func check(existing path: String, trustedOwners: [uid_t]) throws {
        let status = try linkStatus(path)
        let remedy = "remove it, or choose a path in a directory owned by root"
        switch status.st_mode & S_IFMT {
        case S_IFDIR:
            break
        case S_IFLNK:
            throw UnsafePathError(
                path: path,
                found: "is a symbolic link\(linkTarget(path).map { " to \($0)" } ?? "")",
                reason: "a link another user planted could redirect s7commd's files to a place of their choosing",
                remedy: remedy
            )
        default:
            throw UnsafePathError(
                path: path,
                found: "is \(fileKind(status.st_mode)), not a directory",
                reason: "s7commd needs a directory there",
                remedy: remedy
            )
        }
        guard trustedOwners.contains(status.st_uid) else {
            throw UnsafePathError(
                path: path,
                found: "is owned by \(userDescription(status.st_uid)), not \(ownersDescription(trustedOwners))",
                reason: "a directory another user controls could redirect s7commd's files",
                remedy: remedy
            )
        }
        let groupOrOtherWrite = S_IWGRP | S_IWOTH
        guard status.st_mode & groupOrOtherWrite == 0 else {
            throw UnsafePathError(
                path: path,
                found: "has mode \(octal(status.st_mode & 0o7777)), writable by \(status.st_mode & S_IWOTH != 0 ? "every user" : "its group (gid \(status.st_gid))")",
                reason: "other users could replace or plant files in it",
                remedy: "remove the write permission of group and others (chmod go-w \(path)), or choose another path"
            )
        }
    }
}

/// A file created by this process alone, such as a pid file.
public enum ExclusiveFile {
    /// Creates `path` as a new regular file, write-only, with exactly `mode`.
    ///
    /// `open(O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC)`, then `fchmod` (the umask
    /// does not matter). When `path` exists, `lstat` decides: a regular file owned by
    /// `replacingStaleOwnedBy` with one link (e.g. the pid file of an earlier run that
    /// crashed) is unlinked and the open tried once more; anything else — a symbolic link, a
    /// file with more than one hard link, another owner, not a regular file — is an
    /// ``UnsafePathError`` and left untouched. Decide that a file is stale (e.g. that no
    /// process holds its lock) before calling this.
    ///
    /// The check and the unlink are two steps: in a directory others can write, a file could
    /// be swapped in between (the unlink removes a name, never follows a link). Keep such
    /// files in a ``PrivateDirectory``.
    ///
    /// - Parameters:
    ///   - path: the file.
    ///   - mode: its permission bits, e.g. 0o644.
    ///   - replacingStaleOwnedBy: the uid whose existing file may be replaced; nil replaces
    ///     nothing (an existing file is an error, `EEXIST`).
    /// - Returns: the descriptor (write-only, close-on-exec), owned by the caller.
    public static func create(_ path: String, mode: mode_t, replacingStaleOwnedBy: uid_t?) throws -> FileDescriptor {
        if let descriptor = try openExclusive(path, mode: mode) { return descriptor }
        guard let staleOwner = replacingStaleOwnedBy else {
            throw SystemCallError("could not create \(path): it already exists (open O_EXCL)", errno: .fileExists)
        }
        let status = try linkStatus(path)
        let remedy = "remove it if it is not needed, or choose a path in a directory owned by root"
        switch status.st_mode & S_IFMT {
        case S_IFREG:
            break
        case S_IFLNK:
            throw UnsafePathError(
                path: path,
                found: "is a symbolic link\(linkTarget(path).map { " to \($0)" } ?? "")",
                reason: "writing through a link another user planted would overwrite a file of their choosing",
                remedy: remedy
            )
        default:
            throw UnsafePathError(
                path: path,
                found: "is \(fileKind(status.st_mode)), not a regular file",
                reason: "s7commd replaces only a regular file it wrote itself",
                remedy: remedy
            )
        }
        guard status.st_uid == staleOwner else {
            throw UnsafePathError(
                path: path,
                found: "is owned by \(userDescription(status.st_uid)), not \(userDescription(staleOwner))",
                reason: "s7commd replaces only a stale file it wrote itself",
                remedy: remedy
            )
        }
        guard status.st_nlink == 1 else {
            throw UnsafePathError(
                path: path,
                found: "has \(status.st_nlink) hard links",
                reason: "a hard link another user made could make s7commd overwrite another file",
                remedy: remedy
            )
        }
        _ = try retryingOnInterrupt("could not remove the stale file \(path) (unlink)") { unlink(path) }
        if let descriptor = try openExclusive(path, mode: mode) { return descriptor }
        throw SystemCallError("could not create \(path): it was created again after the stale one was removed (open O_EXCL)", errno: .fileExists)
    }

    /// Replaces everything in the file with `bytes` (`ftruncate` to 0, then `pwrite` at 0
    /// until all is written), e.g. the pid in a pid file.
    public static func replaceContents(_ fd: FileDescriptor, with bytes: [UInt8]) throws {
        _ = try retryingOnInterrupt("could not empty descriptor \(fd.rawValue) (ftruncate)") {
            ftruncate(fd.rawValue, 0)
        }
        try writeAll(bytes, to: fd, what: "descriptor \(fd.rawValue)")
    }

    /// Removes the name `path` (`unlink`), e.g. a pid file at exit; a path that no longer
    /// exists is not an error. A symbolic link there is removed, never followed.
    ///
    /// - Throws: ``SystemCallError`` when the name cannot be removed, e.g. `EACCES` in a
    ///   directory this process may no longer write.
    public static func remove(_ path: String) throws {
        while unlink(path) != 0 {
            let code = Glibc.errno
            if code == EINTR { continue }
            if code == ENOENT { return }
            throw SystemCallError("could not remove \(path) (unlink)", errno: Errno(rawValue: code))
        }
    }

    /// The descriptor, or nil when `path` exists.
    private static func openExclusive(_ path: String, mode: mode_t) throws -> FileDescriptor? {
        while true {
            let raw = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
            if raw >= 0 {
                let descriptor = FileDescriptor(rawValue: raw)
                do {
                    _ = try retryingOnInterrupt("could not set the mode of \(path) to \(octal(mode)) (fchmod)") {
                        fchmod(raw, mode)
                    }
                } catch {
                    try? descriptor.close()
                    _ = unlink(path)
                    throw error
                }
                return descriptor
            }
            let code = Glibc.errno
            if code == EINTR { continue }
            // O_NOFOLLOW with O_CREAT|O_EXCL reports a symbolic link as EEXIST.
            if code == EEXIST { return nil }
            throw SystemCallError("could not create \(path) (open O_CREAT|O_EXCL|O_NOFOLLOW)", errno: Errno(rawValue: code))
        }
    }
}

/// Replacing a file whole, so that a reader sees the old contents or the new, never a part.
public enum AtomicFile {
    /// How ``Replacement/begin(replacing:mode:options:)`` names and sets up its temporary file.
    public struct Options: OptionSet, Sendable {
        public let rawValue: UInt8

        public init(rawValue: UInt8) {
            self.rawValue = rawValue
        }

        /// The new file gets the permission bits, the owner and the group of the file it
        /// replaces (`stat` of the path, so a symbolic link's target counts); `mode` is then
        /// only for a path that does not exist yet. Handing the file to that owner and group
        /// (`fchown`) is done when the system allows it (always for root) and otherwise
        /// skipped: the file is then this process's, as `rename` leaves it.
        public static let keepingModeAndOwner = Options(rawValue: 1 << 0)

        /// The temporary file is `.NAME.tmp-PID` (see ``temporaryPath(for:)``), one per
        /// process, and before it is created the temporary files of processes that no longer
        /// exist are removed: a write killed before its rename leaves its temporary file
        /// behind, and a reader can so tell whose it is. Without this option the name also
        /// carries a random part and nothing is cleaned up.
        public static let perProcessTemporary = Options(rawValue: 1 << 1)
    }

    /// A temporary file in the directory of `path`, filled in and then renamed over `path`:
    /// ``write(_:to:mode:)`` in steps, for a caller that reports each step in its own words
    /// or waits between them.
    ///
    /// Call ``write(_:)``, then ``commit()`` (and ``flushDirectory()`` to make the rename
    /// durable), or ``discard()``; until one of them the temporary file's descriptor is open.
    /// Every failing step before the rename removes the temporary file, so `path` then still
    /// has its old contents and nothing is left behind.
    public struct Replacement: Sendable {
        /// The file that is replaced.
        public let path: String
        /// The temporary file that gets the new contents.
        public let temporaryPath: String
        private let descriptor: FileDescriptor

        /// Creates the temporary file for replacing `path`.
        ///
        /// It is created with `O_EXCL | O_NOFOLLOW` (a file or link planted at its name is
        /// never written through) and gets exactly `mode` (`fchmod`, so the umask does not
        /// matter), or the mode and owner of the existing file with
        /// ``Options/keepingModeAndOwner``. With ``Options/perProcessTemporary`` an earlier
        /// temporary file of this same pid (a process that had this pid before) is removed
        /// first, as are those of processes that are gone (``ProcessSignal/isAlive(_:)``).
        ///
        /// - Parameters:
        ///   - path: the file to replace; it need not exist.
        ///   - mode: the permission bits of the new file, e.g. 0o600.
        ///   - options: how the temporary file is named and set up.
        /// - Throws: ``SystemCallError`` when the temporary file cannot be created or set up.
        public static func begin(replacing path: String, mode: mode_t, options: Options = []) throws -> Replacement {
            let temporary: String
            if options.contains(.perProcessTemporary) {
                removeStaleTemporaries(of: path)
                temporary = AtomicFile.temporaryPath(for: path)
                _ = unlink(temporary)
            } else {
                temporary = AtomicFile.temporaryPath(for: path) + "-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
            }
            var existing = stat()
            let keeping = options.contains(.keepingModeAndOwner) && stat(path, &existing) == 0
            let newMode = keeping ? existing.st_mode & 0o7777 : mode
            let raw = try retryingOnInterrupt("could not create the temporary file \(temporary) (open O_CREAT|O_EXCL|O_NOFOLLOW)") {
                open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, newMode)
            }
            let descriptor = FileDescriptor(rawValue: raw)
            do {
                if keeping {
                    // Best effort, as documented: a user who may not give the file away keeps it.
                    _ = fchown(raw, existing.st_uid, existing.st_gid)
                }
                // After fchown, which clears set-user-ID and set-group-ID bits.
                _ = try retryingOnInterrupt("could not set the mode of \(temporary) to \(octal(newMode)) (fchmod)") {
                    fchmod(raw, newMode)
                }
            } catch {
                try? descriptor.close()
                _ = unlink(temporary)
                throw error
            }
            return Replacement(path: path, temporaryPath: temporary, descriptor: descriptor)
        }

        /// Writes all of `bytes` to the temporary file (`pwrite` from offset 0) and flushes it
        /// to disk (`fsync`). On failure the temporary file is closed and removed.
        public func write(_ bytes: [UInt8]) throws {
            do {
                try writeAll(bytes, to: descriptor, what: temporaryPath)
                _ = try retryingOnInterrupt("could not flush \(temporaryPath) to disk (fsync)") { fsync(descriptor.rawValue) }
            } catch {
                discard()
                throw error
            }
        }

        /// Closes the temporary file and renames it over ``path`` (`rename`, which replaces
        /// a symbolic link at `path` rather than following it). On failure the temporary
        /// file is removed and `path` keeps its old contents. Call ``flushDirectory()`` next
        /// so that the rename survives a crash.
        public func commit() throws {
            try? descriptor.close()
            do {
                try AtomicFile.rename(temporaryPath, to: path)
            } catch {
                _ = unlink(temporaryPath)
                throw error
            }
        }

        /// Flushes the directory of ``path`` to disk (`open` `O_DIRECTORY`, `fsync`), so that
        /// the rename ``commit()`` made survives a crash.
        public func flushDirectory() throws {
            let directory = parentDirectory(of: path)
            let raw = try retryingOnInterrupt("could not open the directory \(directory) to flush the rename of \(path) (open)") {
                open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            }
            defer { _ = Glibc.close(raw) }
            _ = try retryingOnInterrupt("could not flush the directory \(directory) after renaming \(path) into it (fsync)") {
                fsync(raw)
            }
        }

        /// Closes and removes the temporary file; ``path`` is left as it was.
        public func discard() {
            try? descriptor.close()
            _ = unlink(temporaryPath)
        }
    }

    /// Writes `bytes` to `path` atomically and durably.
    ///
    /// A temporary file in the same directory (`.NAME.tmp-PID-RANDOM`, or `.NAME.tmp-PID`
    /// with ``Options/perProcessTemporary``; created with `O_EXCL | O_NOFOLLOW`, mode exactly
    /// `mode` unless ``Options/keepingModeAndOwner`` keeps the existing file's) gets all the
    /// bytes and is `fsync`ed, then `beforeRename` is called, then the file is renamed over
    /// `path`, and the directory is `fsync`ed so the rename survives a crash. A failing
    /// directory `fsync` is an error. On any failure before the rename the temporary file is
    /// removed; `path` then still has its old contents. See ``Replacement`` for the steps.
    ///
    /// A symbolic link at `path` is replaced, not followed (`rename` replaces the name).
    ///
    /// - Parameters:
    ///   - bytes: the new contents.
    ///   - path: the file to replace; it need not exist.
    ///   - mode: the permission bits of the new file, e.g. 0o600.
    ///   - options: how the temporary file is named and set up.
    ///   - beforeRename: called once the temporary file is complete on disk, just before the
    ///     rename (e.g. a test hook that waits there).
    public static func write(
        _ bytes: [UInt8],
        to path: String,
        mode: mode_t,
        options: Options = [],
        beforeRename: () -> Void = {}
    ) throws {
        let name = lastComponent(of: path)
        precondition(!name.isEmpty && name != "." && name != "..", "AtomicFile.write needs a file name, got \(path)")
        let replacement = try Replacement.begin(replacing: path, mode: mode, options: options)
        try replacement.write(bytes)
        beforeRename()
        try replacement.commit()
        try replacement.flushDirectory()
    }

    /// Renames `source` to `destination` (`rename`): atomic within one file system, and a
    /// file or symbolic link at `destination` is replaced, not followed.
    ///
    /// - Throws: ``SystemCallError`` when the rename fails, e.g. `ENOENT` for a missing
    ///   source or `EXDEV` across file systems.
    public static func rename(_ source: String, to destination: String) throws {
        _ = try retryingOnInterrupt("could not rename \(source) to \(destination) (rename)") {
            Glibc.rename(source, destination)
        }
    }

    /// The temporary file ``Options/perProcessTemporary`` names for `path` in this process:
    /// `.NAME.tmp-PID` in the directory of `path`.
    public static func temporaryPath(for path: String) -> String {
        let name = lastComponent(of: path)
        precondition(!name.isEmpty && name != "." && name != "..", "AtomicFile needs a file name, got \(path)")
        return temporaryPrefix(for: path) + "\(getpid())"
    }

    /// `DIRECTORY/.NAME.tmp-`.
    private static func temporaryPrefix(for path: String) -> String {
        let directory = parentDirectory(of: path)
        return (directory == "/" ? "/" : directory + "/") + ".\(lastComponent(of: path)).tmp-"
    }

    /// Unlinks the `.NAME.tmp-PID` files beside `path` whose process no longer exists
    /// (best effort: a directory that cannot be read is skipped).
    private static func removeStaleTemporaries(of path: String) {
        let directory = parentDirectory(of: path)
        let prefix = "." + lastComponent(of: path) + ".tmp-"
        let directoryPrefix = directory == "/" ? "/" : directory + "/"
        guard let stream = opendir(directory) else { return }
        defer { closedir(stream) }
        var stale: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasPrefix(prefix), let pid = pid_t(name.dropFirst(prefix.count)), pid > 0, pid != getpid(),
                  !ProcessSignal.isAlive(pid) else { continue }
            stale.append(directoryPrefix + name)
        }
        for file in stale { _ = unlink(file) }
    }
}

// MARK: - Helpers shared by the safe-path types

/// `pwrite` from offset 0 until every byte is written (retried on EINTR).
private func writeAll(_ bytes: [UInt8], to descriptor: FileDescriptor, what: String) throws {
    var offset = 0
    while offset < bytes.count {
        let written = try bytes.withUnsafeBytes { (buffer) throws -> Int in
            try retryingOnInterrupt("could not write \(bytes.count - offset) bytes to \(what) (pwrite)") {
                pwrite(descriptor.rawValue, buffer.baseAddress! + offset, buffer.count - offset, off_t(offset))
            }
        }
        offset += written
    }
}

/// `lstat` of `path`.
func linkStatus(_ path: String) throws -> stat {
    var status = stat()
    _ = try retryingOnInterrupt("could not inspect \(path) (lstat)") { lstat(path, &status) }
    return status
}

/// Where the symbolic link at `path` points, if it can be read.
func linkTarget(_ path: String) -> String? {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let length = readlink(path, &buffer, buffer.count - 1)
    guard length >= 0 else { return nil }
    return String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// "a regular file", "a socket", ... for the file type bits of `mode`.
func fileKind(_ mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFREG: "a regular file"
    case S_IFDIR: "a directory"
    case S_IFLNK: "a symbolic link"
    case S_IFSOCK: "a socket"
    case S_IFIFO: "a named pipe"
    case S_IFCHR: "a character device"
    case S_IFBLK: "a block device"
    default: "a file of unknown type"
    }
}

/// "uid 1000" or "the user alice (uid 1000)" when the password database knows it.
func userDescription(_ uid: uid_t) -> String {
    var entry = passwd()
    var result: UnsafeMutablePointer<passwd>?
    var buffer = [CChar](repeating: 0, count: 4096)
    guard getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil, let name = entry.pw_name else {
        return "uid \(uid)"
    }
    return uid == 0 ? "root (uid 0)" : "the user \(String(cString: name)) (uid \(uid))"
}

/// "root (uid 0) or the user s7commd (uid 998)".
func ownersDescription(_ uids: [uid_t]) -> String {
    guard !uids.isEmpty else { return "any trusted user (none was given)" }
    return uids.map(userDescription).joined(separator: " or ")
}

func octal(_ mode: mode_t) -> String {
    "0" + String(mode, radix: 8)
}

/// The directory part of `path`: "." for a bare name, "/" for a file in the root.
func parentDirectory(of path: String) -> String {
    var trimmed = Substring(path)
    while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
    guard let slash = trimmed.lastIndex(of: "/") else { return "." }
    let parent = trimmed[..<slash]
    return parent.isEmpty ? "/" : String(parent)
}

/// The last component of `path`, without trailing slashes.
func lastComponent(of path: String) -> String {
    var trimmed = Substring(path)
    while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
    guard let slash = trimmed.lastIndex(of: "/") else { return String(trimmed) }
    return String(trimmed[trimmed.index(after: slash)...])
}
