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
}
