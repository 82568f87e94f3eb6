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
}
