#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import Synchronization
import SystemPackage

/// Anonymous shared memory: a sealed memfd that processes share by passing its descriptor.
public enum SharedMemory {
    /// Seals of a memfd (`fcntl(F_GET_SEALS)`).
    public struct Seals: OptionSet, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: CInt
        public init(rawValue: CInt) { self.rawValue = rawValue }

        /// No further seal can be added (`F_SEAL_SEAL`).
        public static let seal = Seals(rawValue: CS7_F_SEAL_SEAL)
        /// The file cannot shrink (`F_SEAL_SHRINK`).
        public static let shrink = Seals(rawValue: CS7_F_SEAL_SHRINK)
        /// The file cannot grow (`F_SEAL_GROW`).
        public static let grow = Seals(rawValue: CS7_F_SEAL_GROW)
        /// The contents cannot change (`F_SEAL_WRITE`).
        public static let write = Seals(rawValue: CS7_F_SEAL_WRITE)
        /// No new writable mapping can be made (`F_SEAL_FUTURE_WRITE`).
        public static let futureWrite = Seals(rawValue: CS7_F_SEAL_FUTURE_WRITE)

        public var description: String {
            let names: [(Seals, String)] = [
                (.seal, "seal"), (.shrink, "shrink"), (.grow, "grow"), (.write, "write"),
                (.futureWrite, "future-write"),
            ]
            return names.filter { contains($0.0) }.map(\.1).joined(separator: ",")
        }
    }

    /// Creates a shared-memory segment of `size` zero bytes that can never be resized.
    ///
    /// `memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)`, `ftruncate` to `size`, then the seals
    /// `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`: every process the descriptor is passed to
    /// gets `EPERM` from `ftruncate`, so none can make another's mapping fault (`SIGBUS`) by
    /// shrinking the file, and none can remove the seals.
    ///
    /// - Parameters:
    ///   - name: shown in /proc/PID/fd as `/memfd:NAME`; for diagnostics only.
    ///   - size: the size in bytes, positive.
    /// - Returns: the descriptor (close-on-exec), owned by the caller.
    public static func create(name: String, size: Int) throws -> FileDescriptor {
        precondition(size > 0, "a shared-memory segment needs a positive size")
        let raw = try retryingOnInterrupt("could not create the shared-memory segment '\(name)' (memfd_create)") {
            cs7_memfd_create(name, CS7_MFD_CLOEXEC | CS7_MFD_ALLOW_SEALING)
        }
        let descriptor = FileDescriptor(rawValue: raw)
        do throws {
            _ = try retryingOnInterrupt("could not size the shared-memory segment '\(name)' to \(size) bytes (ftruncate)") {
                ftruncate(raw, off_t(size))
            }
            _ = try retryingOnInterrupt("could not seal the shared-memory segment '\(name)' against resizing (F_ADD_SEALS)") {
                cs7_add_seals(raw, CS7_F_SEAL_SHRINK | CS7_F_SEAL_GROW | CS7_F_SEAL_SEAL)
            }
        } catch {
            try? descriptor.close()
            throw error
        }
        return descriptor
    }

    /// How a descriptor's open file description was opened (`fcntl(F_GETFL) & O_ACCMODE`).
    public enum AccessMode: Sendable, Equatable, CustomStringConvertible {
        case readOnly, writeOnly, readWrite

        public var description: String {
            switch self {
            case .readOnly: "O_RDONLY"
            case .writeOnly: "O_WRONLY"
            case .readWrite: "O_RDWR"
            }
        }
    }

    /// The access mode of `descriptor`'s open file description.
    public static func accessMode(of descriptor: FileDescriptor) throws -> AccessMode {
        let flags = try retryingOnInterrupt("could not read the flags of descriptor \(descriptor.rawValue) (fcntl F_GETFL)") {
            fcntl(descriptor.rawValue, F_GETFL)
        }
        switch flags & O_ACCMODE {
        case O_RDONLY: return .readOnly
        case O_WRONLY: return .writeOnly
        default: return .readWrite
        }
    }

    /// A read-only descriptor of the same memfd: `open("/proc/self/fd/N", O_RDONLY | O_CLOEXEC)`
    /// makes a new open file description, so whoever receives it can neither map it
    /// `PROT_WRITE, MAP_SHARED` (`EACCES`) nor make a `PROT_READ` mapping of it writable with
    /// `mprotect` (`EACCES`: the mapping lacks `VM_MAYWRITE`). `descriptor` keeps its own mode.
    public static func reopenReadOnly(_ descriptor: FileDescriptor) throws -> FileDescriptor {
        let path = "/proc/self/fd/\(descriptor.rawValue)"
        let raw = try retryingOnInterrupt("could not open \(path) read-only") { open(path, O_RDONLY | O_CLOEXEC) }
        return FileDescriptor(rawValue: raw)
    }

    /// The seals of a memfd.
    public static func seals(of descriptor: FileDescriptor) throws -> Seals {
        let raw = try retryingOnInterrupt("could not read the seals of descriptor \(descriptor.rawValue) (F_GET_SEALS)") {
            cs7_get_seals(descriptor.rawValue)
        }
        return Seals(rawValue: raw)
    }

    /// The size in bytes of the file behind `descriptor` (`fstat`).
    public static func size(of descriptor: FileDescriptor) throws -> Int {
        var status = stat()
        _ = try retryingOnInterrupt("could not read the size of descriptor \(descriptor.rawValue) (fstat)") {
            fstat(descriptor.rawValue, &status)
        }
        return Int(status.st_size)
    }

    /// Maps the first `size` bytes of a shared-memory segment, readable and writable,
    /// `MAP_SHARED`: every process that maps it sees the same bytes.
    ///
    /// The file must be at least `size` bytes long (checked with `fstat`: touching a page past
    /// its end would raise `SIGBUS`). The mapping stays valid after `descriptor` is closed.
    ///
    /// - Important: Keep the returned ``Mapping`` alive for the whole process lifetime, e.g.
    ///   with ``Mapping/retainForProcessLifetime()``. It unmaps in `deinit`, and Swift may
    ///   release an object earlier than the code appears to say; a process that unmaps the
    ///   region while holding a robust mutex inside it, and then exits, leaves every other
    ///   process waiting for that mutex for ever (the kernel cannot find the mutex to mark
    ///   its owner dead).
    public static func map(descriptor: FileDescriptor, size: Int) throws -> Mapping {
        try map(descriptor: descriptor, size: size, writable: true)
    }

    /// Maps the first `size` bytes of a shared-memory segment readable only, `MAP_SHARED`, as
    /// ``map(descriptor:size:)`` does otherwise. On a read-only descriptor (see
    /// ``reopenReadOnly(_:)``) the kernel keeps the mapping from ever becoming writable.
    public static func mapReadOnly(descriptor: FileDescriptor, size: Int) throws -> Mapping {
        try map(descriptor: descriptor, size: size, writable: false)
    }

    private static func map(descriptor: FileDescriptor, size: Int, writable: Bool) throws -> Mapping {
        precondition(size > 0, "a mapping needs a positive size")
        let fileSize = try self.size(of: descriptor)
        guard fileSize >= size else {
            throw SystemCallError(
                "could not map \(size) bytes of a shared-memory segment of only \(fileSize) bytes",
                errno: .invalidArgument
            )
        }
        guard let address = mmap(nil, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, descriptor.rawValue, 0),
            address != UnsafeMutableRawPointer(bitPattern: -1)
        else {
            throw SystemCallError("could not map \(size) bytes of shared memory (mmap)", errno: Errno(rawValue: errno))
        }
        return Mapping(bytes: UnsafeMutableRawBufferPointer(start: address, count: size), writable: writable)
    }

    /// A shared mapping (`mmap`, `MAP_SHARED`), unmapped only when this object is freed.
    ///
    /// Keep it alive for the whole process lifetime: see ``SharedMemory/map(descriptor:size:)``.
    /// The bytes are shared with other processes; synchronise access with ``RobustMutex`` and
    /// ``SeqLock`` in the region itself.
    public final class Mapping: @unchecked Sendable {
        /// The mapped bytes.
        public let bytes: UnsafeMutableRawBufferPointer
        /// Mapped `PROT_WRITE`; false: storing to `bytes` faults (`SIGSEGV`).
        public let writable: Bool

        init(bytes: UnsafeMutableRawBufferPointer, writable: Bool) {
            self.bytes = bytes
            self.writable = writable
        }

        /// Keeps this mapping (and so the region) until the process exits, and returns it.
        @discardableResult
        public func retainForProcessLifetime() -> Mapping {
            processLifetimeMappings.withLock { $0.append(self) }
            return self
        }

        deinit {
            munmap(bytes.baseAddress, bytes.count)
        }
    }
}

/// Mappings that must never be unmapped (see ``SharedMemory/Mapping/retainForProcessLifetime()``).
private let processLifetimeMappings = Mutex<[SharedMemory.Mapping]>([])
