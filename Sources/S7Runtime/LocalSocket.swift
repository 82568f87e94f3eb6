import Foundation
import S7Sys
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Named AF_UNIX sockets for local tools and PLC programs: SOCK_SEQPACKET for the runtime's
/// messages, SOCK_STREAM for the metrics endpoint (HTTP).
public enum LocalSocket {
    public enum Kind: Sendable {
        case seqpacket, stream
        var type: CInt { CInt(self == .seqpacket ? SOCK_SEQPACKET.rawValue : SOCK_STREAM.rawValue) }
    }

    static func address(_ path: String) throws -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw RuntimeError("socket path \(path) is too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        return addr
    }

    /// Binds and listens at `path` (an old socket file there is replaced), mode `mode`.
    public static func listen(path: String, mode: mode_t, kind: Kind = .seqpacket) throws -> SystemPackage.FileDescriptor {
        let fd = socket(AF_UNIX, kind.type | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RuntimeError("cannot create a Unix socket: \(String(cString: strerror(errno)))") }
        unlink(path)
        var addr = try address(path)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0, chmod(path, mode) == 0, Glibc.listen(fd, 16) == 0 else {
            let e = errno
            close(fd)
            throw RuntimeError("cannot listen on \(path): \(String(cString: strerror(e)))")
        }
        return SystemPackage.FileDescriptor(rawValue: fd)
    }

    public static func connect(path: String) throws -> SystemPackage.FileDescriptor {
        let fd = socket(AF_UNIX, CInt(SOCK_SEQPACKET.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RuntimeError("cannot create a Unix socket: \(String(cString: strerror(errno)))") }
        var addr = try address(path)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0 else {
            let e = errno
            close(fd)
            let hint = e == ENOENT || e == ECONNREFUSED ? ": is `s7commd run` running? (its memory process listens there)"
                : e == EACCES ? " (only root, the service user and members of its group \(Self.serviceGroupName(of: path)) may use it: run with sudo, or join the group with `sudo adduser $USER \(Self.serviceGroupName(of: path))` and log in again)" : ""
            throw RuntimeError("cannot connect to \(path): \(String(cString: strerror(e)))\(hint)")
        }
        return SystemPackage.FileDescriptor(rawValue: fd)
    }

    /// The group that owns the socket file at `path` (the service user's), by name.
    static func serviceGroupName(of path: String) -> String {
        var st = stat()
        guard stat(path, &st) == 0, let group = getgrgid(st.st_gid) else { return "s7commd" }
        return String(cString: group.pointee.gr_name)
    }

    public static func accept(_ listener: SystemPackage.FileDescriptor) throws -> SystemPackage.FileDescriptor {
        while true {
            let fd = Glibc.accept(listener.rawValue, nil, nil)
            if fd >= 0 {
                // Spawn closes every descriptor a child is not given (closefrom), so the
                // supervisor's threads need no accept4 here either.
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                return SystemPackage.FileDescriptor(rawValue: fd)
            }
            if errno == EINTR || errno == ECONNABORTED { continue }
            throw RuntimeError("accept on a local socket failed: \(String(cString: strerror(errno)))")
        }
    }

    /// Who may use the memory and control sockets: root, this process's user, or a member of
    /// its group — effective or supplementary (SO_PEERCRED gives only the effective gid, so the
    /// supplementary ones are read from /proc).
    public static func isTrusted(_ peer: (pid: pid_t, uid: uid_t, gid: gid_t)) -> Bool {
        if peer.uid == 0 || peer.uid == getuid() || peer.gid == getgid() { return true }
        guard let text = try? String(contentsOfFile: "/proc/\(peer.pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Groups:") }) else { return false }
        return line.dropFirst(7).split(separator: " ").contains { UInt32($0.trimmingCharacters(in: .whitespaces)) == getgid() }
    }

    /// Gives up on a peer that sends nothing for `seconds`.
    public static func setReceiveTimeout(_ fd: SystemPackage.FileDescriptor, seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd.rawValue, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
}

/// Attaches to the running server's PLC memory through its memory process: the way `s7commd
/// mem` and a PLC program on the same host get the segment.
public enum PLCMemoryClient {
    public static func attach(socketPath: String) throws -> (FlatMemoryHandle) {
        let fd = try LocalSocket.connect(path: socketPath)
        defer { try? fd.close() }
        LocalSocket.setReceiveTimeout(fd, seconds: 5)
        try RuntimeMessage.attach.send(on: fd)
        guard let (reply, fds) = try RuntimeMessage.receive(on: fd, maxDescriptors: 1) else {
            throw RuntimeError("the memory process closed the connection without an answer (refused: check the user you run as)")
        }
        guard case .attached(let text) = reply, fds.count == 1 else {
            fds.forEach { try? $0.close() }
            throw RuntimeError("the memory process answered \(reply.kind) instead of the segment")
        }
        defer { try? fds[0].close() }
        return try FlatMemoryHandle(configuration: text, segment: fds[0])
    }
}

/// Asks the running supervisor for its status over its control socket.
public enum StatusClient {
    /// The control socket in the runtime directory (the pid file's directory).
    public static func socketPath(runtimeDirectory: String) -> String { runtimeDirectory + "/control.sock" }

    public static func query(socketPath: String, timeoutSeconds: Int = 5) throws -> SupervisorStatus {
        let fd = try LocalSocket.connect(path: socketPath)
        defer { try? fd.close() }
        LocalSocket.setReceiveTimeout(fd, seconds: timeoutSeconds)
        try RuntimeMessage.statusRequest.send(on: fd)
        guard let (reply, fds) = try RuntimeMessage.receive(on: fd, maxDescriptors: 0) else {
            throw RuntimeError("the supervisor closed the control socket without an answer (refused: run as root, the service user, or a member of its group)")
        }
        fds.forEach { try? $0.close() }
        guard case .status(let json) = reply else { throw RuntimeError("the supervisor answered \(reply.kind) instead of its status") }
        return try SupervisorStatus.decode(json)
    }
}
