#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage

/// Runs the S7SysProbe executable, built beside the test binary, and collects its output.
enum Probe {
    struct Output {
        var termination: Spawn.Termination
        var standardOutput: String
        var standardError: String
    }

    static var path: String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        precondition(length > 0, "cannot read /proc/self/exe")
        let executable = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return String(executable[..<executable.lastIndex(of: "/")!]) + "/S7SysProbe"
    }

    /// Spawns the probe with `arguments` and `passing`, runs `whileRunning` with its pid,
    /// then reads its output to the end and reaps it.
    ///
    /// With `launcher` (an absolute path and its arguments, e.g. setpriv and its options),
    /// that program is started instead and given the probe's path and `arguments` after its own.
    static func run(
        _ arguments: [String],
        via launcher: [String] = [],
        passing: [(FileDescriptor, as: CInt)] = [],
        whileRunning: (pid_t) throws -> Void = { _ in }
    ) throws -> Output {
        let output = try UnixPipe.make()
        let errors = try UnixPipe.make()
        let pid: pid_t
        do {
            defer {
                try? output.write.close()
                try? errors.write.close()
            }
            pid = try Spawn.run(
                executable: launcher.first ?? path,
                arguments: launcher.isEmpty ? arguments : Array(launcher.dropFirst()) + [path] + arguments,
                environment: [:],
                passing: passing + [(output.write, as: 1), (errors.write, as: 2)]
            )
        }
        defer {
            try? output.read.close()
            try? errors.read.close()
        }
        try whileRunning(pid)
        let standardOutput = try readToEnd(output.read)
        let standardError = try readToEnd(errors.read)
        return Output(
            termination: try Spawn.wait(pid),
            standardOutput: String(decoding: standardOutput, as: UTF8.self),
            standardError: String(decoding: standardError, as: UTF8.self)
        )
    }
}

func readToEnd(_ descriptor: FileDescriptor) throws -> [UInt8] {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = try chunk.withUnsafeMutableBytes { try descriptor.read(into: $0) }
        if count == 0 { return bytes }
        bytes += chunk[0..<count]
    }
}

/// Whether every write end of the pipe whose read end is `descriptor` has been closed, i.e.
/// the read end reports hang-up within `milliseconds`.
func allWritersClosed(_ descriptor: FileDescriptor, milliseconds: CInt = 2000) -> Bool {
    var entry = pollfd(fd: descriptor.rawValue, events: Int16(POLLIN), revents: 0)
    let ready = poll(&entry, 1, milliseconds)
    return ready == 1 && entry.revents & Int16(POLLHUP) != 0
}

func lines(_ text: String) -> [Substring] { text.split(separator: "\n") }
