import PLCMemory
import S7Session
import S7Wire

// libFuzzer entry point: every input is a byte stream from a client, fed to a fresh session in
// chunks whose sizes come from the input itself, so framing, reassembly and every service see
// arbitrary splits. Build with:
//   swift build --product S7Fuzz -c debug -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library
//   (add -Xswiftc -DFUZZING so libFuzzer provides main), and run: .build/debug/S7Fuzz Tests/S7SessionTests/Fixtures/corpus -max_total_time=60

let fuzzMemory: FlatMemory = {
    var definition = MemoryDefinition()
    definition.dataBlocks[1] = RegionDefinition(size: 64)
    definition.dataBlocks[2] = RegionDefinition(size: 16, readOnly: true)
    definition.dataBlocks[3] = RegionDefinition(size: 32, mapping: ImageMapping(table: .intMemory, startElement: 1000))
    definition.inputs = RegionDefinition(size: 16)
    definition.outputs = RegionDefinition(size: 16)
    definition.flags = RegionDefinition(size: 16)
    definition.timers = RegionDefinition(size: 32)
    definition.counters = RegionDefinition(size: 32)
    // The definition is fixed and valid: a failure here is a programming error.
    guard let memory = try? FlatMemory(definition) else { preconditionFailure("fuzz memory layout") }
    return memory
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    FuzzHarness.run(Array(bytes), memory: fuzzMemory)
    return 0
}

#if !FUZZING
import Foundation

/// Without libFuzzer (an ordinary build), the same entry point replays files: every path given
/// is run through the harness, so a crash input can be reproduced under a debugger.
@main
struct ReplayMain {
    static func main() {
        let paths = CommandLine.arguments.dropFirst()
        guard !paths.isEmpty else {
            FileHandle.standardError.write(Data("usage: S7Fuzz FILE...  (replays inputs through the session harness)\n".utf8))
            exit(2)
        }
        for path in paths {
            guard let data = FileManager.default.contents(atPath: path) else {
                FileHandle.standardError.write(Data("S7Fuzz: cannot read \(path)\n".utf8))
                exit(1)
            }
            data.withUnsafeBytes { raw in
                let bytes = raw.bindMemory(to: UInt8.self)
                _ = fuzzOneInput(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!, bytes.count)
            }
        }
        print("replayed \(paths.count) input(s)")
    }
}
#endif

#if FUZZING
/// SwiftPM links an executable's entry point as `<module>_main`; hand control to libFuzzer's
/// driver from there.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@_cdecl("S7Fuzz_main")
func fuzzDriverMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var vector = argv
    return LLVMFuzzerRunDriver(&count, &vector) { data, size in fuzzOneInput(data, size) }
}
#endif
