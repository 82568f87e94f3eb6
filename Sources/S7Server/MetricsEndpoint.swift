import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Serves `GET /metrics` (Prometheus text format) on a listening socket it is handed, a
/// loopback TCP port or a Unix socket, on the server's event loops. One answer per connection.
/// Anything else gets 404 or 405; a malformed request gets 400 (NIO's HTTP decoder); a
/// scraper that sends nothing for ``idleTimeout`` is closed; at most ``maximumConnections``
/// at once.
enum MetricsEndpoint {
    static let maximumConnections = 16
    static let idleTimeout: TimeAmount = .seconds(10)
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    static func start(on descriptor: CInt, group: any EventLoopGroup, metrics: ServerMetrics,
                      snapshot: @escaping @Sendable () -> ServerSnapshot, logger: Logger) async throws -> any Channel {
        let counter = ConnectionCount()
        return try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard counter.enter() else {
                        logger.warning("metrics: refused a scraper: \(maximumConnections) metrics connections are open already")
                        channel.close(promise: nil)
                        return
                    }
                    channel.closeFuture.whenComplete { _ in counter.leave() }
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(IdleStateHandler(readTimeout: idleTimeout))
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(MetricsHTTPHandler(metrics: metrics, snapshot: snapshot))
                }
            }
            .withBoundSocket(descriptor)
            .get()
    }

    /// Open metrics connections against the limit.
    final class ConnectionCount: Sendable {
        let value = Atomic<Int>(0)
        func enter() -> Bool {
            if value.add(1, ordering: .relaxed).newValue <= MetricsEndpoint.maximumConnections { return true }
            value.subtract(1, ordering: .relaxed)
            return false
        }
        func leave() { value.subtract(1, ordering: .relaxed) }
    }
}

/// One scrape: the request head decides, the body (if any) is ignored, the answer closes.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let metrics: ServerMetrics
    private let snapshot: @Sendable () -> ServerSnapshot
    private var head: HTTPRequestHead?

    init(metrics: ServerMetrics, snapshot: @escaping @Sendable () -> ServerSnapshot) {
        self.metrics = metrics
        self.snapshot = snapshot
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(context: context, to: head)
        }
    }

    /// A malformed request: NIO's error handler before this one has answered 400; end here.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func respond(context: ChannelHandlerContext, to head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let status: HTTPResponseStatus
        var body: [UInt8]
        var headers = HTTPHeaders()
        if path != "/metrics" {
            (status, body) = (.notFound, Array("s7commd serves its metrics at /metrics\n".utf8))
        } else if head.method != .GET && head.method != .HEAD {
            (status, body) = (.methodNotAllowed, Array("only GET and HEAD are served\n".utf8))
            headers.add(name: "Allow", value: "GET, HEAD")
        } else {
            (status, body) = (.ok, metrics.render(snapshot()))
        }
        headers.add(name: "Content-Type", value: status == .ok ? MetricsEndpoint.contentType : "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        if head.method == .HEAD { body = [] }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
