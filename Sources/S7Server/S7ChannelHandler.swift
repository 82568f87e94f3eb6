import Logging
import NIOCore
import Prometheus
import S7Session

/// The thin shell around one ``S7Session``: bytes from the socket in, responses out, and the
/// limits a hostile client meets (docs/threat-model.md, "Limits"):
///
/// - deadlines, not gaps: COTP connect and Setup Communication within `recv_timeout_ms` of
///   accept; an incomplete frame or segmented PDU complete within `recv_timeout_ms` of its
///   first byte (trickled bytes do not extend it); `ping_timeout_ms` from the last complete
///   request (empty data TPDUs do not count); `send_timeout_ms` from the moment the unsent
///   answers stopped draining;
/// - backpressure: no more is read, and no buffered request is answered, while the unsent
///   answers exceed ``S7Session/outputBound``;
/// - admission through ``ConnectionRegistry`` (evicting the oldest connection still setting up);
/// - refusals and drops logged through ``LogLimiter``, client strings escaped.
///
/// All protocol decisions are the session's.
final class S7ChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Largest single read from a client socket. With one read per event-loop turn and reading
    /// paused while answers back up, a connection buffers at most this plus one frame of input.
    static let maximumRead = 16 * 1024

    private var session: S7Session
    private var out: [UInt8] = []
    private let settings: ServerSettings
    private let registry: ConnectionRegistry
    private let limiter: LogLimiter
    private var logger: Logger
    private var peer = "unknown peer"
    private var address = "unknown"
    private var admitted = false
    private var closeReason: CloseReason?
    private var record: ConnectionRecord?
    private var requestsCounted = 0
    /// The latency histogram, when metrics are served.
    private let latency: DurationHistogram?

    private var setupTimer: Scheduled<Void>?
    private var receiveTimer: Scheduled<Void>?
    /// The session's ``S7Session/incompleteInput`` the receive deadline was armed for.
    private var receiveDeadlineFor: Int?
    private var idleTimer: Scheduled<Void>?
    private var lastRequest = NIODeadline.now()
    private var requestsSeen = 0
    private var sendTimer: Scheduled<Void>?

    /// When the connection was accepted, its current incomplete input began, and its answers
    /// last backed up; and what the registry was last told it waits for (eviction order).
    private var admittedAt = NIODeadline.now()
    private var incompleteSince: NIODeadline?
    private var unwritableSince: NIODeadline?
    private var waitingReported: ConnectionRegistry.Waiting?

    /// True inside ``pump(_:_:)``, so that a writability change it causes does not re-enter it.
    private var pumping = false
    /// A read NIO asked for while reading was paused.
    private var readPending = false
    private var throttled = false
    private var boundApplied = 0
    private var wroteSomething = false
    /// Answer bytes written so far, for the per-turn budget in ``pump(_:_:)``.
    private var bytesSentTotal = 0
    private var continuationScheduled = false

    init(session: S7Session, settings: ServerSettings, registry: ConnectionRegistry, logger: Logger,
         limiter: LogLimiter? = nil, latency: DurationHistogram? = nil) {
        self.session = session
        self.settings = settings
        self.registry = registry
        self.logger = logger
        self.limiter = limiter ?? LogLimiter(logger: logger)
        self.latency = latency
    }

    // MARK: - Admission

    func channelActive(context: ChannelHandlerContext) {
        let remote = context.remoteAddress
        peer = remote.map(Self.describe) ?? "unknown peer"
        address = remote?.ipAddress ?? "unknown"
        logger[metadataKey: "peer"] = .string(peer)
        let loop = context.eventLoop
        let this = NIOLoopBound(self, eventLoop: loop)
        let ctx = NIOLoopBound(context, eventLoop: loop)
        admittedAt = loop.now
        let admission = registry.admit(context.channel, peer: peer, address: address, now: admittedAt) { waiting, age in
            loop.execute {
                this.value.close(context: ctx.value, reason: .evicted(waiting: waiting, forMilliseconds: Self.ms(age),
                                                                       maxClients: this.value.registry.limit), flush: false)
            }
        }
        guard case .admitted(let record) = admission else {
            if case .refused(let reason, let limit) = admission { refuse(context: context, reason, limit: limit) }
            return
        }
        admitted = true
        self.record = record
        waitingReported = .init(since: admittedAt, what: .setup)  // as the registry was told
        registry.counters.connectionsAccepted.add(1, ordering: .relaxed)
        if settings.logConnections {
            let (count, limit) = (registry.count, registry.limit)
            logConnection(context, "client \(peer) connected (\(count) of \(limit))")
        }
        let timeout = settings.receiveTimeout
        setupTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
            guard let self, self.session.phase != .ready else { return }
            self.close(context: context, reason: .setupTimeout(milliseconds: Self.ms(timeout)), flush: false)
        }
        lastRequest = context.eventLoop.now
        scheduleIdleCheck(context: context, at: lastRequest + settings.idleTimeout)
        applyOutputBound(context: context)
        context.fireChannelActive()
    }

    /// Closes a connection no limit lets in, at once and before reading anything from it.
    private func refuse(context: ChannelHandlerContext, _ reason: RefusalReason, limit: Int) {
        registry.counters.count(reason)
        if settings.logConnections || settings.logErrors {
            let (peer, address) = (self.peer, self.address)
            let detail: String
            switch reason {
            case .maxClients:
                detail = "max_clients (\(limit)) clients are connected already and all have completed setup (server.max_clients=\(limit)); raise server.max_clients or find the client that leaks connections"
            case .maxClientsPerAddress:
                detail = "max_clients_per_address (\(limit)) connections from \(address) are open already (server.max_clients_per_address=\(limit))"
            case .rackSlot:
                preconditionFailure("a rack/slot is refused with a COTP disconnect and counted when the connection closes")
            }
            if limiter.allow(reason: reason.rawValue, address: address, on: context.eventLoop, summary: { n, from in
                "refused \(n) more connections from \(from) in the last \(Self.windowText) (\(reason.rawValue), server.\(reason.rawValue)=\(limit))"
            }) {
                logger.warning("refused \(peer): \(detail)")
            }
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        if admitted {
            registry.remove(context.channel)
            let reason = closeReason ?? (registry.stopping ? .shutdown : .clientDisconnected("the client closed the TCP connection"))
            registry.counters.count(reason.kind)
            if reason.kind == .rackSlot { registry.counters.count(RefusalReason.rackSlot) }
            // A close the server decided (a deadline, bad input, a refused rack/slot) is an
            // error event too: logged with log_errors even when log_connections is off.
            if reason.isServerDecided {
                if settings.logConnections || settings.logErrors {
                    let line = "client \(peer) disconnected: \(reason)"
                    let limit = reason.limit.map { ", " + $0 } ?? ""
                    if limiter.allow(reason: reason.kind.rawValue, address: address, on: context.eventLoop, summary: { n, from in
                        "closed \(n) more connections from \(from) in the last \(Self.windowText) (\(reason.kind.rawValue)\(limit))"
                    }) {
                        logger.warning("\(line)")
                    }
                }
            } else if settings.logConnections {
                logConnection(context, "client \(peer) disconnected: \(reason)")
            }
        }
        context.fireChannelInactive()
    }

    /// A line of a connection's ordinary story, at most ``LogLimiter/connectionBurst`` per
    /// address and window.
    private func logConnection(_ context: ChannelHandlerContext, _ line: String) {
        if limiter.allow(reason: "connection", address: address, burst: LogLimiter.connectionBurst, level: .info,
                         on: context.eventLoop, summary: { n, from in
                             "\(n) more connection log lines from \(from) in the last \(Self.windowText) were left out"
                         }) {
            logger.info("\(line)")
        }
    }

    // MARK: - Input

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard admitted, closeReason == nil else { return }
        let buffer = unwrapInboundIn(data)
        registry.counters.bytesReceived.add(buffer.readableBytes, ordering: .relaxed)
        buffer.withUnsafeReadableBytes { pump(context, $0) }
    }

    /// Feeds `bytes` to the session, then answers the requests it holds back, one output
    /// bound's worth at a time, for as long as the channel takes the answers.
    private func pump(_ context: ChannelHandlerContext, _ bytes: UnsafeRawBufferPointer) {
        pumping = true
        defer { pumping = false }
        var input = bytes
        let bound = session.outputBound
        let budget = bytesSentTotal + bound
        repeat {
            guard pumpOnce(context, &input, bound: bound) else { return }
            if bytesSentTotal >= budget, session.hasBufferedRequests, context.channel.isWritable {
                // One output bound per turn of the event loop: the other connections on this
                // loop are served before the rest of a pipelined burst.
                continueLater(context)
                break
            }
            if isPaused(context) {
                // Nothing drains until it is flushed. A flush that empties the queue makes the
                // channel writable again while pumping: then go on with the held-back requests;
                // otherwise the writability change resumes them.
                flushIfWritten(context)
            }
        } while closeReason == nil && session.hasBufferedRequests && context.channel.isWritable
        noteProgress(context)
        resumeReading(context)
    }

    /// Goes on with the held-back requests after the other ready work of this event loop.
    private func continueLater(_ context: ChannelHandlerContext) {
        flushIfWritten(context)
        guard !continuationScheduled else { return }
        continuationScheduled = true
        context.eventLoop.assumeIsolated().execute { [weak self] in
            guard let self else { return }
            self.continuationScheduled = false
            if context.channel.isWritable { self.resume(context) }
        }
    }

    /// Answers the held-back requests (outside ``pump(_:_:)``) and sends what that wrote.
    private func resume(_ context: ChannelHandlerContext) {
        guard closeReason == nil, !pumping else { return }
        if session.hasBufferedRequests { pump(context, UnsafeRawBufferPointer(start: nil, count: 0)) }
        flushIfWritten(context)
    }

    private func flushIfWritten(_ context: ChannelHandlerContext) {
        guard wroteSomething else { return }
        wroteSomething = false
        context.flush()
    }

    /// Passes on a read NIO asked for while paused, once nothing holds it back.
    private func resumeReading(_ context: ChannelHandlerContext) {
        if readPending, closeReason == nil, !isPaused(context) {
            readPending = false
            context.read()
        }
    }

    /// Answers what fits under the output bound while the channel is writable; false when the
    /// connection was closed.
    private func pumpOnce(_ context: ChannelHandlerContext, _ input: inout UnsafeRawBufferPointer, bound: Int) -> Bool {
        while true {
            let started = latency == nil ? nil : NIODeadline.now()
            let outcome = session.receive(input, into: &out, outputLimit: bound)
            input = UnsafeRawBufferPointer(start: nil, count: 0)
            drainEvents(context)
            countRequests(since: started)
            if !out.isEmpty {
                bytesSentTotal &+= out.count
                registry.counters.bytesSent.add(out.count, ordering: .relaxed)
                var response = context.channel.allocator.buffer(capacity: out.count)
                response.writeBytes(out)
                out.removeAll(keepingCapacity: true)
                context.write(wrapOutboundOut(response), promise: nil)
                wroteSomething = true
            }
            if case .close(let reason) = outcome {
                close(context: context, reason: reason, flush: true)
                return false
            }
            guard session.hasBufferedRequests, context.channel.isWritable else { return true }
        }
    }

    /// After input was taken: setup done, the receive deadline, idle time.
    private func noteProgress(_ context: ChannelHandlerContext) {
        guard closeReason == nil else { return }
        if session.completeRequests != requestsSeen {
            requestsSeen = session.completeRequests
            lastRequest = context.eventLoop.now
        }
        if setupTimer != nil, session.phase == .ready {
            setupTimer?.cancel()
            setupTimer = nil
            applyOutputBound(context: context)
        }
        defer { reportWaiting(context) }
        // Reading paused by us is not the client's delay: the deadline restarts on resume.
        guard let incomplete = session.incompleteInput, !isPaused(context) else {
            receiveTimer?.cancel()
            receiveTimer = nil
            receiveDeadlineFor = nil
            incompleteSince = nil
            return
        }
        guard incomplete != receiveDeadlineFor else { return }
        receiveTimer?.cancel()
        receiveDeadlineFor = incomplete
        incompleteSince = context.eventLoop.now
        let timeout = settings.receiveTimeout
        receiveTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
            self?.close(context: context, reason: .receiveTimeout(milliseconds: Self.ms(timeout)), flush: false)
        }
    }

    /// Tells the registry what the connection waits for, when that changed.
    private func reportWaiting(_ context: ChannelHandlerContext) {
        guard admitted, closeReason == nil else { return }
        let served = session.requestsAnswered > 0
        let now: ConnectionRegistry.Waiting?
        if session.phase != .ready {
            now = .init(since: admittedAt, what: .setup)
        } else if !context.channel.isWritable, let since = unwritableSince {
            now = .init(since: since, what: .answers, served: served)
        } else if let since = incompleteSince {
            now = .init(since: since, what: .request, served: served)
        } else {
            now = nil
        }
        guard now != waitingReported else { return }
        waitingReported = now
        registry.setWaiting(context.channel, now)
    }

    private func countRequests(since started: NIODeadline?) {
        let answered = session.requestsAnswered
        guard answered != requestsCounted, let record else { return }
        record.requests.add(answered - requestsCounted, ordering: .relaxed)
        registry.counters.requestsTotal.add(answered - requestsCounted, ordering: .relaxed)
        requestsCounted = answered
        if let started, let latency { latency.record(.nanoseconds((NIODeadline.now() - started).nanoseconds)) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfWritten(context)
    }

    // MARK: - Backpressure

    /// True while no more is read: the unsent answers exceed the bound, or requests wait.
    private func isPaused(_ context: ChannelHandlerContext) -> Bool {
        !context.channel.isWritable || session.hasBufferedRequests
    }

    /// NIO asks for the next read when it wants one; it is held back while paused.
    func read(context: ChannelHandlerContext) {
        if admitted, closeReason == nil, isPaused(context) {
            readPending = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            sendTimer?.cancel()
            sendTimer = nil
            unwritableSince = nil
            reportWaiting(context)
            if !pumping {
                resume(context)
                resumeReading(context)
            }
        } else {
            if unwritableSince == nil { unwritableSince = context.eventLoop.now }
            reportWaiting(context)
            startThrottling(context)
        }
        context.fireChannelWritabilityChanged()
    }

    private func startThrottling(_ context: ChannelHandlerContext) {
        if !throttled, admitted {
            throttled = true
            registry.counters.throttled.add(1, ordering: .relaxed)
            if settings.logErrors {
                let amq = session.grantedAmQ.map(String.init) ?? "1"
                let peer = self.peer
                if limiter.allow(reason: "throttled", address: address, level: .notice, on: context.eventLoop, summary: { n, from in
                    "throttled \(n) more connections from \(from) in the last \(Self.windowText) that did not take their answers"
                }) {
                    logger.notice("client \(peer) has more requests in flight than the AmQ \(amq) it was granted; reading from it is paused until it takes its answers (output bound \(session.outputBound) bytes)")
                }
            }
        }
        guard sendTimer == nil else { return }
        let timeout = settings.sendTimeout
        sendTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
            self?.close(context: context, reason: .sendTimeout(milliseconds: Self.ms(timeout)), flush: false)
        }
    }

    /// Unsent answers beyond the session's bound make the channel unwritable, which pauses reading.
    private func applyOutputBound(context: ChannelHandlerContext) {
        let bound = session.outputBound
        guard bound != boundApplied, let options = context.channel.syncOptions else { return }
        boundApplied = bound
        try? options.setOption(.writeBufferWaterMark, value: .init(low: bound / 2, high: bound))
    }

    // MARK: - Idle and close

    private func scheduleIdleCheck(context: ChannelHandlerContext, at deadline: NIODeadline) {
        let timeout = settings.idleTimeout
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            guard let self, self.closeReason == nil else { return }
            let due = self.lastRequest + timeout
            let now = context.eventLoop.now
            if now >= due, !self.isPaused(context) {
                self.close(context: context, reason: .idleTimeout(milliseconds: Self.ms(timeout)), flush: false)
            } else {
                // Paused by its own unread answers: the send deadline decides, not idleness.
                self.scheduleIdleCheck(context: context, at: now >= due ? now + timeout : due)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(context: context, reason: .socketError("\(error)"), flush: false)
    }

    private func close(context: ChannelHandlerContext, reason: CloseReason, flush: Bool) {
        guard closeReason == nil else { return }
        closeReason = reason
        cancelTimers()
        if flush { context.flush() }
        context.close(promise: nil)
    }

    private func cancelTimers() {
        for timer in [setupTimer, receiveTimer, idleTimer, sendTimer] { timer?.cancel() }
        (setupTimer, receiveTimer, idleTimer, sendTimer) = (nil, nil, nil, nil)
    }

    static func ms(_ t: TimeAmount) -> Int { Int(t.nanoseconds / 1_000_000) }
    static let windowText = "\(LogLimiter.window.nanoseconds / 1_000_000_000) s"

    // MARK: - Events

    private func drainEvents(_ context: ChannelHandlerContext) {
        guard !session.events.isEmpty else { return }
        for event in session.events { log(event, context) }
        session.events.removeAll(keepingCapacity: true)
    }

    /// Keeps the connection's record current; called for the few events a connection has.
    private func note(_ event: SessionEvent) {
        guard let record else { return }
        switch event {
        case .connected(let type, let rack, let slot, _):
            record.info.withLock {
                $0.connectionType = type.map(Self.connectionType)
                $0.rack = rack
                $0.slot = slot
            }
        case .negotiated(let proposed, let agreed):
            record.info.withLock {
                $0.pduProposed = proposed
                $0.pduAgreed = agreed
            }
        case .pduRefused(let proposed):
            record.info.withLock { $0.pduProposed = proposed }
            record.refusedRequests.add(1, ordering: .relaxed)
            registry.counters.refusedRequests.add(1, ordering: .relaxed)
        case .exceededPDU:
            record.pduOverruns.add(1, ordering: .relaxed)
            registry.counters.pduOverruns.add(1, ordering: .relaxed)
        case .refused:
            record.refusedRequests.add(1, ordering: .relaxed)
            registry.counters.refusedRequests.add(1, ordering: .relaxed)
        case .control, .dataAccess:
            break
        }
    }

    static func connectionType(_ t: UInt8) -> String {
        [1: "PG", 2: "OP", 3: "S7 basic"][Int(t)] ?? "type 0x\(String(t, radix: 16))"
    }

    private func log(_ event: SessionEvent, _ context: ChannelHandlerContext) {
        note(event)
        switch event {
        case .connected(let type, let rack, let slot, let tpdu):
            guard settings.logConnections else { return }
            let kind = type.map(Self.connectionType) ?? "no TSAP"
            logConnection(context, "client \(peer) opened an ISO connection: \(kind), rack \(rack.map(String.init) ?? "?") slot \(slot.map(String.init) ?? "?"), TPDU \(tpdu) bytes")
        case .negotiated(let proposed, let agreed):
            guard settings.logConnections else { return }
            logConnection(context, "client \(peer) set up communication: proposed PDU \(proposed), agreed \(agreed)")
        case .pduRefused(let proposed):
            guard settings.logErrors else { return }
            limited(context, "pdu_refused", "client \(peer) proposed PDU \(proposed), below the usable minimum; setup refused")
        case .exceededPDU(let what, let size, let agreed):
            guard settings.logErrors else { return }
            limited(context, "pdu_exceeded", "client \(peer) sent a \(what) of \(size) bytes, more than the agreed PDU of \(agreed); answered with error 0x8500")
        case .refused(let what, let error):
            guard settings.logErrors else { return }
            limited(context, "request_refused", "client \(peer): \(what) refused: \(error)", level: .notice)
        case .control(let what):
            logger.notice("client \(peer): \(what)")
        case .dataAccess(let write, let item, let code):
            logger.info("client \(peer) \(write ? "wrote" : "read") \(item): \(code == 0xFF ? "ok" : "return code 0x\(String(code, radix: 16))")")
        }
    }

    /// A line a client can cause once per request, at most ``LogLimiter/burst`` per window.
    private func limited(_ context: ChannelHandlerContext, _ reason: String, _ line: String, level: Logger.Level = .warning) {
        if limiter.allow(reason: reason, address: address, level: level, on: context.eventLoop, summary: { n, from in
            "\(n) more lines like the last (\(reason)) from \(from) in the last \(Self.windowText) were left out"
        }) {
            logger.log(level: level, "\(line)")
        }
    }

    static func describe(_ address: SocketAddress) -> String {
        switch address {
        case .v6: return "[\(address.ipAddress ?? "?")]:\(address.port ?? 0)"
        default: return "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
        }
    }
}
