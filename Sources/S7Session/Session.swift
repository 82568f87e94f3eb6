import PLCMemory
import S7Wire

/// What the channel handler must do after feeding bytes to a session.
public enum SessionOutcome: Equatable, Sendable {
    /// Send what was written to the output buffer (if anything) and keep reading.
    case open
    /// Send what was written to the output buffer (if anything), then close the connection.
    case close(reason: CloseReason)
}

/// Things worth a log line; the channel handler drains ``S7Session/events`` after each call.
public enum SessionEvent: Equatable, Sendable {
    /// COTP connection accepted: called TSAP, rack and slot, agreed TPDU size.
    case connected(connectionType: UInt8?, rack: Int?, slot: Int?, tpduSize: Int)
    /// Setup Communication: what the client proposed and what was agreed.
    case negotiated(proposed: Int, agreed: Int)
    /// A Setup Communication proposing a PDU too small to use.
    case pduRefused(proposed: Int)
    /// A request (or the answer it needs) larger than the agreed PDU.
    case exceededPDU(what: String, size: Int, agreed: Int)
    /// A request answered with an error (unsupported function, malformed parameters, ...).
    case refused(what: String, error: String)
    /// A client changed the CPU state (stop, start, clock).
    case control(String)
    /// A read or write of PLC memory, for `logging.log_data_access`.
    case dataAccess(write: Bool, item: String, returnCode: UInt8)
}

/// One client connection's protocol state: TPKT framing, COTP connection and reassembly,
/// Setup Communication, then S7 requests answered from PLC memory.
///
/// Pure: bytes in, response bytes and an outcome out. No sockets, clocks or globals; the
/// clock comes in through ``SessionConfiguration/clock``.
public struct S7Session {
    public enum Phase: Equatable, Sendable {
        case awaitingConnectionRequest
        case awaitingSetup
        case ready
        case closed
    }

    public private(set) var phase: Phase = .awaitingConnectionRequest
    /// S7 requests answered after Setup Communication (with data or with an error), for status.
    public private(set) var requestsAnswered = 0
    /// The agreed PDU size, once Setup Communication is done.
    public private(set) var agreedPDUSize: Int?
    /// The client's connection request, once connected.
    public private(set) var connection: COTPConnectionParameters?
    /// Parallel jobs granted in Setup Communication (Max AmQ calling: what the client may have
    /// in flight), once Setup Communication is done.
    public private(set) var grantedAmQ: Int?
    /// Complete requests taken: connection request, Setup Communication and every S7 PDU.
    /// An empty data TPDU and a COTP segment that is not the last are not requests, so they
    /// do not count: the server measures idle time from the last change of this number.
    public private(set) var completeRequests = 0
    /// Identifies the incomplete frame or segmented PDU being received: nil when nothing is
    /// incomplete, a new number each time a new one begins after a complete request. Bytes
    /// that only continue it leave it unchanged, so a deadline armed when it changed cannot be
    /// extended by trickling bytes.
    public private(set) var incompleteInput: Int?
    private var nextIncompleteInput = 0
    /// Events since the caller last emptied this array.
    public var events: [SessionEvent] = []

    let configuration: SessionConfiguration
    let memory: any PLCMemoryAccess
    /// Bytes received but not yet consumed as whole frames.
    private var inbound: [UInt8] = []
    /// COTP segments of a PDU still being reassembled.
    private var segments: [UInt8] = []
    /// A userdata answer too long for one PDU, sent piece by piece.
    var continuation: UserDataContinuation?
    var nextSequenceNumber: UInt8 = 1
    var tpduSize = 1 << Int(S7Limits.defaultTPDUSizeCode)

    public init(configuration: SessionConfiguration, memory: any PLCMemoryAccess) {
        self.configuration = configuration
        self.memory = memory
    }

    /// Answers a client may leave unread beyond the parallel jobs it was granted before the
    /// server stops reading from it (see ``outputBound``).
    public static let answersBufferedBeyondAmQ = 1

