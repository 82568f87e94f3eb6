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
/// Admission rule: connections that have not completed COTP connect and Setup Communication
/// can never lock out one that would. When every slot is taken, a newcomer evicts the oldest
/// connection still setting up; only when every slot holds a set-up client is it refused.
final class ConnectionRegistry: Sendable {
    struct Entry: Sendable {
        let channel: any Channel
        let record: ConnectionRecord
        let address: String
        let admitted: NIODeadline
        var setUp = false
        /// Closes the connection on its own event loop (reason: evicted).
        let evict: @Sendable (_ age: TimeAmount) -> Void
    }

    enum Admission {
        case admitted(ConnectionRecord)
        case refused(RefusalReason, limit: Int)
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var perAddress: [String: Int] = [:]
    }

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
    func admit(_ channel: any Channel, peer: String, address: String,
               evict: @escaping @Sendable (_ age: TimeAmount) -> Void) -> Admission {
        let limit = self.limit
        let perAddress = limitPerAddress
        let now = NIODeadline.now()
        var evicted: (Entry, TimeAmount)?
        let result = state.withLock { s -> Admission in
            if perAddress > 0, s.perAddress[address, default: 0] >= perAddress {
                return .refused(.maxClientsPerAddress, limit: perAddress)
            }
            if s.entries.count >= limit {
                guard let oldest = s.entries.filter({ !$0.value.setUp }).min(by: { $0.value.admitted < $1.value.admitted }) else {
                    return .refused(.maxClients, limit: limit)
                }
                s.entries.removeValue(forKey: oldest.key)
                Self.release(oldest.value.address, &s)
                evicted = (oldest.value, now - oldest.value.admitted)
            }
            let record = ConnectionRecord(peer: peer)
            s.entries[ObjectIdentifier(channel)] = Entry(channel: channel, record: record, address: address, admitted: now, evict: evict)
            s.perAddress[address, default: 0] += 1
            return .admitted(record)
        }
        if let (entry, age) = evicted { entry.evict(age) }
        return result
    }

    /// The connection completed COTP connect and Setup Communication: it can no longer be evicted.
    func markSetUp(_ channel: any Channel) {
        state.withLock { $0.entries[ObjectIdentifier(channel)]?.setUp = true }
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
