#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// Signals to other processes by pid (`kill`), and whether a pid names a live process.
public enum ProcessSignal {
    /// Sends `signal` (e.g. `SIGHUP`, `SIGKILL`) to the process `pid` (`kill`).
    ///
    /// - Parameters:
    ///   - signal: the signal number; 0 sends nothing and only checks that it could be sent.
    ///   - pid: the process.
    /// - Throws: ``SystemCallError`` with `ESRCH` when no such process exists, `EPERM` when
    ///   this process may not signal it (another user's, without `CAP_KILL`), `EINVAL` for a
    ///   pid that is not greater than 0 (`kill` would signal a process group or every
    ///   process, which is never meant here; nothing is sent).
    public static func send(_ signal: CInt, to pid: pid_t) throws {
        guard pid > 0 else {
            throw SystemCallError("could not send signal \(signal) to process \(pid): not the pid of one process (kill)", errno: .invalidArgument)
        }
        _ = try retryingOnInterrupt("could not send signal \(signal) to process \(pid) (kill)") {
            kill(pid, signal)
        }
    }

    /// Whether the process `pid` exists (`kill(pid, 0)`): true also when it exists but this
    /// process may not signal it (`EPERM`), false when it does not (`ESRCH`) and for a pid
    /// that is not greater than 0. A zombie that its parent has not waited for still exists.
    public static func isAlive(_ pid: pid_t) -> Bool {
        guard pid > 0 else { return false }
        return kill(pid, 0) == 0 || Glibc.errno == EPERM
    }
}
