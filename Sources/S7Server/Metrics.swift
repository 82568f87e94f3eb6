import NIOCore
import Prometheus
import S7Session
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

    /// A registry counter fed from a total counted elsewhere: each call adds what is new.
    private struct Carried {
        let counter: Counter
        var last = 0

        mutating func carry(_ total: Int) {
            if total > last { counter.increment(by: Int64(total - last)) }
            last = max(last, total)
        }
    }

    private struct Exported {
        var counters: [(Carried, @Sendable (ServerCounters) -> Int)]
        var restarts: [String: Carried]
        var sandboxKills: Carried
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
        var list: [(Counter, @Sendable (ServerCounters) -> Int)] = [
            (counter("requests", "total", "S7 requests answered"), { $0.requestsTotal }),
            (counter("request_errors", "total", "S7 requests answered with an error, by kind", [("kind", "refused")]), { $0.refusedRequests }),
            (counter("request_errors", "total", "S7 requests answered with an error, by kind", [("kind", "pdu_exceeded")]), { $0.pduOverruns }),
            (counter("received_bytes", "total", "bytes received from S7 clients"), { $0.bytesReceived }),
            (counter("sent_bytes", "total", "bytes sent to S7 clients"), { $0.bytesSent }),
            (counter("connections", "total", "S7 client connections admitted"), { $0.connectionsAccepted }),
            (counter("connections_throttled", "total", "connections whose reading was paused because their answers backed up"), { $0.throttled }),
        ]
        for reason in RefusalReason.allCases {
            list.append((counter("connections_refused", "total", "connections refused, by reason", [("reason", reason.rawValue)]), { $0.refused(reason) }))
        }
        for kind in CloseReason.Kind.allCases {
            list.append((counter("connections_closed", "total", "admitted connections that ended, by reason", [("reason", kind.rawValue)]), { $0.closed(kind) }))
        }
        var restarts: [String: Carried] = [:]
        for child in ["worker", "memory"] {
            restarts[child] = Carried(counter: counter("child_restarts", "total", "restarts of each child process by the supervisor", [("child", child)]))
        }
        let sandboxKills = Carried(counter: counter("sandbox_kills", "total", "S7 workers ended by their sandbox (a system call outside the seccomp filter)"))
        exported = Mutex(Exported(counters: list.map { (Carried(counter: $0.0), $0.1) }, restarts: restarts, sandboxKills: sandboxKills))
        clients = r.makeGauge(descriptor: MetricNameDescriptor(namespace: "s7commd", metricName: "clients", unitName: "",
                                                               helpText: "S7 clients connected now"))
        maxClients = r.makeGauge(descriptor: MetricNameDescriptor(namespace: "s7commd", metricName: "max_clients", unitName: "",
                                                                  helpText: "server.max_clients in effect"))
        latency = r.makeDurationHistogram(
            descriptor: MetricNameDescriptor(namespace: "s7commd", metricName: "request_duration", unitName: "seconds",
                                             helpText: "time from a request's bytes arriving to its answer being queued"),
            labels: [], buckets: Self.latencyBuckets)
    }

    /// Records the supervisor's restart counts per child ("worker", "memory") and how often the
    /// sandbox ended a worker, as it reports them.
    public func setRestarts(_ counts: [String: Int], sandboxKills: Int) {
        exported.withLock { e in
            for (child, count) in counts { e.restarts[child]?.carry(count) }
            e.sandboxKills.carry(sandboxKills)
        }
    }

    /// The exposition text for one scrape of `snapshot`.
    func render(_ snapshot: ServerSnapshot) -> [UInt8] {
        exported.withLock { e in
            for i in e.counters.indices { e.counters[i].0.carry(e.counters[i].1(snapshot.counters)) }
            clients.set(Double(snapshot.clients.count))
            maxClients.set(Double(snapshot.maxClients))
            return registry.emitToBuffer()
        }
    }
}
