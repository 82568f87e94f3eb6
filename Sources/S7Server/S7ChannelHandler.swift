import Logging
import NIOCore
import Prometheus
import S7Session

/// The thin shell around one ``S7Session``: bytes from the socket in, responses out, timers and
/// log lines around it. All protocol decisions are the session's.
final class S7ChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var session: S7Session
    private var out: [UInt8] = []
    private let settings: ServerSettings
    private let registry: ConnectionRegistry
    private var logger: Logger
    private var peer = "unknown peer"
    private var admitted = false
    private var closeReason: String?
    private var idleTimer: Scheduled<Void>?
    private var lastActivity = NIODeadline.now()
    private var receiveTimer: Scheduled<Void>?
    private var sendTimer: Scheduled<Void>?
    private var wroteSomething = false
    private var record: ConnectionRecord?
    private var requestsCounted = 0
    /// The latency histogram, when metrics are served.
    private let latency: DurationHistogram?

    init(session: S7Session, settings: ServerSettings, registry: ConnectionRegistry, logger: Logger, latency: DurationHistogram? = nil) {
        self.session = session
        self.settings = settings
        self.registry = registry
        self.logger = logger
        self.latency = latency
        out.reserveCapacity(1024)
    }

    func channelActive(context: ChannelHandlerContext) {
        peer = context.remoteAddress.map(Self.describe) ?? "unknown peer"
        logger[metadataKey: "peer"] = .string(peer)
        let record = ConnectionRecord(peer: peer)
        guard registry.admit(context.channel, record: record) else {
            registry.counters.refusedMaxClients.add(1, ordering: .relaxed)
            if settings.logConnections || settings.logErrors { logger.warning("refused \(peer): max_clients (\(registry.limit)) clients are connected already; raise server.max_clients or find the client that leaks connections") }
            context.close(promise: nil)
            return
        }
        admitted = true
        self.record = record
        registry.counters.connectionsAccepted.add(1, ordering: .relaxed)
        if settings.logConnections { logger.info("client \(peer) connected (\(registry.count) of \(registry.limit))") }
        armIdleTimer(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        receiveTimer?.cancel()
        sendTimer?.cancel()
        if admitted {
            registry.remove(context.channel)
            // A close the server decided (a timeout, bad input, a refused rack/slot) is an
            // error event too: logged with log_errors even when log_connections is off.
            if let reason = closeReason, !reason.hasPrefix("client disconnected") {
                if settings.logConnections || settings.logErrors { logger.warning("client \(peer) disconnected: \(reason)") }
            } else if settings.logConnections {
                logger.info("client \(peer) disconnected: \(closeReason ?? "the client closed the connection")")
            }
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard admitted, closeReason == nil else { return }
        let buffer = unwrapInboundIn(data)
        let started = latency == nil ? nil : NIODeadline.now()
        registry.counters.bytesReceived.add(buffer.readableBytes, ordering: .relaxed)
        let outcome = buffer.withUnsafeReadableBytes { session.receive($0, into: &out) }
        drainEvents()
        let answered = session.requestsAnswered
        if answered != requestsCounted, let record {
            record.requests.add(answered - requestsCounted, ordering: .relaxed)
            registry.counters.requestsTotal.add(answered - requestsCounted, ordering: .relaxed)
            requestsCounted = answered
            if let started, let latency { latency.record(.nanoseconds((NIODeadline.now() - started).nanoseconds)) }
        }
        if !out.isEmpty {
            registry.counters.bytesSent.add(out.count, ordering: .relaxed)
            var response = context.channel.allocator.buffer(capacity: out.count)
            response.writeBytes(out)
            out.removeAll(keepingCapacity: true)
            context.write(wrapOutboundOut(response), promise: nil)
            wroteSomething = true
        }
        armIdleTimer(context: context)
        if case .close(let reason) = outcome {
            if reason.hasPrefix("connection to ") {
                registry.counters.refusedConnections.add(1, ordering: .relaxed)
            } else if !reason.hasPrefix("client disconnected") {
                registry.counters.closedBadInput.add(1, ordering: .relaxed)
            }
            close(context: context, reason: reason, flush: true)
            return
        }
        receiveTimer?.cancel()
        receiveTimer = nil
        if session.hasPartialInput {
            let timeout = settings.receiveTimeout
            receiveTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
                self?.registry.counters.droppedReceive.add(1, ordering: .relaxed)
                self?.close(context: context, reason: "request incomplete after \(timeout.nanoseconds / 1_000_000) ms (server.recv_timeout_ms)", flush: false)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if wroteSomething {
            wroteSomething = false
            context.flush()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            sendTimer?.cancel()
            sendTimer = nil
        } else if sendTimer == nil {
            let timeout = settings.sendTimeout
            sendTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
                self?.registry.counters.droppedSend.add(1, ordering: .relaxed)
                self?.close(context: context, reason: "client took no data for \(timeout.nanoseconds / 1_000_000) ms (server.send_timeout_ms)", flush: false)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(context: context, reason: "socket error: \(error)", flush: false)
    }

    /// Notes activity; the idle timer is armed once and re-armed only when it fires, so a busy
    /// connection costs a clock read per request instead of a timer cancel and reschedule.
    private func armIdleTimer(context: ChannelHandlerContext) {
        lastActivity = context.eventLoop.now
        guard idleTimer == nil else { return }
        scheduleIdleCheck(context: context, at: lastActivity + settings.idleTimeout)
    }

    private func scheduleIdleCheck(context: ChannelHandlerContext, at deadline: NIODeadline) {
        let timeout = settings.idleTimeout
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            guard let self, self.closeReason == nil else { return }
            let due = self.lastActivity + timeout
            if context.eventLoop.now >= due {
                self.registry.counters.droppedIdle.add(1, ordering: .relaxed)
                self.close(context: context, reason: "no request for \(timeout.nanoseconds / 1_000_000) ms (server.ping_timeout_ms)", flush: false)
            } else {
                self.scheduleIdleCheck(context: context, at: due)
            }
        }
    }

    private func close(context: ChannelHandlerContext, reason: String, flush: Bool) {
        guard closeReason == nil else { return }
        closeReason = reason
        if flush { context.flush() }
        context.close(promise: nil)
    }

    private func drainEvents() {
        guard !session.events.isEmpty else { return }
        for event in session.events { log(event) }
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

    private func log(_ event: SessionEvent) {
        note(event)
        switch event {
        case .connected(let type, let rack, let slot, let tpdu):
            guard settings.logConnections else { return }
            let kind = type.map(Self.connectionType) ?? "no TSAP"
            logger.info("client \(peer) opened an ISO connection: \(kind), rack \(rack.map(String.init) ?? "?") slot \(slot.map(String.init) ?? "?"), TPDU \(tpdu) bytes")
        case .negotiated(let proposed, let agreed):
            guard settings.logConnections else { return }
            logger.info("client \(peer) set up communication: proposed PDU \(proposed), agreed \(agreed)")
        case .pduRefused(let proposed):
            guard settings.logErrors else { return }
            logger.warning("client \(peer) proposed PDU \(proposed), below the usable minimum; setup refused")
        case .exceededPDU(let what, let size, let agreed):
            guard settings.logErrors else { return }
            logger.warning("client \(peer) sent a \(what) of \(size) bytes, more than the agreed PDU of \(agreed); answered with error 0x8500")
        case .refused(let what, let error):
            guard settings.logErrors else { return }
            logger.notice("client \(peer): \(what) refused: \(error)")
        case .control(let what):
            logger.notice("client \(peer): \(what)")
        case .dataAccess(let write, let item, let code):
            logger.info("client \(peer) \(write ? "wrote" : "read") \(item): \(code == 0xFF ? "ok" : "return code 0x\(String(code, radix: 16))")")
        }
    }

    static func describe(_ address: SocketAddress) -> String {
        switch address {
        case .v6: return "[\(address.ipAddress ?? "?")]:\(address.port ?? 0)"
        default: return "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
        }
    }
}
