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
//                    descriptors and where each points, the whole environment, the uids,
//                    gids, supplementary groups, capability sets and NoNewPrivs
//   demote-keeping KEEP USER_A USER_B STDIN [EXECUTABLE]
//                    demote to USER_A keeping KEEP (none, or a comma list of setuid, setgid,
//                    setpcap, net_bind_service), print the status lines as demote does, then
//                    spawn-as USER_B STDIN EXECUTABLE (below)
//   drop-keeping KEEP USER_B STDIN [EXECUTABLE]
//                    for a start that is not root but holds ambient capabilities: drop all
//                    but KEEP, set no-new-privileges, print the status lines before (each
//                    after "before ") and after, and whether the bounding set was dropped,
//                    then spawn-as USER_B STDIN EXECUTABLE
//     spawn-as       (the second half of both) put a pipe at 0, pipes at 23 and 20 passed
//                    crossed as 20 and 23, and descriptors that are not close-on-exec at 21
//                    and 30; print where 0, 20 and 23 point and the sid; spawn EXECUTABLE
//                    (default: this program) `describe` as USER_B with Spawn.run(identity:),
//                    STDIN devnull (and a new session) or inherit, and print the child's end;
//                    or the error, and whether any child is left unreaped
//   reap-any         spawn this program with `exit 7`, reap it with Spawn.reapAny and print it
//   exit STATUS      exit with STATUS at once
//   seccomp WHAT     install an allow-list of write and exit_group only (plus mmap without
//                    PROT_EXEC, and chdir failing with EACCES), then: `allowed` writes a line
//                    and exits 0; `socket` calls socket(2); `exec-mapping` maps PROT_EXEC;
//                    `plain-mapping` maps without it; `chdir` prints chdir's result and errno;
//                    `trap`: a filter whose default reports the call (SandboxViolationReporter)
//                    and ends the process with SIGSYS, then socket(2)
//   exec-denying NAME ERRNO PROGRAM [ARG...]
//                    install a filter that lets everything run but makes system call NAME
//                    fail with ERRNO, then exec PROGRAM: what a kernel without that call
//                    looks like to s7commd (e.g. no seccomp, no Landlock)
//   landlock WHAT    restrict this process with Landlock and print, one `what: result` line
//                    each, what it can still do (a result is `ok` or the errno's name):
//                    `nothing` (Policy.nothing; fd 3 is a loopback TCP listener and fd 4 an
//                    abstract Unix listener of the parent) tries files, TCP, signals and the
//                    abstract socket, each first before the restriction; `directory DIR
//                    OUTSIDE` (onlyDirectory(DIR)) replaces DIR/target atomically, creates,
//                    renames and removes inside DIR, then tries /etc/hostname and the file
//                    OUTSIDE; `missing PATH` and `threads` print the error restrict throws for
//                    a PATH that does not exist and for a second thread, then what is still open

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

/// One line of /proc/self/status, e.g. "CapEff: 0000000000000000" for "CapEff".
func statusLine(_ name: String, in status: String) -> String {
    let prefix = name + ":"
    return status.split(separator: "\n").first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)).trimmingWhitespace() } ?? ""
}

extension String {
    func trimmingWhitespace() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}

func describe() throws {
    let status = String(decoding: try readFile("/proc/self/status"), as: UTF8.self)
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
    let links = descriptors.sorted().map { "\"\($0)\":" + json(readLink("/proc/self/fd/\($0)")) }
    var groups = [gid_t](repeating: 0, count: Int(max(getgroups(0, nil), 0)))
    let groupCount = getgroups(CInt(groups.count), &groups)
    func ids(_ name: String) -> String {
        "[" + statusLine(name, in: status).split(whereSeparator: { $0 == " " || $0 == "\t" }).prefix(3).joined(separator: ",") + "]"
    }
    let capabilities = [("inheritable", "CapInh"), ("permitted", "CapPrm"), ("effective", "CapEff"), ("bounding", "CapBnd"), ("ambient", "CapAmb")]
        .map { "\"\($0.0)\":" + json(statusLine($0.1, in: status)) }
    print(
        "{\"pid\":\(getpid()),\"sid\":\(getsid(0)),\"pgid\":\(getpgid(0)),"
            + "\"stdin\":\(json(readLink("/proc/self/fd/0"))),"
            + "\"descriptors\":[\(descriptors.sorted().map(String.init).joined(separator: ","))],"
            + "\"links\":{\(links.joined(separator: ","))},"
            + "\"environment\":{\(environment.joined(separator: ","))},"
            + "\"uid\":\(ids("Uid")),\"gid\":\(ids("Gid")),"
            + "\"groups\":[\(groupCount < 0 ? "-1" : groups.prefix(Int(groupCount)).map { String($0) }.joined(separator: ","))],"
            + "\"capabilities\":{\(capabilities.joined(separator: ","))},"
            + "\"noNewPrivileges\":\(statusLine("NoNewPrivs", in: status) == "1")}"
    )
}

