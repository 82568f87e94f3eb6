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
    /// The runtime directory (the pid file's): as root only its leaf is ever created (owned by
    /// the service user, 0755, as systemd's RuntimeDirectory= makes it); an existing one must
    /// be a real directory owned by root or the service user and writable by no one else. It
    /// is never chowned or chmodded. The /tmp fallback of a user without XDG_RUNTIME_DIR is
    /// made 0700 and must be that user's own.
    static func runtimeDirectory(_ path: String, service: (uid: uid_t, gid: gid_t), logger: Logger) throws -> String {
        do {
            if geteuid() == 0 {
                _ = try PrivateDirectory.ensure(path, owner: service, mode: 0o755, trustedOwners: [0, service.uid])
            } else if path == RuntimeFiles.temporaryRuntimeDirectory {
                _ = try PrivateDirectory.ensure(path, owner: nil, mode: 0o700, trustedOwners: [getuid()])
            } else {
                _ = try PrivateDirectory.ensure(path, owner: nil, mode: 0o755, trustedOwners: [getuid(), 0])
            }
        } catch {
            printError("cannot use the runtime directory for the pid file and sockets: \(error)\nNothing was started.")
            logger.error("cannot use the runtime directory: \(error)")
            throw ExitCode(StartFailure.runtimeFiles.rawValue)
        }
        return path
    }

    /// The retained-data directory, when any region is retained: the memory process (the
    /// service user) writes retain.bin there. As root only a missing leaf is created (0700,
    /// owned by the service user); an existing directory is never chowned: it must already
    /// belong to the service user and be writable by no one else.
    static func stateDirectory(_ path: String, layout: PLCMemory.MemoryLayout, service: (uid: uid_t, gid: gid_t), user: String,
                               logger: Logger) throws {
        let retained = RetainStore.retained(layout)
        var problem: String?
        if geteuid() != 0, !FileManager.default.fileExists(atPath: path) {
            // The user's own state tree (~/.local/state): its parents are created too.
            try? FileManager.default.createDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path,
                                                     withIntermediateDirectories: true)
        }
        if geteuid() != 0, FileManager.default.fileExists(atPath: path), access(path, W_OK | X_OK) != 0 {
            problem = "uid \(getuid()) may not write there (\(String(cString: strerror(errno))))"
        } else {
            do {
                _ = try PrivateDirectory.ensure(path, owner: geteuid() == 0 ? service : nil, mode: 0o700, trustedOwners: [service.uid])
            } catch {
                problem = "\(error)"
            }
        }
        guard let problem else { return }
        let names = retained.map(\.description).joined(separator: ", ")
        let owner = geteuid() == 0 ? user : (getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? user)
        let text = """
            cannot keep retained data in the state directory \(path): \(problem).
            \(names) \(retained.count == 1 ? "is" : "are") configured with "retain": true and would not survive a restart.
            Fix: chown \(owner): \(path) and chmod 0700 \(path) (the packaged unit's StateDirectory= does this for /var/lib/s7commd), or pass --state-dir with a directory \(owner) owns.
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
