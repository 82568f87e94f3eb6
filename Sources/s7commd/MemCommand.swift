import ArgumentParser
import Foundation
import PLCMemory
import PLCMemoryClient

struct MemCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mem",
        abstract: "Read and write the PLC memory of the running server, as the PLC side does.",
        discussion: """
            Addresses as in STEP 7: DB1.DBX0.3, DB1.DBB2, DB1.DBW4, DB1.DBD8, MW10, MD4, M0.3, IB0, IW2, Q0.3,
            QW4, T5, C5. Words and double words are big-endian, as S7 clients see them. The tool attaches to
            the shared memory through the memory process's socket (root, the service user, or its group).
            A write from here is the PLC side's: read_only, which restricts S7 clients, does not apply.
            """,
        subcommands: [Read.self, Write.self])

    enum ValueType: String, ExpressibleByArgument, CaseIterable {
        case bool, byte, word, int, dword, dint, real

        var size: Int {
            switch self {
            case .bool, .byte: return 1
            case .word, .int: return 2
            case .dword, .dint, .real: return 4
            }
        }
    }

    struct Options: ParsableArguments {
        @Option(help: ArgumentHelp("The memory process's socket.", valueName: "path"))
        var socket: String = URL(fileURLWithPath: RuntimeFiles.defaultPidPath).deletingLastPathComponent().path + "/memory.sock"

        @Option(help: ArgumentHelp("How to read the bytes (default from the address: X bool, B byte, W int, D dint).", valueName: "type"))
        var type: ValueType?

        @Flag(help: "Print JSON for scripts.") var json = false
    }

    static func parse(_ text: String) throws -> PLCAddress {
        guard let address = PLCAddress(text) else {
            throw ValidationError("\(text) is not an address: write it like DB1.DBW4, DB1.DBX0.3, MW10, MD4, M0.3, IB0, Q0.3, T5 or C5")
        }
        return address
    }

    static func type(_ address: PLCAddress, _ chosen: ValueType?) throws -> ValueType {
        let natural: ValueType
        switch address.width {
        case .bit: natural = .bool
        case .byte: natural = .byte
        case .word: natural = .int
        case .doubleWord: natural = .dint
        }
        guard let chosen else { return natural }
        var isBit = false
        if case .bit = address.width { isBit = true }
        guard chosen.size == (isBit ? 1 : address.byteCount) else {
            throw ValidationError("--type \(chosen.rawValue) is \(chosen.size) byte(s) but \(address) is \(address.byteCount)")
        }
        if isBit, chosen != .bool { throw ValidationError("\(address) is a bit: --type bool") }
        return chosen
    }

    static func attach(_ socket: String) throws -> FlatMemoryHandle {
        do {
            return try PLCMemoryClient.attach(socketPath: socket)
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
    }

    static func describe(_ error: MemoryAccessError, _ address: PLCAddress) -> String {
        switch error {
        case .objectDoesNotExist:
            return address.area == .dataBlock ? "DB\(address.db) does not exist in this configuration" : "the \(address.area) area is not enabled"
        case .addressOutOfRange: return "\(address) is past the end of its block or area"
        case .readOnly: return "\(address) is read-only"
        }
    }

    struct Read: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the value at an address.")
        @OptionGroup var options: Options
        @Argument(help: "The address, e.g. DB1.DBW4.") var address: String

        func run() throws {
            let a = try MemCommand.parse(address)
            let t = try MemCommand.type(a, options.type)
            let handle = try MemCommand.attach(options.socket)
            let text: String
            let bytes: [UInt8]
            do throws(MemoryAccessError) {
                if case .bit(let bit) = a.width {
                    let on = try handle.memory.readBit(a.area, db: a.db, offset: a.byteOffset, bit: bit)
                    bytes = [on ? 1 : 0]
                    text = on ? "true" : "false"
                } else {
                    var b: [UInt8] = []
                    try handle.memory.read(a.area, db: a.db, offset: a.byteOffset, count: a.byteCount, into: &b)
                    bytes = b
                    text = MemCommand.format(b, t)
                }
            } catch {
                printError(MemCommand.describe(error, a))
                throw ExitCode(1)
            }
            if options.json {
                report(json: true, ["address": a.description, "type": t.rawValue, "value": text,
                                    "bytes": bytes.map { String(format: "%02X", $0) }.joined(separator: " ")], "")
            } else {
                print("\(a) = \(text)  (\(t.rawValue); bytes \(bytes.map { String(format: "%02X", $0) }.joined(separator: " ")))")
            }
        }
    }

    struct Write: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Store a value at an address.")
        @OptionGroup var options: Options
        @Argument(help: "The address, e.g. DB1.DBD8.") var address: String
        @Argument(help: "The value: true/false, a number, or a real such as 3.14 (put -- before a negative one: mem write DB1.DBW0 -- -5).") var value: String

        func run() throws {
            let a = try MemCommand.parse(address)
            let t = try MemCommand.type(a, options.type ?? (value.contains(".") && a.width == .doubleWord ? .real : nil))
            let handle = try MemCommand.attach(options.socket)
            do {
                if case .bit(let bit) = a.width {
                    guard let on = ["true": true, "1": true, "false": false, "0": false][value.lowercased()] else {
                        throw ValidationError("\(a) is a bit: write true, false, 1 or 0")
                    }
                    try writeBit(handle.memory, a, bit, on)
                } else {
                    let bytes = try MemCommand.encode(value, t)
                    try handle.memory.plcWrite(a.area, db: a.db, offset: a.byteOffset, bytes: bytes[...])
                }
            } catch let e as MemoryAccessError {
                printError(MemCommand.describe(e, a))
                throw ExitCode(1)
            }
            if options.json { report(json: true, ["address": a.description, "written": value], "") } else { print("\(a) := \(value)") }
        }

        private func writeBit(_ memory: FlatMemory, _ a: PLCAddress, _ bit: Int, _ on: Bool) throws {
            try memory.plcWriteBit(a.area, db: a.db, offset: a.byteOffset, bit: bit, value: on)
        }
    }

    static func format(_ b: [UInt8], _ t: ValueType) -> String {
        let u = b.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        switch t {
        case .bool: return b.first.map { $0 != 0 ? "true" : "false" } ?? "?"
        case .byte, .word, .dword: return "\(u)"
        case .int: return "\(Int16(bitPattern: UInt16(truncatingIfNeeded: u)))"
        case .dint: return "\(Int32(bitPattern: u))"
        case .real: return "\(Float(bitPattern: u))"
        }
    }

    static func encode(_ text: String, _ t: ValueType) throws -> [UInt8] {
        func be(_ v: UInt32, _ n: Int) -> [UInt8] { (0..<n).reversed().map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }
        func bad() -> ValidationError { ValidationError("\(text) is not a \(t.rawValue) value") }
        switch t {
        case .bool: throw ValidationError("a bool goes to a bit address such as DB1.DBX0.3")
        case .byte:
            if let v = UInt8(text) { return [v] }
            if let v = Int8(text) { return [UInt8(bitPattern: v)] }
            throw bad()
        case .word, .int:
            if let v = Int16(text) { return be(UInt32(UInt16(bitPattern: v)), 2) }
            if let v = UInt16(text) { return be(UInt32(v), 2) }
            throw bad()
        case .dword, .dint:
            if let v = Int32(text) { return be(UInt32(bitPattern: v), 4) }
            if let v = UInt32(text) { return be(v, 4) }
            throw bad()
        case .real:
            guard let v = Float(text) else { throw bad() }
            return be(v.bitPattern, 4)
        }
    }
}
