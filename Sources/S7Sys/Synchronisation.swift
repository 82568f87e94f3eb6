#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import SystemPackage

/// A robust, process-shared pthread mutex that lives in shared memory.
///
/// When a process dies holding it, the kernel marks it, and the next ``lock()`` recovers it
/// (`EOWNERDEAD`, then `pthread_mutex_consistent`) and reports ``LockOutcome/recoveredFromDeadOwner``:
/// the data it guards may then be half written. The mapping that holds the mutex must stay
/// mapped for the lifetime of every process that uses it (see ``SharedMemory/map(descriptor:size:)``).
public struct RobustMutex: @unchecked Sendable {
    /// The bytes a mutex occupies (`sizeof(pthread_mutex_t)`).
    public static var size: Int { cs7_robust_mutex_size() }
    /// The alignment a mutex needs (`alignof(pthread_mutex_t)`).
    public static var alignment: Int { cs7_robust_mutex_alignment() }

    /// How a ``lock()`` got the mutex.
    public enum LockOutcome: Equatable, Sendable {
        /// The mutex was free or released normally.
        case acquired
        /// The previous owner died holding it; it was made consistent again.
        case recoveredFromDeadOwner
    }

    /// Where the mutex is, in shared memory.
    public let address: UnsafeMutableRawPointer

    /// Uses a mutex that another process (or an earlier ``initialize(at:)``) initialised.
    public init(existingAt address: UnsafeMutableRawPointer) {
        precondition(Int(bitPattern: address) % Self.alignment == 0, "a mutex must be aligned to \(Self.alignment) bytes")
        self.address = address
    }

    /// Initialises a robust, process-shared, error-checking mutex at `address` (``size``
    /// bytes, aligned to ``alignment``), which no process may be using yet.
    public static func initialize(at address: UnsafeMutableRawPointer) throws -> RobustMutex {
        let mutex = RobustMutex(existingAt: address)
        try checkingErrorNumber("could not initialise a robust process-shared mutex", cs7_robust_mutex_init(address))
        return mutex
    }

    /// Locks, waiting while another thread or process holds the mutex.
    ///
    /// - Returns: ``LockOutcome/recoveredFromDeadOwner`` when the previous owner died holding it.
    /// - Throws: `ENOTRECOVERABLE` when an earlier recovery was abandoned, `EDEADLK` when the
    ///   calling thread holds it already.
    @discardableResult
    public func lock() throws -> LockOutcome {
        var recovered = false
        try checkingErrorNumber("could not lock a robust process-shared mutex", cs7_robust_mutex_lock(address, &recovered))
        return recovered ? .recoveredFromDeadOwner : .acquired
    }

    /// Unlocks; only the thread that locked may unlock (`EPERM` otherwise).
    public func unlock() throws {
        try checkingErrorNumber("could not unlock a robust process-shared mutex", cs7_robust_mutex_unlock(address))
    }
}

/// A sequence lock over data in shared memory: one 64-bit counter, odd while a write is in
/// progress. Readers never block a writer; a reader that overlapped a write reads again.
///
/// Writers must be serialised by the caller (one writer at a time, e.g. under a
/// ``RobustMutex``). A reader's closure may see torn data before the retry check, so it must
/// only copy bytes out, never act on them.
public struct SeqLock: @unchecked Sendable {
    /// The counter, in shared memory.
    public let counter: UnsafeMutablePointer<UInt64>

    /// Uses the 8-byte, 8-aligned counter at `address` (zero-initialised memory is a valid,
    /// unlocked seqlock).
    public init(counterAt address: UnsafeMutableRawPointer) {
        precondition(Int(bitPattern: address) % 8 == 0, "a seqlock counter must be 8-byte aligned")
        self.counter = address.assumingMemoryBound(to: UInt64.self)
    }

    /// Starts a write: the counter becomes odd, ordered before the data stores that follow.
    @inline(__always)
    public func writeBegin() { cs7_seqlock_write_begin(counter) }

    /// Ends a write: the counter becomes even, ordered after the data stores before it.
    @inline(__always)
    public func writeEnd() { cs7_seqlock_write_end(counter) }

    /// Starts a read and returns the counter to give to ``readRetry(_:)``.
    @inline(__always)
    public func readBegin() -> UInt64 { cs7_seqlock_read_begin(counter) }

    /// Ends a read: true when the data read since `start` may be torn and must be read again.
    @inline(__always)
    public func readRetry(_ start: UInt64) -> Bool { cs7_seqlock_read_retry(counter, start) }

    /// Runs `body` (the data stores) between ``writeBegin()`` and ``writeEnd()``.
    @inline(__always)
    public func write<Result>(_ body: () throws -> Result) rethrows -> Result {
        writeBegin()
        defer { writeEnd() }
        return try body()
    }

    /// Runs `body` (the data loads) until it ran without overlapping a write, and returns
    /// what that run returned. Yields the processor after many retries in a row.
    @inline(__always)
    public func read<Result>(_ body: () -> Result) -> Result {
        var attempts = 0
        while true {
            let start = readBegin()
            if start & 1 == 0 {
                let result = body()
                if !readRetry(start) { return result }
            }
            attempts += 1
            if attempts % 64 == 0 { sched_yield() }
        }
    }
}
