#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage
import Testing

/// The allow-list runs in the probe (a filter cannot be taken off the test process again).
@Suite("Seccomp filter")
struct SeccompTests {
    @Test func whatIsAllowedRuns() throws {
        let result = try Probe.run(["seccomp", "allowed"])
        #expect(result.termination == .exited(0), "\(result.standardError)")
        #expect(result.standardOutput == "allowed: wrote after the filter\n")
        let mapping = try Probe.run(["seccomp", "plain-mapping"])
        #expect(mapping.termination == .exited(0) && mapping.standardOutput == "mmap without PROT_EXEC worked\n", "\(mapping)")
    }

    @Test func aCallOutsideTheListKillsTheProcess() throws {
        let result = try Probe.run(["seccomp", "socket"])
        #expect(result.termination == .signaled(SIGSYS), "\(result)")
        #expect(result.standardOutput.isEmpty, "socket(2) must not return: \(result.standardOutput)")
    }

    @Test func anExecutableMappingKillsTheProcess() throws {
        let result = try Probe.run(["seccomp", "exec-mapping"])
        #expect(result.termination == .signaled(SIGSYS), "\(result)")
        #expect(result.standardOutput.isEmpty)
    }

    @Test func aFailingRuleReturnsItsErrno() throws {
        let result = try Probe.run(["seccomp", "chdir"])
        #expect(result.termination == .exited(0), "\(result)")
        #expect(result.standardOutput == "chdir returned -1, errno \(EACCES)\n")
    }

    @Test func anUnknownNameIsAnErrorBeforeAnythingIsLoaded() throws {
        let filter = try SeccompFilter()
        #expect(throws: SystemCallError.self) { try filter.allow(["no_such_call_s7"]) }
    }

    @Test func aTrappedCallIsReportedWithItsNumberThenEndsTheProcessWithSIGSYS() throws {
        let result = try Probe.run(["seccomp", "trap"])
        #expect(result.termination == .signaled(SIGSYS), "\(result)")
        #expect(result.standardOutput.isEmpty, "socket(2) must not return: \(result.standardOutput)")
        let socketCall = try #require(SeccompFilter.number(of: "socket"))
        let line = result.standardError.split(separator: "\n").first.map(String.init) ?? ""
        #expect(line.hasPrefix("probe: sandbox violation: system call \(socketCall) (arch 0x"), "\(result.standardError)")
        #expect(SandboxViolationReporter.systemCall(in: Array(line.utf8)) == socketCall)
        #expect(SeccompFilter.name(of: socketCall) == "socket")
    }

    @Test func onlyTheReportersLineNamesASystemCall() {
        #expect(SandboxViolationReporter.systemCall(in: Array("S7 worker (pid 7): sandbox violation: system call 59 (arch 0xc000003e)".utf8)) == 59)
        #expect(SandboxViolationReporter.systemCall(in: Array("a client wrote sandbox violation: system call".utf8)) == nil)
        #expect(SandboxViolationReporter.systemCall(in: Array("worker: serving".utf8)) == nil)
        #expect(SandboxViolationReporter.systemCall(in: []) == nil)
    }
}
