#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import SystemPackage

/// Landlock (Linux 5.13 and later): a process takes away its own access to the filesystem, to
/// TCP ports, and to signals and abstract Unix sockets of processes outside its domain, for
/// good. An unprivileged process can do it, and every child it has later inherits it, so a
/// child of s7commd that is subverted can reach no more than it was left.
///
/// Each ABI version of the kernel adds rights it can take away; the kernel refuses a ruleset
/// that names a right it does not know, so what is handled is cut to the running ABI
/// (``handled(abi:)``). On a kernel without Landlock, or with it not enabled at boot,
/// ``restrict(_:)`` restricts nothing and says so in its ``Outcome``; the caller logs it.
///
/// A restriction is applied to the calling thread only (and to the threads and processes it
/// creates afterwards): ``restrict(_:)`` refuses to run in a process that already has more
/// than one thread, which would leave the others unrestricted.
public enum Landlock {
    /// Filesystem rights (`LANDLOCK_ACCESS_FS_*`).
    public struct FilesystemAccess: OptionSet, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt64

        public init(rawValue: UInt64) {
            self.rawValue = rawValue
        }

        /// Execute a file (ABI 1).
        public static let execute = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_EXECUTE)
        /// Open a file for writing (ABI 1).
        public static let writeFile = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_WRITE_FILE)
        /// Open a file for reading (ABI 1).
        public static let readFile = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_READ_FILE)
        /// Open a directory or list its contents (ABI 1).
        public static let readDirectory = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_READ_DIR)
        /// Remove an empty directory, or rename one away (ABI 1).
        public static let removeDirectory = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_REMOVE_DIR)
        /// Unlink a file, or rename one away (ABI 1).
        public static let removeFile = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_REMOVE_FILE)
        /// Create, rename or link a character device (ABI 1).
        public static let makeCharacterDevice = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_MAKE_CHAR)
        /// Create or rename a directory (ABI 1).
        public static let makeDirectory = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_MAKE_DIR)
        /// Create, rename or link a regular file (ABI 1).
        public static let makeRegular = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_MAKE_REG)
        /// Create, rename or link a Unix socket (ABI 1).
        public static let makeSocket = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_MAKE_SOCK)
        /// Create, rename or link a named pipe (ABI 1).
        public static let makeFIFO = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_MAKE_FIFO)
        /// Create, rename or link a block device (ABI 1).
        public static let makeBlockDevice = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_MAKE_BLOCK)
        /// Create, rename or link a symbolic link (ABI 1).
        public static let makeSymbolicLink = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_MAKE_SYM)
        /// Link or rename a file into another directory (ABI 2; always denied under ABI 1).
        public static let refer = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_REFER)
        /// Truncate a file (`truncate`, `ftruncate`, `O_TRUNC`; ABI 3).
        public static let truncate = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_TRUNCATE)
        /// `ioctl` on a character or block device opened beneath (ABI 5).
        public static let ioctlDevice = FilesystemAccess(rawValue: CS7_LANDLOCK_ACCESS_FS_IOCTL_DEV)

        /// The rights that concern a file itself rather than the entries of a directory: the
        /// only ones the kernel takes in a rule for something that is not a directory.
        public static let fileRights: FilesystemAccess = [.execute, .writeFile, .readFile, .truncate, .ioctlDevice]

        /// What ``Policy/readOnly`` grants beneath a path: open files for reading, list directories.
        public static let readOnly: FilesystemAccess = [.readFile, .readDirectory]

        /// What ``Policy/readWrite`` grants beneath a path: read, write and truncate files;
        /// create, remove and rename regular files and directories (so an atomic replace:
        /// create a temporary file, write, fsync, rename it over the old one, fsync the
        /// directory). Not: execute, devices, sockets, pipes, symbolic links, device ioctls.
        public static let readWrite: FilesystemAccess = [
            .readFile, .readDirectory, .writeFile, .truncate,
            .makeRegular, .makeDirectory, .removeFile, .removeDirectory, .refer,
        ]

        /// The part of these rights a rule for `isDirectory` may carry: all of them beneath a
        /// directory, only ``fileRights`` for a file (the kernel refuses the others, `EINVAL`).
        public func applicable(toDirectory isDirectory: Bool) -> FilesystemAccess {
            isDirectory ? self : intersection(.fileRights)
        }

        private static let names: [(FilesystemAccess, String)] = [
            (.execute, "execute"), (.writeFile, "write-file"), (.readFile, "read-file"),
            (.readDirectory, "read-dir"), (.removeDirectory, "remove-dir"), (.removeFile, "remove-file"),
            (.makeCharacterDevice, "make-char"), (.makeDirectory, "make-dir"), (.makeRegular, "make-reg"),
            (.makeSocket, "make-sock"), (.makeFIFO, "make-fifo"), (.makeBlockDevice, "make-block"),
            (.makeSymbolicLink, "make-sym"), (.refer, "refer"), (.truncate, "truncate"), (.ioctlDevice, "ioctl-dev"),
        ]

        /// The rights by their kernel names in lower case, e.g. "read-file|read-dir"; "none" when empty.
        public var description: String {
            let listed = Self.names.filter { contains($0.0) }.map(\.1)
            let unknown = subtracting(Self.names.reduce(into: FilesystemAccess()) { $0.formUnion($1.0) })
            let all = listed + (unknown.isEmpty ? [] : ["0x" + String(unknown.rawValue, radix: 16)])
            return all.isEmpty ? "none" : all.joined(separator: "|")
        }
    }

    /// TCP rights (`LANDLOCK_ACCESS_NET_*`, ABI 4).
    public struct NetworkAccess: OptionSet, Hashable, Sendable {
        public let rawValue: UInt64

        public init(rawValue: UInt64) {
            self.rawValue = rawValue
        }

        /// Bind a TCP socket to a port (port 0 included).
        public static let bindTCP = NetworkAccess(rawValue: CS7_LANDLOCK_ACCESS_NET_BIND_TCP)
        /// Connect a TCP socket to a port.
        public static let connectTCP = NetworkAccess(rawValue: CS7_LANDLOCK_ACCESS_NET_CONNECT_TCP)
    }

    /// What a process may no longer reach outside its Landlock domain (`LANDLOCK_SCOPE_*`, ABI 6).
    public struct Scopes: OptionSet, Hashable, Sendable {
        public let rawValue: UInt64

        public init(rawValue: UInt64) {
            self.rawValue = rawValue
        }

        /// Connect or send to an abstract Unix socket created outside the domain (`EPERM`).
        public static let abstractUnixSocket = Scopes(rawValue: CS7_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET)
        /// Send a signal to a process outside the domain (`EPERM`); a process may still signal itself.
        public static let signal = Scopes(rawValue: CS7_LANDLOCK_SCOPE_SIGNAL)
    }

    /// What a ruleset handles: everything handled and not granted by a rule is denied.
    public struct Handled: Equatable, Sendable {
        public var filesystem: FilesystemAccess
        public var network: NetworkAccess
        public var scopes: Scopes

        public init(filesystem: FilesystemAccess = [], network: NetworkAccess = [], scopes: Scopes = []) {
            self.filesystem = filesystem
            self.network = network
            self.scopes = scopes
        }
    }

    /// Every right and scope that Landlock ABI `abi` knows; nothing below 1. A later ABI than
    /// this code knows gets all it knows (an ABI only adds). ABI 7 added audit flags, no right.
    public static func handled(abi: Int) -> Handled {
        guard abi >= 1 else { return Handled() }
        var filesystem: FilesystemAccess = [
            .execute, .writeFile, .readFile, .readDirectory, .removeDirectory, .removeFile,
            .makeCharacterDevice, .makeDirectory, .makeRegular, .makeSocket, .makeFIFO,
            .makeBlockDevice, .makeSymbolicLink,
        ]
        if abi >= 2 { filesystem.insert(.refer) }
        if abi >= 3 { filesystem.insert(.truncate) }
        if abi >= 5 { filesystem.insert(.ioctlDevice) }
        return Handled(
            filesystem: filesystem,
            network: abi >= 4 ? [.bindTCP, .connectTCP] : [],
            scopes: abi >= 6 ? [.abstractUnixSocket, .signal] : []
        )
    }

    /// What a process keeps. The filesystem is always handled whole: only what lies beneath
    /// ``readOnly`` and ``readWrite`` stays reachable (descriptors already open keep working,
    /// whatever they point to).
    ///
    /// Up to ABI 7 Landlock does not cover connecting to a Unix socket that has a path
    /// (`connect` works whatever the filesystem rules), UDP or other protocols than TCP, nor
    /// `chmod`, `chown`, `stat` and `O_PATH` opens; seccomp or the socket's own mode must.
    public struct Policy: Equatable, Sendable {
        /// Files and directories beneath which ``FilesystemAccess/readOnly`` is granted.
        public var readOnly: [String]
        /// Files and directories beneath which ``FilesystemAccess/readWrite`` is granted.
        public var readWrite: [String]
        /// Whether binding and connecting TCP sockets is denied (needs ABI 4), port 0 included.
        /// Sockets already bound or connected keep working, and so does `accept` on a
        /// listening socket.
        public var denyTCP: Bool
        /// Whether signals and abstract Unix sockets are scoped to the domain (needs ABI 6).
        public var scoped: Bool

        public init(readOnly: [String] = [], readWrite: [String] = [], denyTCP: Bool = true, scoped: Bool = true) {
            self.readOnly = readOnly
            self.readWrite = readWrite
            self.denyTCP = denyTCP
            self.scoped = scoped
        }

        /// No filesystem access, no TCP bind or connect, signals and abstract sockets scoped:
        /// for a process that already holds every descriptor it needs (the network worker).
        public static let nothing = Policy()

        /// Reading and writing beneath `directory` only (e.g. the memory process and its
        /// retained-data directory); TCP denied, signals and abstract sockets scoped.
        public static func onlyDirectory(_ directory: String) -> Policy {
            Policy(readWrite: [directory])
        }
    }

    /// What ``restrict(_:)`` did, for one log line (``description``).
    public struct Outcome: Equatable, Sendable, CustomStringConvertible {
        /// The ABI the ruleset was made for; nil when the kernel has no Landlock (or it is not
        /// enabled) and nothing was restricted.
        public var abi: Int?
        /// What the enforced ruleset handles (nothing when ``abi`` is nil).
        public var handled: Handled
        /// The policy that was asked for.
        public var policy: Policy

        public init(abi: Int?, handled: Handled, policy: Policy) {
            self.abi = abi
            self.handled = handled
            self.policy = policy
        }

        /// Whether anything was restricted.
        public var isEnforced: Bool { abi != nil }
        /// Whether filesystem access is limited to the policy's paths.
        public var restrictsFilesystem: Bool { !handled.filesystem.isEmpty }
        /// Whether TCP bind and connect are denied.
        public var deniesTCP: Bool { handled.network == [.bindTCP, .connectTCP] }
        /// Whether signals and abstract Unix sockets are scoped.
        public var scopesSignalsAndAbstractSockets: Bool { handled.scopes == [.abstractUnixSocket, .signal] }

        /// E.g. "Landlock ABI 6: no filesystem access, TCP bind/connect denied, signals and
        /// abstract sockets scoped".
        public var description: String {
            guard let abi else {
                return "Landlock unavailable (not in this kernel, or not enabled at boot): nothing restricted"
            }
            var parts: [String] = []
            if !restrictsFilesystem {
                parts.append("filesystem not restricted")
            } else if policy.readOnly.isEmpty && policy.readWrite.isEmpty {
                parts.append("no filesystem access")
            } else {
                var grants: [String] = []
                if !policy.readOnly.isEmpty { grants.append("read-only beneath " + policy.readOnly.joined(separator: ", ")) }
                if !policy.readWrite.isEmpty { grants.append("read-write beneath " + policy.readWrite.joined(separator: ", ")) }
                parts.append("filesystem " + grants.joined(separator: " and ") + " only")
            }
            if deniesTCP {
                parts.append("TCP bind/connect denied")
            } else {
                parts.append("TCP not restricted" + (policy.denyTCP ? " (needs ABI 4)" : ""))
            }
            if scopesSignalsAndAbstractSockets {
                parts.append("signals and abstract sockets scoped")
            } else {
                parts.append("signals and abstract sockets not scoped" + (policy.scoped ? " (needs ABI 6)" : ""))
            }
            return "Landlock ABI \(abi): " + parts.joined(separator: ", ")
        }
    }

    /// The Landlock ABI version of the running kernel, or nil when it has no Landlock
    /// (`ENOSYS`) or has it but not enabled at boot (`EOPNOTSUPP`, see the `lsm=` parameter).
    /// A seccomp filter that makes the call fail with `ENOSYS` also reads as nil.
    public static func abiVersion() throws(SystemCallError) -> Int? {
        let version = cs7_landlock_abi_version()
        if version >= 0 { return Int(version) }
        let code = Glibc.errno
        if code == ENOSYS || code == EOPNOTSUPP { return nil }
        throw SystemCallError("could not ask the kernel for its Landlock ABI version (landlock_create_ruleset)", errno: Errno(rawValue: code))
    }

    /// Restricts this process to `policy`, for good.
    ///
    /// Handles every filesystem right of the running ABI, and TCP and the scopes as the policy
    /// asks and the ABI allows (``handled(abi:)``). Opens each path `O_PATH | O_CLOEXEC` (it must
    /// exist, with or without Landlock; a symbolic link is followed) and adds a path-beneath rule
    /// with the policy's rights that the kernel takes for that kind of file, then sets
    /// no-new-privileges and calls `landlock_restrict_self`. Nothing is enforced until that last
    /// call, so an error before it leaves the process as it was (except for no-new-privileges,
    /// when the last call itself fails).
    ///
    /// Call it before the process starts a second thread: it restricts the calling thread only.
    ///
    /// - Returns: the ABI and what was restricted; when the kernel has no Landlock, an outcome
    ///   that says so (``Outcome/isEnforced`` false) and nothing restricted.
    /// - Throws: ``SystemCallError`` naming the path or the call that failed, e.g. `ENOENT` for
    ///   a path that does not exist, or `EINVAL` when the process has more than one thread.
    public static func restrict(_ policy: Policy) throws -> Outcome {
        try requireOneThread()
        var rules: [Rule] = []
        defer { for rule in rules { _ = Glibc.close(rule.descriptor) } }
        for (paths, access) in [(policy.readOnly, FilesystemAccess.readOnly), (policy.readWrite, FilesystemAccess.readWrite)] {
            for path in paths { rules.append(try Rule(path: path, access: access)) }
        }
        guard let abi = try abiVersion() else { return Outcome(abi: nil, handled: Handled(), policy: policy) }
        let known = handled(abi: abi)
        let handled = Handled(
            filesystem: known.filesystem,
            network: policy.denyTCP ? known.network : [],
            scopes: policy.scoped ? known.scopes : []
        )
        let ruleset = try retryingOnInterrupt("could not create a Landlock ruleset for ABI \(abi) (landlock_create_ruleset)") {
            cs7_landlock_create_ruleset(handled.filesystem.rawValue, handled.network.rawValue, handled.scopes.rawValue)
        }
        defer { _ = Glibc.close(ruleset) }
        for rule in rules {
            let access = rule.access.intersection(handled.filesystem)
            // The kernel refuses a rule with no right (ENOMSG); there is then nothing to grant.
            if access.isEmpty { continue }
            _ = try retryingOnInterrupt("could not allow \(access) beneath \(rule.path) in the Landlock ruleset (landlock_add_rule)") {
                cs7_landlock_add_path_beneath(ruleset, rule.descriptor, access.rawValue)
            }
        }
        try Privileges.setNoNewPrivileges()
        _ = try retryingOnInterrupt("could not enforce the Landlock ruleset on this process (landlock_restrict_self)") {
            cs7_landlock_restrict_self(ruleset)
        }
        return Outcome(abi: abi, handled: handled, policy: policy)
    }

    /// One path of a policy, opened: the rights of its kind of file it is to get.
    private struct Rule {
        let path: String
        let descriptor: CInt
        let access: FilesystemAccess

        /// Opens `path` `O_PATH` and keeps the part of `access` its kind of file takes.
        init(path: String, access: FilesystemAccess) throws(SystemCallError) {
            let descriptor = try retryingOnInterrupt("could not open \(path) for a Landlock rule (open O_PATH)") {
                open(path, CS7_O_PATH | O_CLOEXEC)
            }
            var status = stat()
            do {
                _ = try retryingOnInterrupt("could not find out what kind of file \(path) is for a Landlock rule (fstat)") {
                    fstat(descriptor, &status)
                }
            } catch {
                _ = Glibc.close(descriptor)
                throw error
            }
            self.path = path
            self.descriptor = descriptor
            self.access = access.applicable(toDirectory: status.st_mode & S_IFMT == S_IFDIR)
        }
    }

    /// Throws unless this process has exactly one thread (the `Threads:` line of /proc/self/status).
    private static func requireOneThread() throws {
        let status = String(decoding: try readWholeFile("/proc/self/status"), as: UTF8.self)
        let line = status.split(separator: "\n").first { $0.hasPrefix("Threads:") }
        guard let line, let count = Int(line.dropFirst("Threads:".count).filter { !$0.isWhitespace }) else {
            throw ProcessStatusError(path: "/proc/self/status", problem: "no valid Threads line")
        }
        guard count == 1 else {
            throw SystemCallError(
                "could not restrict this process with Landlock: it has \(count) threads, and landlock_restrict_self restricts only the calling one",
                errno: .invalidArgument,
                hint: "restrict before any other thread is started"
            )
        }
    }
}
