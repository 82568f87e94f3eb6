#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// A system call failed: what the program tried to do, in a sentence, and the `Errno` it got.
public struct SystemCallError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What failed, e.g. "could not create the shared-memory segment 's7commd' (memfd_create)".
    public var operation: String
    /// The error the system call reported.
    public var errno: Errno
    /// What the operator can do about it, when there is a likely cause, e.g. "is `s7commd run`
    /// running?"; shown after the error.
    public var hint: String?

    /// Creates an error for `operation` that failed with `errno`, with an optional `hint`.
    public init(_ operation: String, errno: Errno, hint: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.hint = hint
    }

    public var description: String {
        let error = "\(operation): \(errno) (errno \(errno.rawValue))"
        guard let hint else { return error }
        return error + "; " + hint
    }
}

/// Calls `body` until it does not fail with EINTR; -1 becomes a `SystemCallError` from errno.
@inline(__always)
func retryingOnInterrupt<Result: FixedWidthInteger>(
    _ operation: @autoclosure () -> String,
    _ body: () -> Result
) throws(SystemCallError) -> Result {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = Glibc.errno
        if code == EINTR { continue }
        throw SystemCallError(operation(), errno: Errno(rawValue: code))
    }
}

/// Turns a pthread-style return value (0 or an error number) into a `SystemCallError`.
@inline(__always)
func checkingErrorNumber(_ operation: @autoclosure () -> String, _ result: CInt) throws(SystemCallError) {
    if result != 0 {
        throw SystemCallError(operation(), errno: Errno(rawValue: result))
    }
}

/// Reads a whole (small) file such as /proc/self/status.
func readWholeFile(_ path: String) throws -> [UInt8] {
    let descriptor = try retryingOnInterrupt("could not open \(path)") {
        open(path, O_RDONLY | O_CLOEXEC)
    }
    defer { _ = Glibc.close(descriptor) }
    return try readFromStart(descriptor, name: path)
}

/// Reads `descriptor` from offset 0 to its end (a /proc file is made anew by each such read).
func readFromStart(_ descriptor: CInt, name: String) throws -> [UInt8] {
    _ = try retryingOnInterrupt("could not rewind \(name) (lseek)") { lseek(descriptor, 0, SEEK_SET) }
    var contents: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = try chunk.withUnsafeMutableBytes { (buffer) throws -> Int in
            try retryingOnInterrupt("could not read \(name)") {
                Glibc.read(descriptor, buffer.baseAddress, buffer.count)
            }
        }
        if count == 0 { return contents }
        contents.append(contentsOf: chunk[0..<count])
    }
}
