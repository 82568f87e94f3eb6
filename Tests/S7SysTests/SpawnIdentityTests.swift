#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage
import Testing

/// A system user with a group of its own, created once when missing
/// (`adduser --system --group --no-create-home NAME`, as ServiceUserError suggests).
func systemUser(_ name: String) -> Result<ServiceUser, ServiceUserError> {
    if let user = try? ServiceUser.lookup(name: name) { return .success(user) }
    if let quiet = try? FileDescriptor.open("/dev/null", .writeOnly, options: .closeOnExec) {
        defer { try? quiet.close() }
        if let pid = try? Spawn.run(
            executable: "/usr/sbin/adduser",
            arguments: ["--system", "--group", "--no-create-home", name],
            environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"],
            standardInput: .devNull,
            standardOutput: quiet
        ) {
            _ = try? Spawn.wait(pid)
        }
    }
    return Result { () throws(ServiceUserError) in try ServiceUser.lookup(name: name) }
}

/// The user the spawning process becomes (A) and the one its child is spawned as (B).
private let spawnerUser = systemUser("s7sys-spawner")
private let spawnedUser = systemUser("s7sys-spawned")

private let runningAsRoot = getuid() == 0

/// No capability, as a /proc status line shows it.
private let noCapability = "0000000000000000"
private let setIDs = Capabilities.bit(Capabilities.setUID) | Capabilities.bit(Capabilities.setGID)

/// What `S7SysProbe demote-keeping` and `drop-keeping` print.
struct SpawnAsOutput {
    /// The probe's status lines after the demotion or the drop.
    var status: ProcessStatus
    /// Its status lines before the drop (drop-keeping only).
    var before: ProcessStatus?
    var boundingDropped: String?
    /// Where the probe's 0 pointed, and the sources it passed as 20 and 23.
    var standardInput: String
    var passed20: String
    var passed23: String
    var sid: pid_t
    /// What the spawned `describe` printed.
    var child: ProcessDescription?
    /// "exited with status 0"
    var childEnd: String?
    /// The error Spawn.run threw.
    var spawnFailure: String?
    /// "none" when no child of the probe was left, reaped or not.
    var children: String?

    init(_ output: Probe.Output) throws {
        let all = lines(output.standardOutput)
        func value(_ prefix: String) -> String? {
            all.first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
        }
        let statusPrefixes = ["Cap", "NoNewPrivs", "Uid", "Gid", "Groups"]
        func isStatus(_ line: Substring) -> Bool { statusPrefixes.contains { line.hasPrefix($0) } }
        status = try ProcessStatus(parsing: all.filter(isStatus).joined(separator: "\n"))
        let beforeLines = all.filter { $0.hasPrefix("before ") }.map { $0.dropFirst("before ".count) }
        before = beforeLines.isEmpty ? nil : try ProcessStatus(parsing: beforeLines.joined(separator: "\n"))
        boundingDropped = value("bounding-dropped: ")
        standardInput = value("stdin: ") ?? ""
        passed20 = value("passed 20: ") ?? ""
        passed23 = value("passed 23: ") ?? ""
        sid = value("sid: ").flatMap { pid_t($0) } ?? -1
        child = try all.first { $0.hasPrefix("{") }.map { try ProcessDescription(json: $0) }
        childEnd = value("child: ")
        spawnFailure = value("spawn failed: ")
        children = value("children: ")
    }
}

@Suite struct SpawnIdentityTests {
    func users() throws -> (spawner: ServiceUser, spawned: ServiceUser) {
        let spawner = try spawnerUser.get()
        let spawned = try spawnedUser.get()
        // Distinct non-root uids and gids, or the switch would prove nothing.
        #expect(spawner.uid != 0 && spawned.uid != 0 && spawner.gid != 0 && spawned.gid != 0)
        #expect(spawner.uid != spawned.uid)
        #expect(spawner.gid != spawned.gid)
        return (spawner, spawned)
    }

    /// The child runs as exactly `user`, with no supplementary group and no capability.
    func expectRunsWithNothing(_ child: ProcessDescription, as user: ServiceUser, noNewPrivileges: Bool) {
        #expect(child.uid == [user.uid, user.uid, user.uid], "uids \(child.uid)")
        #expect(child.gid == [user.gid, user.gid, user.gid], "gids \(child.gid)")
        #expect(child.groups.isEmpty, "groups \(child.groups)")
        #expect(child.capabilities.inheritable == noCapability)
        #expect(child.capabilities.permitted == noCapability)
        #expect(child.capabilities.effective == noCapability)
        #expect(child.capabilities.ambient == noCapability)
        #expect(child.noNewPrivileges == noNewPrivileges)
        #expect(child.environment == ["S7SYS_TEST": "spawned as \(user.name)"])
    }

