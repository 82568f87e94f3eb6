#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage
import Testing

private let isRoot = getuid() == 0
/// nobody/nogroup on Debian: a uid that is neither root nor this process.
private let otherUID: uid_t = 65534
private let otherGID: gid_t = 65534

/// A fresh directory under /tmp (mode 0700, this process's), removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/s7sys-test-XXXXXX".utf8CString)
        guard let created = mkdtemp(&template) else {
            throw SystemCallError("could not create a temporary directory (mkdtemp)", errno: Errno(rawValue: errno))
        }
        path = String(cString: created)
    }

    func callAsFunction(_ name: String) -> String { path + "/" + name }

    func remove() {
        if let pid = try? Spawn.run(executable: "/bin/rm", arguments: ["-rf", path]) {
            _ = try? Spawn.wait(pid)
        }
    }
}

func fileStatus(_ path: String) -> stat? {
    var status = stat()
    return lstat(path, &status) == 0 ? status : nil
}

func writeFile(_ path: String, _ contents: String, mode: mode_t) throws {
    let descriptor = try FileDescriptor.open(
        path, .writeOnly, options: [.create, .truncate, .closeOnExec], permissions: FilePermissions(rawValue: mode)
    )
    defer { try? descriptor.close() }
    _ = try descriptor.writeAll(Array(contents.utf8))
    #expect(fchmod(descriptor.rawValue, mode) == 0)
}

func readFileText(_ path: String) throws -> String {
    let descriptor = try FileDescriptor.open(path, .readOnly, options: .closeOnExec)
    defer { try? descriptor.close() }
    return String(decoding: try readToEnd(descriptor), as: UTF8.self)
}

@Suite struct PrivateDirectoryTests {
    @Test(.enabled(if: isRoot, "chown needs root"))
    func aMissingLeafIsCreatedWithTheModeAndOwnerGiven() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let oldMask = umask(0o077)
        defer { umask(oldMask) }
        let path = temporary("run")
        #expect(try PrivateDirectory.ensure(path, owner: (otherUID, otherGID), mode: 0o750, trustedOwners: [0]) == .created)
        let status = try #require(fileStatus(path))
        #expect(status.st_mode & S_IFMT == S_IFDIR)
        #expect(status.st_mode & 0o7777 == 0o750, "mode \(String(status.st_mode & 0o7777, radix: 8))")
        #expect(status.st_uid == otherUID && status.st_gid == otherGID)

