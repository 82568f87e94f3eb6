// A child program for the S7Sys tests. Each subcommand exercises one piece of S7Sys the way a
// child of s7commd would and prints what it saw; on a failure it prints it and exits 1.
//
//   demote USER      demote to USER, print the Cap*, NoNewPrivs, Uid and Gid status lines
//   receive-fd       receive a memfd on the socket at fd 3, print its first bytes, write a
//                    marker into it, check that ftruncate fails with EPERM
//   peercred         print SO_PEERCRED of the socket at fd 3, send back one end of a pair
//                    made here, and wait for a message or end of stream
//   hold-mutex       lock the robust mutex at offset 0 of the memfd at fd 3 and exit holding it
//   describe         print one JSON line: sid, pgid, pid, where fd 0 points, the open
//                    descriptors and the whole environment
//   reap-any         spawn this program with `exit 7`, reap it with Spawn.reapAny and print it
//   exit STATUS      exit with STATUS at once
//   seccomp WHAT     install an allow-list of write and exit_group only (plus mmap without
//                    PROT_EXEC, and chdir failing with EACCES), then: `allowed` writes a line
//                    and exits 0; `socket` calls socket(2); `exec-mapping` maps PROT_EXEC;
//                    `plain-mapping` maps without it; `chdir` prints chdir's result and errno;
//                    `trap`: a filter whose default reports the call (SandboxViolationReporter)
//                    and ends the process with SIGSYS, then socket(2)

#if canImport(Glibc)
import Glibc
#endif
import S7Sys
import SystemPackage

let inherited = FileDescriptor(rawValue: 3)
/// What receive-fd writes at this offset of the segment.
let marker = Array("written-by-probe".utf8)
let markerOffset = 64

func fail(_ message: String) -> Never {
    _ = try? FileDescriptor.standardError.writeAll(Array("S7SysProbe: \(message)\n".utf8))
    exit(1)
}

func hex(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { String($0 >> 4, radix: 16) + String($0 & 0xF, radix: 16) }.joined()
}

func readFile(_ path: String) throws -> [UInt8] {
    let descriptor = try FileDescriptor.open(path, .readOnly, options: .closeOnExec)
    defer { try? descriptor.close() }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = try chunk.withUnsafeMutableBytes { try descriptor.read(into: $0) }
        if count == 0 { return bytes }
        bytes += chunk[0..<count]
    }
}

func demote(userName: String) throws {
    let user = try ServiceUser.lookup(name: userName)
    Privileges.demote(toUID: user.uid, gid: user.gid)
    let status = String(decoding: try readFile("/proc/self/status"), as: UTF8.self)
    for line in status.split(separator: "\n")
    where line.hasPrefix("Cap") || line.hasPrefix("NoNewPrivs") || line.hasPrefix("Uid") || line.hasPrefix("Gid") {
        print(line)
    }
    print("uid=\(getuid()) euid=\(geteuid()) gid=\(getgid()) egid=\(getegid())")
}

func receiveDescriptor() throws {
    let (bytes, descriptors) = try UnixSocket.receive(on: inherited, maxBytes: 256, maxDescriptors: 1)
    guard let segment = descriptors.first else { fail("the message carried no descriptor") }
    let size = try SharedMemory.size(of: segment)
    let mapping = try SharedMemory.map(descriptor: segment, size: size).retainForProcessLifetime()
    print("message: \(String(decoding: bytes, as: UTF8.self))")
    print("size: \(size)")
    print("seals: \(try SharedMemory.seals(of: segment))")
    print("first-bytes: \(hex(mapping.bytes.prefix(16)))")
    mapping.bytes.baseAddress!.advanced(by: markerOffset).copyMemory(from: marker, byteCount: marker.count)
    for (label, length) in [("grow", off_t(size * 2)), ("shrink", off_t(0))] {
        if ftruncate(segment.rawValue, length) == 0 {
            fail("ftruncate to \(length) bytes succeeded on a sealed segment")
        }
        print("ftruncate-\(label): \(errno == EPERM ? "EPERM" : "errno \(errno)")")
    }
}

func peerCredentials() throws {
    let peer = try UnixSocket.peerCredentials(of: inherited)
    print("peer pid=\(peer.pid) uid=\(peer.uid) gid=\(peer.gid)")
    print("self pid=\(getpid())")
    // A pair made here reports this process to whoever gets the other end.
    let fresh = try UnixSocketPair.make()
    try UnixSocket.send(message: Array("fresh".utf8), descriptors: [fresh.second], on: inherited)
    try fresh.second.close()
    // Stay alive until the parent has checked it ("done", or end of stream).
    _ = try UnixSocket.receive(on: inherited, maxBytes: 16)
}

