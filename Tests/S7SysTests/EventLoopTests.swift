#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage
import Testing

@Suite struct EventLoopTests {
    @Test func aSignalToThisThreadIsReadFromTheSignalDescriptor() throws {
        // Blocking is per thread, and a test runs on one of several threads: the signal goes to
        // this thread only (pthread_kill), where it stays pending for the signalfd.
        let signals = try SignalDescriptor([SIGUSR1, SIGUSR2])
        defer {
            // Drain before unblocking: a SIGUSR1 still pending would end the test process.
            _ = try? signals.read()
            try? signals.restoreSignalMask()
            try? signals.close()
        }
        #expect(try signals.read() == [])
        #expect(try Poll.wait([(signals.descriptor, .readable)], timeoutMilliseconds: 0) == [[]])

        #expect(pthread_kill(pthread_self(), SIGUSR1) == 0)
        #expect(try Poll.wait([(signals.descriptor, .readable)], timeoutMilliseconds: 2000) == [.readable])
        #expect(try signals.read() == [SIGUSR1])
        #expect(try signals.read() == [])

        #expect(pthread_kill(pthread_self(), SIGUSR2) == 0)
        #expect(pthread_kill(pthread_self(), SIGUSR1) == 0)
        #expect(Set(try signals.read()) == [SIGUSR1, SIGUSR2])
    }

    @Test func restoringTheMaskUnblocksTheSignals() throws {
        // Threads of the test runner's pool may start with signals blocked: unblock SIGUSR2
        // here first, and put this thread's mask back at the end.
        var original = sigset_t()
        var only = sigset_t()
        sigemptyset(&only)
        sigaddset(&only, SIGUSR2)
        #expect(pthread_sigmask(SIG_UNBLOCK, &only, &original) == 0)
        defer { _ = pthread_sigmask(SIG_SETMASK, &original, nil) }

        let signals = try SignalDescriptor([SIGUSR2])
        defer { try? signals.close() }
        var during = sigset_t()
        #expect(pthread_sigmask(SIG_SETMASK, nil, &during) == 0)
        #expect(sigismember(&during, SIGUSR2) == 1)
        try signals.restoreSignalMask()
        var after = sigset_t()
        #expect(pthread_sigmask(SIG_SETMASK, nil, &after) == 0)
        #expect(sigismember(&after, SIGUSR2) == 0)
    }

    @Test func pollTimesOutThenWakesOnAReadablePipeAndHangUp() throws {
        let pipe = try UnixPipe.make()
        defer { try? pipe.read.close() }
        let start = Poll.monotonicMilliseconds()
        #expect(try Poll.wait([(pipe.read, .readable)], timeoutMilliseconds: 60) == [[]])
        #expect(Poll.monotonicMilliseconds() - start >= 59)

        _ = try pipe.write.writeAll([42])
        let woke = Poll.monotonicMilliseconds()
        #expect(try Poll.wait([(pipe.read, .readable), (pipe.write, .writable)], timeoutMilliseconds: -1) == [.readable, .writable])
        #expect(Poll.monotonicMilliseconds() - woke < 1000)

        try pipe.read.setNonBlocking()
        try pipe.read.setNonBlocking()
        #expect(try UnixPipe.readAvailable(pipe.read, max: 16) == [42])
        #expect(try UnixPipe.readAvailable(pipe.read, max: 16) == [])

        try pipe.write.close()
        #expect(try Poll.wait([(pipe.read, .readable)], timeoutMilliseconds: 2000) == [.hangup])
        #expect(try UnixPipe.readAvailable(pipe.read, max: 16) == nil)
    }

    @Test func theMonotonicClockAdvances() throws {
        let first = Poll.monotonicMilliseconds()
        _ = try Poll.wait([], timeoutMilliseconds: 20)
        #expect(Poll.monotonicMilliseconds() - first >= 19)
    }
}
