import Foundation
import PLCMemory
import S7Session
import Testing

@Suite("Fuzz corpus")
struct CorpusTests {
    static let files = Fixtures.files("corpus", ext: "bin")

    @Test func corpusHasEnoughSeeds() {
        #expect(Self.files.count >= 30, "Fixtures/corpus holds \(Self.files.count) seeds")
    }

    /// Every seed runs through the same harness the fuzzer uses; its preconditions are the checks.
    @Test func replayCorpus() throws {
        let memory = FixtureMemory.make()
        for url in Self.files {
            let data = try Data(contentsOf: url)
            FuzzHarness.run(Array(data), memory: memory)
        }
    }
}
