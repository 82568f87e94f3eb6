#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage
import Testing

@Suite struct UnixSocketTests {
    @Test func memfdPassedWithinTheProcessSharesItsBytes() throws {
        let pair = try UnixSocketPair.make()
        defer {
            try? pair.first.close()
            try? pair.second.close()
        }
        let segment = try SharedMemory.create(name: "s7sys-test", size: 4096)
        defer { try? segment.close() }
        let original = try SharedMemory.map(descriptor: segment, size: 4096)
        original.bytes.copyBytes(from: Array("hello shared memory".utf8))

        try UnixSocket.send(message: Array("segment".utf8), descriptors: [segment], on: pair.first)
        let (bytes, descriptors) = try UnixSocket.receive(on: pair.second, maxBytes: 64, maxDescriptors: 1)
        #expect(bytes == Array("segment".utf8))
        try #require(descriptors.count == 1)
        defer { try? descriptors[0].close() }
        #expect(descriptors[0] != segment)
        #expect(try SharedMemory.seals(of: descriptors[0]) == [.seal, .shrink, .grow])

        let copy = try SharedMemory.map(descriptor: descriptors[0], size: 4096)
        #expect(Array(copy.bytes.prefix(19)) == Array("hello shared memory".utf8))
        copy.bytes[100] = 0xA5
        #expect(original.bytes[100] == 0xA5)
    }

    @Test func memfdPassedToAChildSharesItsBytesAndStaysSealed() throws {
        let pair = try UnixSocketPair.make()
        defer { try? pair.first.close() }
        let segment = try SharedMemory.create(name: "s7sys-probe", size: 8192)
        defer { try? segment.close() }
        let mapping = try SharedMemory.map(descriptor: segment, size: 8192)
        let pattern = (0..<16).map { UInt8($0 * 17) }
        mapping.bytes.copyBytes(from: pattern)

        let result = try Probe.run(["receive-fd"], passing: [(pair.second, as: 3)]) { _ in
            try pair.second.close()
            try UnixSocket.send(message: Array("segment".utf8), descriptors: [segment], on: pair.first)
        }
        #expect(result.termination == .exited(0), "\(result.standardError)")
        let output = lines(result.standardOutput)
        #expect(output.contains("message: segment"))
        #expect(output.contains("size: 8192"))
        #expect(output.contains("seals: seal,shrink,grow"))
        #expect(output.contains("first-bytes: 00112233445566778899aabbccddeeff"))
        #expect(output.contains("ftruncate-grow: EPERM"))
        #expect(output.contains("ftruncate-shrink: EPERM"))
        let marker = Array("written-by-probe".utf8)
        #expect(Array(mapping.bytes[64..<(64 + marker.count)]) == marker)
    }

    @Test func peerCredentialsReportTheCreatorOfTheOtherEnd() throws {
        let pair = try UnixSocketPair.make()
        defer { try? pair.first.close() }
        let local = try UnixSocket.peerCredentials(of: pair.first)
        #expect(local.pid == getpid())
        #expect(local.uid == getuid())
        #expect(local.gid == getgid())

        var probePID: pid_t = 0
        var fresh: (pid: pid_t, uid: uid_t, gid: gid_t)?
        let result = try Probe.run(["peercred"], passing: [(pair.second, as: 3)]) { pid in
            probePID = pid
            try pair.second.close()
            let (bytes, descriptors) = try UnixSocket.receive(on: pair.first, maxBytes: 64, maxDescriptors: 1)
            #expect(bytes == Array("fresh".utf8))
            try #require(descriptors.count == 1)
            fresh = try UnixSocket.peerCredentials(of: descriptors[0])
            try descriptors[0].close()
            try UnixSocket.send(message: Array("done".utf8), on: pair.first)
        }
        #expect(result.termination == .exited(0), "\(result.standardError)")
        // The probe's end of our pair reports us, who created the pair...
        #expect(lines(result.standardOutput).contains("peer pid=\(getpid()) uid=\(getuid()) gid=\(getgid())"))
        #expect(lines(result.standardOutput).contains("self pid=\(probePID)"))
        // ...and the end of the pair the probe created reports the probe.
        #expect(fresh?.pid == probePID)
    }

