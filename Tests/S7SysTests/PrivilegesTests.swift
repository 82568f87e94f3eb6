#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage
import Testing

/// The unprivileged system user the demotion tests switch to, created once if missing.
private let testUser: Result<ServiceUser, ServiceUserError> = {
    let name = "s7sys-test"
    if let user = try? ServiceUser.lookup(name: name) { return .success(user) }
    if let pid = try? Spawn.run(
        executable: "/usr/sbin/useradd",
        arguments: ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
    ) {
        _ = try? Spawn.wait(pid)
    }
    return Result { () throws(ServiceUserError) in try ServiceUser.lookup(name: name) }
}()

private let isRoot = getuid() == 0

@Suite struct PrivilegesTests {
    @Test(.enabled(if: isRoot, "demoting needs root"))
    func aDemotedChildHasNoCapabilityAndTheServiceUsersIDs() throws {
        let user = try testUser.get()
        #expect(user.uid != 0)
        let result = try Probe.run(["demote", user.name])
        #expect(result.termination == .exited(0), "\(result.standardError)")

        let status = try ProcessStatus(parsing: result.standardOutput)
        #expect(status.inheritable == 0)
        #expect(status.permitted == 0)
        #expect(status.effective == 0)
        #expect(status.ambient == 0)
        if try Capabilities.current().effective & Capabilities.bit(Capabilities.setPCap) != 0 {
            #expect(status.bounding == 0)
        }
        #expect(status.noNewPrivileges)
        #expect(status.uid.all(equal: user.uid), "Uid: \(status.uid)")
        #expect(status.gid.all(equal: user.gid), "Gid: \(status.gid)")
        #expect(lines(result.standardOutput).contains("uid=\(user.uid) euid=\(user.uid) gid=\(user.gid) egid=\(user.gid)"))
    }

    @Test func demotingToAMissingUserSaysHowToCreateIt() throws {
        let result = try Probe.run(["demote", "s7sys-no-such-user"])
        #expect(result.termination == .exited(1))
        #expect(result.standardError.contains("the user 's7sys-no-such-user' does not exist"))
        #expect(result.standardError.contains("adduser --system --group --no-create-home s7sys-no-such-user"))
        #expect(result.standardOutput.isEmpty)
    }

    @Test func lookingUpUsers() throws {
        let root = try ServiceUser.lookup(name: "root")
        #expect(root.uid == 0 && root.gid == 0)
        #expect(throws: ServiceUserError.noSuchUser("s7sys-no-such-user")) {
            try ServiceUser.lookup(name: "s7sys-no-such-user")
        }
    }

    @Test func theStatusOfThisProcessIsRead() throws {
        let current = try Capabilities.current()
        let byPID = try ProcessStatus.read(pid: getpid())
        #expect(current == byPID)
        #expect(current.uid.effective == geteuid())
        #expect(current.gid.effective == getegid())
        let last = try Capabilities.lastCapability()
        #expect(last >= Capabilities.setPCap)
        #expect(current.bounding >> UInt64(last + 1) == 0)
    }

    @Test func aStatusWithoutTheExpectedLinesIsAnError() {
        #expect(throws: ProcessStatusError(path: nil, problem: "no valid CapInh line")) {
            try ProcessStatus(parsing: "Name:\tx\nUid:\t0\t0\t0\t0\n")
        }
    }
}

@Suite struct SpawnTests {
    @Test func exitStatusAndSignalAreReported() throws {
        let exiting = try Spawn.run(executable: "/bin/sh", arguments: ["-c", "exit 3"])
        #expect(try Spawn.wait(exiting) == .exited(3))
        let killed = try Spawn.run(executable: "/bin/sh", arguments: ["-c", "kill -TERM $$"])
        #expect(try Spawn.wait(killed) == .signaled(SIGTERM))
    }

    @Test func onlyAStandardStreamCanBePassed() throws {
        let output = try UnixPipe.make()
        defer { try? output.read.close() }
        let pid: pid_t
        do {
            defer { try? output.write.close() }
            pid = try Spawn.run(executable: "/bin/echo", arguments: ["hello"], passing: [(output.write, as: 1)])
        }
        #expect(try readToEnd(output.read) == Array("hello\n".utf8))
        #expect(try Spawn.wait(pid) == .exited(0))
    }

    @Test func descriptorsArriveAtTheirNumbersAndNothingElseLeaks() throws {
        let first = try UnixPipe.make()
        let second = try UnixPipe.make()
        defer {
            try? first.read.close()
            try? second.read.close()
        }
        let pid: pid_t
        do {
            defer {
                try? first.write.close()
                try? second.write.close()
            }
            // Crossed on purpose: each target number may be the other source's number.
            pid = try Spawn.run(
                executable: "/bin/sh",
                arguments: ["-c", "echo one >&4; echo two >&3; ls /proc/self/fd >&3"],
                environment: ["PATH": "/usr/bin:/bin"],
                passing: [(first.write, as: 4), (second.write, as: 3)]
            )
        }
        let one = String(decoding: try readToEnd(first.read), as: UTF8.self)
        let two = String(decoding: try readToEnd(second.read), as: UTF8.self)
        #expect(try Spawn.wait(pid) == .exited(0))
        #expect(one == "one\n")
        let descriptors = lines(two).dropFirst()
        #expect(lines(two).first == "two")
        // 0, 1, 2, the two passed, and the one ls opens for /proc/self/fd.
        #expect(descriptors.count == 6, "\(descriptors)")
    }
}
