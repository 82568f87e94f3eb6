import ArgumentParser
import Foundation
import Logging
import PLCMemory
import S7Config
import S7Runtime
import S7Sys

/// Checks `run` makes once privileges are dropped and before anything is spawned, so a host
/// that cannot keep retained data or create the PLC memory segment is told at once, with the
/// fix, instead of the memory process failing and being restarted for ever.
enum StartChecks {
    /// The retained-data directory must be writable by the user the processes now run as, when
    /// any region is retained. Created when missing (as root it was created and chowned before
    /// the drop).
    static func stateDirectory(_ path: String, layout: PLCMemory.MemoryLayout, user: String, logger: Logger) throws {
        let retained = RetainStore.retained(layout)
        guard !retained.isEmpty else { return }
        var problem: String?
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                let why = mkdir(path, 0o750) == 0 ? "" : ": " + String(cString: strerror(errno))
                if why.isEmpty { rmdir(path) }
                problem = "it does not exist and uid \(getuid()) cannot create it\(why)"
            }
        } else if !isDirectory.boolValue {
            problem = "it is not a directory"
        }
        if problem == nil, access(path, W_OK | X_OK) != 0 {
            problem = "uid \(getuid()) may not write there (\(String(cString: strerror(errno))))"
        }
        guard let problem else { return }
        let names = retained.map(\.description).joined(separator: ", ")
        let owner = geteuid() == getuid() ? (getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? user) : user
        let text = """
            cannot keep retained data in the state directory \(path): \(problem).
            \(names) \(retained.count == 1 ? "is" : "are") configured with "retain": true and would not survive a restart.
            Fix: chown \(owner): \(path) (the packaged unit's StateDirectory= does this for /var/lib/s7commd), or pass --state-dir with a directory \(owner) may write.
            Nothing was started.
            """
        printError(text)
        logger.error("\(text.replacingOccurrences(of: "\n", with: " "))")
        throw ExitCode(StartFailure.stateDirectory.rawValue)
    }

    /// What to do when no sealed memfd can be made (run's error and doctor's fix).
    static let sharedMemoryFix = "allow memfd_create and fcntl in the system-call filter or container security profile that refuses them (the packaged unit's SystemCallFilter=@system-service allows both), or run on a kernel that has memfd sealing"

    /// Makes (and closes) a sealed memfd as the memory process will; returns its seals.
    static func probeSharedMemory(name: String) throws -> SharedMemory.Seals {
        let fd = try SharedMemory.create(name: name, size: 4096)
        defer { try? fd.close() }
        return try SharedMemory.seals(of: fd)
    }

    /// PLC memory lives in a sealed memfd: make one now, as the memory process will.
    static func sharedMemory(logger: Logger) throws {
        do {
            _ = try probeSharedMemory(name: "s7commd-start-check")
        } catch {
            let text = """
                cannot create the shared PLC memory segment: \(error).
                s7commd keeps PLC memory in a sealed memfd (memfd_create with MFD_ALLOW_SEALING, then F_ADD_SEALS; Linux 3.17 or later) shared by its worker and memory process.
                Fix: \(sharedMemoryFix).
                Nothing was started.
                """
            printError(text)
            logger.error("\(text.replacingOccurrences(of: "\n", with: " "))")
            throw ExitCode(StartFailure.sharedMemory.rawValue)
        }
    }
}
