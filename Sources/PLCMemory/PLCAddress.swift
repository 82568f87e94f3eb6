/// An address as PLC programmers write it: `DB1.DBW4`, `DB1.DBX0.3`, `MW10`, `MD4`, `Q0.3`,
/// `IB2`, `T5`, `C5`.
public struct PLCAddress: Equatable, Sendable, CustomStringConvertible {
    public enum Width: Equatable, Sendable {
        case bit(Int)
        case byte
        case word
        case doubleWord
    }

    public var area: PLCArea
    public var db: UInt16
    /// Byte offset in the area (for T and C: the timer / counter number).
    public var offset: Int
    public var width: Width

    public init(area: PLCArea, db: UInt16 = 0, offset: Int, width: Width) {
        self.area = area
        self.db = db
        self.offset = offset
        self.width = width
    }

    /// Bytes the address covers.
    public var byteCount: Int {
        switch width {
        case .bit, .byte: return area == .timers || area == .counters ? 2 : 1
        case .word: return 2
        case .doubleWord: return 4
        }
    }

    /// Byte offset in the region (timers and counters are 2 bytes each).
    public var byteOffset: Int { area == .timers || area == .counters ? offset * 2 : offset }

    public var description: String {
        let letter: String
        switch width {
        case .bit: letter = "X"
        case .byte: letter = "B"
        case .word: letter = "W"
        case .doubleWord: letter = "D"
        }
        let bit: String
        if case .bit(let b) = width { bit = ".\(b)" } else { bit = "" }
        switch area {
        case .dataBlock: return "DB\(db).DB\(letter)\(offset)\(bit)"
        case .timers, .counters: return "\(area.rawValue)\(offset)"
        default:
            if case .bit = width { return "\(area.rawValue)\(offset)\(bit)" }
            return "\(area.rawValue)\(letter)\(offset)"
        }
    }

    /// Parses an address; nil when it is not one of the forms above.
    public init?(_ text: String) {
        let t = String(text.uppercased().filter { $0 != " " })
        func number(_ s: Substring) -> Int? { s.isEmpty || s.count > 6 ? nil : Int(s) }
        // Data blocks: DB<n>.DB<X|B|W|D><offset>[.<bit>]
        if t.hasPrefix("DB"), let dot = t.firstIndex(of: ".") {
            guard let db = number(t[t.index(t.startIndex, offsetBy: 2)..<dot]), (1...65535).contains(db) else { return nil }
            var rest = t[t.index(after: dot)...]
            guard rest.hasPrefix("DB"), rest.count >= 4 else { return nil }
            rest = rest.dropFirst(2)
            guard let w = Self.width(rest.first!, rest.dropFirst()) else { return nil }
            self.init(area: .dataBlock, db: UInt16(db), offset: w.offset, width: w.width)
            return
        }
        guard let first = t.first else { return nil }
        let area: PLCArea
        switch first {
        case "I", "E": area = .inputs
        case "Q", "A": area = .outputs
        case "M": area = .flags
        case "T":
            guard let n = number(t.dropFirst()) else { return nil }
            self.init(area: .timers, offset: n, width: .word)
            return
        case "C", "Z":
            guard let n = number(t.dropFirst()) else { return nil }
            self.init(area: .counters, offset: n, width: .word)
            return
        default: return nil
        }
        let rest = t.dropFirst()
        if let c = rest.first, "XBWD".contains(c), let w = Self.width(c, rest.dropFirst()) {
            self.init(area: area, offset: w.offset, width: w.width)
        } else if let w = Self.width("X", rest) {
            self.init(area: area, offset: w.offset, width: w.width)  // M0.3, Q1.7
        } else {
            return nil
        }
    }

    private static func width(_ letter: Character, _ rest: Substring) -> (offset: Int, width: Width)? {
        func number(_ s: Substring) -> Int? { s.isEmpty || s.count > 5 ? nil : Int(s) }
        if letter == "X" {
            let parts = rest.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 2, let o = number(parts[0]), parts[1].count == 1, let b = Int(parts[1]), (0...7).contains(b) else { return nil }
            return (o, .bit(b))
        }
        guard let o = number(rest) else { return nil }
        switch letter {
        case "B": return (o, .byte)
        case "W": return (o, .word)
        case "D": return (o, .doubleWord)
        default: return nil
        }
    }
}
