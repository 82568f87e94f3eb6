import Logging
import NIOCore
import NIOPosix
import PLCMemory
import S7Session
import Synchronization

/// What the server enforces around each session.
public struct ServerSettings: Sendable {
    public var maxClients: Int
    /// Connections one IP address may hold at once; 0: no limit.
    public var maxClientsPerAddress: Int
    /// A client that does not take our data for this long is dropped.
    public var sendTimeout: TimeAmount
    /// A request left incomplete (part of a frame received) for this long is dropped.
    public var receiveTimeout: TimeAmount
    /// A client that sends nothing for this long is dropped.
    public var idleTimeout: TimeAmount
    public var logConnections: Bool
    public var logErrors: Bool

    public init(maxClients: Int = 32, maxClientsPerAddress: Int = 0, sendTimeout: TimeAmount = .seconds(3), receiveTimeout: TimeAmount = .seconds(3),
                idleTimeout: TimeAmount = .seconds(10), logConnections: Bool = true, logErrors: Bool = true) {
        self.maxClients = maxClients
        self.maxClientsPerAddress = maxClientsPerAddress
        self.sendTimeout = sendTimeout
        self.receiveTimeout = receiveTimeout
        self.idleTimeout = idleTimeout
        self.logConnections = logConnections
        self.logErrors = logErrors
    }
}

/// Serves S7 clients on a listening socket it is given, with SwiftNIO. It never binds.
public final class S7Server: Sendable {
    /// Settings that `reload` may replace; each new connection takes the current ones.
    private let live: Mutex<(settings: ServerSettings, session: SessionConfiguration)>
    let memory: any PLCMemoryAccess
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let registry: ConnectionRegistry
    let logLimiter: LogLimiter
    /// What monitoring scrapes, when metrics are served (``startMetrics(listeningOn:)``).
    public let metrics: ServerMetrics?
    private let serverChannel = Mutex<(any Channel)?>(nil)
    private let metricsChannels = Mutex<[any Channel]>([])

    public init(settings: ServerSettings, session: SessionConfiguration, memory: any PLCMemoryAccess,
                logger: Logger, threads: Int = System.coreCount, metrics: ServerMetrics? = nil) {
        self.live = Mutex((settings, session))
        self.memory = memory
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        self.registry = ConnectionRegistry(limit: settings.maxClients, perAddress: settings.maxClientsPerAddress)
        self.logLimiter = LogLimiter(logger: logger)
        self.metrics = metrics
    }

    /// The settings new connections get.
    public var settings: ServerSettings { live.withLock { $0.settings } }

    /// Replaces the settings for connections opened from now on; the client limit applies at
    /// once to newcomers. Connections already open keep what they negotiated.
    public func apply(settings: ServerSettings, session: SessionConfiguration) {
        live.withLock { $0 = (settings, session) }
        registry.limit = settings.maxClients
        registry.limitPerAddress = settings.maxClientsPerAddress
    }

    /// Number of clients connected now.
    public var connectedClients: Int { registry.count }

    /// The clients connected now and the counters since start, for `s7commd status`.
    public func snapshot() -> ServerSnapshot { registry.snapshot() }

    /// SO_RCVBUF and SO_SNDBUF of client sockets (Linux doubles them): far more than a client
    /// keeping to its AmQ ever has in flight (8 PDUs of at most 960 bytes), and a bound on what
    /// a client that sends without reading makes the kernel hold and the server answer before
    /// the backpressure in ``S7ChannelHandler`` stops reading from it.
    public static let socketBufferBytes = 16 * 1024

    /// Starts accepting on `descriptor`, a bound and listening TCP socket; NIO owns it from now on.
    @discardableResult
    public func start(listeningOn descriptor: CInt) async throws -> SocketAddress? {
        let memory = self.memory
        let logger = self.logger
        let registry = self.registry
        let limiter = self.logLimiter
        let latency = metrics?.latency
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Set on the listener so that accepted sockets inherit it before their handshake
            // (the window a client is offered), and on each client for its answers: what a
            // client that never reads can make the server queue and compute in the kernel.
            .serverChannelOption(.socketOption(.so_rcvbuf), value: Self.socketBufferBytes)
            .childChannelOption(.socketOption(.so_sndbuf), value: Self.socketBufferBytes)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            // Reading stops while a connection's answers back up (S7ChannelHandler); these bound
            // what one read can bring in meanwhile: one read per event-loop turn, of at most
            // ``S7ChannelHandler/maximumRead`` bytes.
            .childChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(
                minimum: 64, initial: 2048, maximum: S7ChannelHandler.maximumRead))
            .childChannelInitializer { [self] channel in
                let (settings, session) = self.live.withLock { $0 }
                return channel.eventLoop.makeCompletedFuture {
                    let handler = S7ChannelHandler(session: S7Session(configuration: session, memory: memory),
                                                   settings: settings, registry: registry, logger: logger,
                                                   limiter: limiter, latency: latency)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .withBoundSocket(descriptor)
            .get()
        serverChannel.withLock { $0 = channel }
        return channel.localAddress
    }

    /// Serves the metrics (`GET /metrics`) on `descriptor`, a bound and listening TCP or Unix
    /// stream socket; NIO owns it from now on. Needs `metrics` given at init.
    public func startMetrics(listeningOn descriptor: CInt) async throws {
        guard let metrics else { throw MetricsNotEnabled() }
        let registry = self.registry
        let channel = try await MetricsEndpoint.start(on: descriptor, group: group, metrics: metrics,
                                                      snapshot: { registry.snapshot() }, logger: logger)
        metricsChannels.withLock { $0.append(channel) }
    }

    struct MetricsNotEnabled: Error, CustomStringConvertible {
        var description: String { "metrics are not enabled on this server (metrics.enabled is false)" }
    }

    /// Stops accepting, closes every client, and stops the event loops.
    public func shutdown() async {
        let channel = serverChannel.withLock { c -> (any Channel)? in
            defer { c = nil }
            return c
        }
        try? await channel?.close()
        for m in metricsChannels.withLock({ c in defer { c = [] }; return c }) {
            try? await m.close()
        }
        registry.stopping = true
        for client in registry.all {
            try? await client.close()
        }
        try? await group.shutdownGracefully()
    }
}