func holdMutex() throws {
    let mapping = try SharedMemory.map(descriptor: inherited, size: RobustMutex.size).retainForProcessLifetime()
    let mutex = RobustMutex(existingAt: mapping.bytes.baseAddress!)
    let outcome = try mutex.lock()
    print("locked: \(outcome)")
    // Exit while holding it: the kernel marks the robust mutex's owner dead.
}

/// A JSON string literal.
func json(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

func readLink(_ path: String) -> String {
    var buffer = [CChar](repeating: 0, count: 4097)
    let length = readlink(path, &buffer, buffer.count - 1)
    return length < 0 ? "" : String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func describe() throws {
    guard let directory = opendir("/proc/self/fd") else { fail("cannot open /proc/self/fd: errno \(errno)") }
    let own = dirfd(directory)
    var descriptors: [CInt] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        if let number = CInt(name), number != own { descriptors.append(number) }
    }
    closedir(directory)
    var environment: [String] = []
    var cursor = environ
    while let entry = cursor.pointee {
        let pair = String(cString: entry)
        if let equals = pair.firstIndex(of: "=") {
            environment.append(json(String(pair[..<equals])) + ":" + json(String(pair[pair.index(after: equals)...])))
        }
        cursor += 1
    }
    print(
        "{\"pid\":\(getpid()),\"sid\":\(getsid(0)),\"pgid\":\(getpgid(0)),"
            + "\"stdin\":\(json(readLink("/proc/self/fd/0"))),"
            + "\"descriptors\":[\(descriptors.sorted().map(String.init).joined(separator: ","))],"
            + "\"environment\":{\(environment.joined(separator: ","))}}"
    )
}

func reapAny() throws {
    let child = try Spawn.run(executable: readLink("/proc/self/exe"), arguments: ["exit", "7"])
    let deadline = Poll.monotonicMilliseconds() + 10_000
    while true {
        if let (pid, termination) = try Spawn.reapAny() {
            print("reaped: \(pid == child ? "the child" : "pid \(pid), not the child \(child)") \(termination)")
            break
        }
        if Poll.monotonicMilliseconds() > deadline { fail("the child \(child) did not end within 10 s") }
        _ = try Poll.wait([], timeoutMilliseconds: 5)
    }
    print("then: \(try Spawn.reapAny().map { "pid \($0.pid)" } ?? "none")")
}

/// Writes `text` with write(2) alone (print could make calls the filter does not allow).
func say(_ text: String) {
    _ = try? FileDescriptor.standardOutput.writeAll(Array((text + "\n").utf8))
}

func seccomp(_ what: String) throws -> Never {
    if what == "trap" {
        // The reporter's own calls, and nothing else: socket(2) is then reported and ends it.
        let filter = try SeccompFilter(defaultAction: .trap)
        try filter.allow(["write", "exit_group", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "getpid", "gettid", "tgkill"])
        try SandboxViolationReporter.install(prefix: "probe: ")
        try filter.load(allThreads: true)
        let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        say("socket returned \(fd)")
        _exit(0)
    }
    let filter = try SeccompFilter()
    try filter.allow(["write", "exit_group"])
    try filter.allow("mmap", whenArgument: 2, hasNoBitsOf: UInt64(PROT_EXEC))
    try filter.fail("chdir", with: .permissionDenied)
    try filter.load()
    switch what {
    case "allowed":
        say("allowed: wrote after the filter")
    case "socket":
        let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        say("socket returned \(fd)")
    case "exec-mapping":
        let mapped = mmap(nil, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        say("mmap PROT_EXEC returned \(String(describing: mapped))")
    case "plain-mapping":
        let mapped = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        say("mmap without PROT_EXEC \(mapped == MAP_FAILED ? "failed" : "worked")")
    case "chdir":
        let result = chdir("/")
        say("chdir returned \(result), errno \(errno)")
    default:
        say("unknown seccomp case \(what)")
    }
    _exit(0)
}

let arguments = CommandLine.arguments.dropFirst()
do {
    switch (arguments.first, arguments.count) {
    case ("demote", 2): try demote(userName: arguments.last!)
    case ("receive-fd", 1): try receiveDescriptor()
    case ("peercred", 1): try peerCredentials()
    case ("hold-mutex", 1): try holdMutex()
    case ("describe", 1): try describe()
    case ("reap-any", 1): try reapAny()
    case ("exit", 2): exit(CInt(arguments.last!) ?? 1)
    case ("seccomp", 2): try seccomp(arguments.last!)
    default: fail("usage: S7SysProbe demote USER | receive-fd | peercred | hold-mutex | describe | reap-any | exit STATUS | seccomp WHAT")
    }
} catch {
    fail("\(error)")
}