    @Test func moreDescriptorsThanControlSpaceAreRejectedAndClosed() throws {
        let pair = try UnixSocketPair.make()
        defer {
            try? pair.first.close()
            try? pair.second.close()
        }
        let pipe = try UnixPipe.make()
        defer { try? pipe.read.close() }
        try UnixSocket.send(message: [1], descriptors: [pipe.write, pipe.write, pipe.write], on: pair.first)
        #expect(throws: UnixMessageError.controlDataTruncated(maxDescriptors: 1)) {
            try UnixSocket.receive(on: pair.second, maxBytes: 16, maxDescriptors: 1)
        }
        try pipe.write.close()
        #expect(allWritersClosed(pipe.read), "a received descriptor was not closed")
        try expectSocketStillWorks(pair)
    }

    @Test func descriptorsBeyondTheLimitThatFitThePaddingAreRejectedAndClosed() throws {
        let pair = try UnixSocketPair.make()
        defer {
            try? pair.first.close()
            try? pair.second.close()
        }
        let pipe = try UnixPipe.make()
        defer { try? pipe.read.close() }
        // CMSG_SPACE(4) is 24 bytes on 64-bit Linux: room for two descriptors.
        try UnixSocket.send(message: [1], descriptors: [pipe.write, pipe.write], on: pair.first)
        #expect(throws: UnixMessageError.tooManyDescriptors(received: 2, maxDescriptors: 1)) {
            try UnixSocket.receive(on: pair.second, maxBytes: 16, maxDescriptors: 1)
        }
        try pipe.write.close()
        #expect(allWritersClosed(pipe.read), "a received descriptor was not closed")
        try expectSocketStillWorks(pair)
    }

    @Test func aDescriptorWhereNoneIsExpectedIsRejected() throws {
        let pair = try UnixSocketPair.make()
        defer {
            try? pair.first.close()
            try? pair.second.close()
        }
        let pipe = try UnixPipe.make()
        defer { try? pipe.read.close() }
        try UnixSocket.send(message: [1], descriptors: [pipe.write], on: pair.first)
        #expect(throws: UnixMessageError.controlDataTruncated(maxDescriptors: 0)) {
            try UnixSocket.receive(on: pair.second, maxBytes: 16)
        }
        try pipe.write.close()
        #expect(allWritersClosed(pipe.read), "a received descriptor was not closed")
    }

    @Test func aMessageLongerThanTheBufferIsRejectedAndItsDescriptorsClosed() throws {
        let pair = try UnixSocketPair.make()
        defer {
            try? pair.first.close()
            try? pair.second.close()
        }
        let pipe = try UnixPipe.make()
        defer { try? pipe.read.close() }
        try UnixSocket.send(message: [UInt8](repeating: 7, count: 100), descriptors: [pipe.write], on: pair.first)
        #expect(throws: UnixMessageError.messageTruncated(maxBytes: 10)) {
            try UnixSocket.receive(on: pair.second, maxBytes: 10, maxDescriptors: 1)
        }
        try pipe.write.close()
        #expect(allWritersClosed(pipe.read), "a received descriptor was not closed")
        try expectSocketStillWorks(pair)
    }

    @Test func aClosedPeerReadsAsEmpty() throws {
        let pair = try UnixSocketPair.make()
        defer { try? pair.second.close() }
        try pair.first.close()
        let (bytes, descriptors) = try UnixSocket.receive(on: pair.second, maxBytes: 16, maxDescriptors: 1)
        #expect(bytes.isEmpty)
        #expect(descriptors.isEmpty)
    }

    @Test func sendingToAClosedPeerIsAnErrorNotASignal() throws {
        let pair = try UnixSocketPair.make()
        defer { try? pair.first.close() }
        try pair.second.close()
        #expect {
            try UnixSocket.send(message: [1], on: pair.first)
        } throws: { error in
            (error as? SystemCallError)?.errno == .brokenPipe
        }
    }

    private func expectSocketStillWorks(_ pair: UnixSocketPair) throws {
        try UnixSocket.send(message: [9, 8, 7], on: pair.first)
        let (bytes, descriptors) = try UnixSocket.receive(on: pair.second, maxBytes: 16, maxDescriptors: 1)
        #expect(bytes == [9, 8, 7])
        #expect(descriptors.isEmpty)
    }
}
