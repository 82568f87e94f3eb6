#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage
import Testing

/// Landlock is for good and per process: every restriction runs in the probe. On a kernel
/// without Landlock the same tests check that it is really absent (the kernel's own list of
/// security modules, or its boot configuration, must not name it) and that `restrict` then
/// says it restricted nothing; no test is skipped.
@Suite("Landlock")
struct LandlockTests {
    @Test func theHandledRightsAreCutToTheABI() {
        let expected: [(abi: Int, filesystem: UInt64, network: UInt64, scopes: UInt64)] = [
            (-1, 0, 0, 0), (0, 0, 0, 0),
            (1, 0x1FFF, 0, 0),  // EXECUTE … MAKE_SYM
            (2, 0x3FFF, 0, 0),  // + REFER
            (3, 0x7FFF, 0, 0),  // + TRUNCATE
            (4, 0x7FFF, 0x3, 0),  // + BIND_TCP, CONNECT_TCP
            (5, 0xFFFF, 0x3, 0),  // + IOCTL_DEV
            (6, 0xFFFF, 0x3, 0x3),  // + ABSTRACT_UNIX_SOCKET, SIGNAL
            (7, 0xFFFF, 0x3, 0x3),  // audit flags only
            (99, 0xFFFF, 0x3, 0x3),
        ]
        for row in expected {
            let handled = Landlock.handled(abi: row.abi)
            #expect(handled.filesystem.rawValue == row.filesystem, "ABI \(row.abi): \(handled.filesystem)")
            #expect(handled.network.rawValue == row.network, "ABI \(row.abi)")
            #expect(handled.scopes.rawValue == row.scopes, "ABI \(row.abi)")
        }
    }

    @Test func aRuleForAFileCarriesOnlyFileRights() {
        typealias Access = Landlock.FilesystemAccess
        #expect(Access.readWrite.applicable(toDirectory: true) == Access.readWrite)
        #expect(Access.readWrite.applicable(toDirectory: false) == [.readFile, .writeFile, .truncate])
        #expect(Access.readOnly.applicable(toDirectory: false) == .readFile)
        #expect(Access.readOnly.description == "read-file|read-dir")
        #expect(Access(rawValue: 0).description == "none")
    }

