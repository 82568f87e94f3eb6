import S7IPC
import S7Sys
import Testing

#if canImport(Glibc)
import Glibc
#endif

@testable import S7Supervisor

let workerSettings = WorkerSettings(
    endpoint: "127.0.0.1:1102", maxClients: 8, maxClientsPerAddress: 0, sendTimeoutMs: 3000, recvTimeoutMs: 3000, idleTimeoutMs: 10_000,
    pduSize: 480,
    identity: .init(name: "n", moduleType: "m", serialNumber: "s", copyright: "c", moduleName: "n", orderCode: "o",
                    plantIdentification: "", firmwareVersion: [3, 2, 6]),
    allowedRackSlots: [], allowPLCControl: false, allowClockSet: false, logConnections: true, logErrors: true, logDataAccess: false)

let sandbox = SandboxReport(uid: 996, gid: 995, seccompMode: 2, seccompFilters: 1, noNewPrivileges: true, dumpable: false,
                            landlock: "not used", limits: "RLIMIT_FSIZE 0, RLIMIT_CORE 0")

/// A supervisor driven by hand: events in, actions out, a clock that only moves when told.
struct Harness {
    var core: SupervisorCore
    var clock: Int64 = 1_000

    init(metrics: Int = 0, listening: Bool = true, memory: PLCMemoryDefinition = PLCMemoryDefinition()) {
        let plan = SupervisorCore.Plan(settings: workerSettings, memory: memory, stateDirectory: "/var/lib/s7commd",
                                       listening: listening, metricsListeners: metrics, attachSocket: true, metrics: [])
        core = SupervisorCore(plan: plan, pid: 100, now: .init(monotonicMs: 1_000, wallMs: 1_700_000_000_000))
    }

    var now: SupervisorCore.Instant { .init(monotonicMs: clock, wallMs: 1_700_000_000_000 + clock) }

    mutating func on(_ event: SupervisorCore.Event) -> [SupervisorCore.Action] { core.handle(event, now: now) }

    /// Runs time forward to `ms` and fires what is due.
    mutating func advance(_ ms: Int64) -> [SupervisorCore.Action] {
        clock += ms
        return on(.tick)
    }

    /// Start → memory 10 ready → worker 11 serving.
    mutating func running() {
        _ = on(.start)
        _ = on(.spawned(.memory, pid: 10))
        _ = on(.fromMemory(pid: 10, .ready(size: 4096, readOnlySize: 0), readOnlyView: nil))
        _ = on(.spawned(.worker, pid: 11))
        _ = on(.fromWorker(pid: 11, .serving(sandbox)))
    }
}

func sends(_ actions: [SupervisorCore.Action]) -> [String] {
    actions.compactMap {
        switch $0 {
        case .sendWorker(let m): "worker:\(m.kind)"
        case .sendMemory(let m): "memory:\(m.kind)"
        case .spawn(let role): "spawn:\(role == .worker ? "worker" : "memory")"
        case .kill(_, let pid): "kill:\(pid)"
        case .exit(let status): "exit:\(status)"
        case .readConfiguration: "read-configuration"
        case .reply(let client, _): "reply:\(client)"
        case .holdSegments: "hold-segments"
        case .log: nil
        }
    }
}

func logs(_ actions: [SupervisorCore.Action]) -> [String] {
    actions.compactMap { if case .log(_, let text) = $0 { text } else { nil } }
}

