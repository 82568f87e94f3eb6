#if canImport(Glibc)
import Glibc
#endif

/// The process's limit on open descriptors (RLIMIT_NOFILE).
public enum OpenFilesLimit {
    /// RLIM_INFINITY, which Swift cannot import from a macro of -1 cast to unsigned.
    private static let infinity = rlim_t.max

    /// The soft limit (what applies) and the hard limit (how far an unprivileged process may
    /// raise it).
    public struct Value: Equatable, Sendable {
        public var soft: Int
        public var hard: Int
    }

    /// Descriptors s7commd needs beside one per client: the standard streams, the listener, the
    /// control and memory sockets, the segment, metrics, the event loops' epoll and event
    /// descriptors, and one connection being accepted and refused while every slot is taken.
    public static let reserve = 64

    /// Descriptors a server with `maxClients` clients needs.
    public static func needed(maxClients: Int) -> Int { maxClients + reserve }

    public static func current() throws(SystemCallError) -> Value {
        var limit = rlimit()
        _ = try retryingOnInterrupt("could not read the open-files limit (getrlimit RLIMIT_NOFILE)") {
            getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Value(soft: Self.clamp(limit.rlim_cur), hard: Self.clamp(limit.rlim_max))
    }

    /// Raises the soft limit to at least `wanted`, never above the hard limit, never lowering it.
    /// - Returns: the limits now in force.
    @discardableResult
    public static func raise(to wanted: Int) throws(SystemCallError) -> Value {
        var value = try current()
        let target = min(wanted, value.hard)
        guard target > value.soft else { return value }
        var limit = rlimit()
        limit.rlim_cur = rlim_t(target)
        limit.rlim_max = value.hard == Int.max ? Self.infinity : rlim_t(value.hard)
        _ = try retryingOnInterrupt("could not raise the open-files limit to \(target) (setrlimit RLIMIT_NOFILE)") {
            setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        }
        value.soft = target
        return value
    }

    private static func clamp(_ v: rlim_t) -> Int {
        v == Self.infinity || v > rlim_t(Int.max) ? Int.max : Int(v)
    }
}

/// Lowering a resource limit of this process for good (soft and hard, so it cannot be raised
/// again without CAP_SYS_RESOURCE).
public enum ResourceLimit: Sendable, CustomStringConvertible {
    /// RLIMIT_NPROC: processes and threads of the real uid; a clone beyond it fails with EAGAIN.
    case processes
    /// RLIMIT_FSIZE: the largest regular file the process may write (0: none; it gets SIGXFSZ).
    case fileSize
    /// RLIMIT_CORE: the largest core dump (0: none).
    case coreSize

    var resource: __rlimit_resource_t {
        switch self {
        case .processes: __rlimit_resource_t(__RLIMIT_NPROC.rawValue)
        case .fileSize: __rlimit_resource_t(RLIMIT_FSIZE.rawValue)
        case .coreSize: __rlimit_resource_t(RLIMIT_CORE.rawValue)
        }
    }

    public var description: String {
        switch self {
        case .processes: "RLIMIT_NPROC"
        case .fileSize: "RLIMIT_FSIZE"
        case .coreSize: "RLIMIT_CORE"
        }
    }

    /// Sets the soft and the hard limit to `value`.
    public func set(to value: Int) throws(SystemCallError) {
        var limit = rlimit(rlim_cur: rlim_t(value), rlim_max: rlim_t(value))
        _ = try retryingOnInterrupt("could not set \(self) to \(value) (setrlimit)") {
            setrlimit(resource, &limit)
        }
    }
}
