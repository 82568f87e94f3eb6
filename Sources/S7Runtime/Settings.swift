import NIOCore
import PLCMemory
import S7Config
import S7IPC
import S7Server
import S7Session

/// The validated configuration turned into the typed values the children get, and back into
/// what the server and the sessions take. The configuration file is read and validated once,
/// by `s7commd run`; no child ever sees its text.
extension WorkerSettings {
    public init(_ c: S7Configuration) {
        let s = c.server, i = c.identity
        self.init(endpoint: s.endpoint, maxClients: s.maxClients, maxClientsPerAddress: s.maxClientsPerAddress,
                  sendTimeoutMs: s.sendTimeoutMs, recvTimeoutMs: s.recvTimeoutMs, idleTimeoutMs: s.pingTimeoutMs, pduSize: s.pduSize,
                  identity: Identity(name: i.name, moduleType: i.moduleType, serialNumber: i.serialNumber, copyright: i.copyright,
                                     moduleName: i.moduleName, orderCode: i.orderCode, plantIdentification: i.plantIdentification,
                                     firmwareVersion: [i.firmwareVersion.0, i.firmwareVersion.1, i.firmwareVersion.2]),
                  allowedRackSlots: s.allowedRackSlots.map { [UInt8(clamping: $0.rack), UInt8(clamping: $0.slot)] },
                  allowPLCControl: s.allowPLCControl, allowClockSet: s.allowClockSet,
                  logConnections: c.logging.logConnections, logErrors: c.logging.logErrors, logDataAccess: c.logging.logDataAccess)
    }

    public var server: ServerSettings {
        ServerSettings(maxClients: maxClients, maxClientsPerAddress: maxClientsPerAddress,
                       sendTimeout: .milliseconds(Int64(sendTimeoutMs)), receiveTimeout: .milliseconds(Int64(recvTimeoutMs)),
                       idleTimeout: .milliseconds(Int64(idleTimeoutMs)), logConnections: logConnections, logErrors: logErrors)
    }

    public func session(clock: @escaping @Sendable () -> PLCDateTime) -> SessionConfiguration {
        let i = identity
        return SessionConfiguration(
            pduSize: pduSize,
            identity: PLCIdentity(name: i.name, moduleType: i.moduleType, serialNumber: i.serialNumber, copyright: i.copyright,
                                  moduleName: i.moduleName, orderCode: i.orderCode,
                                  firmwareVersion: (i.firmwareVersion[0], i.firmwareVersion[1], i.firmwareVersion[2]),
                                  plantIdentification: i.plantIdentification),
            maxClients: maxClients, allowedRackSlots: allowedRackSlots.map { RackSlot(rack: Int($0[0]), slot: Int($0[1])) },
            allowPLCControl: allowPLCControl, allowClockSet: allowClockSet, logDataAccess: logDataAccess, clock: clock)
    }
}
