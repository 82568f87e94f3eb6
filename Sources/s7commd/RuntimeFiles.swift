import ArgumentParser
import Foundation
import Logging
import S7Sys
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The pid file and the state file of a running `s7commd run`, created before privileges are
/// dropped with O_EXCL|O_NOFOLLOW (a planted symlink or hard link is refused, its target left
/// untouched) and kept open, so the unprivileged supervisor can update them wherever they are.
final class RuntimeFiles: @unchecked Sendable {
    static var defaultPidPath: String {
        if getuid() == 0 { return "/run/s7commd/s7commd.pid" }
        if let runtime = ProcessInfo.processInfo.environment["RUNTIME_DIRECTORY"], !runtime.isEmpty { return runtime + "/s7commd.pid" }
        if let runtime = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { return runtime + "/s7commd.pid" }
        return temporaryRuntimeDirectory + "/s7commd.pid"
    }

    /// The fallback runtime directory of a user without XDG_RUNTIME_DIR: created 0700 and
    /// checked with lstat (StartChecks.runtimeDirectory), never trusted when another user made it.
    static var temporaryRuntimeDirectory: String { "/tmp/s7commd-\(getuid())" }

    let pidPath: String
    let statePath: String
    private let pidFD: FileDescriptor
    private let stateFD: FileDescriptor

    init(pidPath: String, logger: Logger) throws {
        self.pidPath = pidPath
        statePath = RuntimeState.path(forPidFile: pidPath)
        if let other = Self.runningInstance(pidPath) {
            printError("another s7commd (pid \(other)) runs with the pid file \(pidPath); stop it first (s7commd status --pid-file \(pidPath) shows it), or pass another --pid-file\nNothing was started.")
            throw ExitCode(StartFailure.runtimeFiles.rawValue)
        }
        do {
            pidFD = try ExclusiveFile.create(pidPath, mode: 0o644, replacingStaleOwnedBy: geteuid())
            stateFD = try ExclusiveFile.create(statePath, mode: 0o644, replacingStaleOwnedBy: geteuid())
        } catch {
            printError("cannot create the runtime files: \(error)\nNothing was started.")
            logger.error("cannot create the runtime files: \(error)")
            throw ExitCode(StartFailure.runtimeFiles.rawValue)
        }
        try? ExclusiveFile.replaceContents(pidFD, with: Array("\(getpid())\n".utf8))
    }

    /// The pid of a live s7commd named in an existing pid file.
    static func runningInstance(_ pidPath: String) -> Int32? {
        guard let text = try? String(contentsOfFile: pidPath, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid != getpid(),
              ProcessSignal.isAlive(pid),
              let cmdline = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8), cmdline.contains("s7commd") else { return nil }
        return pid
    }

    func publish(_ state: RuntimeState) {
        try? ExclusiveFile.replaceContents(stateFD, with: Array(state.encoded()))
    }

    /// Empties both files, and removes them where the directory lets this (now unprivileged)
    /// process: a root-owned directory keeps two empty files until the next start replaces them.
    func remove() {
        try? ExclusiveFile.replaceContents(stateFD, with: [])
        try? ExclusiveFile.replaceContents(pidFD, with: [])
        try? ExclusiveFile.remove(statePath)
        try? ExclusiveFile.remove(pidPath)
        try? stateFD.close()
        try? pidFD.close()
    }
}
