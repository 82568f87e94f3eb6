#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage
import Testing

private let isRoot = getuid() == 0

func directoryEntries(_ directory: String) throws -> [String] {
    guard let handle = opendir(directory) else {
        throw SystemCallError("could not list \(directory) (opendir)", errno: Errno(rawValue: errno))
    }
    defer { closedir(handle) }
    var names: [String] = []
    while let entry = readdir(handle) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

@Suite struct AtomicReplacementTests {
    @Test func theModeOfTheReplacedFileIsKeptAndANewFileGetsTheModeGiven() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let oldMask = umask(0o077)
        defer { umask(oldMask) }
        let path = temporary("s7commd.json")
        try AtomicFile.write(Array("one".utf8), to: path, mode: 0o644, options: .keepingModeAndOwner)
        #expect(fileStatus(path).map { $0.st_mode & 0o7777 } == 0o644, "a new file gets exactly the mode, whatever the umask")
        #expect(chmod(path, 0o640) == 0)
        try AtomicFile.write(Array("two".utf8), to: path, mode: 0o644, options: .keepingModeAndOwner)
        #expect(try readFileText(path) == "two")
        #expect(fileStatus(path).map { $0.st_mode & 0o7777 } == 0o640)
        try AtomicFile.write(Array("three".utf8), to: path, mode: 0o600)
        #expect(fileStatus(path).map { $0.st_mode & 0o7777 } == 0o600, "without the option the mode given wins")
    }

    @Test(.enabled(if: isRoot, "chown needs root"))
    func theOwnerAndGroupOfTheReplacedFileAreKept() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("s7commd.json")
        try writeFile(path, "old", mode: 0o640)
        #expect(chown(path, 65534, 65534) == 0)
        try AtomicFile.write(Array("new".utf8), to: path, mode: 0o644, options: .keepingModeAndOwner)
        let status = try #require(fileStatus(path))
        #expect(status.st_uid == 65534 && status.st_gid == 65534)
        #expect(status.st_mode & 0o7777 == 0o640)
        #expect(try readFileText(path) == "new")
    }

    @Test func thePerProcessTemporaryIsNamedByPidAndStaleOnesOfDeadProcessesAreRemoved() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("s7commd.json")
        let dead = try deadPid()
        let stale = temporary(".s7commd.json.tmp-\(dead)")
        let live = temporary(".s7commd.json.tmp-1")
        let other = temporary(".other.json.tmp-\(dead)")
        for file in [stale, live, other] { try writeFile(file, "left over", mode: 0o600) }
        #expect(AtomicFile.temporaryPath(for: path) == temporary(".s7commd.json.tmp-\(getpid())"))

        var seen: [String] = []
        var contents = ""
        try AtomicFile.write(Array("{}\n".utf8), to: path, mode: 0o644, options: .perProcessTemporary) {
            seen = (try? directoryEntries(temporary.path)) ?? []
            contents = (try? readFileText(AtomicFile.temporaryPath(for: path))) ?? ""
        }
        #expect(seen == [".other.json.tmp-\(dead)", ".s7commd.json.tmp-1", ".s7commd.json.tmp-\(getpid())"].sorted(),
                "the stale one is gone, the live process's and another file's are kept")
        #expect(contents == "{}\n", "the temporary file is complete before the rename")
        #expect(try directoryEntries(temporary.path) == [".other.json.tmp-\(dead)", ".s7commd.json.tmp-1", "s7commd.json"].sorted())
    }

    @Test func aDiscardedReplacementLeavesTheFileAsItWas() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("retain.bin")
        try writeFile(path, "old", mode: 0o600)
        let replacement = try AtomicFile.Replacement.begin(replacing: path, mode: 0o600)
        #expect(replacement.temporaryPath.hasPrefix(temporary(".retain.bin.tmp-\(getpid())-")))
        try replacement.write(Array("new".utf8))
        replacement.discard()
        #expect(try readFileText(path) == "old")
        #expect(try directoryEntries(temporary.path) == ["retain.bin"])
    }

    @Test func aFailingRenameRemovesTheTemporaryAndKeepsThePath() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("busy")
        #expect(mkdir(path, 0o700) == 0)
        try writeFile(path + "/inside", "x", mode: 0o600)
        let replacement = try AtomicFile.Replacement.begin(replacing: path, mode: 0o600, options: .perProcessTemporary)
        try replacement.write([1, 2, 3])
        #expect {
            try replacement.commit()
        } throws: { error in
            (error as? SystemCallError)?.errno == .isDirectory
        }
        #expect(try directoryEntries(temporary.path) == ["busy"])
        #expect(try directoryEntries(path) == ["inside"])
    }

    @Test func renameMovesAFileAndAMissingSourceIsAnError() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        try writeFile(temporary("retain.bin"), "data", mode: 0o600)
        try AtomicFile.rename(temporary("retain.bin"), to: temporary("retain.bin.corrupt-1"))
        #expect(try directoryEntries(temporary.path) == ["retain.bin.corrupt-1"])
        #expect(try readFileText(temporary("retain.bin.corrupt-1")) == "data")
        #expect {
            try AtomicFile.rename(temporary("retain.bin"), to: temporary("retain.bin.corrupt-2"))
        } throws: { error in
            (error as? SystemCallError)?.errno == .noSuchFileOrDirectory
        }
    }

    @Test func removingAnExclusiveFileToleratesAMissingOneButNotADirectory() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let path = temporary("s7commd.pid")
        let descriptor = try ExclusiveFile.create(path, mode: 0o644, replacingStaleOwnedBy: nil)
        try descriptor.close()
        try ExclusiveFile.remove(path)
        #expect(fileStatus(path) == nil)
        try ExclusiveFile.remove(path)
        #expect {
            try ExclusiveFile.remove(temporary.path)
        } throws: { error in
            (error as? SystemCallError)?.errno == .isDirectory
        }
    }
}