    @Test func theOutcomeReadsAsOneLogLine() {
        let nothing = Landlock.Outcome(abi: 6, handled: Landlock.handled(abi: 6), policy: .nothing)
        #expect(nothing.description == "Landlock ABI 6: no filesystem access, TCP bind/connect denied, signals and abstract sockets scoped")
        let old = Landlock.Outcome(abi: 3, handled: Landlock.handled(abi: 3), policy: .onlyDirectory("/var/lib/s7commd"))
        #expect(
            old.description
                == "Landlock ABI 3: filesystem read-write beneath /var/lib/s7commd only, TCP not restricted (needs ABI 4), "
                + "signals and abstract sockets not scoped (needs ABI 6)"
        )
        let none = Landlock.Outcome(abi: nil, handled: Landlock.Handled(), policy: .nothing)
        #expect(!none.isEnforced && !none.restrictsFilesystem && !none.deniesTCP)
        #expect(none.description.hasPrefix("Landlock unavailable"))
    }

    @Test func theABIAgreesWithWhatTheKernelSaysOfItsSecurityModules() throws {
        let abi = try Landlock.abiVersion()
        if let abi {
            #expect(abi >= 1)
        }
        let verdict = KernelLandlock.verdict()
        #expect(verdict.enabled != false || abi == nil, "the kernel has Landlock ABI \(abi ?? 0), but \(verdict.source) says it is not enabled")
        try requireUnavailable(abi)
    }

    @Test func nothingLeavesNoFileNoTCPAndNoReachOutsideTheDomain() throws {
        let abi = try Landlock.abiVersion()
        try requireUnavailable(abi)
        let tcp = try TCPListener.open(address: "127.0.0.1", port: 0)
        defer { try? tcp.close() }
        let abstract = try abstractListener(name: "s7sys-landlock-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? abstract.close() }
        let result = try Probe.run(["landlock", "nothing"], passing: [(tcp, as: 3), (abstract, as: 4)])
        #expect(result.termination == .exited(0), "\(result)")
        let seen = results(result.standardOutput)
        for before in ["before tcp-connect", "before abstract-connect", "before kill-parent"] {
            #expect(seen[before] == "ok", "\(before): \(result.standardOutput)")
        }
        guard let abi else {
            #expect(seen["outcome"]?.hasPrefix("Landlock unavailable") == true, "\(result.standardOutput)")
            #expect(seen["open /etc/hostname"] == "ok")
            return
        }
        #expect(seen["abi"] == "\(abi)")
        #expect(seen["open /etc/hostname"] == "EACCES", "\(result.standardOutput)")
        #expect(seen["create in /tmp"] == "EACCES")
        #expect(seen["read earlier descriptor"] == "ok", "a descriptor opened before the restriction keeps working")
        #expect(seen["tcp-connect"] == (abi >= 4 ? "EACCES" : "ok"), "\(result.standardOutput)")
        #expect(seen["tcp-bind"] == (abi >= 4 ? "EACCES" : "ok"))
        #expect(seen["kill-parent"] == (abi >= 6 ? "EPERM" : "ok"), "\(result.standardOutput)")
        #expect(seen["kill-self"] == "ok", "a process may still signal itself")
        #expect(seen["abstract-connect"] == (abi >= 6 ? "EPERM" : "ok"))
        if abi >= 6 {
            #expect(seen["outcome"] == "Landlock ABI \(abi): no filesystem access, TCP bind/connect denied, signals and abstract sockets scoped")
        }
    }

    @Test func oneDirectoryIsAllThatCanBeReadAndWritten() throws {
        let abi = try Landlock.abiVersion()
        try requireUnavailable(abi)
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let inside = temporary("inside")
        #expect(mkdir(inside, 0o700) == 0)
        try writeFile(inside + "/target", "old", mode: 0o600)
        try writeFile(temporary("other"), "kept", mode: 0o600)
        let result = try Probe.run(["landlock", "directory", inside, temporary("other")])
        #expect(result.termination == .exited(0), "\(result)")
        let seen = results(result.standardOutput)
        // What an atomic replace does (O_CREAT|O_EXCL temporary, write, fsync, rename over
        // the target, fsync the directory), and the other changes inside the directory.
        for inside in ["atomic replace", "read target", "create", "truncate", "rename", "unlink", "mkdir", "rmdir"] {
            #expect(seen[inside] == "ok", "\(inside): \(result.standardOutput)")
        }
        #expect(seen["target"] == "new")
        #expect(try readFileText(inside + "/target") == "new")
        #expect(try directoryEntries(inside) == ["target"], "the temporary and scratch files are gone")
        let enforced = abi != nil
        // Under ABI 1 a file can never be moved to another directory (REFER cannot be granted).
        #expect(seen["rename into subdirectory"] == (abi == 1 ? "EXDEV" : "ok"), "\(result.standardOutput)")
        #expect(seen["open /etc/hostname"] == (enforced ? "EACCES" : "ok"), "\(result.standardOutput)")
        #expect(seen["read outside"] == (enforced ? "EACCES" : "ok"))
        #expect(seen["write outside"] == (enforced ? "EACCES" : "ok"))
        #expect(seen["create beside the directory"] == (enforced ? "EACCES" : "ok"))
        #expect(seen["tcp-bind"] == ((abi ?? 0) >= 4 ? "EACCES" : "ok"))
        #expect(try readFileText(temporary("other")) == "kept")
        #expect(fileStatus(temporary("other-new")) == nil || !enforced)
        if enforced {
            #expect(seen["outcome"]?.contains("read-write beneath \(inside) only") == true, "\(result.standardOutput)")
        } else {
            #expect(seen["outcome"]?.hasPrefix("Landlock unavailable") == true, "\(result.standardOutput)")
        }
    }

    @Test func aPathThatDoesNotExistIsAnErrorNamingItAndNothingIsRestricted() throws {
        try requireUnavailable(try Landlock.abiVersion())
        let missing = "/nonexistent-s7sys-landlock-\(getpid())"
        let result = try Probe.run(["landlock", "missing", missing])
        #expect(result.termination == .exited(0), "\(result)")
        let seen = results(result.standardOutput)
        #expect(seen["error"] == "could not open \(missing) for a Landlock rule (open O_PATH): No such file or directory (errno \(ENOENT))")
        #expect(seen["open /etc/hostname"] == "ok")
        #expect(seen["no-new-privileges"] == "false")
    }

    @Test func aProcessWithASecondThreadIsRefused() throws {
        try requireUnavailable(try Landlock.abiVersion())
        let result = try Probe.run(["landlock", "threads"])
        #expect(result.termination == .exited(0), "\(result)")
        let seen = results(result.standardOutput)
        #expect(seen["error"]?.hasPrefix("could not restrict this process with Landlock: it has 2 threads") == true, "\(result.standardOutput)")
        #expect(seen["open /etc/hostname"] == "ok")
        #expect(seen["no-new-privileges"] == "false")
    }
}

