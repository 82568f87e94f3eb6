import NIOCore
import S7Session
import Synchronization

/// Why a new connection was closed at once, before any byte of it was read.
public enum RefusalReason: String, CaseIterable, Sendable, Codable {
    /// Every `server.max_clients` slot holds a client that has completed setup.
    case maxClients = "max_clients"
    /// `server.max_clients_per_address` connections from this address are open already.
    case maxClientsPerAddress = "max_clients_per_address"
    /// The COTP connection request named a rack/slot outside `server.allowed_rack_slots`.
    case rackSlot = "rack_slot"
}

/// The connections of a server, shared by every event loop: admission against
/// `server.max_clients` and `server.max_clients_per_address`, each connection's record for
/// `s7commd status`, and the server-wide counters.
///
/// Admission rule: connections that wait — for their setup, for the rest of a request, or
/// for their client to take its answers — can never lock out one that would complete its
/// setup. When every slot is taken, a newcomer evicts the connection that has been waiting
/// longest (one in the middle of a request only after ``evictionGrace``); only when no slot waits (every one holds a set-up client whose requests arrive
/// whole and whose answers drain) is it refused. A client that keeps to the protocol waits in
/// none of these states for more than a round trip, so it is never the longest waiting.
final class ConnectionRegistry: Sendable {
    struct Entry: Sendable {
        let channel: any Channel
        let record: ConnectionRecord
        let address: String
        /// Since when and for what the connection waits; nil while it is in good standing.
        var waiting: Waiting?
        /// Closes the connection on its own event loop (reason: evicted).
        let evict: @Sendable (_ waiting: CloseReason.Waiting, _ age: TimeAmount) -> Void
    }

    /// What a connection waits for, since when, and whether it has answered a request since
    /// its setup (one that has not gets no ``evictionGrace``).
    struct Waiting: Equatable, Sendable {
        var since: NIODeadline
        var what: CloseReason.Waiting
        var served = false
    }

    enum Admission {
        case admitted(ConnectionRecord)
        case refused(RefusalReason, limit: Int)
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var perAddress: [String: Int] = [:]
    }

    /// How long a set-up connection that has been answered at least one request must have
    /// waited for the rest of a request before a newcomer may evict it: a request split over a
    /// slow link is never a reason for a working client to lose its connection. One that has
    /// not been answered anything since its setup gets no grace, and neither does one whose
    /// answers back up: a client within its AmQ never has more than the output bound unread.
    static let evictionGrace: TimeAmount = .milliseconds(500)

    private let stoppingFlag = Atomic<Bool>(false)
    private let limitValue: Atomic<Int>
    private let perAddressLimit: Atomic<Int>
    private let state = Mutex(State())
    let counters = ServerCounterSet()

    init(limit: Int, perAddress: Int = 0) {
        limitValue = Atomic(limit)
        perAddressLimit = Atomic(perAddress)
    }

    /// The limit; lowering it closes no one, it only refuses newcomers until below it.
    var limit: Int {
        get { limitValue.load(ordering: .relaxed) }
        set { limitValue.store(newValue, ordering: .relaxed) }
    }

    /// Set when the server stops: connections closed from then on end with reason shutdown.
    var stopping: Bool {
        get { stoppingFlag.load(ordering: .relaxed) }
        set { stoppingFlag.store(newValue, ordering: .relaxed) }
    }

    /// Connections one address may hold; 0: no limit.
    var limitPerAddress: Int {
        get { perAddressLimit.load(ordering: .relaxed) }
        set { perAddressLimit.store(newValue, ordering: .relaxed) }
    }

    /// Admits `channel` (from `address`) unless a limit refuses it; evicts the oldest connection
    /// still setting up when every slot is taken.
    func admit(_ channel: any Channel, peer: String, address: String, now: NIODeadline,
               evict: @escaping @Sendable (_ waiting: CloseReason.Waiting, _ age: TimeAmount) -> Void) -> Admission {
        let limit = self.limit
        let perAddress = limitPerAddress
        var evicted: (Entry, CloseReason.Waiting, TimeAmount)?
        let result = state.withLock { s -> Admission in
            if perAddress > 0, s.perAddress[address, default: 0] >= perAddress {
                return .refused(.maxClientsPerAddress, limit: perAddress)
            }
            if s.entries.count >= limit {
                var oldest: (key: ObjectIdentifier, since: NIODeadline, what: CloseReason.Waiting)?
                for (key, entry) in s.entries {
                    guard let w = entry.waiting, w.what != .request || !w.served || now - w.since >= Self.evictionGrace else { continue }
                    if oldest.map({ w.since < $0.since }) ?? true { oldest = (key, w.since, w.what) }
                }
                guard let oldest, let entry = s.entries.removeValue(forKey: oldest.key) else {
                    return .refused(.maxClients, limit: limit)
                }
                Self.release(entry.address, &s)
                evicted = (entry, oldest.what, now - oldest.since)
            }
            let record = ConnectionRecord(peer: peer)
            s.entries[ObjectIdentifier(channel)] = Entry(channel: channel, record: record, address: address,
                                                         waiting: Waiting(since: now, what: .setup), evict: evict)
            s.perAddress[address, default: 0] += 1
            return .admitted(record)
        }
        if let (entry, what, age) = evicted { entry.evict(what, age) }
        return result
    }

    /// What the connection waits for now, and since when (nil: nothing, it cannot be evicted).
    func setWaiting(_ channel: any Channel, _ waiting: Waiting?) {
        state.withLock { $0.entries[ObjectIdentifier(channel)]?.waiting = waiting }
    }

    func remove(_ channel: any Channel) {
        state.withLock { s in
            if let entry = s.entries.removeValue(forKey: ObjectIdentifier(channel)) { Self.release(entry.address, &s) }
        }
    }

    private static func release(_ address: String, _ s: inout State) {
        let left = s.perAddress[address, default: 1] - 1
        s.perAddress[address] = left > 0 ? left : nil
    }

    var count: Int { state.withLock { $0.entries.count } }
    var all: [any Channel] { state.withLock { $0.entries.values.map(\.channel) } }

    func snapshot() -> ServerSnapshot {
        let records = state.withLock { $0.entries.values.map(\.record) }
        let clients = records.map(\.status).sorted { ($0.connectedSince, $0.peer) < ($1.connectedSince, $1.peer) }
        return ServerSnapshot(maxClients: limit, maxClientsPerAddress: limitPerAddress, clients: clients, counters: counters.value)
    }
}