        // The same directory again: trusted as the service user's, left as it is.
        #expect(try PrivateDirectory.ensure(path, owner: (0, 0), mode: 0o700, trustedOwners: [0, otherUID]) == .existing)
        let again = try #require(fileStatus(path))
        #expect(again.st_mode & 0o7777 == 0o750 && again.st_uid == otherUID && again.st_gid == otherGID)
    }

    @Test func aLeafIsCreatedWithExactlyTheModeWhateverTheUmask() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("run")
        #expect(try PrivateDirectory.ensure(path, owner: nil, mode: 0o700, trustedOwners: [getuid()]) == .created)
        let status = try #require(fileStatus(path))
        #expect(status.st_mode & 0o7777 == 0o700)
        #expect(status.st_uid == geteuid())
    }

    @Test func aMissingParentIsNamedAndNotCreated() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let parent = temporary("missing")
        #expect {
            try PrivateDirectory.ensure(parent + "/run", owner: nil, mode: 0o700, trustedOwners: [0])
        } throws: { error in
            "\(error)".contains("its parent \(parent) does not exist")
        }
        #expect(fileStatus(parent) == nil)
    }

    @Test func aSymbolicLinkIsRefused() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let real = temporary("real")
        #expect(mkdir(real, 0o700) == 0)
        let link = temporary("link")
        #expect(symlink(real, link) == 0)
        #expect {
            try PrivateDirectory.ensure(link, owner: nil, mode: 0o700, trustedOwners: [getuid()])
        } throws: { error in
            (error as? UnsafePathError)?.found == "is a symbolic link to \(real)"
        }
        #expect(fileStatus(link).map { $0.st_mode & S_IFMT == S_IFLNK } == true)
    }

    @Test func aFileIsRefused() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("file")
        try writeFile(path, "x", mode: 0o600)
        #expect(throws: UnsafePathError.self) {
            try PrivateDirectory.ensure(path, owner: nil, mode: 0o700, trustedOwners: [getuid()])
        }
    }

    @Test(.enabled(if: isRoot, "chown needs root"))
    func aDirectoryOwnedByAnotherUserIsRefusedAndLeftAsItIs() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("run")
        #expect(mkdir(path, 0o755) == 0)
        #expect(chown(path, otherUID, otherGID) == 0)
        #expect {
            try PrivateDirectory.ensure(path, owner: (0, 0), mode: 0o700, trustedOwners: [0])
        } throws: { error in
            let description = "\(error)"
            return description.contains("is owned by") && description.contains("uid \(otherUID)")
                && description.contains("not root (uid 0)")
        }
        let status = try #require(fileStatus(path))
        #expect(status.st_uid == otherUID && status.st_mode & 0o7777 == 0o755)
    }

    @Test func aDirectoryOthersCanWriteIsRefusedAndLeftAsItIs() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        for mode: mode_t in [0o777, 0o1777, 0o770] {
            let path = temporary("open-\(String(mode, radix: 8))")
            #expect(mkdir(path, 0o700) == 0)
            #expect(chmod(path, mode) == 0)
            #expect(throws: UnsafePathError.self) {
                try PrivateDirectory.ensure(path, owner: nil, mode: 0o700, trustedOwners: [getuid()])
            }
            #expect(fileStatus(path).map { $0.st_mode & 0o7777 } == mode)
        }
    }

    @Test func anExistingDirectoryKeepsItsOwnerAndMode() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("run")
        #expect(mkdir(path, 0o700) == 0)
        #expect(chmod(path, 0o755) == 0)
        #expect(try PrivateDirectory.ensure(path, owner: (otherUID, otherGID), mode: 0o700, trustedOwners: [getuid()]) == .existing)
        let status = try #require(fileStatus(path))
        #expect(status.st_mode & 0o7777 == 0o755)
        #expect(status.st_uid == getuid() && status.st_gid == getgid())
    }
}