/// The capability numbers of "none" or a comma list such as "setuid,setgid".
func capabilities(_ list: String) -> Set<Int> {
    if list == "none" { return [] }
    return Set(list.split(separator: ",").map { name in
        switch name {
        case "setuid": Capabilities.setUID
        case "setgid": Capabilities.setGID
        case "setpcap": Capabilities.setPCap
        case "net_bind_service": Capabilities.netBindService
        default: fail("unknown capability \(name)")
        }
    })
}

/// Prints the Cap*, NoNewPrivs, Uid, Gid and Groups lines of /proc/self/status, each after `prefix`.
func printStatusLines(prefix: String = "") throws {
    let status = String(decoding: try readFile("/proc/self/status"), as: UTF8.self)
    for line in status.split(separator: "\n")
    where line.hasPrefix("Cap") || line.hasPrefix("NoNewPrivs") || line.hasPrefix("Uid") || line.hasPrefix("Gid") || line.hasPrefix("Groups") {
        print(prefix + line)
    }
}

func demoteKeeping(_ keep: String, userA: String, userB: String, standardInput: String, executable: String?) throws {
    let a = try ServiceUser.lookup(name: userA)
    let b = try ServiceUser.lookup(name: userB)
    let program = executable ?? readLink("/proc/self/exe")
    Privileges.demote(toUID: a.uid, gid: a.gid, keeping: capabilities(keep))
    try printStatusLines()
    try spawnAs(b, standardInput: standardInput, executable: program)
}

func dropKeeping(_ keep: String, userB: String, standardInput: String, executable: String?) throws {
    let b = try ServiceUser.lookup(name: userB)
    let program = executable ?? readLink("/proc/self/exe")
    try printStatusLines(prefix: "before ")
    let droppedBoundingSet = try Privileges.dropAllCapabilities(keeping: capabilities(keep))
    try Privileges.setNoNewPrivileges()
    try printStatusLines()
    print("bounding-dropped: \(droppedBoundingSet)")
    try spawnAs(b, standardInput: standardInput, executable: program)
}

/// Puts `descriptor` at `number` (not close-on-exec, as dup2 leaves it).
func place(_ descriptor: FileDescriptor, at number: CInt) -> FileDescriptor {
    guard dup2(descriptor.rawValue, number) == number else { fail("dup2 to \(number): errno \(errno)") }
    return FileDescriptor(rawValue: number)
}