    /// The probe kept exactly CAP_SETUID and CAP_SETGID, as `user`.
    func expectKeepsOnlySetIDs(_ status: ProcessStatus, as user: ServiceUser, boundingDropped: Bool) {
        #expect(status.permitted == setIDs, "CapPrm \(String(status.permitted, radix: 16))")
        #expect(status.effective == setIDs, "CapEff \(String(status.effective, radix: 16))")
        #expect(status.inheritable == 0)
        #expect(status.ambient == 0)
        if boundingDropped {
            #expect(status.bounding == setIDs, "CapBnd \(String(status.bounding, radix: 16))")
        }
        #expect(status.noNewPrivileges)
        #expect(status.uid.all(equal: user.uid), "Uid \(status.uid)")
        #expect(status.gid.all(equal: user.gid), "Gid \(status.gid)")
    }

    @Test(.enabled(if: runningAsRoot, "creating users and demoting need root"))
    func aProcessDemotedKeepingSetUIDAndSetGIDSpawnsAChildAsAnotherUserThatHoldsNothing() throws {
        let (spawner, spawned) = try users()
        let result = try Probe.run(["demote-keeping", "setuid,setgid", spawner.name, spawned.name, "devnull"])
        #expect(result.termination == .exited(0), "\(result.standardError)")
        let output = try SpawnAsOutput(result)
        // The test process holds CAP_SETPCAP, so the probe could drop its bounding set.
        #expect(try Capabilities.current().effective & Capabilities.bit(Capabilities.setPCap) != 0)
        expectKeepsOnlySetIDs(output.status, as: spawner, boundingDropped: true)

        #expect(output.spawnFailure == nil)
        #expect(output.childEnd == "exited with status 0")
        let child = try #require(output.child, "\(result.standardOutput)")
        expectRunsWithNothing(child, as: spawned, noNewPrivileges: true)
        // The two crossed sources at their numbers, standard output and error, /dev/null as
        // 0, and not the descriptors that were not close-on-exec (21, 30) nor anything else.
        #expect(child.descriptors == [0, 1, 2, 20, 23])
        #expect(child.links["20"] == output.passed20 && output.passed20.hasPrefix("pipe:"))
        #expect(child.links["23"] == output.passed23 && output.passed23.hasPrefix("pipe:"))
        #expect(output.passed20 != output.passed23)
        #expect(output.standardInput.hasPrefix("pipe:"), "the probe's own 0 is not /dev/null")
        #expect(child.stdin == "/dev/null")
        #expect(child.sid == child.pid, "the child leads its own session")
        #expect(child.pgid == child.pid)
    }

    @Test(.enabled(if: runningAsRoot, "creating users and demoting need root"))
    func withoutDevNullTheChildKeepsTheSpawnersStandardInputAndSession() throws {
        let (spawner, spawned) = try users()
        let result = try Probe.run(["demote-keeping", "setuid,setgid", spawner.name, spawned.name, "inherit"])
        #expect(result.termination == .exited(0), "\(result.standardError)")
        let output = try SpawnAsOutput(result)
        let child = try #require(output.child, "\(result.standardOutput)")
        expectRunsWithNothing(child, as: spawned, noNewPrivileges: true)
        #expect(child.descriptors == [0, 1, 2, 20, 23])
        #expect(child.stdin == output.standardInput && child.stdin.hasPrefix("pipe:"))
        #expect(child.sid == output.sid)
        #expect(output.childEnd == "exited with status 0")
    }

    @Test(
        .enabled(if: runningAsRoot, "creating users and demoting need root"),
        arguments: ["none", "setuid", "setgid"]
    )
    func withoutTheCapabilitiesTheFailingStepIsNamedAndTheChildReaped(keeping: String) throws {
        let (spawner, spawned) = try users()
        let result = try Probe.run(["demote-keeping", keeping, spawner.name, spawned.name, "devnull"])
        #expect(result.termination == .exited(0), "\(result.standardError)")
        let output = try SpawnAsOutput(result)
        // setgroups needs CAP_SETGID, setresuid CAP_SETUID.
        let expected =
            keeping == "setgid"
            ? "could not switch the child to uid \(spawned.uid) (setresuid): Operation not permitted (errno 1)"
            : "could not clear the supplementary groups of the child (setgroups): Operation not permitted (errno 1)"
        #expect(output.spawnFailure == expected)
        #expect(output.children == "none", "the failed child is reaped")
        #expect(output.child == nil)
        #expect(output.childEnd == nil)
    }

