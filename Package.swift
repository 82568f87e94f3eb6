// swift-tools-version: 6.2
import PackageDescription

// CI (and anyone who sets S7COMMD_STRICT=1) builds with every warning treated as an error.
let strict = Context.environment["CI"] != nil || Context.environment["S7COMMD_STRICT"] != nil
let commonSettings: [SwiftSetting] = strict ? [.treatAllWarnings(as: .error)] : []

let package = Package(
    name: "s7commd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "s7commd", targets: ["s7commd"]),
        .library(name: "S7Wire", targets: ["S7Wire"]),
        .library(name: "PLCMemory", targets: ["PLCMemory"]),
        // For PLC programs on the same host (docs/plc-programs.md): C, and Swift (PLCMemoryClient.attach).
        .library(name: "S7commdPLC", targets: ["S7commdPLC"]),
        .library(name: "S7commdPLCSwift", targets: ["PLCMemoryClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // Bytes only: TPKT, COTP and S7 PDUs as typed values. No I/O, no clocks, no globals.
        .target(name: "S7Wire", swiftSettings: commonSettings),
        // PLC memory: areas, data blocks, address arithmetic over one flat byte region.
        .target(name: "PLCMemory", swiftSettings: commonSettings),
        // The configuration file (SPEC section 2) decoded into typed values.
        .target(name: "S7Config", dependencies: ["PLCMemory", "S7Session", "S7Wire", "S7Sys"], swiftSettings: commonSettings),
        // The per-connection state machine: bytes in, actions out.
        .target(name: "S7Session", dependencies: ["S7Wire", "PLCMemory"], swiftSettings: commonSettings),
        // The SwiftNIO server that serves a listening socket it is given.
        .target(
            name: "S7Server",
            dependencies: [
                "S7Session", "PLCMemory",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: commonSettings
        ),
        .executableTarget(
            name: "s7commd",
            dependencies: [
                "S7Server", "S7Config", "S7Session", "PLCMemory", "S7Runtime", "S7Sys", "S7IPC", "S7Supervisor", "PLCMemoryClient",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: commonSettings
        ),
        // libFuzzer entry point over the decoder and the session state machine.
        // Build: scripts/fuzz (libFuzzer build in .build-fuzz/, then a bounded run over the corpus).
        .executableTarget(
            name: "S7Fuzz",
            dependencies: ["S7Session", "S7Wire", "PLCMemory"],
            swiftSettings: commonSettings
        ),
        // Linux calls and macros Swift's Glibc module does not import (CMSG_*, memfd, prctl, ...).
        .target(name: "CS7Sys"),
        // The C library a PLC program uses to attach to s7commd's shared PLC memory
        // (self-contained: also builds with plain gcc, see docs/plc-programs.md).
        .target(name: "S7commdPLC"),
        // libcap from Debian's libcap-dev.
        .systemLibrary(name: "CLibcap", pkgConfig: "libcap", providers: [.apt(["libcap-dev"])]),
        // libseccomp from Debian's libseccomp-dev, for the children's system-call allow-lists.
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        // Typed, thin syscalls for the privilege-separated runtime: descriptor passing, sealed
        // shared memory, robust mutex and seqlock, capabilities and demotion, posix_spawn.
        .target(
            name: "S7Sys",
            dependencies: ["CS7Sys", "CLibcap", "CSeccomp", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: commonSettings
        ),
        // The closed message sets between the supervisor, its children and local clients, in a
        // fixed binary encoding, with the table of what each peer may send in each phase.
        .target(
            name: "S7IPC",
            dependencies: ["PLCMemory", "S7Sys", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: commonSettings
        ),
        // The small, boring parent: one state machine and one poll loop. Only S7Sys and S7IPC —
        // no NIO, no Prometheus, no protocol target (a test checks the closure).
        .target(
            name: "S7Supervisor",
            dependencies: ["S7IPC", "S7Sys", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: commonSettings
        ),
        // For Swift PLC programs on the same host: attach to the running server's PLC memory.
        .target(
            name: "PLCMemoryClient",
            dependencies: ["PLCMemory", "S7Sys", "S7IPC", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: commonSettings
        ),
        // The two children: the S7 worker (SwiftNIO) and the memory process (retained data).
        .target(
            name: "S7Runtime",
            dependencies: [
                "S7Sys", "S7IPC", "PLCMemory", "PLCMemoryClient", "S7Config", "S7Server", "S7Session",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: commonSettings
        ),
        // A tiny child program the S7Sys tests spawn.
        .executableTarget(
            name: "S7SysProbe",
            dependencies: ["S7Sys", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: commonSettings
        ),
        .testTarget(name: "S7WireTests", dependencies: ["S7Wire"], swiftSettings: commonSettings),
        .testTarget(name: "PLCMemoryTests", dependencies: ["PLCMemory"], swiftSettings: commonSettings),
        .testTarget(name: "S7ConfigTests", dependencies: ["S7Config", "PLCMemory"], resources: [.copy("Fixtures")], swiftSettings: commonSettings),
        .testTarget(
            name: "S7SessionTests",
            dependencies: ["S7Session", "S7Wire", "PLCMemory", "S7Config"],
            resources: [.copy("Fixtures")],
            swiftSettings: commonSettings
        ),
        .testTarget(
            name: "S7ServerTests",
            dependencies: [
                "S7Server", "S7Session", "S7Config", "PLCMemory", "S7Sys", "s7commd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: commonSettings
        ),
        .testTarget(name: "S7IPCTests", dependencies: ["S7IPC", "PLCMemory", "S7Sys"], swiftSettings: commonSettings),
        .testTarget(name: "S7SupervisorTests", dependencies: ["S7Supervisor", "S7IPC", "S7Sys"], swiftSettings: commonSettings),
        .testTarget(
            name: "PLCMemoryClientTests",
            dependencies: ["PLCMemoryClient", "PLCMemory", "S7Sys", "CS7Sys", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: commonSettings
        ),
        .testTarget(
            name: "S7SysTests",
            dependencies: ["S7Sys", "CS7Sys", "S7SysProbe", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: commonSettings
        ),
    ]
)
