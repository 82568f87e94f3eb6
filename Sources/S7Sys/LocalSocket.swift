#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import SystemPackage

/// Named `AF_UNIX` sockets for local tools and PLC programs: `SOCK_SEQPACKET` for the
/// runtime's messages (see ``UnixSocket``), `SOCK_STREAM` for the metrics endpoint (HTTP).
public enum LocalSocket {
    /// The socket type.
    public enum Kind: Equatable, Sendable {
        /// `SOCK_SEQPACKET`: messages with boundaries, in order, never split.
        case seqpacket
        /// `SOCK_STREAM`: a byte stream.
        case stream

        var type: CInt {
            switch self {
            case .seqpacket: CInt(SOCK_SEQPACKET.rawValue)
            case .stream: CInt(SOCK_STREAM.rawValue)
            }
        }
    }

    /// Binds a socket at `path` and listens on it.
    ///
    /// An existing socket file at `path` (left by an earlier run) is unlinked first; any other
    /// file there — regular file, directory, symbolic link — is an ``UnsafePathError`` and
    /// left alone. After `bind` the file gets exactly `mode` (`fchmodat` with
    /// `AT_SYMLINK_NOFOLLOW`, so the umask does not matter and a link swapped in is not
    /// followed) and, when `group` is given, that group (`lchown(path, -1, group)`): a
    /// supervisor started as root can so hand the socket to the service user's group.
    /// Keep `path` in a ``PrivateDirectory``.
    ///
    /// - Parameters:
    ///   - path: the socket file; shorter than 108 bytes.
    ///   - mode: its permission bits, e.g. 0o660 (connecting needs write permission).
    ///   - kind: the socket type.
    ///   - group: the group the socket file gets; nil keeps this process's.
    ///   - backlog: the `listen` backlog.
    /// - Returns: the listening descriptor (close-on-exec), owned by the caller.
    public static func listen(
        path: String,
        mode: mode_t,
        kind: Kind = .seqpacket,
        group: gid_t? = nil,
        backlog: CInt = 16
    ) throws -> FileDescriptor {
        var address = try socketAddress(path)
        try removeStaleSocket(at: path)
        let raw = try retryingOnInterrupt("could not create a Unix socket to listen on \(path) (socket)") {
            socket(AF_UNIX, kind.type | CInt(SOCK_CLOEXEC.rawValue), 0)
        }
        let descriptor = FileDescriptor(rawValue: raw)
        do {
            _ = try retryingOnInterrupt("could not bind a Unix socket to \(path) (bind)") {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }
            _ = try retryingOnInterrupt("could not set the mode of the socket \(path) to \(octal(mode)) (fchmodat)") {
                cs7_chmod_nofollow(path, mode)
            }
            if let group {
                _ = try retryingOnInterrupt("could not give the socket \(path) to gid \(group) (lchown)") {
                    lchown(path, uid_t.max, group)
                }
            }
            _ = try retryingOnInterrupt("could not listen on the Unix socket \(path) (listen)") {
                Glibc.listen(raw, backlog)
            }
        } catch {
            try? descriptor.close()
            throw error
        }
        return descriptor
    }

