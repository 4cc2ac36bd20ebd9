public import HTTPTypes

extension HTTPFields {
    /// The head of a server-sent-events answer (`text/event-stream`, not cached), as vLLM streams completions and
    /// the gateway streams its admin events.
    public static var eventStream: HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return headers
    }
}
