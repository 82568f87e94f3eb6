#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import SystemPackage

/// Signals as readable events on a descriptor (`signalfd`), for a single-threaded event loop
/// that waits with ``Poll/wait(_:timeoutMilliseconds:)`` instead of running signal handlers.
///
/// `init` blocks the signals in the *calling thread* (`pthread_sigmask`) so that they stay
/// pending instead of running their action, and a signalfd then reports them. Blocking is per
/// thread: a signal sent to the process (`kill`) goes to any thread that does not block it, so
/// create the descriptor in the main thread before any other thread starts (threads inherit
/// the mask), or the signal may run its default action in another thread. Children started
/// with ``Spawn`` get an empty mask again. (Threads of Dispatch and of Swift concurrency's
/// pool may start with signals blocked already: a signal sent to the process can then stay
/// pending on the process and is still reported here.)
///
/// The descriptor stays open until ``close()``; it is not closed when the object goes away,
/// so a descriptor number handed to a poll list can never be closed and reused under it.
public final class SignalDescriptor {
    /// The signalfd (non-blocking, close-on-exec): readable while a signal is pending.
    public var descriptor: FileDescriptor
    /// The signals it reports.
    public let signals: [CInt]
    /// The calling thread's signal mask before `init` blocked `signals`.
    private var previousMask: sigset_t

    /// Blocks `signals` in the calling thread and opens a signalfd for them
    /// (`SFD_NONBLOCK | SFD_CLOEXEC`).
    ///
    /// - Parameter signals: signal numbers such as `SIGTERM`, `SIGINT`, `SIGHUP`, `SIGCHLD`;
    ///   not `SIGKILL` or `SIGSTOP`, which cannot be blocked.
    public init(_ signals: [CInt]) throws {
        precondition(!signals.isEmpty, "a SignalDescriptor needs at least one signal")
        var mask = sigset_t()
        sigemptyset(&mask)
        for signal in signals {
            precondition(signal != SIGKILL && signal != SIGSTOP, "SIGKILL and SIGSTOP cannot be blocked")
            _ = try retryingOnInterrupt("could not add signal \(signal) to a signal set (sigaddset)") {
                sigaddset(&mask, signal)
            }
        }
        var previous = sigset_t()
        sigemptyset(&previous)
        try checkingErrorNumber(
            "could not block the signals \(signals) in this thread (pthread_sigmask SIG_BLOCK)",
            pthread_sigmask(SIG_BLOCK, &mask, &previous)
        )
        let raw: CInt
        do {
            raw = try retryingOnInterrupt("could not open a signalfd for the signals \(signals) (signalfd)") {
                cs7_signalfd(&mask, CS7_SFD_NONBLOCK | CS7_SFD_CLOEXEC)
            }
        } catch {
            _ = pthread_sigmask(SIG_SETMASK, &previous, nil)
            throw error
        }
        self.descriptor = FileDescriptor(rawValue: raw)
        self.signals = signals
        self.previousMask = previous
    }

    /// Reads every pending signal, in the order the kernel reports them (a signal sent twice
    /// before it was read is reported once).
    ///
    /// - Returns: the signal numbers; empty when none is pending.
    public func read() throws -> [CInt] {
        var received: [CInt] = []
        while true {
            let signal = cs7_signalfd_read_one(descriptor.rawValue)
            if signal >= 0 {
                received.append(signal)
                continue
            }
            let code = Glibc.errno
            if code == EINTR { continue }
            if code == EAGAIN || code == EWOULDBLOCK { return received }
            throw SystemCallError("could not read the pending signals from a signalfd", errno: Errno(rawValue: code))
        }
    }

    /// Sets the calling thread's signal mask back to what it was before `init`
    /// (`pthread_sigmask SIG_SETMASK`). Call it on the thread that created the descriptor;
    /// a signal still pending then runs its action.
    public func restoreSignalMask() throws {
        try checkingErrorNumber(
            "could not restore the signal mask of this thread (pthread_sigmask SIG_SETMASK)",
            pthread_sigmask(SIG_SETMASK, &previousMask, nil)
        )
    }