/// When `abi` is nil, records a failure if the kernel says Landlock is enabled: then something
/// (a seccomp filter of a container, say) hides it, and the tests would prove nothing.
private func requireUnavailable(_ abi: Int?) throws {
    guard abi == nil else { return }
    let verdict = KernelLandlock.verdict()
    #expect(verdict.enabled != true, "landlock_create_ruleset reports no Landlock, but \(verdict.source) says it is enabled")
}

/// The probe's `what: result` lines as a table (the first ": " splits).
private func results(_ output: String) -> [String: String] {
    var table: [String: String] = [:]
    for line in lines(output) {
        guard let colon = line.range(of: ": ") else { continue }
        table[String(line[..<colon.lowerBound])] = String(line[colon.upperBound...])
    }
    return table
}

/// A listening abstract Unix stream socket named `name` (no file; the name begins with NUL).
private func abstractListener(name: String) throws -> FileDescriptor {
    let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw SystemCallError("could not create a Unix socket (socket)", errno: Errno(rawValue: errno)) }
    let descriptor = FileDescriptor(rawValue: fd)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let path = [0] + Array(name.utf8)
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path.prefix($0.count)) }
    let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + min(path.count, MemoryLayout.size(ofValue: address.sun_path)))
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0, listen(fd, 4) == 0 else {
        let code = errno
        try? descriptor.close()
        throw SystemCallError("could not listen on the abstract socket \(name) (bind, listen)", errno: Errno(rawValue: code))
    }
    return descriptor
}

/// What the kernel says of Landlock apart from the system call: its list of active security
/// modules (securityfs), else its boot configuration and command line.
enum KernelLandlock {
    /// `enabled` nil when neither can be read; `source` says what was read.
    static func verdict() -> (enabled: Bool?, source: String) {
        let lsmPath = "/sys/kernel/security/lsm"
        if let lsm = try? readFileText(lsmPath) {
            return (names(lsm).contains("landlock"), "\(lsmPath) (\(lsm))")
        }
        guard let (config, configSource) = kernelConfiguration() else {
            return (nil, "neither \(lsmPath) (securityfs not mounted) nor the kernel configuration")
        }
        let options = Set(lines(config).map(String.init))
        guard options.contains("CONFIG_SECURITY_LANDLOCK=y") else {
            return (false, "\(configSource) (no CONFIG_SECURITY_LANDLOCK=y)")
        }
        // lsm= on the command line replaces CONFIG_LSM, the built-in order.
        let commandLine = (try? readFileText("/proc/cmdline")) ?? ""
        if let parameter = commandLine.split(whereSeparator: \.isWhitespace).last(where: { $0.hasPrefix("lsm=") }) {
            return (names(parameter.dropFirst(4)).contains("landlock"), "/proc/cmdline (\(parameter))")
        }
        guard let order = options.first(where: { $0.hasPrefix("CONFIG_LSM=") }) else {
            return (nil, "\(configSource) (no CONFIG_LSM)")
        }
        return (names(order.dropFirst("CONFIG_LSM=".count).filter { $0 != "\"" }).contains("landlock"), "\(configSource) (\(order))")
    }

    private static func names(_ list: some StringProtocol) -> Set<String> {
        Set(list.split(separator: ",").map { String($0.filter { !$0.isWhitespace }) })
    }

    /// /boot/config-RELEASE, else /proc/config.gz through gzip.
    private static func kernelConfiguration() -> (String, String)? {
        var names = utsname()
        uname(&names)
        let release = withUnsafeBytes(of: names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let text = try? readFileText("/boot/config-\(release)") { return (text, "/boot/config-\(release)") }
        guard access("/proc/config.gz", R_OK) == 0, let pipe = try? UnixPipe.make() else { return nil }
        defer { try? pipe.read.close() }
        let pid: pid_t
        do {
            defer { try? pipe.write.close() }
            guard let started = try? Spawn.run(executable: "/bin/gzip", arguments: ["-dc", "/proc/config.gz"], standardOutput: pipe.write) else {
                return nil
            }
            pid = started
        }
        let text = (try? readToEnd(pipe.read)).map { String(decoding: $0, as: UTF8.self) }
        guard (try? Spawn.wait(pid)) == .exited(0), let text else { return nil }
        return (text, "/proc/config.gz")
    }
}