@Suite struct ExclusiveFileTests {
    @Test func aNewFileGetsExactlyTheModeAndTheContents() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("s7commd.pid")
        let oldMask = umask(0o077)
        defer { umask(oldMask) }
        let descriptor = try ExclusiveFile.create(path, mode: 0o644, replacingStaleOwnedBy: nil)
        defer { try? descriptor.close() }
        try ExclusiveFile.replaceContents(descriptor, with: Array("123456\n".utf8))
        try ExclusiveFile.replaceContents(descriptor, with: Array("42\n".utf8))
        #expect(try readFileText(path) == "42\n")
        #expect(fileStatus(path).map { $0.st_mode & 0o7777 } == 0o644)
    }

    @Test func anExistingFileIsAnErrorWhenNothingMayBeReplaced() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("s7commd.pid")
        try writeFile(path, "old\n", mode: 0o644)
        #expect {
            try ExclusiveFile.create(path, mode: 0o644, replacingStaleOwnedBy: nil)
        } throws: { error in
            (error as? SystemCallError)?.errno == .fileExists
        }
        #expect(try readFileText(path) == "old\n")
    }

    @Test func aStaleFileOfTheOwnerIsReplaced() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("s7commd.pid")
        try writeFile(path, "99999\n", mode: 0o600)
        let before = try #require(fileStatus(path))
        let descriptor = try ExclusiveFile.create(path, mode: 0o644, replacingStaleOwnedBy: geteuid())
        defer { try? descriptor.close() }
        try ExclusiveFile.replaceContents(descriptor, with: Array("7\n".utf8))
        #expect(try readFileText(path) == "7\n")
        let after = try #require(fileStatus(path))
        #expect(after.st_mode & 0o7777 == 0o644)
        #expect(after.st_ino != before.st_ino || after.st_ctim.tv_nsec != before.st_ctim.tv_nsec)
    }

    @Test func aPlantedSymbolicLinkIsRefusedAndItsTargetUntouched() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let target = temporary("shadow")
        try writeFile(target, "secret\n", mode: 0o640)
        let path = temporary("s7commd.pid")
        #expect(symlink(target, path) == 0)
        #expect {
            try ExclusiveFile.create(path, mode: 0o644, replacingStaleOwnedBy: geteuid())
        } throws: { error in
            (error as? UnsafePathError)?.found == "is a symbolic link to \(target)"
        }
        #expect(try readFileText(target) == "secret\n")
        #expect(fileStatus(target).map { $0.st_mode & 0o7777 } == 0o640)
        #expect(fileStatus(path).map { $0.st_mode & S_IFMT == S_IFLNK } == true)
    }

    @Test func aHardLinkIsRefused() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let target = temporary("shadow")
        try writeFile(target, "secret\n", mode: 0o640)
        let path = temporary("s7commd.pid")
        #expect(link(target, path) == 0)
        #expect {
            try ExclusiveFile.create(path, mode: 0o644, replacingStaleOwnedBy: geteuid())
        } throws: { error in
            (error as? UnsafePathError)?.found == "has 2 hard links"
        }
        #expect(try readFileText(target) == "secret\n")
        #expect(try readFileText(path) == "secret\n")
    }

    @Test(.enabled(if: isRoot, "chown needs root"))
    func aFileOfAnotherOwnerIsRefused() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("s7commd.pid")
        try writeFile(path, "1\n", mode: 0o644)
        #expect(chown(path, otherUID, otherGID) == 0)
        #expect(throws: UnsafePathError.self) {
            try ExclusiveFile.create(path, mode: 0o644, replacingStaleOwnedBy: 0)
        }
        #expect(try readFileText(path) == "1\n")
        #expect(fileStatus(path)?.st_uid == otherUID)
    }
}

@Suite struct AtomicFileTests {
    @Test func contentsAreReplacedWholeAndNoTemporaryFileIsLeft() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("state.json")
        try AtomicFile.write(Array("{\"a\":1}\n".utf8), to: path, mode: 0o640)
        #expect(try readFileText(path) == "{\"a\":1}\n")
        #expect(fileStatus(path).map { $0.st_mode & 0o7777 } == 0o640)
        try AtomicFile.write(Array("second".utf8), to: path, mode: 0o600)
        #expect(try readFileText(path) == "second")
        #expect(fileStatus(path).map { $0.st_mode & 0o7777 } == 0o600)
        try AtomicFile.write([], to: path, mode: 0o600)
        #expect(try readFileText(path) == "")
        #expect(try directoryEntries(temporary.path) == ["state.json"])
    }

    @Test func aSymbolicLinkAtThePathIsReplacedNotFollowed() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let target = temporary("shadow")
        try writeFile(target, "secret\n", mode: 0o640)
        let path = temporary("state")
        #expect(symlink(target, path) == 0)
        try AtomicFile.write(Array("new".utf8), to: path, mode: 0o644)
        #expect(try readFileText(target) == "secret\n")
        #expect(try readFileText(path) == "new")
        #expect(fileStatus(path).map { $0.st_mode & S_IFMT == S_IFREG } == true)
    }

    @Test func aMissingDirectoryIsAnErrorAndLeavesNothing() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        #expect {
            try AtomicFile.write([1], to: temporary("missing/state"), mode: 0o600)
        } throws: { error in
            (error as? SystemCallError)?.errno == .noSuchFileOrDirectory
        }
        #expect(try directoryEntries(temporary.path) == [])
    }
}
