import ArgumentParser
import Foundation
import S7Config
import S7Runtime
import S7Server
import S7Sys

/// `s7commd doctor`: every check `run` depends on, before starting anything, one line each.
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check everything s7commd needs before it starts: one line per check, exit status 1 on a problem.",
        discussion: "With the service running, also checks that the running instance is the one holding the port.")

    @Option(name: .shortAndLong, help: ArgumentHelp("The configuration file.", valueName: "path"))
    var config: String = Run.installedConfiguration

    @Option(help: ArgumentHelp("The pid file of a running server.", valueName: "path"))
    var pidFile: String = RuntimeFiles.defaultPidPath

    @Option(help: ArgumentHelp("The retained-data directory.", valueName: "directory"))
    var stateDir: String = Run.defaultStateDirectory

    @Option(help: ArgumentHelp("The service user `run` becomes when started as root.", valueName: "name"))
    var user: String = "s7commd"

    @Option(help: ArgumentHelp("The user `run` starts the S7 worker as (as root, or under the packaged unit).", valueName: "name"))
    var workerUser: String = "s7commd-worker"

    @Flag(help: "Print JSON for scripts.") var json = false

    struct Check: Encodable {
        var check: String
        var status: String  // ok, problem, info
        var detail: String
        var fix: String?
    }

    func run() throws {
        var checks: [Check] = []
        func add(_ name: String, _ status: String, _ detail: String, _ fix: String? = nil) {
            checks.append(Check(check: name, status: status, detail: detail, fix: fix))
        }

        // The configuration, against this host.
        var settings: S7Configuration?
        do {
            settings = try S7Configuration.loadForHost(path: config)
            add("configuration", "ok", "\(config) is valid (\(settings!.memory.dataBlocks.count) data block(s))")
            for w in settings!.warnings { add("configuration", "info", "warning: \(w)") }
        } catch let error as ConfigurationError {
            let first = error.problems.prefix(3).map(\.description).joined(separator: "; ")
            add("configuration", "problem", "\(config): \(error.problems.count) problem(s): \(first)",
                "s7commd config check --config \(config) lists them all; fix with s7commd config set")
        }

        // A running instance.
        let running = RuntimeState.running(pidFile: pidFile)
        if let running {
            add("running instance", "info", "s7commd pid \(running.pid) runs since \(running.startedAt), \(running.listening ? "listening on \(running.endpoint)" : "no listener (server disabled)")")
        } else {
            add("running instance", "info", "none found (\(pidFile))")
        }

        if let s = settings?.server {
            if s.enabled {
                checkPort("port", s.bindAddress, s.port, setting: "server.port", running, add)
            } else {
                add("server", "info", "server.enabled is false: s7commd will run without a listener, so the port is not checked",
                    "s7commd config set server.enabled true, then restart")
            }
        }

        if let s = settings?.server, let limits = try? OpenFilesLimit.current() {
            let needed = OpenFilesLimit.needed(maxClients: s.maxClients)
            if limits.hard >= needed {
                add("open files", "ok", "server.max_clients \(s.maxClients) needs \(needed) descriptors; this shell's hard limit is \(limits.hard) (run raises the soft limit, now \(limits.soft))")
            } else {
                add("open files", "problem", Run.openFilesProblem(maxClients: s.maxClients, limit: limits.hard, which: "hard"),
                    "LimitNOFILE=\(needed) in the unit (the packaged one sets 2048), or ulimit -Hn \(needed) before s7commd run")
            }
        }

        if let m = settings?.metrics, m.enabled, m.port != 0 {
            checkPort("metrics port", m.bindAddress, m.port, setting: "metrics.port", running, add)
        }

        // The service user (used when started as root).
        do {
            let u = try ServiceUser.lookup(name: user)
            add("service user", "ok", "\(u.name) exists (uid \(u.uid), gid \(u.gid))")
            checkStateDirectory(owner: u, add)
        } catch {
            add("service user", geteuid() == 0 ? "problem" : "info", "\(error)",
                "adduser --system --group --no-create-home \(user) (the Debian package creates it)")
            checkStateDirectory(owner: nil, add)
        }

        // The S7 worker's own user (used when started as root or with CAP_SETUID/CAP_SETGID/CAP_KILL).
        do {
            let u = try ServiceUser.lookup(name: workerUser)
            add("worker user", "ok", "\(u.name) exists (uid \(u.uid), gid \(u.gid)): the S7 worker runs as it when started as root or under the packaged unit")
        } catch {
            add("worker user", geteuid() == 0 ? "problem" : "info", "\(error)",
                "adduser --system --group --no-create-home --home /nonexistent \(workerUser) (the Debian package creates it)")
        }

        // What this kernel offers the sandbox.
        let seccompLine = (try? Capabilities.current().seccompMode) ?? nil
        add("seccomp", seccompLine != nil ? "ok" : "problem",
            seccompLine != nil ? "the kernel has seccomp filters: every process of s7commd installs one" : "this kernel shows no Seccomp line in /proc/self/status",
            seccompLine != nil ? nil : "a kernel with CONFIG_SECCOMP_FILTER (every Debian kernel has it); s7commd does not run without it")
        switch Result(catching: { try Landlock.abiVersion() }) {
        case .success(let abi?):
            add("Landlock", "ok", "Landlock ABI \(abi): the worker gets no filesystem\(abi >= 4 ? ", no TCP bind/connect" : "")\(abi >= 6 ? ", scoped signals and abstract sockets" : ""); the memory process its state directory only")
        case .success(nil):
            add("Landlock", "info", "this kernel has no Landlock (or it is not enabled at boot): the seccomp filters and the other limits still hold",
                "boot with lsm=…,landlock to add it")
        case .failure(let error):
            add("Landlock", "problem", "the Landlock version query failed: \(error); s7commd would stop with exit status 11",
                "allow landlock_create_ruleset in the container's or unit's system call filter")
        }
        if running != nil, let live = try? StatusClient.query(socketPath: StatusClient.socketPath(runtimeDirectory: URL(fileURLWithPath: pidFile).deletingLastPathComponent().path)) {
            for child in live.children {
                if let sandbox = child.sandbox {
                    add("\(child.role) sandbox", sandbox.seccompMode == 2 && !sandbox.dumpable ? "ok" : "problem", "pid \(child.pid.map(String.init) ?? "?"): \(sandbox); sandbox kills \(child.sandboxKills)")
                } else {
                    add("\(child.role) sandbox", "info", "pid \(child.pid.map(String.init) ?? "not running"): no report yet; sandbox kills \(child.sandboxKills)")
                }
            }
        }

        // Shared memory.
        do {
            let seals = try StartChecks.probeSharedMemory(name: "s7commd-doctor")
            add("shared memory", seals.contains(.shrink) && seals.contains(.grow) ? "ok" : "problem",
                "memfd_create and sealing work (\(seals))", seals.contains(.grow) ? nil : "a kernel with memfd sealing (Linux 3.17 or later) is needed")
        } catch {
            add("shared memory", "problem", "cannot create a sealed memfd: \(error)", StartChecks.sharedMemoryFix)
        }

        if json {
            printJSON(checks)
        } else {
            for c in checks {
                let mark = c.status == "ok" ? "ok     " : c.status == "problem" ? "PROBLEM" : "info   "
                print("\(mark) \(c.check): \(c.detail)")
                if let fix = c.fix, c.status != "ok" { print("        fix: \(fix)") }
            }
        }
        if checks.contains(where: { $0.status == "problem" }) { throw ExitCode(1) }
    }

    /// Whether `address:port` (chosen by `setting`) can be bound, or is held by the running s7commd.
    private func checkPort(_ label: String, _ address: String, _ port: Int, setting: String, _ running: RuntimeState?,
                           _ add: (String, String, String, String?) -> Void) {
        let name = "\(label) \(address):\(port)"
        let holders = PortHolders.find(port: port).holders
        // Holders may be hidden from an unprivileged doctor: then the running instance's own
        // endpoint says whose the S7 port is.
        let ours = setting == "server.port" && holders.isEmpty && (running.map { $0.listening && $0.endpoint.hasSuffix(":\(port)") } ?? false)
        if let running, holders.contains(where: { $0.pid == running.pid }) || ours {
            add(name, "ok", "held by the running s7commd (pid \(running.pid))", nil)
            return
        }
        do {
            let fd = try TCPListener.open(address: address, port: port)
            try? fd.close()
            add(name, "ok", "free, and this process may bind it", nil)
        } catch {
            switch error.errno {
            case EADDRINUSE:
                add(name, "problem", "in use: " + PortHolders.explain(port: port, setting: setting), nil)
            case EACCES:
                add(name, geteuid() == 0 ? "problem" : "info", "this user may not bind it. " + CapabilityReport.current(),
                    "run it from the packaged unit (AmbientCapabilities=CAP_NET_BIND_SERVICE), as root, or on a port above net.ipv4.ip_unprivileged_port_start")
            default:
                add(name, "problem", error.description, nil)
            }
        }
    }

    private func checkStateDirectory(owner: ServiceUser?, _ add: (String, String, String, String?) -> Void) {
        var st = stat()
        guard stat(stateDir, &st) == 0 else {
            add("state directory", "info", "\(stateDir) does not exist yet; run creates it when started as root (retained data is kept there)",
                "mkdir -p \(stateDir) && chown \(owner?.name ?? user): \(stateDir)")
            return
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            add("state directory", "problem", "\(stateDir) is not a directory", "remove it or pass --state-dir")
            return
        }
        if let owner, geteuid() == 0 {
            let writable = (st.st_uid == owner.uid && st.st_mode & 0o200 != 0) || (st.st_gid == owner.gid && st.st_mode & 0o020 != 0)
            add("state directory", writable ? "ok" : "problem", "\(stateDir) \(writable ? "is" : "is not") writable by \(owner.name)",
                writable ? nil : "chown \(owner.name):\(owner.name) \(stateDir)")
        } else {
            let ok = access(stateDir, W_OK) == 0
            add("state directory", ok ? "ok" : "problem", "\(stateDir) \(ok ? "is" : "is not") writable by uid \(getuid())",
                ok ? nil : "make it writable to the user s7commd runs as, or pass --state-dir")
        }
    }
}
