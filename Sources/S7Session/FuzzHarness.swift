import PLCMemory
import S7Wire

/// Drives a session with one arbitrary input, the way the fuzzer and the corpus replay test do.
///
/// The first byte picks the PDU size offered; the input is then split into chunks whose
/// lengths cycle through 1, 7, 64 and the rest, so the framing code sees every kind of split.
/// Every other chunk is taken one answer at a time (an output limit of one byte, then the
/// frames held back are drained), as the server does when a client's answers back up.
/// Checks the invariants that must hold for any input: the output is whole TPKT frames, never
/// larger than the biggest frame, and the buffered input stays bounded.
public enum FuzzHarness {
    public static func run(_ input: [UInt8], memory: any PLCMemoryAccess) {
        guard let first = input.first else { return }
        let pdu = S7Limits.minimumConfiguredPDUSize + Int(first) * 3
        var session = S7Session(configuration: SessionConfiguration(pduSize: min(pdu, S7Limits.maximumConfiguredPDUSize)), memory: memory)
        var out: [UInt8] = []
        var index = 1
        let chunkSizes = [1, 7, 64, Int.max]
        var turn = 0
        while index < input.count {
            let size = min(chunkSizes[turn % chunkSizes.count], input.count - index)
            turn += 1
            let limit = turn % 2 == 0 ? 1 : Int.max
            var outcome = input[index..<index + size].withUnsafeBytes { session.receive($0, into: &out, outputLimit: limit) }
            index += size
            while outcome == .open, session.hasBufferedRequests {
                precondition(!out.isEmpty, "frames held back although the output limit was not reached")
                checkFrames(out)
                out.removeAll(keepingCapacity: true)
                outcome = session.receive(UnsafeRawBufferPointer(start: nil, count: 0), into: &out, outputLimit: limit)
            }
            checkFrames(out)
            out.removeAll(keepingCapacity: true)
            session.events.removeAll()
            if case .close = outcome { break }
            // An open session holds at most one incomplete frame and one PDU's segments.
            precondition(session.bufferedBytes < S7Limits.maximumFrameLength + S7Limits.maximumReassembledPDU,
                         "buffered input beyond its bound")
        }
    }

    /// Every response is a sequence of whole, well-formed TPKT frames.
    static func checkFrames(_ out: [UInt8]) {
        var i = 0
        while i < out.count {
            guard case .frame(let length)? = try? TPKT.peek(out[i...]) else {
                preconditionFailure("response is not a TPKT frame of \(S7Limits.minimumFrameLength)...\(S7Limits.maximumFrameLength) bytes")
            }
            precondition(i + length <= out.count, "response frame longer than the output")
            i += length
        }
    }
}