    /// Closes the signalfd. The signals stay blocked (see ``restoreSignalMask()``).
    public func close() throws {
        try descriptor.close()
    }
}

/// Waiting for several descriptors at once (`poll`), for a single-threaded event loop.
public enum Poll {
    /// What a descriptor is waited for, or what happened to it.
    public struct Events: OptionSet, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: Int16
        public init(rawValue: Int16) { self.rawValue = rawValue }

        /// Data can be read, or a listening socket has a connection, or the peer closed
        /// (`POLLIN`).
        public static let readable = Events(rawValue: Int16(POLLIN))
        /// Data can be written without blocking (`POLLOUT`).
        public static let writable = Events(rawValue: Int16(POLLOUT))
        /// The peer closed its end, e.g. every write end of a pipe (`POLLHUP`); reported
        /// whether asked for or not.
        public static let hangup = Events(rawValue: Int16(POLLHUP))
        /// An error is pending on the descriptor (`POLLERR`); reported whether asked for or not.
        public static let error = Events(rawValue: Int16(POLLERR))
        /// The descriptor is not open (`POLLNVAL`): a bug in the caller; reported whether
        /// asked for or not.
        public static let invalid = Events(rawValue: Int16(POLLNVAL))

        public var description: String {
            let names: [(Events, String)] = [
                (.readable, "readable"), (.writable, "writable"), (.hangup, "hangup"), (.error, "error"),
                (.invalid, "invalid"),
            ]
            return "[" + names.filter { contains($0.0) }.map(\.1).joined(separator: ",") + "]"
        }
    }

    /// Waits until one of `fds` has an event or `timeoutMilliseconds` have passed (`poll`).
    ///
    /// A signal that interrupts the wait (`EINTR`) does not end it early: `poll` is called
    /// again with the time that is left, measured on ``monotonicMilliseconds()``.
    ///
    /// - Parameters:
    ///   - fds: each descriptor and the events it is waited for.
    ///   - timeoutMilliseconds: how long to wait at most; 0 returns at once, -1 (or any
    ///     negative value) waits without limit.
    /// - Returns: what happened to each descriptor, in the order of `fds`; all empty when
    ///   the time ran out.
    public static func wait(_ fds: [(FileDescriptor, Events)], timeoutMilliseconds: Int) throws -> [Events] {
        var entries = fds.map { pollfd(fd: $0.0.rawValue, events: $0.1.rawValue, revents: 0) }
        let deadline = timeoutMilliseconds < 0 ? nil : monotonicMilliseconds() + Int64(timeoutMilliseconds)
        while true {
            let timeout: CInt
            if let deadline {
                timeout = CInt(clamping: max(0, deadline - monotonicMilliseconds()))
            } else {
                timeout = -1
            }
            let ready = entries.withUnsafeMutableBufferPointer { buffer in
                poll(buffer.baseAddress, nfds_t(buffer.count), timeout)
            }
            if ready >= 0 { break }
            let code = Glibc.errno
            if code == EINTR { continue }
            throw SystemCallError("could not wait for \(fds.count) descriptors (poll)", errno: Errno(rawValue: code))
        }
        return entries.map { Events(rawValue: $0.revents) }
    }

    /// Milliseconds on the monotonic clock (`CLOCK_MONOTONIC`): they never jump with the
    /// wall clock, so differences measure time spent and deadlines stay right.
    public static func monotonicMilliseconds() -> Int64 {
        var now = timespec()
        // CLOCK_MONOTONIC always exists on Linux; clock_gettime cannot fail with a valid pointer.
        _ = clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    /// Milliseconds since 1970 (UTC) on the wall clock (`CLOCK_REALTIME`), for reports; never for deadlines.
    public static func realtimeMilliseconds() -> Int64 {
        var now = timespec()
        _ = clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
