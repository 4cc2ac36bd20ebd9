/// Typed access to the members of a JSON object from `JSONParser`, for the formats this project reads by hand
/// (the container index, the pack manifest): each failure names the member and where it sits. Unknown members
/// are ignored, as a newer writer may add some; a member given twice is refused.
struct JSONFields {
    /// What is missing or has the wrong type, with where.
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private let members: [(String, JSONValue)]
    /// Where this object sits, for messages: "the index", "tensor 3 of the index".
    let place: String

    init(_ value: JSONValue, in place: String) throws(Failure) {
        guard let members = value.objectValue else { throw Failure(description: "\(place) is not a JSON object") }
        var names = Set<String>()
        for (name, _) in members where !names.insert(name).inserted {
            throw Failure(description: "\(place) gives \"\(name)\" twice")
        }
        self.members = members
        self.place = place
    }

    /// Parses `bytes` as one JSON object.
    init(parsing bytes: UnsafeRawBufferPointer, in place: String) throws(Failure) {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes)
        } catch {
            throw Failure(description: "\(place) is not valid JSON (\(error))")
        }
        try self.init(value, in: place)
    }

    private func member(_ key: String) -> JSONValue? {
        members.first { $0.0 == key }?.1
    }

    private func wrong(_ key: String, _ expected: String) -> Failure {
        Failure(description: "\(place): \"\(key)\" is " + (member(key) == nil ? "missing" : "not \(expected)"))
    }

    func string(_ key: String) throws(Failure) -> String {
        guard let text = member(key)?.stringValue else { throw wrong(key, "a string") }
        return text
    }

    /// A string, or nil when the member is absent or null.
    func optionalString(_ key: String) throws(Failure) -> String? {
        guard let value = member(key), !value.isNull else { return nil }
        return try string(key)
    }

    func int(_ key: String) throws(Failure) -> Int {
        guard let number = member(key)?.intValue else { throw wrong(key, "an integer") }
        return number
    }

    /// An integer, or nil when the member is absent or null.
    func optionalInt(_ key: String) throws(Failure) -> Int? {
        guard let value = member(key), !value.isNull else { return nil }
        return try int(key)
    }

    func ints(_ key: String) throws(Failure) -> [Int] {
        guard let items = member(key)?.arrayValue else { throw wrong(key, "an array of integers") }
        var numbers: [Int] = []
        numbers.reserveCapacity(items.count)
        for item in items {
            guard let number = item.intValue else { throw wrong(key, "an array of integers") }
            numbers.append(number)
        }
        return numbers
    }

    func strings(_ key: String) throws(Failure) -> [String: String] {
        let object = try fields(key)
        var map: [String: String] = [:]
        for (name, value) in object.members {
            guard let text = value.stringValue else { throw wrong(key, "an object of strings") }
            map[name] = text
        }
        return map
    }

    func fields(_ key: String) throws(Failure) -> JSONFields {
        guard let value = member(key), value.objectValue != nil else { throw wrong(key, "an object") }
        return try JSONFields(value, in: "\(place), \"\(key)\"")
    }

    /// The objects of an array member; `label(i)` names the i-th for messages.
    func objects(_ key: String, label: (Int) -> String) throws(Failure) -> [JSONFields] {
        guard let items = member(key)?.arrayValue else { throw wrong(key, "an array") }
        var objects: [JSONFields] = []
        objects.reserveCapacity(items.count)
        for (number, item) in items.enumerated() {
            objects.append(try JSONFields(item, in: "\(place), \(label(number))"))
        }
        return objects
    }

    /// A member whose string names a case of `type`.
    func value<T: RawRepresentable>(_ key: String, as type: T.Type) throws(Failure) -> T where T.RawValue == String {
        let text = try string(key)
        guard let value = T(rawValue: text) else {
            throw Failure(description: "\(place): \"\(key)\" is \"\(text)\", which this torpor does not know")
        }
        return value
    }
}

extension JSONValue {
    /// The value as an `Int`, when it is an integer that fits.
    var intValue: Int? {
        switch self {
        case .integer(let value): Int(exactly: value)
        case .unsignedInteger(let value): Int(exactly: value)
        default: nil
        }
    }

    var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}
