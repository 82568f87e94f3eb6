import NIOCore
import Prometheus
import Synchronization

/// What a monitoring system scrapes: the server's counters (the same ones `s7commd status`
/// shows), the clients connected now, the supervisor's restart counts, and a histogram of how
/// long the server takes to answer a request. Rendered in the Prometheus text format by
/// swift-prometheus.
///
/// The request path keeps counting in ``ServerCounterSet`` (one relaxed atomic add each), and
/// a scrape carries what changed since the last scrape into the registry's counters, so the
/// registry costs the request path nothing but the latency histogram.
public final class ServerMetrics: Sendable {
    /// Upper bounds of the latency histogram: a request costs microseconds, a slow one a
    /// millisecond or more (a busy host, a long SZL answer, a stalled memory lock).
    public static let latencyBuckets: [Duration] = [
        .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
    ]

    let registry = PrometheusCollectorRegistry()
    /// From a read's bytes arriving to its answers being queued for the socket, per read that
    /// answered at least one request.
    let latency: DurationHistogram

    private struct Exported {
        var counters: [(Counter, KeyPath<ServerCounters, Int>)]
        var last: [Int]
        var restarts: [String: (counter: Counter, last: Int)]
    }

    private let exported: Mutex<Exported>
    private let clients: Gauge
    private let maxClients: Gauge

    public init() {
        let r = registry
        func counter(_ name: String, _ unit: String, _ help: String, _ labels: [(String, String)] = []) -> Counter {
            r.makeCounter(descriptor: MetricNameDescriptor(namespace: "s7commd", metricName: name, unitName: unit, helpText: help),
                          labels: labels)
        }
        let list: [(Counter, KeyPath<ServerCounters, Int>)] = [
            (counter("requests", "total", "S7 requests answered"), \.requestsTotal),
            (counter("request_errors", "total", "S7 requests answered with an error, by kind", [("kind", "refused")]), \.refusedRequests),
            (counter("request_errors", "total", "S7 requests answered with an error, by kind", [("kind", "pdu_exceeded")]), \.pduOverruns),
            (counter("received_bytes", "total", "bytes received from S7 clients"), \.bytesReceived),
            (counter("sent_bytes", "total", "bytes sent to S7 clients"), \.bytesSent),
            (counter("connections", "total", "S7 client connections admitted"), \.connectionsAccepted),
            (counter("connections_refused", "total", "connections refused, by reason", [("reason", "max_clients")]), \.refusedMaxClients),
            (counter("connections_refused", "total", "connections refused, by reason", [("reason", "rack_slot_or_tsap")]), \.refusedConnections),
            (counter("connections_dropped", "total", "connections the server closed, by reason", [("reason", "ping_timeout")]), \.droppedIdle),
            (counter("connections_dropped", "total", "connections the server closed, by reason", [("reason", "recv_timeout")]), \.droppedReceive),
            (counter("connections_dropped", "total", "connections the server closed, by reason", [("reason", "send_timeout")]), \.droppedSend),
            (counter("connections_dropped", "total", "connections the server closed, by reason", [("reason", "bad_input")]), \.closedBadInput),
        ]
        var restarts: [String: (counter: Counter, last: Int)] = [:]
        for child in ["worker", "memory"] {
            restarts[child] = (counter("child_restarts", "total", "restarts of each child process by the supervisor", [("child", child)]), 0)
        }
        exported = Mutex(Exported(counters: list, last: Array(repeating: 0, count: list.count), restarts: restarts))
        clients = r.makeGauge(descriptor: MetricNameDescriptor(namespace: "s7commd", metricName: "clients", unitName: "",
                                                               helpText: "S7 clients connected now"))
        maxClients = r.makeGauge(descriptor: MetricNameDescriptor(namespace: "s7commd", metricName: "max_clients", unitName: "",
                                                                  helpText: "server.max_clients in effect"))
        latency = r.makeDurationHistogram(
            descriptor: MetricNameDescriptor(namespace: "s7commd", metricName: "request_duration", unitName: "seconds",
                                             helpText: "time from a request's bytes arriving to its answer being queued"),
            labels: [], buckets: Self.latencyBuckets)
    }

    /// Records the supervisor's restart counts per child ("worker", "memory"), as it reports them.
    public func setRestarts(_ counts: [String: Int]) {
        exported.withLock { e in
            for (child, count) in counts {
                guard var entry = e.restarts[child] else { continue }
                if count > entry.last { entry.counter.increment(by: Int64(count - entry.last)) }
                entry.last = max(entry.last, count)
                e.restarts[child] = entry
            }
        }
    }

    /// The exposition text for one scrape of `snapshot`.
    func render(_ snapshot: ServerSnapshot) -> [UInt8] {
        exported.withLock { e in
            for (i, (counter, path)) in e.counters.enumerated() {
                let now = snapshot.counters[keyPath: path]
                if now > e.last[i] { counter.increment(by: Int64(now - e.last[i])) }
                e.last[i] = max(e.last[i], now)
            }
            clients.set(Double(snapshot.clients.count))
            maxClients.set(Double(snapshot.maxClients))
            return registry.emitToBuffer()
        }
    }
}