@Suite("Supervisor state machine")
struct SupervisorCoreTests {
    @Test func startsTheMemoryProcessThenTheWorkerWithTheSegment() {
        var h = Harness()
        #expect(sends(h.on(.start)) == ["spawn:memory"])
        let prepared = h.on(.spawned(.memory, pid: 10))
        #expect(prepared.contains(.sendMemory(.prepare(MemoryStart(memory: PLCMemoryDefinition(), stateDirectory: "/var/lib/s7commd",
                                                                      reuse: false, attachSocket: true)))))
        #expect(sends(h.on(.fromMemory(pid: 10, .ready(size: 4096, readOnlySize: 0), readOnlyView: nil))) == ["hold-segments", "spawn:worker"])
        #expect(h.core.hasSegment)
        let serve = h.on(.spawned(.worker, pid: 11))
        #expect(serve.contains(.sendWorker(.serve(WorkerStart(settings: workerSettings, memory: PLCMemoryDefinition(), listening: true, metricsListeners: 0)))))
        #expect(logs(h.on(.fromWorker(pid: 11, .serving(sandbox)))) == ["S7 worker (pid 11) is serving"])
        #expect(h.core.report(h.now, snapshot: nil, problem: nil).state == .listening)
    }

    @Test func aForbiddenMessageKillsForgetsAndRestartsWithBackoff() {
        var h = Harness()
        h.running()
        // 'serving' again, while running: outside the table.
        let out = h.on(.fromWorker(pid: 11, .serving(sandbox)))
        #expect(sends(out) == ["kill:11"])
        #expect(logs(out).contains { $0.contains("S7 worker (pid 11) sent a message outside the protocol (a serving message is not allowed while running); killed it (SIGKILL) and forgot it; restarting it in 0.1 s") })
        // Forgotten: its later messages and its exit change nothing.
        #expect(h.on(.fromWorker(pid: 11, .reloaded)).isEmpty)
        #expect(sends(h.on(.exited(pid: 11, .signaled(9)))).isEmpty)
        #expect(h.core.restarts[.worker] == 1)
        #expect(sends(h.advance(50)).isEmpty, "not before the back-off")
        #expect(sends(h.advance(60)) == ["spawn:worker"])
        // A second failure doubles the back-off.
        _ = h.on(.spawned(.worker, pid: 12))
        let again = h.on(.misbehaved(.worker, pid: 12, "sent a message outside the protocol (tag 0x7b is no message a S7 worker sends)"))
        #expect(sends(again) == ["kill:12"])
        #expect(logs(again).contains { $0.hasSuffix("restarting it in 0.2 s") })
        #expect(sends(h.advance(150)).isEmpty)
        #expect(sends(h.advance(60)) == ["spawn:worker"])
    }

    @Test func aSecondReadyFromTheMemoryProcessKillsIt() {
        var h = Harness()
        h.running()
        let out = h.on(.fromMemory(pid: 10, .ready(size: 4096, readOnlySize: 0), readOnlyView: nil))
        #expect(sends(out) == ["kill:10"])
        #expect(sends(h.advance(100)) == ["spawn:memory"])
        // The new memory process takes over the segment the supervisor kept.
        let prepared = h.on(.spawned(.memory, pid: 20))
        #expect(prepared.contains(.sendMemory(.prepare(MemoryStart(memory: PLCMemoryDefinition(), stateDirectory: "/var/lib/s7commd",
                                                                      reuse: true, attachSocket: true)))))
        #expect(sends(h.on(.fromMemory(pid: 20, .ready(size: 4096, readOnlySize: 0), readOnlyView: nil))).isEmpty,
                "the worker kept running, and the supervisor keeps the segments it holds")
    }

    /// With a read-only data block of its own storage, the layout has a second segment: the
    /// worker's view of it must come O_RDONLY, else the memory process broke the protocol.
    @Test func aReadOnlySegmentForTheWorkerThatIsWritableKillsTheMemoryProcess() {
        let memory = PLCMemoryDefinition(dataBlocks: [4: .init(size: 16, readOnly: true)])
        for view in [SharedMemory.AccessMode.readWrite, .writeOnly, nil] {
            var h = Harness(memory: memory)
            _ = h.on(.start)
            _ = h.on(.spawned(.memory, pid: 10))
            let out = h.on(.fromMemory(pid: 10, .ready(size: 49_408, readOnlySize: 16), readOnlyView: view))
            #expect(sends(out) == ["kill:10"], "\(String(describing: view))")
            #expect(logs(out).contains { $0.contains("memory process (pid 10) sent a message outside the protocol (the read-only segment's descriptor for the S7 worker is open") && $0.contains("not O_RDONLY)") })
            #expect(!h.core.hasSegment, "nothing is held, no worker started")
            #expect(sends(h.advance(100)) == ["spawn:memory"])
            let prepared = h.on(.spawned(.memory, pid: 20))
            #expect(prepared.contains(.sendMemory(.prepare(MemoryStart(memory: memory, stateDirectory: "/var/lib/s7commd", reuse: false, attachSocket: true)))))
        }
        var h = Harness(memory: memory)
        _ = h.on(.start)
        _ = h.on(.spawned(.memory, pid: 10))
        #expect(sends(h.on(.fromMemory(pid: 10, .ready(size: 49_408, readOnlySize: 16), readOnlyView: .readOnly))) == ["hold-segments", "spawn:worker"])
    }

    /// The segments a ready carries must be the layout's: the serve message's descriptors are
    /// counted from the layout.
    @Test func aReadyWhoseSegmentsDisagreeWithTheLayoutKillsTheMemoryProcess() {
        var h = Harness(memory: PLCMemoryDefinition(dataBlocks: [4: .init(size: 16, readOnly: true)]))
        _ = h.on(.start)
        _ = h.on(.spawned(.memory, pid: 10))
        var out = h.on(.fromMemory(pid: 10, .ready(size: 49_408, readOnlySize: 0), readOnlyView: nil))
        #expect(sends(out) == ["kill:10"])
        #expect(logs(out).contains { $0.contains("a ready without the read-only segment, which the layout has") })
        var single = Harness()
        _ = single.on(.start)
        _ = single.on(.spawned(.memory, pid: 10))
        out = single.on(.fromMemory(pid: 10, .ready(size: 49_408, readOnlySize: 16), readOnlyView: .readOnly))
        #expect(sends(out) == ["kill:10"])
        #expect(logs(out).contains { $0.contains("a ready with a read-only segment, which the layout does not have") })
    }

    @Test func aCrashedChildIsRestartedAndAStableOneStartsFromTheInitialBackoff() {
        var h = Harness()
        h.running()
        var out = h.on(.exited(pid: 11, .exited(1)))
        #expect(logs(out).contains { $0.contains("S7 worker (pid 11) exited with status 1 after 0.0 s (the listening socket stays open; clients reconnect); restarting it in 0.1 s") })
        #expect(sends(h.advance(100)) == ["spawn:worker"])
        _ = h.on(.spawned(.worker, pid: 12))
        _ = h.on(.fromWorker(pid: 12, .serving(sandbox)))
        _ = h.on(.exited(pid: 12, .signaled(11)))
        #expect(sends(h.advance(200)) == ["spawn:worker"])
        _ = h.on(.spawned(.worker, pid: 13))
        _ = h.on(.fromWorker(pid: 13, .serving(sandbox)))
        _ = h.advance(31_000)
        out = h.on(.exited(pid: 13, .signaled(11)))
        #expect(logs(out).contains { $0.hasSuffix("restarting it in 0.1 s") }, "ran over 30 s: back to the first back-off")
    }

    @Test func theBackoffIsCappedAtFiveSeconds() {
        var h = Harness()
        _ = h.on(.start)
        var delays: [String] = []
        for _ in 0..<8 {
            delays += logs(h.on(.spawnFailed(.memory, "could not spawn (posix_spawn): No such file or directory"))).map { String($0.split(separator: " ").suffix(2).joined(separator: " ")) }
            _ = h.advance(10_000)
        }
        #expect(delays == ["0.1 s", "0.2 s", "0.4 s", "0.8 s", "1.6 s", "3.2 s", "5.0 s", "5.0 s"])
    }

    @Test func aStopWhileRestartsKeepFailingExitsAtOnce() {
        // The old supervisor hung here: a child that could not be spawned kept being retried.
        var h = Harness()
        _ = h.on(.start)
        _ = h.on(.spawnFailed(.memory, "could not spawn"))
        #expect(sends(h.on(.stopRequested("received SIGTERM"))) == ["exit:0"])
        #expect(h.advance(10_000).isEmpty, "nothing after exit")
    }

    @Test func aStopStopsTheWorkerThenTheMemoryProcessAndExits() {
        var h = Harness()
        h.running()
        #expect(sends(h.on(.stopRequested("received SIGTERM"))) == ["worker:stop"])
        #expect(sends(h.on(.channelClosed(.worker, pid: 11))).isEmpty)
        #expect(sends(h.on(.exited(pid: 11, .exited(0)))) == ["memory:stop"])
        #expect(sends(h.on(.exited(pid: 10, .exited(0)))) == ["exit:0"])
    }

    @Test func aChildThatDoesNotStopIsKilledAfterTheGrace() {
        var h = Harness()
        h.running()
        _ = h.on(.stopRequested("received SIGINT"))
        #expect(sends(h.advance(4_900)).isEmpty)
        let out = h.advance(200)
        #expect(sends(out) == ["kill:11", "memory:stop"])
        #expect(logs(out).contains { $0.contains("did not stop within 5.0 s") })
        #expect(sends(h.on(.exited(pid: 10, .exited(0)))) == ["exit:0"])
    }

    @Test func aChildThatClosesItsChannelButStaysIsKilled() {
        var h = Harness()
        h.running()
        #expect(sends(h.on(.channelClosed(.memory, pid: 10))).isEmpty)
        let out = h.advance(1_001)
        #expect(sends(out) == ["kill:10"])
        #expect(logs(out).contains { $0.contains("closed its channel and did not exit") })
    }

    @Test func statusGoesThroughTheWorkerAndTimesOut() {
        var h = Harness()
        h.running()
        #expect(sends(h.on(.statusRequested(client: 1))) == ["worker:status-request"])
        let answered = h.on(.fromWorker(pid: 11, .status(id: 1, snapshot: Array("{}".utf8))))
        guard case .reply(1, let report)? = answered.first else { Issue.record("no reply: \(answered)"); return }
        #expect(report.workerSnapshot == Array("{}".utf8) && report.children.map(\.pid) == [11, 10])
        // No answer within 2 s: the client is told why.
        _ = h.on(.statusRequested(client: 2))
        let late = h.advance(2_001)
        guard case .reply(2, let timedOut)? = late.first else { Issue.record("no timeout reply: \(late)"); return }
        #expect(timedOut.workerProblem == "the S7 worker (pid 11) is not answering (no status within 2.0 s)")
        // Its late answer matches nothing and is dropped.
        #expect(h.on(.fromWorker(pid: 11, .status(id: 2, snapshot: []))).isEmpty)
        // A worker that dies owes its pending answers.
        _ = h.on(.statusRequested(client: 3))
        let died = h.on(.exited(pid: 11, .signaled(9)))
        guard case .reply(3, let orphan)? = died.first else { Issue.record("no reply at death: \(died)"); return }
        #expect(orphan.workerProblem == "the S7 worker (pid 11) ended before it answered" && orphan.state == .restarting)
    }

    @Test func aReloadIsLoggedOnceTheWorkerAppliedIt() {
        var h = Harness()
        h.running()
        #expect(sends(h.on(.reloadRequested)) == ["read-configuration"])
        var changed = workerSettings
        changed.pduSize = 240
        let out = h.on(.configurationReloaded(changed, line: "reloaded x: applied server.pdu_size"))
        #expect(out == [.sendWorker(.reload(changed))])
        #expect(h.on(.fromWorker(pid: 11, .reloaded)) == [.log(.notice, "reloaded x: applied server.pdu_size")])
        // A restarted worker starts with the reloaded settings.
        _ = h.on(.exited(pid: 11, .exited(1)))
        _ = h.advance(100)
        #expect(h.on(.spawned(.worker, pid: 12)).contains(.sendWorker(.serve(WorkerStart(settings: changed, memory: PLCMemoryDefinition(), listening: true, metricsListeners: 0)))))
    }

    @Test func restartCountsReachTheWorkerWhenMetricsAreOn() {
        var h = Harness(metrics: 1)
        h.running()
        _ = h.on(.exited(pid: 10, .exited(1)))
        _ = h.advance(100)
        #expect(h.on(.spawned(.memory, pid: 20)).contains(.sendWorker(.restarts(worker: 0, memory: 1, sandboxKills: 0))))
    }

    @Test func theReportSaysDisabledWithoutAListener() {
        var h = Harness(listening: false)
        h.running()
        #expect(h.core.report(h.now, snapshot: nil, problem: nil).state == .disabled)
    }

    @Test func aWorkerKilledByItsSandboxIsLoggedWithTheCallCountedAndRestarted() {
        var h = Harness(metrics: 1)
        h.running()
        #expect(h.core.report(h.now, snapshot: nil, problem: nil).children.first { $0.role == .worker }?.sandbox == sandbox)
        #expect(h.on(.sandboxViolation(.worker, pid: 11, systemCall: 41, name: "socket")).isEmpty)
        let out = h.on(.exited(pid: 11, .signaled(SIGSYS)))
        #expect(logs(out) == ["S7 worker (pid 11) was killed by the sandbox: system call 41 (socket) after 0.0 s (the listening socket stays open; clients reconnect); restarting it in 0.1 s"])
        let worker = h.core.report(h.now, snapshot: nil, problem: nil).children.first { $0.role == .worker }
        #expect(worker?.sandboxKills == 1 && worker?.restarts == 1 && worker?.pid == nil && worker?.sandbox == nil)
        #expect(sends(h.advance(100)) == ["spawn:worker"])
        #expect(h.on(.spawned(.worker, pid: 12)).contains(.sendWorker(.restarts(worker: 1, memory: 0, sandboxKills: 1))))
        // A SIGSYS with no report line (the kernel's kill action) still counts, and says so.
        _ = h.on(.fromWorker(pid: 12, .serving(sandbox)))
        #expect(logs(h.on(.exited(pid: 12, .signaled(SIGSYS)))).first?.contains("was killed by the sandbox: SIGSYS, with no system call reported") == true)
        #expect(h.core.sandboxKills[.worker] == 2)
    }

    @Test func aWorkerWithoutItsSandboxStopsEverythingWithStatus11() {
        var h = Harness()
        h.running()
        let out = h.on(.exited(pid: 11, .exited(ChildExitStatus.sandboxUnavailable.rawValue)))
        #expect(logs(out) == ["the S7 worker (pid 11) could not put its sandbox in place (its line before says why); s7commd does not run without it and stops (exit status 11)"])
        #expect(sends(out) == ["memory:stop"])
        #expect(sends(h.on(.exited(pid: 10, .exited(0)))) == ["exit:11"])
    }

    @Test func theMemoryProcessesSandboxReportIsInTheStatus() {
        var h = Harness()
        _ = h.on(.start)
        _ = h.on(.spawned(.memory, pid: 10))
        _ = h.on(.fromMemory(pid: 10, .ready(size: 4096, readOnlySize: 0, sandbox: sandbox), readOnlyView: nil))
        #expect(h.core.report(h.now, snapshot: nil, problem: nil).children.first { $0.role == .memory }?.sandbox == sandbox)
    }
}
