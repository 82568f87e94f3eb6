#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// The unprivileged user the children of s7commd run as.
public struct ServiceUser: Equatable, Sendable {
    /// The login name.
    public var name: String
    /// Its uid.
    public var uid: uid_t
    /// Its primary gid.
    public var gid: gid_t

    /// Looks a user up in the password database (`getpwnam_r`: /etc/passwd, or NSS).
    ///
    /// - Throws: ``ServiceUserError/noSuchUser(_:)`` with the command that creates the user,
    ///   or ``ServiceUserError/lookupFailed(_:errno:)``.
    public static func lookup(name: String) throws(ServiceUserError) -> ServiceUser {
        let user = try search(name) { getpwnam_r(name, &$0, &$1, $2, &$3) }
        guard let user else { throw .noSuchUser(name) }
        return user
    }

    /// Looks a user up by uid (`getpwuid_r`); nil when no user has it.
    public static func lookup(uid: uid_t) throws(ServiceUserError) -> ServiceUser? {
        try search("uid \(uid)") { getpwuid_r(uid, &$0, &$1, $2, &$3) }
    }

    /// Runs a `getpw*_r` call with a buffer that grows until the entry fits; nil: not found.
    private static func search(
        _ what: String,
        _ call: (inout passwd, inout [CChar], Int, inout UnsafeMutablePointer<passwd>?) -> CInt
    ) throws(ServiceUserError) -> ServiceUser? {
        var bufferSize = max(Int(sysconf(Int32(_SC_GETPW_R_SIZE_MAX))), 1024)
        while true {
            var entry = passwd()
            var result: UnsafeMutablePointer<passwd>?
            var buffer = [CChar](repeating: 0, count: bufferSize)
            let code = call(&entry, &buffer, bufferSize, &result)
            switch code {
            case 0:
                guard result != nil else { return nil }
                return ServiceUser(name: String(cString: entry.pw_name), uid: entry.pw_uid, gid: entry.pw_gid)
            case EINTR:
                continue
            case ERANGE where bufferSize < 1 << 20:
                bufferSize *= 2
            case ENOENT, ESRCH, EBADF, EPERM:
                // glibc documents these as "not found" from some NSS modules.
                return nil
            default:
                throw .lookupFailed(what, errno: Errno(rawValue: code))
            }
        }
    }
}

/// A service user that cannot be used.
public enum ServiceUserError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No such user exists.
    case noSuchUser(String)
    /// The password database could not be read.
    case lookupFailed(String, errno: Errno)

    public var description: String {
        switch self {
        case .noSuchUser(let name):
            "the user '\(name)' does not exist; create it as root with: "
                + "adduser --system --group --no-create-home \(name)"
        case .lookupFailed(let name, let errno):
            "could not look up the user '\(name)' (getpwnam_r): \(errno) (errno \(errno.rawValue))"
        }
    }
}
