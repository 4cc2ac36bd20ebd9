/// A JSON document as a tree, read without loss by `JSONParser`: integers stay exact integers, and an object's
/// members stay in document order, duplicates included.
///
/// Used where a format must be validated field by field with messages that name the field, which a
/// `Decodable` struct's generic `DecodingError` cannot do well.
enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    case unsignedInteger(UInt64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    /// The value as a non-negative `Int`, when it is an integer that fits.
    var nonNegativeInt: Int? {
        switch self {
        case .integer(let value) where value >= 0: Int(exactly: value)
        case .unsignedInteger(let value): Int(exactly: value)
        default: nil
        }
    }

    var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    var objectValue: [(String, JSONValue)]? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// The member named `key` of an object.
    subscript(key: String) -> JSONValue? {
        objectValue?.first { $0.0 == key }?.1
    }
}
