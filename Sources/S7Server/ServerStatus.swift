import Foundation
import Synchronization

/// One client connection as `s7commd status` shows it.
public struct ClientStatus: Codable, Equatable, Sendable {
    public var peer: String
    public var connectedSince: Date
    /// "PG", "OP", "S7 basic", "type 0x…", or nil before the COTP connection request.
    public var connectionType: String?
    public var rack: Int?
    public var slot: Int?
    public var pduProposed: Int?
    public var pduAgreed: Int?
    public var requests: Int
    /// Requests answered with an error (refused, malformed) plus PDU overruns.
    public var errors: Int
    public var refusedRequests: Int
    public var pduOverruns: Int
}

/// Server-wide counters since the worker started.
public struct ServerCounters: Codable, Equatable, Sendable {
    public var requestsTotal: Int
    public var refusedMaxClients: Int
    public var droppedIdle: Int
    public var droppedReceive: Int
    public var droppedSend: Int
    public var closedBadInput: Int
    public var refusedConnections: Int
    /// Requests answered with an error (refused, malformed), over every connection.
    public var refusedRequests: Int
    /// Requests larger than the agreed PDU, over every connection.
    public var pduOverruns: Int
    public var bytesReceived: Int
    public var bytesSent: Int
    /// Connections admitted (under max_clients).
    public var connectionsAccepted: Int
}

/// What the worker answers to a status request.
public struct ServerSnapshot: Codable, Equatable, Sendable {
    public var maxClients: Int
    public var clients: [ClientStatus]
    public var counters: ServerCounters

    public init(maxClients: Int, clients: [ClientStatus], counters: ServerCounters) {
        self.maxClients = maxClients
        self.clients = clients
        self.counters = counters
    }
}

/// The record of one connection the handler keeps current: what changes per request is an
/// atomic counter; the rest changes a few times per connection, under a lock.
final class ConnectionRecord: Sendable {
    struct Info {
        var peer: String
        var since: Date
        var connectionType: String?
        var rack: Int?
        var slot: Int?
        var pduProposed: Int?
        var pduAgreed: Int?
    }

    let info: Mutex<Info>
    let requests = Atomic<Int>(0)
    let refusedRequests = Atomic<Int>(0)
    let pduOverruns = Atomic<Int>(0)

    init(peer: String) {
        info = Mutex(Info(peer: peer, since: Date()))
    }

    var status: ClientStatus {
        let i = info.withLock { $0 }
        let refused = refusedRequests.load(ordering: .relaxed)
        let overruns = pduOverruns.load(ordering: .relaxed)
        return ClientStatus(peer: i.peer, connectedSince: i.since, connectionType: i.connectionType, rack: i.rack, slot: i.slot,
                            pduProposed: i.pduProposed, pduAgreed: i.pduAgreed, requests: requests.load(ordering: .relaxed),
                            errors: refused + overruns, refusedRequests: refused, pduOverruns: overruns)
    }
}

/// Counters shared by every connection of a server.
final class ServerCounterSet: Sendable {
    let requestsTotal = Atomic<Int>(0)
    let refusedMaxClients = Atomic<Int>(0)
    let droppedIdle = Atomic<Int>(0)
    let droppedReceive = Atomic<Int>(0)
    let droppedSend = Atomic<Int>(0)
    let closedBadInput = Atomic<Int>(0)
    let refusedConnections = Atomic<Int>(0)
    let refusedRequests = Atomic<Int>(0)
    let pduOverruns = Atomic<Int>(0)
    let bytesReceived = Atomic<Int>(0)
    let bytesSent = Atomic<Int>(0)
    let connectionsAccepted = Atomic<Int>(0)

    var value: ServerCounters {
        ServerCounters(requestsTotal: requestsTotal.load(ordering: .relaxed),
                       refusedMaxClients: refusedMaxClients.load(ordering: .relaxed),
                       droppedIdle: droppedIdle.load(ordering: .relaxed),
                       droppedReceive: droppedReceive.load(ordering: .relaxed),
                       droppedSend: droppedSend.load(ordering: .relaxed),
                       closedBadInput: closedBadInput.load(ordering: .relaxed),
                       refusedConnections: refusedConnections.load(ordering: .relaxed),
                       refusedRequests: refusedRequests.load(ordering: .relaxed),
                       pduOverruns: pduOverruns.load(ordering: .relaxed),
                       bytesReceived: bytesReceived.load(ordering: .relaxed),
                       bytesSent: bytesSent.load(ordering: .relaxed),
                       connectionsAccepted: connectionsAccepted.load(ordering: .relaxed))
    }
}