    /// How many bytes of unsent answers the server holds for this connection before it stops
    /// reading: (granted AmQ + ``answersBufferedBeyondAmQ``) answer frames of the agreed PDU
    /// (before Setup Communication: one AmQ and the configured PDU), each with its TPKT and
    /// COTP headers for every TPDU it is split into.
    public var outputBound: Int {
        let pdu = agreedPDUSize ?? configuration.pduSize
        let room = max(1, tpduSize - 3)
        let frames = (pdu + room - 1) / room
        let frameBytes = pdu + frames * (S7Limits.tpktHeaderLength + 3)
        return ((grantedAmQ ?? 1) + Self.answersBufferedBeyondAmQ) * frameBytes
    }

    /// Bytes held back: an incomplete frame and COTP segments awaiting their last part.
    public var bufferedBytes: Int { inbound.count + segments.count }

    /// True while part of a frame (or of a segmented PDU) waits for more bytes.
    public var hasPartialInput: Bool { !inbound.isEmpty || !segments.isEmpty }

    /// True when input waits that the next ``receive(_:into:outputLimit:)`` can act on without
    /// more bytes (a whole frame, or a header already known to be invalid), held back because
    /// the output reached the limit given to the last call. Set by each call (the channel
    /// handler asks several times per read).
    public private(set) var hasBufferedRequests = false

    private var inboundHoldsAFrame: Bool {
        do {
            guard case .frame(let length) = try TPKT.peek(inbound[...]) else { return false }
            return inbound.count >= length
        } catch {
            return true
        }
    }