    /// Connects to the socket at `path`.
    ///
    /// - Throws: ``SystemCallError`` whose ``SystemCallError/hint`` says what to do for the
    ///   usual causes: nothing listens there (`ENOENT`, `ECONNREFUSED`), or this user may
    ///   not use it (`EACCES`).
    public static func connect(path: String, kind: Kind = .seqpacket) throws -> FileDescriptor {
        var address = try socketAddress(path)
        let raw = try retryingOnInterrupt("could not create a Unix socket to connect to \(path) (socket)") {
            socket(AF_UNIX, kind.type | CInt(SOCK_CLOEXEC.rawValue), 0)
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        // A connect interrupted by a signal goes on in the background: wait for it to finish.
        if result == -1 && Glibc.errno == EINTR {
            var entry = pollfd(fd: raw, events: Int16(POLLOUT), revents: 0)
            while poll(&entry, 1, -1) == -1 && Glibc.errno == EINTR {}
            var error: CInt = 0
            var length = socklen_t(MemoryLayout<CInt>.size)
            if getsockopt(raw, SOL_SOCKET, SO_ERROR, &error, &length) == -1 { error = Glibc.errno }
            if error != 0 { return try fail(raw, path: path, code: error) }
        } else if result == -1 {
            return try fail(raw, path: path, code: Glibc.errno)
        }
        return FileDescriptor(rawValue: raw)
    }

    private static func fail(_ raw: CInt, path: String, code: CInt) throws -> FileDescriptor {
        _ = Glibc.close(raw)
        let hint: String?
        switch code {
        case ENOENT, ECONNREFUSED:
            hint = "is `s7commd run` running? (it listens there while it runs)"
        case EACCES:
            let group = groupName(of: path)
            hint = "only root, the service user and members of its group \(group) may use it: run with sudo, "
                + "or join the group with `sudo adduser $USER \(group)` and log in again"
        default:
            hint = nil
        }
        throw SystemCallError("could not connect to \(path) (connect)", errno: Errno(rawValue: code), hint: hint)
    }

    /// Accepts one connection (`accept4` with `SOCK_CLOEXEC`, retried on EINTR and
    /// `ECONNABORTED`).
    ///
    /// - Returns: the connected descriptor (close-on-exec), owned by the caller.
    public static func accept(_ listener: FileDescriptor) throws -> FileDescriptor {
        while true {
            let raw = cs7_accept4_cloexec(listener.rawValue)
            if raw >= 0 { return FileDescriptor(rawValue: raw) }
            let code = Glibc.errno
            if code == EINTR || code == ECONNABORTED { continue }
            throw SystemCallError("could not accept a connection on a local socket (accept4)", errno: Errno(rawValue: code))
        }
    }

    /// Makes a receive on `fd` that waits longer than `seconds` fail with `EAGAIN`
    /// (`SO_RCVTIMEO`): a peer that sends nothing is given up on.
    public static func setReceiveTimeout(_ fd: FileDescriptor, seconds: Int) throws {
        precondition(seconds >= 0, "a receive timeout cannot be negative")
        var value = timeval(tv_sec: seconds, tv_usec: 0)
        _ = try retryingOnInterrupt("could not set a receive timeout of \(seconds) s on descriptor \(fd.rawValue) (SO_RCVTIMEO)") {
            setsockopt(fd.rawValue, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
        }
    }

    /// Whether a peer (from ``UnixSocket/peerCredentials(of:)``) may use the runtime's
    /// sockets: root, the service user `serviceUID`, or a member of the group `serviceGID`.
    ///
    /// `SO_PEERCRED` gives only the effective gid the peer had when it connected, so the
    /// effective and supplementary groups are also read from /proc/PID/status (`Gid:` and
    /// `Groups:`). A peer whose status cannot be read (it has exited) is trusted only by its
    /// uid and that gid.
    public static func isTrusted(
        _ peer: (pid: pid_t, uid: uid_t, gid: gid_t),
        serviceUID: uid_t,
        serviceGID: gid_t
    ) -> Bool {
        if peer.uid == 0 || peer.uid == serviceUID || peer.gid == serviceGID { return true }
        guard let contents = try? readWholeFile("/proc/\(peer.pid)/status") else { return false }
        for line in String(decoding: contents, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.first == "Gid:", fields.count >= 3, gid_t(fields[2]) == serviceGID { return true }
            if fields.first == "Groups:", fields.dropFirst().contains(where: { gid_t($0) == serviceGID }) { return true }
        }
        return false
    }

    /// The name of the group that owns the file at `path`, else "s7commd".
    static func groupName(of path: String) -> String {
        var status = stat()
        guard stat(path, &status) == 0 else { return "s7commd" }
        var entry = group()
        var result: UnsafeMutablePointer<group>?
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getgrgid_r(status.st_gid, &entry, &buffer, buffer.count, &result) == 0, result != nil,
            let name = entry.gr_name
        else { return "gid \(status.st_gid)" }
        return String(cString: name)
    }

    /// Removes the socket file at `path` that ``listen(path:mode:kind:group:backlog:)``
    /// made, e.g. when the server stops (`lstat`, then `unlink`); a missing path is not an
    /// error.
    ///
    /// - Throws: ``UnsafePathError`` when something other than a socket is there (it is left
    ///   alone); ``SystemCallError`` when a call fails.
    public static func remove(path: String) throws {
        try removeStaleSocket(at: path)
    }

    /// Unlinks a socket file at `path`; refuses anything else there.
    private static func removeStaleSocket(at path: String) throws {
        var status = stat()
        if lstat(path, &status) == -1 {
            let code = Glibc.errno
            if code == ENOENT { return }
            throw SystemCallError("could not inspect \(path) before listening there (lstat)", errno: Errno(rawValue: code))
        }
        guard status.st_mode & S_IFMT == S_IFSOCK else {
            throw UnsafePathError(
                path: path,
                found: "is \(fileKind(status.st_mode)), not a socket",
                reason: "s7commd replaces only a socket an earlier run left there, never another file",
                remedy: "remove it if it is not needed, or choose another socket path"
            )
        }
        _ = try retryingOnInterrupt("could not remove the old socket \(path) (unlink)") { unlink(path) }
    }

    static func socketAddress(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SystemCallError(
                "could not use \(path) as a socket path: it must have 1 to \(MemoryLayout.size(ofValue: address.sun_path) - 1) bytes",
                errno: .fileNameTooLong
            )
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }
}