func spawnAs(_ user: ServiceUser, standardInput: String, executable: String) throws {
    let first = try UnixPipe.make()
    let second = try UnixPipe.make()
    let input = try UnixPipe.make()
    _ = place(input.read, at: 0)
    // Crossed: each source sits at the number the other one is passed as.
    let at23 = place(first.write, at: 23)
    let at20 = place(second.write, at: 20)
    // Not close-on-exec, not passed: below the temporaries (21) and among them (30).
    let bait = try FileDescriptor.open("/dev/zero", .readOnly, options: .closeOnExec)
    _ = place(bait, at: 21)
    _ = place(bait, at: 30)
    print("stdin: \(readLink("/proc/self/fd/0"))")
    print("passed 20: \(readLink("/proc/self/fd/23"))")
    print("passed 23: \(readLink("/proc/self/fd/20"))")
    print("sid: \(getsid(0))")
    fflush(nil)
    let devNull = standardInput == "devnull"
    let pid: pid_t
    do {
        pid = try Spawn.run(
            executable: executable,
            arguments: ["describe"],
            environment: ["S7SYS_TEST": "spawned as \(user.name)"],
            passing: [(at23, as: 20), (at20, as: 23)],
            standardInput: devNull ? .devNull : .inherit,
            newSession: devNull,
            identity: Spawn.Identity(uid: user.uid, gid: user.gid)
        )
    } catch {
        print("spawn failed: \(error)")
        var status: CInt = 0
        let left = waitpid(-1, &status, WNOHANG)
        print("children: \(left == -1 && errno == ECHILD ? "none" : "waitpid returned \(left), errno \(errno)")")
        return
    }
    print("child: \(try Spawn.wait(pid))")
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

func execDenying(_ values: [String]) throws -> Never {
    guard let code = Int32(values[1]) else { fail("ERRNO must be a number: \(values[1])") }
    let filter = try SeccompFilter(defaultAction: .allow)
    try filter.fail(values[0], with: Errno(rawValue: code))
    try filter.load()
    let argv = values[2...].map { strdup($0) } + [nil]
    execv(values[2], argv)
    fail("could not exec \(values[2]): errno \(errno)")
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

/// The name of an errno the Landlock cases expect, else its number.
func errnoName(_ code: CInt) -> String {
    let names: [CInt: String] = [
        EACCES: "EACCES", EPERM: "EPERM", ENOENT: "ENOENT", ECONNREFUSED: "ECONNREFUSED",
        EINVAL: "EINVAL", EEXIST: "EEXIST", EXDEV: "EXDEV", ENOTDIR: "ENOTDIR",
    ]
    return names[code] ?? "errno \(code)"
}

/// Prints `what: ok` when `body` returns 0 or more, else `what: ERRNO`.
func attempt(_ what: String, _ body: () -> Int) {
    let result = body()
    print("\(what): \(result >= 0 ? "ok" : errnoName(errno))")
}

/// Prints `what: ok`, or `what: ERRNO` from the SystemCallError `body` throws.
func attempt(_ what: String, _ body: () throws -> Void) {
    do {
        try body()
        print("\(what): ok")
    } catch let error as SystemCallError {
        print("\(what): \(errnoName(error.errno.rawValue)) (\(error.operation))")
    } catch {
        print("\(what): \(error)")
    }
}

/// Opens `path` with `flags` and closes it again: 0, or -1 with errno set.
func openAndClose(_ path: String, _ flags: CInt) -> Int {
    let fd = open(path, flags | O_CLOEXEC, 0o600)
    if fd >= 0 { close(fd) }
    return fd >= 0 ? 0 : -1
}

/// The address a socket is bound to.
func boundAddress(_ fd: FileDescriptor) -> (sockaddr_storage, socklen_t) {
    var address = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let result = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd.rawValue, $0, &length) }
    }
    if result != 0 { fail("getsockname of fd \(fd.rawValue): \(errnoName(errno))") }
    return (address, length)
}

/// A new socket of `family` connected to `address`: 0, or -1 with errno set.
func connectNew(_ family: CInt, to address: (sockaddr_storage, socklen_t)) -> Int {
    var (storage, length) = address
    let fd = socket(family, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    if fd < 0 { fail("socket: \(errnoName(errno))") }
    defer { close(fd) }
    let result = withUnsafePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) }
    }
    return Int(result)
}