    /// Feeds bytes from the peer (none, to go on with frames already buffered); appends every
    /// response to `out`. Stops taking frames once `out` holds `outputLimit` bytes or more: the
    /// rest stays buffered (``hasBufferedRequests``) until the next call.
    public mutating func receive(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt8],
                                 outputLimit: Int = .max) -> SessionOutcome {
        guard phase != .closed else { return .close(reason: .badInput("connection already closed")) }
        if inbound.capacity == 0 { inbound.reserveCapacity(S7Limits.maximumFrameLength) }
        inbound.append(contentsOf: bytes)
        var consumed = 0
        var outcome = SessionOutcome.open
        let requestsBefore = completeRequests
        while outcome == .open, out.count < outputLimit {
            let available = inbound[consumed...]
            let length: Int
            do {
                guard case .frame(let l) = try TPKT.peek(available) else { break }
                length = l
            } catch {
                outcome = .close(reason: .badInput(error.description))
                break
            }
            guard available.count >= length else { break }
            let frame = inbound[consumed..<consumed + length]
            consumed += length
            outcome = handleFrame(frame.dropFirst(S7Limits.tpktHeaderLength), &out)
        }
        if consumed == inbound.count {
            inbound.removeAll(keepingCapacity: true)
        } else if consumed > 0 {
            inbound.removeFirst(consumed)
        }
        if case .close = outcome { phase = .closed }
        hasBufferedRequests = outcome == .open && out.count >= outputLimit && inboundHoldsAFrame
        if !hasPartialInput {
            incompleteInput = nil
        } else if incompleteInput == nil || completeRequests != requestsBefore {
            nextIncompleteInput &+= 1
            incompleteInput = nextIncompleteInput
        }
        return outcome
    }

    /// Convenience for tests and tools.
    public mutating func receive(_ bytes: [UInt8], into out: inout [UInt8], outputLimit: Int = .max) -> SessionOutcome {
        bytes.withUnsafeBytes { receive($0, into: &out, outputLimit: outputLimit) }
    }

    private mutating func handleFrame(_ tpdu: ArraySlice<UInt8>, _ out: inout [UInt8]) -> SessionOutcome {
        let pdu: COTPPDU
        do {
            pdu = try COTPPDU.decode(tpdu)
        } catch {
            return .close(reason: .badInput(error.description))
        }
        switch pdu {
        case .connectionRequest(let request):
            guard phase == .awaitingConnectionRequest else {
                return .close(reason: .badInput("second COTP connection request on a connected transport"))
            }
            return connect(request, &out)
        case .data(let eot, let payload):
            guard phase != .awaitingConnectionRequest else {
                return .close(reason: .badInput("COTP data before a connection request"))
            }
            guard segments.count + payload.count <= S7Limits.maximumReassembledPDU else {
                return .close(reason: .badInput("COTP segments add up to more than \(S7Limits.maximumReassembledPDU) bytes"))
            }
            if !eot {
                segments.append(contentsOf: payload)
                return .open
            }
            let start = out.count
            defer { segmentResponse(&out, from: start) }
            if segments.isEmpty {
                // An empty data TPDU carries nothing to answer; a CPU ignores it.
                return payload.isEmpty ? .open : handlePDU(payload, &out)
            }
            segments.append(contentsOf: payload)
            let whole = segments[...]
            defer { segments.removeAll(keepingCapacity: true) }
            return handlePDU(whole, &out)
        case .disconnectRequest(let dst, let src, _):
            COTPPDU.disconnectConfirm(destinationReference: src, sourceReference: dst).encodeFrame(into: &out)
            return .close(reason: .clientDisconnected("COTP disconnect request"))
        case .connectionConfirm, .disconnectConfirm:
            return .close(reason: .badInput("unexpected COTP TPDU from a client"))
        }
    }

    /// Splits the response frame written from `start` into data TPDUs no larger than the TPDU
    /// size agreed in the connection confirm (only a client that asked for a small TPDU needs it).
    private func segmentResponse(_ out: inout [UInt8], from start: Int) {
        let room = tpduSize - 3
        guard out.count - start > S7Limits.tpktHeaderLength + tpduSize else { return }
        let pdu = Array(out[(start + S7Limits.tpktHeaderLength + 3)...])
        out.removeSubrange(start...)
        var offset = 0
        while offset < pdu.count {
            let end = min(offset + room, pdu.count)
            COTPPDU.data(endOfTransmission: end == pdu.count, payload: pdu[offset..<end]).encodeFrame(into: &out)
            offset = end
        }
    }

    private mutating func connect(_ request: COTPConnectionParameters, _ out: inout [UInt8]) -> SessionOutcome {
        let rackSlot = request.rack.flatMap { r in request.slot.map { RackSlot(rack: r, slot: $0) } }
        if !configuration.allowedRackSlots.isEmpty {
            guard let rs = rackSlot, configuration.allowedRackSlots.contains(rs) else {
                COTPPDU.disconnectRequest(destinationReference: request.sourceReference, sourceReference: 1, reason: 0x80)
                    .encodeFrame(into: &out)
                let asked = rackSlot.map(\.description) ?? "no rack/slot"
                return .close(reason: .rackSlotRefused(
                    asked: asked, allowed: configuration.allowedRackSlots.map(\.description).joined(separator: ", ")))
            }
        }
        let requested = request.tpduSizeCode.flatMap { COTPConnectionParameters.tpduSize(code: $0) != nil ? $0 : nil }
            ?? S7Limits.defaultTPDUSizeCode
        let agreedCode = min(requested, S7Limits.maximumTPDUSizeCode)
        tpduSize = 1 << Int(agreedCode)
        var confirm = request
        confirm.destinationReference = request.sourceReference
        confirm.sourceReference = 0x0001
        confirm.classOption = 0
        confirm.tpduSizeCode = agreedCode
        COTPPDU.connectionConfirm(confirm).encodeFrame(into: &out)
        connection = request
        completeRequests &+= 1
        phase = .awaitingSetup
        events.append(.connected(connectionType: request.connectionType, rack: request.rack, slot: request.slot, tpduSize: tpduSize))
        return .open
    }

    private mutating func handlePDU(_ bytes: ArraySlice<UInt8>, _ out: inout [UInt8]) -> SessionOutcome {
        let pdu: S7RequestPDU
        do {
            pdu = try S7RequestPDU.decode(bytes)
        } catch {
            return refuseMalformed(bytes, error, &out)
        }
        let ref = pdu.header.pduReference
        completeRequests &+= 1
        if case .setupCommunication(let calling, let called, let size) = pdu.request {
            return setup(ref, calling, called, Int(size), &out)
        }
        guard phase == .ready, let agreed = agreedPDUSize else {
            return .close(reason: .badInput("S7 request before Setup Communication"))
        }
        requestsAnswered &+= 1
        if bytes.count > agreed {
            events.append(.exceededPDU(what: "request", size: bytes.count, agreed: agreed))
            return answerError(pdu, .incorrectPDUSize, &out)
        }
        switch pdu.request {
        case .setupCommunication:
            return .open  // handled above
        case .readVar(let specs):
            readVar(ref, specs, agreed, &out)
        case .writeVar(let specs, let items):
            writeVar(ref, specs, items, &out)
        case .otherJob(let function, let parameters):
            otherJob(ref, function, parameters, &out)
        case .userData(let params, _, _, let payload):
            userData(ref, params, payload, agreed, &out)
        }
        return .open
    }

    /// Answers a PDU whose header is sound but whose parameters are not; closes when even the
    /// header is unusable, since there is nothing to answer to.
    private mutating func refuseMalformed(_ bytes: ArraySlice<UInt8>, _ error: S7WireError, _ out: inout [UInt8]) -> SessionOutcome {
        guard phase == .ready, let header = try? S7Header.decode(bytes),
              header.rosctr == S7ROSCTR.job.rawValue || header.rosctr == S7ROSCTR.userData.rawValue
        else {
            return .close(reason: .badInput(error.description))
        }
        events.append(.refused(what: "malformed request", error: error.description))
        if header.rosctr == S7ROSCTR.job.rawValue {
            let function = bytes.count > header.length ? bytes[bytes.startIndex + header.length] : 0
            writeJobError(header.pduReference, function: function, error: .functionNotImplemented, &out)
        } else {
            writeUserDataError(header.pduReference, group: 0, subfunction: 0, sequence: 0,
                               error: S7UserDataError.functionNotImplemented, &out)
        }
        return .open
    }

    private mutating func answerError(_ pdu: S7RequestPDU, _ error: S7HeaderError, _ out: inout [UInt8]) -> SessionOutcome {
        switch pdu.request {
        case .userData(let p, _, _, _):
            writeUserDataError(pdu.header.pduReference, group: p.group, subfunction: p.subfunction,
                               sequence: p.sequenceNumber, error: error.value, &out)
        case .readVar:
            writeJobError(pdu.header.pduReference, function: S7Function.readVar.rawValue, error: error, &out)
        case .writeVar:
            writeJobError(pdu.header.pduReference, function: S7Function.writeVar.rawValue, error: error, &out)
        case .otherJob(let f, _):
            writeJobError(pdu.header.pduReference, function: f, error: error, &out)
        case .setupCommunication:
            writeJobError(pdu.header.pduReference, function: S7Function.setupCommunication.rawValue, error: error, &out)
        }
        return .open
    }

    private mutating func setup(_ ref: UInt16, _ calling: UInt16, _ called: UInt16, _ proposed: Int, _ out: inout [UInt8]) -> SessionOutcome {
        guard phase == .awaitingSetup || phase == .ready else {
            return .close(reason: .badInput("Setup Communication before a COTP connection"))
        }
        guard proposed >= S7Limits.minimumNegotiablePDUSize else {
            events.append(.pduRefused(proposed: proposed))
            writeJobError(ref, function: S7Function.setupCommunication.rawValue, error: .incorrectPDUSize, &out)
            return .open
        }
        let agreed = min(proposed, configuration.pduSize)
        agreedPDUSize = agreed
        grantedAmQ = Int(max(1, min(calling, S7Limits.maximumParallelJobs)))
        phase = .ready
        events.append(.negotiated(proposed: proposed, agreed: agreed))
        var f = S7FrameBuilder(&out, rosctr: .ackData, pduReference: ref, error: S7HeaderError(errorClass: 0, code: 0))
        out.append(S7Function.setupCommunication.rawValue)
        out.append(0)
        out.appendU16(max(1, min(calling, S7Limits.maximumParallelJobs)))
        out.appendU16(max(1, min(called, S7Limits.maximumParallelJobs)))
        out.appendU16(UInt16(agreed))
        f.beginData(&out)
        f.finish(&out)
        return .open
    }

    /// A job a CPU does not serve here gets an ack_data with an error and the function echoed.
    func writeJobError(_ ref: UInt16, function: UInt8, error: S7HeaderError, _ out: inout [UInt8]) {
        var f = S7FrameBuilder(&out, rosctr: .ackData, pduReference: ref, error: error)
        out.append(function)
        switch function {
        case S7Function.readVar.rawValue, S7Function.writeVar.rawValue:
            out.append(0)  // no items follow
        case S7Function.setupCommunication.rawValue:
            // The full parameter, offering what this server would have agreed to.
            out.append(0)
            out.appendU16(1)
            out.appendU16(1)
            out.appendU16(configuration.pduSize)
        case S7Function.startUpload.rawValue:
            // Status, two reserved bytes and a zero upload id: Wireshark's dissector reads all
            // eight parameter bytes of a Start Upload answer, error or not.
            out.append(contentsOf: [UInt8](repeating: 0, count: 7))
        default:
            break
        }
        f.beginData(&out)
        f.finish(&out)
    }

    private func refusal(for function: UInt8) -> S7HeaderError {
        switch function {
        case S7Function.plcStop.rawValue, S7Function.piService.rawValue,
             S7Function.requestDownload.rawValue, S7Function.downloadBlock.rawValue, S7Function.downloadEnded.rawValue,
             S7Function.startUpload.rawValue, S7Function.upload.rawValue, S7Function.endUpload.rawValue:
            return .protectionViolation
        default:
            return .functionNotImplemented
        }
    }

    private func functionName(_ function: UInt8) -> String {
        switch function {
        case S7Function.plcStop.rawValue: return "PLC stop is not allowed"
        case S7Function.piService.rawValue: return "PI service (PLC start, copy RAM to ROM, compress, ...) is not allowed"
        case S7Function.requestDownload.rawValue, S7Function.downloadBlock.rawValue, S7Function.downloadEnded.rawValue:
            return "block download is not supported"
        case S7Function.startUpload.rawValue, S7Function.upload.rawValue, S7Function.endUpload.rawValue:
            return "block upload is not supported"
        default: return "function not implemented"
        }
    }
}

