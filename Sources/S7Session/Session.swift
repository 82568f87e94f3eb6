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
    /// Where the connection is, without what each phase holds (the stored state carries that).
    public enum Phase: Equatable, Sendable {
        case awaitingConnectionRequest
        case awaitingSetup
        case ready
        case closed
    }

    /// What a COTP connection holds, from the connection confirm on.
    struct Transport {
        /// The client's connection request.
        let request: COTPConnectionParameters
        /// The TPDU size agreed in the connection confirm.
        let tpduSize: Int
        /// COTP segments of a PDU still being reassembled.
        var segments: [UInt8] = []
    }

    /// What exists once Setup Communication is done.
    struct Established {
        var transport: Transport
        var agreedPDUSize: Int
        /// Parallel jobs granted (Max AmQ calling: what the client may have in flight).
        var grantedAmQ: Int
        var userData = UserDataExchange()
    }

    /// The session's state; each phase carries what exists only in it.
    enum State {
        case awaitingConnectionRequest
        case awaitingSetup(Transport)
        case established(Established)
        case closed(CloseReason)
        /// Only while a method changes the payload it took out, so that the payload is not
        /// shared (and its buffers not copied on write) during the change.
        case modifying
    }

    private var state: State = .awaitingConnectionRequest

    public var phase: Phase {
        switch state {
        case .awaitingConnectionRequest: return .awaitingConnectionRequest
        case .awaitingSetup: return .awaitingSetup
        case .established: return .ready
        case .closed: return .closed
        case .modifying: preconditionFailure("the session state is read while it is being changed")
        }
    }

    /// S7 requests answered after Setup Communication (with data or with an error), for status.
    public private(set) var requestsAnswered = 0
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

    public init(configuration: SessionConfiguration, memory: any PLCMemoryAccess) {
        self.configuration = configuration
        self.memory = memory
    }

    /// The agreed PDU size, once Setup Communication is done.
    public var agreedPDUSize: Int? {
        guard case .established(let e) = state else { return nil }
        return e.agreedPDUSize
    }

    /// Parallel jobs granted in Setup Communication, once it is done.
    public var grantedAmQ: Int? {
        guard case .established(let e) = state else { return nil }
        return e.grantedAmQ
    }

    /// The client's connection request, while connected.
    public var connection: COTPConnectionParameters? {
        switch state {
        case .awaitingSetup(let t): return t.request
        case .established(let e): return e.transport.request
        default: return nil
        }
    }

    /// Why the session closed, once it has.
    public var closeReason: CloseReason? {
        guard case .closed(let reason) = state else { return nil }
        return reason
    }

    /// Answers a client may leave unread beyond the parallel jobs it was granted before the
    /// server stops reading from it (see ``outputBound``).
    public static let answersBufferedBeyondAmQ = 1

    /// How many bytes of unsent answers the server holds for this connection before it stops
    /// reading: (granted AmQ + ``answersBufferedBeyondAmQ``) answer frames of the agreed PDU
    /// (before Setup Communication: one AmQ and the configured PDU), each with its TPKT and
    /// COTP headers for every TPDU it is split into.
    public var outputBound: Int {
        let pdu: Int, tpduSize: Int, amq: Int
        switch state {
        case .established(let e): (pdu, tpduSize, amq) = (e.agreedPDUSize, e.transport.tpduSize, e.grantedAmQ)
        case .awaitingSetup(let t): (pdu, tpduSize, amq) = (configuration.pduSize, t.tpduSize, 1)
        default: (pdu, tpduSize, amq) = (configuration.pduSize, 1 << Int(S7Limits.defaultTPDUSizeCode), 1)
        }
        let room = max(1, tpduSize - 3)
        let frames = (pdu + room - 1) / room
        let frameBytes = pdu + frames * (S7Limits.tpktHeaderLength + 3)
        return (amq + Self.answersBufferedBeyondAmQ) * frameBytes
    }

    /// Bytes of COTP segments awaiting their last part.
    private var segmentBytes: Int {
        switch state {
        case .awaitingSetup(let t): return t.segments.count
        case .established(let e): return e.transport.segments.count
        default: return 0
        }
    }

    /// Bytes held back: an incomplete frame and COTP segments awaiting their last part.
    public var bufferedBytes: Int { inbound.count + segmentBytes }

    /// True while part of a frame (or of a segmented PDU) waits for more bytes.
    public var hasPartialInput: Bool { !inbound.isEmpty || segmentBytes > 0 }

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
        if case .closed = state { return .close(reason: .badInput("connection already closed")) }
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
        if case .close(let reason) = outcome { state = .closed(reason) }
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

    /// Runs `body` on the transport of a connected session, without sharing its buffers.
    private mutating func modifyTransport(_ body: (inout Transport) -> Void) {
        switch state {
        case .awaitingSetup(var t):
            state = .modifying
            body(&t)
            state = .awaitingSetup(t)
        case .established(var e):
            state = .modifying
            body(&e.transport)
            state = .established(e)
        case .awaitingConnectionRequest, .closed, .modifying:
            preconditionFailure("COTP segments exist only on a connected transport")
        }
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
            guard case .awaitingConnectionRequest = state else {
                return .close(reason: .badInput("second COTP connection request on a connected transport"))
            }
            return connect(request, &out)
        case .data(let eot, let payload):
            let tpduSize: Int, buffered: Int
            switch state {
            case .awaitingSetup(let t): (tpduSize, buffered) = (t.tpduSize, t.segments.count)
            case .established(let e): (tpduSize, buffered) = (e.transport.tpduSize, e.transport.segments.count)
            case .awaitingConnectionRequest, .closed, .modifying:
                return .close(reason: .badInput("COTP data before a connection request"))
            }
            guard buffered + payload.count <= S7Limits.maximumReassembledPDU else {
                return .close(reason: .badInput("COTP segments add up to more than \(S7Limits.maximumReassembledPDU) bytes"))
            }
            if !eot {
                modifyTransport { $0.segments.append(contentsOf: payload) }
                return .open
            }
            let start = out.count
            defer { segmentResponse(&out, from: start, tpduSize: tpduSize) }
            if buffered == 0 {
                // An empty data TPDU carries nothing to answer; a CPU ignores it.
                return payload.isEmpty ? .open : handlePDU(payload, &out)
            }
            // The reassembled PDU is taken out of the state while it is answered (the answer
            // may change the phase), and its buffer, emptied, put back for the next one.
            var whole: [UInt8] = []
            modifyTransport { swap(&whole, &$0.segments) }
            whole.append(contentsOf: payload)
            let outcome = handlePDU(whole[...], &out)
            whole.removeAll(keepingCapacity: true)
            modifyTransport { swap(&whole, &$0.segments) }
            return outcome
        case .disconnectRequest(let dst, let src, _):
            COTPPDU.disconnectConfirm(destinationReference: src, sourceReference: dst).encodeFrame(into: &out)
            return .close(reason: .clientDisconnected("COTP disconnect request"))
        case .connectionConfirm, .disconnectConfirm:
            return .close(reason: .badInput("unexpected COTP TPDU from a client"))
        }
    }

    /// Splits the response frame written from `start` into data TPDUs no larger than the TPDU
    /// size agreed in the connection confirm (only a client that asked for a small TPDU needs it).
    private func segmentResponse(_ out: inout [UInt8], from start: Int, tpduSize: Int) {
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
        let tpduSize = 1 << Int(agreedCode)
        var confirm = request
        confirm.destinationReference = request.sourceReference
        confirm.sourceReference = 0x0001
        confirm.classOption = 0
        confirm.tpduSizeCode = agreedCode
        COTPPDU.connectionConfirm(confirm).encodeFrame(into: &out)
        completeRequests &+= 1
        state = .awaitingSetup(Transport(request: request, tpduSize: tpduSize))
        events.append(.connected(connectionType: request.connectionType, rack: request.rack, slot: request.slot, tpduSize: tpduSize))
        return .open
    }

    private mutating func handlePDU(_ bytes: ArraySlice<UInt8>, _ out: inout [UInt8]) -> SessionOutcome {
        let header: S7Header
        let pdu: S7RequestPDU
        do {
            header = try S7Header.decode(bytes)
        } catch {
            return .close(reason: .badInput(error.description))
        }
        do {
            pdu = try S7RequestPDU.decode(bytes, header: header)
        } catch {
            return refuseMalformed(header, bytes, error, &out)
        }
        completeRequests &+= 1
        switch state {
        case .awaitingSetup(let transport):
            guard case .setupCommunication(let calling, let called, let size) = pdu.request else {
                return .close(reason: .badInput("S7 request before Setup Communication"))
            }
            if let agreed = negotiate(header.pduReference, calling, called, Int(size), &out) {
                state = .established(Established(transport: transport, agreedPDUSize: agreed.pduSize, grantedAmQ: agreed.amq))
            }
            return .open
        case .established(var e):
            state = .modifying
            defer { state = .established(e) }
            return serve(pdu, size: bytes.count, &e, &out)
        case .awaitingConnectionRequest, .closed, .modifying:
            preconditionFailure("S7 PDUs arrive only on a connected transport")
        }
    }

    /// Answers one S7 request of an established session.
    private mutating func serve(_ pdu: S7RequestPDU, size: Int, _ e: inout Established, _ out: inout [UInt8]) -> SessionOutcome {
        let ref = pdu.header.pduReference
        if case .setupCommunication(let calling, let called, let proposed) = pdu.request {
            if let agreed = negotiate(ref, calling, called, Int(proposed), &out) {
                (e.agreedPDUSize, e.grantedAmQ) = (agreed.pduSize, agreed.amq)
            }
            return .open
        }
        requestsAnswered &+= 1
        let agreed = e.agreedPDUSize
        if size > agreed {
            events.append(.exceededPDU(what: "request", size: size, agreed: agreed))
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
            userData(ref, params, payload, agreed, &e.userData, &out)
        }
        return .open
    }

    /// Answers a PDU whose header is sound but whose parameters are not; closes when even the
    /// header is unusable, since there is nothing to answer to.
    private mutating func refuseMalformed(_ header: S7Header, _ bytes: ArraySlice<UInt8>, _ error: S7WireError,
                                          _ out: inout [UInt8]) -> SessionOutcome {
        guard case .established = state,
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

    /// Answers Setup Communication; returns the agreed PDU size and the AmQ granted, or nil when
    /// the proposal was refused (the phase then stays as it was).
    private mutating func negotiate(_ ref: UInt16, _ calling: UInt16, _ called: UInt16, _ proposed: Int,
                                    _ out: inout [UInt8]) -> (pduSize: Int, amq: Int)? {
        guard proposed >= S7Limits.minimumNegotiablePDUSize else {
            events.append(.pduRefused(proposed: proposed))
            writeJobError(ref, function: S7Function.setupCommunication.rawValue, error: .incorrectPDUSize, &out)
            return nil
        }
        let agreed = min(proposed, configuration.pduSize)
        let amqCalling = max(1, min(calling, S7Limits.maximumParallelJobs))
        events.append(.negotiated(proposed: proposed, agreed: agreed))
        var f = S7FrameBuilder(&out, rosctr: .ackData, pduReference: ref, error: S7HeaderError(errorClass: 0, code: 0))
        out.append(S7Function.setupCommunication.rawValue)
        out.append(0)
        out.appendU16(amqCalling)
        out.appendU16(max(1, min(called, S7Limits.maximumParallelJobs)))
        out.appendU16(UInt16(agreed))
        f.beginData(&out)
        f.finish(&out)
        return (agreed, Int(amqCalling))
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
