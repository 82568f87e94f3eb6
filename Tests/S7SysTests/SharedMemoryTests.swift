#if canImport(Glibc)
import Glibc
#endif
import CS7Sys
import Foundation
import S7Sys
import Synchronization
import SystemPackage
import Testing

@Suite struct SharedMemoryTests {
    @Test func aSegmentIsZeroedSizedAndSealedAgainstResizing() throws {
        let segment = try SharedMemory.create(name: "s7sys-seal", size: 12_288)
        defer { try? segment.close() }
        #expect(try SharedMemory.size(of: segment) == 12_288)
        #expect(try SharedMemory.seals(of: segment) == [.seal, .shrink, .grow])
        #expect(ftruncate(segment.rawValue, 24_576) == -1 && errno == EPERM)
        #expect(ftruncate(segment.rawValue, 4096) == -1 && errno == EPERM)
        // F_SEAL_SEAL: not even F_SEAL_WRITE can be added now.
        #expect(cs7_add_seals(segment.rawValue, CS7_F_SEAL_WRITE) == -1 && errno == EPERM)
        let mapping = try SharedMemory.map(descriptor: segment, size: 12_288)
        #expect(mapping.bytes.allSatisfy { $0 == 0 })
    }

    @Test func mappingMoreThanTheSegmentHoldsIsRefused() throws {
        let segment = try SharedMemory.create(name: "s7sys-small", size: 4096)
        defer { try? segment.close() }
        #expect {
            try SharedMemory.map(descriptor: segment, size: 8192)
        } throws: { error in
            (error as? SystemCallError)?.errno == .invalidArgument
        }
    }

    @Test func theMappingOutlivesItsDescriptor() throws {
        let segment = try SharedMemory.create(name: "s7sys-lifetime", size: 4096)
        let mapping = try SharedMemory.map(descriptor: segment, size: 4096)
        try segment.close()
        mapping.bytes[4095] = 42
        #expect(mapping.bytes[4095] == 42)
    }
}

/// Memory shared between the threads of a test, synchronised by what the test checks.
private struct SharedWords: @unchecked Sendable {
    let lock: SeqLock
    let low: UnsafeMutablePointer<UInt64>
    let high: UnsafeMutablePointer<UInt64>
}

private final class Progress: Sendable {
    let readersStarted = Atomic<Int>(0)
    let writerDone = Atomic<Bool>(false)
    let readsDuringWrites = Atomic<Int>(0)
    let torn = Atomic<Int>(0)
    let reads = Atomic<Int>(0)
}

@Suite struct SynchronisationTests {
    @Test func aSeqlockNeverLetsAReaderSeeATornPair() throws {
        let segment = try SharedMemory.create(name: "s7sys-seqlock", size: 4096)
        defer { try? segment.close() }
        let mapping = try SharedMemory.map(descriptor: segment, size: 4096)
        let base = mapping.bytes.baseAddress!
        let words = SharedWords(
            lock: SeqLock(counterAt: base),
            low: (base + 8).assumingMemoryBound(to: UInt64.self),
            high: (base + 16).assumingMemoryBound(to: UInt64.self)
        )
        let progress = Progress()
        let iterations: UInt64 = 200_000
        let readers = 2
        let finished = DispatchSemaphore(value: 0)

        for _ in 0..<readers {
            Thread.detachNewThread {
                var torn = 0
                var reads = 0
                var duringWrites = 0
                progress.readersStarted.add(1, ordering: .releasing)
                while !progress.writerDone.load(ordering: .acquiring) || reads == 0 {
                    let (low, high) = words.lock.read { (words.low.pointee, words.high.pointee) }
                    if low != high { torn += 1 }
                    if low > 0 && low < iterations { duringWrites += 1 }
                    reads += 1
                }
                progress.readsDuringWrites.add(duringWrites, ordering: .relaxed)
                progress.torn.add(torn, ordering: .relaxed)
                progress.reads.add(reads, ordering: .relaxed)
                finished.signal()
            }
        }
        Thread.detachNewThread {
            while progress.readersStarted.load(ordering: .acquiring) < readers { sched_yield() }
            for value in 1...iterations {
                words.lock.write {
                    words.low.pointee = value
                    words.high.pointee = value
                }
            }
            progress.writerDone.store(true, ordering: .releasing)
            finished.signal()
        }
        for _ in 0...readers { finished.wait() }

        #expect(progress.torn.load(ordering: .relaxed) == 0)
        #expect(progress.reads.load(ordering: .relaxed) >= readers)
        // The readers really ran while the writer wrote.
        #expect(progress.readsDuringWrites.load(ordering: .relaxed) > 0)
        print("seqlock: \(progress.reads.load(ordering: .relaxed)) reads, \(progress.readsDuringWrites.load(ordering: .relaxed)) during writes, \(progress.torn.load(ordering: .relaxed)) torn")
        #expect(words.low.pointee == iterations && words.high.pointee == iterations)
        #expect(words.lock.readBegin() == 2 * iterations)
    }

    @Test func aRobustMutexLeftLockedByADeadProcessIsRecovered() throws {
        let segment = try SharedMemory.create(name: "s7sys-mutex", size: 4096)
        defer { try? segment.close() }
        let mapping = try SharedMemory.map(descriptor: segment, size: 4096).retainForProcessLifetime()
        let mutex = try RobustMutex.initialize(at: mapping.bytes.baseAddress!)

        let result = try Probe.run(["hold-mutex"], passing: [(segment, as: 3)])
        #expect(result.termination == .exited(0), "\(result.standardError)")
        #expect(lines(result.standardOutput).contains("locked: acquired"))

        #expect(try mutex.lock() == .recoveredFromDeadOwner)
        try mutex.unlock()
        #expect(try mutex.lock() == .acquired)
        try mutex.unlock()
    }

    @Test func aRobustMutexChecksItsOwner() throws {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: RobustMutex.size, alignment: RobustMutex.alignment)
        defer { memory.deallocate() }
        let mutex = try RobustMutex.initialize(at: memory)
        #expect(try mutex.lock() == .acquired)
        #expect { try mutex.lock() } throws: { ($0 as? SystemCallError)?.errno == .deadlock }
        try mutex.unlock()
        #expect { try mutex.unlock() } throws: { ($0 as? SystemCallError)?.errno == .notPermitted }
    }
}
