#if canImport(Glibc)
import Glibc
#endif
import Foundation
import S7Sys
import SystemPackage
import Testing

/// What `S7SysProbe describe` prints.
struct ProcessDescription: Decodable {
    struct CapabilitySets: Decodable, Equatable {
        var inheritable: String
        var permitted: String
        var effective: String
        var bounding: String
        var ambient: String
    }

    var pid: pid_t
    var sid: pid_t
    var pgid: pid_t
    var stdin: String
    var descriptors: [CInt]
    /// Where each open descriptor points (readlink of /proc/self/fd/N), by number.
    var links: [String: String]
    var environment: [String: String]
    /// Real, effective and saved.
    var uid: [uid_t]
    var gid: [gid_t]
    /// The supplementary groups.
    var groups: [gid_t]
    var capabilities: CapabilitySets
    var noNewPrivileges: Bool

    /// Decodes the line `describe` printed.
    init(json line: some StringProtocol) throws {
        self = try JSONDecoder().decode(ProcessDescription.self, from: Data(line.utf8))
    }
}

/// Runs `S7SysProbe describe` with `options` and decodes what it prints.
func describeProbe(
    environment: [String: String],
    passing: [(FileDescriptor, as: CInt)] = [],
    standardInput: Spawn.Input = .inherit,
    newSession: Bool = false,
    identity: Spawn.Identity? = nil
) throws -> ProcessDescription {
    let output = try UnixPipe.make()
    defer { try? output.read.close() }
    let pid: pid_t
    do {
        defer { try? output.write.close() }
        pid = try Spawn.run(
            executable: Probe.path,
            arguments: ["describe"],
            environment: environment,
            passing: passing,
            standardInput: standardInput,
            standardOutput: output.write,
            newSession: newSession,
            identity: identity
        )
    }
    let text = try readToEnd(output.read)
    #expect(try Spawn.wait(pid) == .exited(0))
    return try JSONDecoder().decode(ProcessDescription.self, from: Data(text))
}

func readLink(_ path: String) -> String {
    var buffer = [CChar](repeating: 0, count: 4097)
    let length = readlink(path, &buffer, buffer.count - 1)
    return length < 0 ? "" : String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

@Suite struct SpawnOptionsTests {
    @Test func aChildInANewSessionGetsDevNullAndOnlyWhatItIsGiven() throws {
        let extra = try UnixPipe.make()
        defer { try? extra.read.close() }
        let environment = ["S7SYS_TEST": "a \"quoted\" value\\with\tcontrols", "LANG": "C", "EMPTY": ""]
        let description: ProcessDescription
        do {
            defer { try? extra.write.close() }
            description = try describeProbe(
                environment: environment,
                passing: [(extra.write, as: 3)],
                standardInput: .devNull,
                newSession: true
            )
        }
        #expect(description.stdin == "/dev/null")
        #expect(description.sid == description.pid, "the child leads its own session")
        #expect(description.sid != getsid(0))
        #expect(description.pgid == description.pid)
        #expect(description.descriptors == [0, 1, 2, 3])
        #expect(description.environment == environment)
    }

    @Test func byDefaultAChildKeepsTheCallersSessionAndStandardInput() throws {
        let description = try describeProbe(environment: [:])
        #expect(description.sid == getsid(0))
        #expect(description.pgid == getpgid(0))
        #expect(description.stdin == readLink("/proc/self/fd/0"))
        let expected: [CInt] = fcntl(0, F_GETFD) == -1 ? [1, 2] : [0, 1, 2]
        #expect(description.descriptors == expected)
        #expect(description.environment.isEmpty)
    }

    @Test func standardOutputAndErrorGoWhereTheyAreGiven() throws {
        let output = try UnixPipe.make()
        let errors = try UnixPipe.make()
        defer {
            try? output.read.close()
            try? errors.read.close()
        }
        let pid: pid_t
        do {
            defer {
                try? output.write.close()
                try? errors.write.close()
            }
            pid = try Spawn.run(
                executable: "/bin/sh",
                arguments: ["-c", "echo out; echo err >&2; read line || echo eof"],
                standardInput: .devNull,
                standardOutput: output.write,
                standardError: errors.write
            )
        }
        #expect(try readToEnd(output.read) == Array("out\neof\n".utf8))
        #expect(try readToEnd(errors.read) == Array("err\n".utf8))
        #expect(try Spawn.wait(pid) == .exited(0))
    }

    @Test func reapAnyReturnsAChildThatEnded() throws {
        // In the probe, which has no other children: in this process it could reap another
        // test's child from under Spawn.wait.
        let result = try Probe.run(["reap-any"])
        #expect(result.termination == .exited(0), "\(result.standardError)")
        #expect(lines(result.standardOutput) == ["reaped: the child exited with status 7", "then: none"])
    }
}
