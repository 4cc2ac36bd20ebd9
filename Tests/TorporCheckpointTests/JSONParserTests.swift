import Foundation
import Testing

@testable import TorporCheckpoint

@Suite("Reading JSON")
struct JSONParserTests {
    private func parse(_ text: String) throws -> JSONValue {
        try Array(text.utf8).withUnsafeBytes { try JSONParser.parse($0) }
    }

    /// The parser's error for `bytes`, or nil when they parse.
    private func failure(_ bytes: [UInt8]) -> JSONParser.SyntaxError? {
        do {
            _ = try bytes.withUnsafeBytes { try JSONParser.parse($0) }
            return nil
        } catch {
            return error as? JSONParser.SyntaxError
        }
    }

    /// The same tree as Foundation's reader gives, member order aside.
    private func same(_ value: JSONValue, _ other: Any) -> Bool {
        switch value {
        case .null: return other is NSNull
        case .bool(let flag): return (other as? Bool) == flag && !(other is Int && !(other is Bool))
        case .integer(let number): return (other as? NSNumber)?.int64Value == number
        case .unsignedInteger(let number): return (other as? NSNumber)?.uint64Value == number
        case .number(let number): return (other as? NSNumber)?.doubleValue == number
        case .string(let text): return (other as? String) == text
        case .array(let items):
            guard let others = other as? [Any], others.count == items.count else { return false }
            return zip(items, others).allSatisfy { same($0, $1) }
        case .object(let members):
            guard let others = other as? [String: Any], others.count == members.count else { return false }
            return members.allSatisfy { key, item in others[key].map { same(item, $0) } ?? false }
        }
    }

    @Test("values, escapes, surrogate pairs and numbers read as Foundation reads them, integers exactly")
    func agreesWithFoundation() throws {
        let documents = [
            #"{"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"__metadata__":{"format":"pt"}}"#,
            #"  [1, -2, 3.5, -0.25e-3, 1E+2, true, false, null, "", {}, []]  "#,
            #"{"esc":"\" \\ \/ \b \f \n \r \t \u00e9 \u20AC \ud83d\ude00","utf8":"é€😀 plain"}"#,
            #"{"big":9223372036854775807,"bigger":18446744073709551615,"small":-9223372036854775808}"#,
            "{\"deep\":" + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}",
        ]
        for document in documents {
            let value = try parse(document)
            let reference = try JSONSerialization.jsonObject(with: Data(document.utf8), options: [.fragmentsAllowed])
            #expect(same(value, reference), "\(document)")
        }
        let numbers = try parse("[9223372036854775807, 18446744073709551615, 18446744073709551616, 0, -0, 1.0]")
        guard case .array(let items) = numbers else { Issue.record("not an array"); return }
        #expect(items[0].nonNegativeInt == Int.max)
        if case .unsignedInteger(let value) = items[1] {
            #expect(value == UInt64.max)
        } else {
            Issue.record("\(items[1])")
        }
        if case .number(let value) = items[2] {
            #expect(value == 18_446_744_073_709_551_616)
        } else {
            Issue.record("\(items[2])")
        }
        #expect(items[3].nonNegativeInt == 0 && items[4].nonNegativeInt == 0)
        if case .number = items[5] {} else { Issue.record("1.0 read as \(items[5]), not a Double") }
    }

    @Test("members keep document order and duplicates, for the caller to name")
    func memberOrder() throws {
        let value = try parse(#"{"z":1,"a":2,"z":3}"#)
        #expect(value.objectValue?.map(\.0) == ["z", "a", "z"])
        #expect(value["z"]?.nonNegativeInt == 1)
    }

    @Test("malformed JSON fails with the reason and the byte where it became clear")
    func rejectsMalformed() {
        let cases: [(String, String, Int)] = [
            (#"{"a":1} x"#, "unexpected text after the value", 8),
            (#"{"a":1,}"#, "expected a member name in quotes", 7),
            (#"[1,]"#, "unexpected character ']'", 3),
            (#"{"a" 1}"#, "expected ':' after a member name", 5),
            (#"[01]"#, "a number with a leading zero", 1),
            (#"[1.]"#, "a number without digits after '.'", 3),
            (#"[-]"#, "a number without digits", 2),
            (#"[1e400]"#, "a number out of range", 1),
            (#"["a\qb"]"#, #"an unknown escape '\q'"#, 4),
            (#"["\ud800x"]"#, "a high surrogate without its low one", 8),
            (#"["\udc00"]"#, "a low surrogate on its own", 8),
            (#"["\u12"]"#, #"\u needs four hex digits"#, 6),
            (#"["open"#, "a string is not closed", 6),
            (#"[tru]"#, "expected true", 1),
            ("", "a value is missing", 0),
            ("[\"a\tb\"]", "a control character inside a string", 3),
        ]
        for (text, reason, offset) in cases {
            let error = failure(Array(text.utf8))
            #expect(error?.reason == reason && error?.offset == offset, "\(text): \(String(describing: error))")
        }
        #expect(failure([0x5B, 0x22, 0xC3, 0x28, 0x22, 0x5D])?.reason == "a string that is not valid UTF-8")
        let tooDeep =
            String(repeating: "[", count: JSONParser.maximumDepth + 1)
            + String(repeating: "]", count: JSONParser.maximumDepth + 1)
        #expect(failure(Array(tooDeep.utf8))?.reason == "nesting deeper than \(JSONParser.maximumDepth)")
        let deepest =
            String(repeating: "[", count: JSONParser.maximumDepth)
            + String(repeating: "]", count: JSONParser.maximumDepth)
        #expect(failure(Array(deepest.utf8)) == nil)
    }

    @Test("the fixture's real safetensors header reads as Foundation reads it")
    func fixtureHeader() throws {
        let file = try MappedFile(path: Fixtures.miniLM)
        let length = Int(file.bytes.loadLE(UInt64.self, at: 0))
        let header = UnsafeRawBufferPointer(rebasing: file.bytes[8..<(8 + length)])
        let value = try JSONParser.parse(header)
        let reference = try JSONSerialization.jsonObject(with: Data(header))
        #expect(same(value, reference))
        #expect((value.objectValue?.count ?? 0) > 100)
    }
}