    @Test(.enabled(if: runningAsRoot, "creating users and demoting need root"))
    func aMissingExecutableGivesTheExecveErrorAndTheChildIsReaped() throws {
        let (spawner, spawned) = try users()
        let missing = "/nonexistent/s7sys-probe"
        let result = try Probe.run(["demote-keeping", "setuid,setgid", spawner.name, spawned.name, "devnull", missing])
        #expect(result.termination == .exited(0), "\(result.standardError)")
        let output = try SpawnAsOutput(result)
        #expect(
            output.spawnFailure
                == "could not execute \(missing) as uid \(spawned.uid), gid \(spawned.gid) (execve): No such file or directory (errno 2)"
        )
        #expect(output.children == "none")
    }

    @Test(.enabled(if: runningAsRoot, "switching ids needs root"))
    func fromRootAChildRunsAsTheUserWithNothingAndOnlyWhatItIsGiven() throws {
        let (_, spawned) = try users()
        let extra = try UnixPipe.make()
        defer { try? extra.read.close() }
        let child: ProcessDescription
        let passed = readLink("/proc/self/fd/\(extra.write.rawValue)")
        do {
            defer { try? extra.write.close() }
            child = try describeProbe(
                environment: ["S7SYS_TEST": "spawned as \(spawned.name)"],
                passing: [(extra.write, as: 3)],
                standardInput: .devNull,
                newSession: true,
                identity: Spawn.Identity(uid: spawned.uid, gid: spawned.gid)
            )
        }
        expectRunsWithNothing(child, as: spawned, noNewPrivileges: try Capabilities.current().noNewPrivileges)
        #expect(child.descriptors == [0, 1, 2, 3])
        #expect(child.links["3"] == passed && passed.hasPrefix("pipe:"))
        #expect(child.stdin == "/dev/null")
        #expect(child.sid == child.pid)
    }

    @Test(.enabled(if: runningAsRoot, "switching ids needs root"))
    func aMissingExecutableThrowsTheExecveError() throws {
        let (_, spawned) = try users()
        let error = try #require(throws: SystemCallError.self) {
            try Spawn.run(
                executable: "/nonexistent/s7sys-probe",
                arguments: [],
                identity: Spawn.Identity(uid: spawned.uid, gid: spawned.gid)
            )
        }
        #expect(error.errno == .noSuchFileOrDirectory)
        #expect(error.operation == "could not execute /nonexistent/s7sys-probe as uid \(spawned.uid), gid \(spawned.gid) (execve)")
    }

    /// setpriv options that start the probe as `user` with `capabilities` ambient, the way
    /// systemd's User= and AmbientCapabilities= do.
    func ambientStart(as user: ServiceUser, _ capabilities: String) -> [String] {
        [
            "/usr/bin/setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups",
            "--inh-caps=\(capabilities)", "--ambient-caps=\(capabilities)", "--",
        ]
    }

    @Test(.enabled(if: runningAsRoot, "creating users and starting with ambient capabilities need root"))
    func aStartWithAmbientCapabilitiesKeepsOnlySetUIDAndSetGIDAndSpawnsAsAnotherUser() throws {
        let (spawner, spawned) = try users()
        let ambient = "+net_bind_service,+setuid,+setgid,+setpcap"
        let result = try Probe.run(["drop-keeping", "setuid,setgid", spawned.name, "devnull"], via: ambientStart(as: spawner, ambient))
        #expect(result.termination == .exited(0), "\(result.standardError)")
        let output = try SpawnAsOutput(result)
        let before = try #require(output.before)
        let started = setIDs | Capabilities.bit(Capabilities.netBindService) | Capabilities.bit(Capabilities.setPCap)
        #expect(before.ambient == started && before.effective == started, "the start held them")
        #expect(before.uid.all(equal: spawner.uid))
        #expect(output.boundingDropped == "true")
        expectKeepsOnlySetIDs(output.status, as: spawner, boundingDropped: true)

        let child = try #require(output.child, "\(result.standardOutput)")
        expectRunsWithNothing(child, as: spawned, noNewPrivileges: true)
        #expect(child.descriptors == [0, 1, 2, 20, 23])
        #expect(child.stdin == "/dev/null")
        #expect(output.childEnd == "exited with status 0")
    }

    @Test(.enabled(if: runningAsRoot, "creating users and starting with ambient capabilities need root"))
    func withoutSetPCapTheBoundingSetStaysAndTheRestIsDropped() throws {
        let (spawner, spawned) = try users()
        let result = try Probe.run(
            ["drop-keeping", "setuid,setgid", spawned.name, "devnull"],
            via: ambientStart(as: spawner, "+net_bind_service,+setuid,+setgid")
        )
        #expect(result.termination == .exited(0), "\(result.standardError)")
        let output = try SpawnAsOutput(result)
        #expect(output.boundingDropped == "false")
        expectKeepsOnlySetIDs(output.status, as: spawner, boundingDropped: false)
        #expect(output.status.bounding == (try #require(output.before)).bounding)
        let child = try #require(output.child, "\(result.standardOutput)")
        expectRunsWithNothing(child, as: spawned, noNewPrivileges: true)
    }

    @Test(.enabled(if: runningAsRoot, "creating users and starting with ambient capabilities need root"))
    func keepingACapabilityThatIsNotHeldIsAnError() throws {
        let (spawner, spawned) = try users()
        let result = try Probe.run(
            ["drop-keeping", "setuid,setgid,setpcap", spawned.name, "devnull"],
            via: ambientStart(as: spawner, "+setuid,+setgid")
        )
        #expect(result.termination == .exited(1))
        #expect(result.standardError.contains("cannot keep CAP_SETPCAP (8): not permitted (CapPrm is 00000000000000c0)"), "\(result.standardError)")
        #expect(result.standardOutput.contains("bounding-dropped") == false)
    }
}
