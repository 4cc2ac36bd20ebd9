/// The token of an `Authorization: Bearer TOKEN` header, or nil for another scheme or none. The scheme is matched
/// without regard to case (RFC 7235: `bearer`, `BEARER`) and the spaces around the token are not part of it.
func bearerToken(_ header: String) -> Substring? {
    let trimmed = header.drop { $0 == " " || $0 == "\t" }
    guard let space = trimmed.firstIndex(where: { $0 == " " || $0 == "\t" }),
        trimmed[..<space].lowercased() == "bearer"
    else { return nil }
    var token = trimmed[space...].drop { $0 == " " || $0 == "\t" }
    while let last = token.last, last == " " || last == "\t" { token = token.dropLast() }
    return token.isEmpty ? nil : token
}
