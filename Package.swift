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
        .library(name: "S7commdPLCSwift", targets: ["S7Runtime"]),
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
        .target(name: "S7Config", dependencies: ["PLCMemory", "S7Session", "S7Wire"], swiftSettings: commonSettings),
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
                "S7Server", "S7Config", "S7Session", "PLCMemory", "S7Runtime", "S7Sys",
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
        // Typed, thin syscalls for the privilege-separated runtime: descriptor passing, sealed
        // shared memory, robust mutex and seqlock, capabilities and demotion, posix_spawn.
        .target(
            name: "S7Sys",
            dependencies: ["CS7Sys", "CLibcap", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: commonSettings
        ),
        // The privilege-separated runtime: shared PLC memory, the messages between the
        // supervisor, the S7 worker and the memory process, and the three roles.
        .target(
            name: "S7Runtime",
            dependencies: [
                "S7Sys", "PLCMemory", "S7Config", "S7Server", "S7Session",
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
                "S7Server", "S7Session", "S7Config", "PLCMemory", "s7commd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: commonSettings
        ),
        .testTarget(
            name: "S7SysTests",
            dependencies: ["S7Sys", "CS7Sys", "S7SysProbe", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: commonSettings
        ),
    ]
)
