import Foundation

/// Exit statuses of `s7commd run`, one per kind of start-up failure, so scripts and systemd
/// (RestartPreventExitStatus=) can tell them apart.
enum StartFailure: Int32 {
    case configuration = 2
    case portInUse = 3
    case permission = 4
    case addressNotAvailable = 5
    case privileges = 6
    case stateDirectory = 7
    case sharedMemory = 8
    case descriptors = 9
    /// The pid or state file cannot be created safely, or another instance holds it.
    case runtimeFiles = 10
    /// A process's sandbox (seccomp, Landlock) cannot be put in place (SupervisorCore.sandboxUnavailableStatus).
    case sandbox = 11
}

/// Who listens on a TCP port: read from /proc/net/tcp(6) and the processes' descriptors.
enum PortHolders {
    struct Holder: Equatable {
        var pid: Int32
        var command: String
        var unit: String?

        var description: String {
            "pid \(pid) (\(command))" + (unit.map { ", systemd unit \($0)" } ?? "")
        }
    }

    /// Inodes of the sockets listening on `port` (any local address).
    static func listeningInodes(port: Int) -> Set<String> {
        var inodes: Set<String> = []
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let cols = line.split(separator: " ", omittingEmptySubsequences: true)
                guard cols.count > 9, cols[3] == "0A", let colon = cols[1].lastIndex(of: ":"),
                      Int(cols[1][cols[1].index(after: colon)...], radix: 16) == port else { continue }
                inodes.insert(String(cols[9]))
            }
        }
        return inodes
    }

    /// The processes holding a socket that listens on `port`, and whether some could not be
    /// inspected (other users' processes, when not root).
    static func find(port: Int) -> (holders: [Holder], hidden: Bool) {
        let inodes = listeningInodes(port: port)
        guard !inodes.isEmpty else { return ([], false) }
        var holders: [Holder] = []
        var found: Set<String> = []
        let me = getpid()
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), pid != me else { continue }
            guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { continue }
            for fd in fds {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                      target.hasPrefix("socket:["), inodes.contains(String(target.dropFirst(8).dropLast())) else { continue }
                found.insert(String(target.dropFirst(8).dropLast()))
                holders.append(Holder(pid: pid, command: command(pid), unit: unit(pid)))
                break
            }
        }
        return (holders, found.count < inodes.count)
    }

    static func command(_ pid: Int32) -> String {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return "?" }
        let text = String(decoding: data.map { $0 < 0x20 ? 0x20 : $0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        return text.count > 120 ? String(text.prefix(120)) + "…" : text
    }

    /// The systemd unit a process belongs to, from its cgroup path.
    static func unit(_ pid: Int32) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            for part in line.split(separator: "/").reversed() where part.hasSuffix(".service") || part.hasSuffix(".socket") {
                return String(part)
            }
        }
        return nil
    }

    /// The sentence for "address in use": who holds the port and the ways out.
    /// Who holds `port`, and the ways out; `setting` is the key that chose the port.
    static func explain(port: Int, setting: String = "server.port") -> String {
        let (holders, hidden) = find(port: port)
        var lines: [String] = []
        if holders.isEmpty {
            lines.append(hidden || getuid() != 0
                ? "The port is held by a process this user may not inspect; run `sudo s7commd doctor` or `sudo ss -ltnp 'sport = :\(port)'` to name it."
                : "No process holds it any more (it may have just exited); try again.")
        } else {
            lines.append("Port \(port) is held by " + holders.map(\.description).joined(separator: "; ") + ".")
            if let unit = holders.compactMap(\.unit).first(where: { !$0.hasPrefix("s7commd") }) {
                lines.append("Stop that service (systemctl stop \(unit); systemctl disable \(unit) to keep it stopped),")
            } else {
                lines.append("Stop that process,")
            }
        }
        let or = holders.isEmpty ? "Or" : "or"
        lines.append(setting == "server.port"
            ? "\(or) set server.port to a free port that the clients can be set to (s7commd config set server.port 1102)."
            : "\(or) set \(setting) to a free port and point the scraper at it (s7commd config set \(setting) 9102).")
        return lines.joined(separator: " ")
    }
}
