// A child program for the S7Sys tests. Each subcommand exercises one piece of S7Sys the way a
// child of s7commd would and prints what it saw; on a failure it prints it and exits 1.
//
//   demote USER      demote to USER, print the Cap*, NoNewPrivs, Uid and Gid status lines
//   receive-fd       receive a memfd on the socket at fd 3, print its first bytes, write a
//                    marker into it, check that ftruncate fails with EPERM
//   peercred         print SO_PEERCRED of the socket at fd 3, send back one end of a pair
//                    made here, and wait for a message or end of stream
//   hold-mutex       lock the robust mutex at offset 0 of the memfd at fd 3 and exit holding it

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

let arguments = CommandLine.arguments.dropFirst()
do {
    switch (arguments.first, arguments.count) {
    case ("demote", 2): try demote(userName: arguments.last!)
    case ("receive-fd", 1): try receiveDescriptor()
    case ("peercred", 1): try peerCredentials()
    case ("hold-mutex", 1): try holdMutex()
    default: fail("usage: S7SysProbe demote USER | receive-fd | peercred | hold-mutex")
    }
} catch {
    fail("\(error)")
}
