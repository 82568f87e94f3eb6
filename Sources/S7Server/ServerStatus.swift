import Foundation
import S7Session
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
    /// Requests answered with an error (refused, malformed), over every connection.
    public var refusedRequests: Int
    /// Requests larger than the agreed PDU, over every connection.
    public var pduOverruns: Int
    public var bytesReceived: Int
    public var bytesSent: Int
    /// Connections admitted (under max_clients).
    public var connectionsAccepted: Int
    /// Connections refused, by ``RefusalReason`` (raw value): closed at once, or (rack_slot)
    /// answered with a COTP disconnect.
    public var refused: [String: Int]
    /// Admitted connections that ended, by ``CloseReason/Kind`` (raw value).
    public var closed: [String: Int]
    /// Connections whose reading was paused at least once because their answers backed up.
    public var throttled: Int

    public func refused(_ reason: RefusalReason) -> Int { refused[reason.rawValue] ?? 0 }
    public func closed(_ kind: CloseReason.Kind) -> Int { closed[kind.rawValue] ?? 0 }
}

/// What the worker answers to a status request.
public struct ServerSnapshot: Codable, Equatable, Sendable {
    public var maxClients: Int
    /// server.max_clients_per_address in effect (0: no limit).
    public var maxClientsPerAddress: Int
    public var clients: [ClientStatus]
    public var counters: ServerCounters

    public init(maxClients: Int, maxClientsPerAddress: Int = 0, clients: [ClientStatus], counters: ServerCounters) {
        self.maxClients = maxClients
        self.maxClientsPerAddress = maxClientsPerAddress
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

/// Counters shared by every connection of a server: what changes per request is an atomic;
/// refusals and closes (once per connection) are counted under a lock, by case.
final class ServerCounterSet: Sendable {
    let requestsTotal = Atomic<Int>(0)
    let refusedRequests = Atomic<Int>(0)
    let pduOverruns = Atomic<Int>(0)
    let bytesReceived = Atomic<Int>(0)
    let bytesSent = Atomic<Int>(0)
    let connectionsAccepted = Atomic<Int>(0)
    let throttled = Atomic<Int>(0)
    private let byReason = Mutex<(refused: [RefusalReason: Int], closed: [CloseReason.Kind: Int])>(([:], [:]))

    func count(_ reason: RefusalReason) { byReason.withLock { $0.refused[reason, default: 0] += 1 } }
    func count(_ kind: CloseReason.Kind) { byReason.withLock { $0.closed[kind, default: 0] += 1 } }

    var value: ServerCounters {
        let (refused, closed) = byReason.withLock { $0 }
        return ServerCounters(requestsTotal: requestsTotal.load(ordering: .relaxed),
                              refusedRequests: refusedRequests.load(ordering: .relaxed),
                              pduOverruns: pduOverruns.load(ordering: .relaxed),
                              bytesReceived: bytesReceived.load(ordering: .relaxed),
                              bytesSent: bytesSent.load(ordering: .relaxed),
                              connectionsAccepted: connectionsAccepted.load(ordering: .relaxed),
                              refused: Dictionary(uniqueKeysWithValues: RefusalReason.allCases.map { ($0.rawValue, refused[$0] ?? 0) }),
                              closed: Dictionary(uniqueKeysWithValues: CloseReason.Kind.allCases.map { ($0.rawValue, closed[$0] ?? 0) }),
                              throttled: throttled.load(ordering: .relaxed))
    }
}
