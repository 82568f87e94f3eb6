// Read-path micro benchmark for FlatMemory: 4-byte reads of a DB in segment 0 (DB1) and of a
// read-only DB (DB2, segment 1 since the second memfd) with a guard that does nothing, so only
// the lookup, the bounds check and the copy are measured. Not a test: compare two builds.
//
//   swiftc -O -wmo -D NEW Sources/PLCMemory/*.swift bench/flatmemory_read/main.swift -o /tmp/fm-new
//   valgrind --tool=callgrind /tmp/fm-new 100000; valgrind --tool=callgrind /tmp/fm-new 200000
//   (the difference of the two totals / 1,000,000 = instructions per read; the loop does
//   2 DBs x 5 rounds x N reads). Without -D NEW it builds against the single-segment
//   FlatMemory of before (no readOnlyRegion parameter).
import Glibc

struct NoGuard: RegionGuard {
    func read<T>(_ body: () -> T) -> T { body() }
    func write<T>(_ body: () -> T) -> T { body() }
}

func now() -> Double { var t = timespec(); clock_gettime(CLOCK_MONOTONIC, &t); return Double(t.tv_sec) * 1e9 + Double(t.tv_nsec) }

var d = MemoryDefinition()
for n in 1...20 { d.dataBlocks[UInt16(n)] = RegionDefinition(size: 1024, readOnly: n == 2) }
d.flags = RegionDefinition(size: 256)
let layout = try! MemoryLayout(d)
let region = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
region.initializeMemory(as: UInt8.self, repeating: 1)
#if NEW
let second = UnsafeMutableRawBufferPointer.allocate(byteCount: max(layout.readOnlySize, 1), alignment: 64)
second.initializeMemory(as: UInt8.self, repeating: 1)
let m = FlatMemory(layout: layout, region: region, readOnlyRegion: second, readOnlyRegionWritable: false, guard: NoGuard())
#else
let m = FlatMemory(layout: layout, region: region, guard: NoGuard())
#endif
let n = Int(CommandLine.arguments.dropFirst().first ?? "20000000")!
var out: [UInt8] = []
out.reserveCapacity(64)
var sum = 0
for db in [UInt16(1), 2] {
    var best = Double.infinity
    for _ in 0..<5 {
        let t0 = now()
        for i in 0..<n {
            out.removeAll(keepingCapacity: true)
            try! m.read(.dataBlock, db: db, offset: (i & 255) * 4, count: 4, into: &out)
            sum &+= Int(out[0])
        }
        best = min(best, (now() - t0) / Double(n))
    }
    print("DB\(db) 4-byte read: \((best * 100).rounded() / 100) ns (best of 5 x \(n))")
}
print(sum)