extension S7Session {
    /// PLC control when allowed (stop, hot / cold start, and the harmless copy-RAM-to-ROM and
    /// compress); everything else — and control when not allowed — is refused the way a
    /// protected CPU refuses it.
    mutating func otherJob(_ ref: UInt16, _ function: UInt8, _ parameters: ArraySlice<UInt8>, _ out: inout [UInt8]) {
        let service = function == S7Function.piService.rawValue ? piServiceName(parameters) : nil
        let isControl = function == S7Function.plcStop.rawValue
            || ["P_PROGRAM", "_MODU", "_GARB"].contains(service ?? "")
        guard configuration.allowPLCControl, isControl else {
            let why = isControl ? "PLC control is not allowed (server.allow_plc_control is false)" : functionName(function)
            events.append(.refused(what: "job function 0x\(String(function, radix: 16))\(service.map { " \($0)" } ?? "")", error: why))
            writeJobError(ref, function: function, error: refusal(for: function), &out)
            return
        }
        let mode = memory.operatingMode
        switch (function, service) {
        case (S7Function.plcStop.rawValue, _):
            guard mode == .run else { return writeControlError(ref, function, 0x07, &out) }  // already STOP
            memory.setOperatingMode(.stop)
            events.append(.control("PLC stop: the CPU is now in STOP"))
        case (_, "P_PROGRAM"):
            guard mode == .stop else { return writeControlError(ref, function, 0x03, &out) }  // already RUN
            memory.setOperatingMode(.run)
            events.append(.control("PLC start: the CPU is now in RUN"))
        default:
            events.append(.control("PI service \(service ?? "?"): nothing to do for a soft PLC"))
        }
        var f = S7FrameBuilder(&out, rosctr: .ackData, pduReference: ref, error: S7HeaderError(errorClass: 0, code: 0))
        out.append(function)
        f.beginData(&out)
        f.finish(&out)
    }

    /// "Already in that mode": an error in the header and the state in the second parameter byte.
    private func writeControlError(_ ref: UInt16, _ function: UInt8, _ state: UInt8, _ out: inout [UInt8]) {
        var f = S7FrameBuilder(&out, rosctr: .ackData, pduReference: ref, error: .serviceCannotExecuteInState)
        out.append(function)
        out.append(state)
        f.beginData(&out)
        f.finish(&out)
    }

    /// The program-invocation name of a PI service job (`28`, six reserved bytes, `FD`, a 16-bit
    /// parameter-block length, the block, a name length and the name).
    func piServiceName(_ p: ArraySlice<UInt8>) -> String? {
        var r = ByteReader(p)
        guard (try? r.skip(8)) != nil, let blockLength = try? r.u16(), (try? r.skip(Int(blockLength))) != nil,
              let nameLength = try? r.u8(), let name = try? r.take(Int(nameLength)), r.remaining == 0 else { return nil }
        return LogText.escaped(bytes: name)
    }
}
