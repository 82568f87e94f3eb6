#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage
import Testing

/// The pid of a process that has ended and been reaped.
func deadPid() throws -> pid_t {
    let pid = try Spawn.run(executable: "/bin/true", arguments: [])
    _ = try Spawn.wait(pid)
    return pid
}

@Suite struct ProcessSignalTests {
    @Test func thisProcessAndInitAreAliveAndAReapedChildIsNot() throws {
        #expect(ProcessSignal.isAlive(getpid()))
        #expect(ProcessSignal.isAlive(1), "pid 1 exists (alive also when it may not be signalled)")
        #expect(!ProcessSignal.isAlive(try deadPid()))
        #expect(!ProcessSignal.isAlive(0) && !ProcessSignal.isAlive(-1), "no process group or broadcast")
    }

    @Test func aSignalReachesAChildAndAGoneOneIsESRCH() throws {
        let child = try Spawn.run(executable: "/bin/sleep", arguments: ["30"])
        try ProcessSignal.send(0, to: child)
        try ProcessSignal.send(SIGKILL, to: child)
        #expect(try Spawn.wait(child) == .signaled(SIGKILL))
        #expect {
            try ProcessSignal.send(SIGHUP, to: child)
        } throws: { error in
            (error as? SystemCallError)?.errno == .noSuchProcess
        }
        #expect {
            try ProcessSignal.send(SIGHUP, to: 0)
        } throws: { error in
            (error as? SystemCallError)?.errno == .invalidArgument
        }
    }
}