/// A new TCP socket bound to 127.0.0.1 port 0: 0, or -1 with errno set.
func bindLoopback() -> Int {
    let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    if fd < 0 { fail("socket: \(errnoName(errno))") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    return Int(result)
}

func landlockNothing() throws {
    let tcp = boundAddress(inherited)
    let abstract = boundAddress(FileDescriptor(rawValue: 4))
    let earlier = open("/etc/hostname", O_RDONLY | O_CLOEXEC)
    if earlier < 0 { fail("cannot open /etc/hostname before the restriction: \(errnoName(errno))") }
    attempt("before tcp-connect") { connectNew(AF_INET, to: tcp) }
    attempt("before abstract-connect") { connectNew(AF_UNIX, to: abstract) }
    attempt("before kill-parent") { Int(kill(getppid(), 0)) }
    let outcome = try Landlock.restrict(.nothing)
    print("abi: \(outcome.abi.map(String.init) ?? "none")")
    print("outcome: \(outcome)")
    attempt("open /etc/hostname") { openAndClose("/etc/hostname", O_RDONLY) }
    let scratch = "/tmp/s7sysprobe-landlock-\(getpid())"
    attempt("create in /tmp") {
        let result = openAndClose(scratch, O_WRONLY | O_CREAT | O_EXCL)
        if result == 0 { unlink(scratch) }
        return result
    }
    var buffer = [UInt8](repeating: 0, count: 256)
    attempt("read earlier descriptor") { read(earlier, &buffer, buffer.count) > 0 ? 0 : -1 }
    attempt("tcp-connect") { connectNew(AF_INET, to: tcp) }
    attempt("tcp-bind") { bindLoopback() }
    attempt("kill-parent") { Int(kill(getppid(), 0)) }
    attempt("kill-self") { Int(kill(getpid(), 0)) }
    attempt("abstract-connect") { connectNew(AF_UNIX, to: abstract) }
}

func landlockDirectory(_ directory: String, outside: String) throws {
    let outcome = try Landlock.restrict(.onlyDirectory(directory))
    print("abi: \(outcome.abi.map(String.init) ?? "none")")
    print("outcome: \(outcome)")
    let target = directory + "/target"
    attempt("atomic replace") { try AtomicFile.write(Array("new".utf8), to: target, mode: 0o600) }
    attempt("read target") {
        guard let bytes = try? readFile(target) else { return -1 }
        print("target: \(String(decoding: bytes, as: UTF8.self))")
        return 0
    }
    let scratch = directory + "/scratch"
    attempt("create") { openAndClose(scratch, O_WRONLY | O_CREAT | O_EXCL) }
    attempt("truncate") { openAndClose(scratch, O_WRONLY | O_TRUNC) }
    attempt("rename") { Int(rename(scratch, scratch + "-renamed")) }
    attempt("unlink") { Int(unlink(scratch + "-renamed")) }
    attempt("mkdir") { Int(mkdir(directory + "/sub", 0o700)) }
    attempt("rename into subdirectory") {
        let inner = directory + "/sub/moved"
        let result = openAndClose(directory + "/moving", O_WRONLY | O_CREAT | O_EXCL)
        return result < 0 ? result : Int(rename(directory + "/moving", inner) == 0 ? unlink(inner) : -1)
    }
    attempt("rmdir") { Int(rmdir(directory + "/sub")) }
    attempt("open /etc/hostname") { openAndClose("/etc/hostname", O_RDONLY) }
    attempt("read outside") { openAndClose(outside, O_RDONLY) }
    attempt("write outside") { openAndClose(outside, O_WRONLY) }
    attempt("create beside the directory") { openAndClose(outside + "-new", O_WRONLY | O_CREAT | O_EXCL) }
    attempt("tcp-bind") { bindLoopback() }
}

/// What restrict throws in a process that cannot be restricted, and that it was not.
func landlockRefused(_ policy: Landlock.Policy) {
    do {
        let outcome = try Landlock.restrict(policy)
        print("restricted: \(outcome)")
    } catch {
        print("error: \(error)")
    }
    attempt("open /etc/hostname") { openAndClose("/etc/hostname", O_RDONLY) }
    print("no-new-privileges: \((try? Capabilities.current().noNewPrivileges).map(String.init) ?? "unknown")")
}

func landlock(_ arguments: [String]) throws {
    switch (arguments.first, arguments.count) {
    case ("nothing", 1): try landlockNothing()
    case ("directory", 3): try landlockDirectory(arguments[1], outside: arguments[2])
    case ("missing", 2): landlockRefused(Landlock.Policy(readOnly: ["/etc", arguments[1]]))
    case ("threads", 1):
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { _ in
            while true { pause() }
        }, nil)
        if created != 0 { fail("pthread_create: \(errnoName(created))") }
        landlockRefused(.nothing)
    default: fail("usage: S7SysProbe landlock nothing | directory DIR OUTSIDE | missing PATH | threads")
    }
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
    case ("landlock", 2...): try landlock(Array(arguments.dropFirst()))
    case ("exec-denying", 4...): try execDenying(Array(arguments.dropFirst()))
    case ("demote-keeping", 5), ("demote-keeping", 6):
        let values = Array(arguments.dropFirst())
        try demoteKeeping(values[0], userA: values[1], userB: values[2], standardInput: values[3], executable: values.count == 5 ? values[4] : nil)
    case ("drop-keeping", 4), ("drop-keeping", 5):
        let values = Array(arguments.dropFirst())
        try dropKeeping(values[0], userB: values[1], standardInput: values[2], executable: values.count == 4 ? values[3] : nil)
    default:
        fail(
            "usage: S7SysProbe demote USER | receive-fd | peercred | hold-mutex | describe | reap-any | exit STATUS | seccomp WHAT"
                + " | landlock WHAT | exec-denying NAME ERRNO PROGRAM [ARG...] | demote-keeping KEEP USER_A USER_B STDIN [EXECUTABLE] | drop-keeping KEEP USER_B STDIN [EXECUTABLE]"
        )
    }
} catch {
    fail("\(error)")
}
