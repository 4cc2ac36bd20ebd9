import Foundation
import Hummingbird

/// vLLM's tokenizer endpoints on the simulated engine, with a byte-level tokenizer: a token is a byte of the text's
/// UTF-8, so `/detokenize` gives back exactly what `/tokenize` was given.
extension SimulatedEngineServer {
    func addTokenizerRoutes(to router: Router<SimulatedRequestContext>) {
        router.post("/tokenize") { request, _ in
            guard let body = try await jsonObject(request) else { return notAJSONObject() }
            guard let prompt = body["prompt"] as? String else {
                return json(
                    errorBody("'prompt' is required", type: "BadRequestError", code: 400, param: "prompt"),
                    status: .badRequest)
            }
            let tokens = prompt.utf8.map { Int($0) }
            return json(["count": tokens.count, "max_model_len": 2048, "tokens": tokens])
        }
        router.post("/detokenize") { request, _ in
            guard let body = try await jsonObject(request) else { return notAJSONObject() }
            guard let tokens = body["tokens"] as? [Int], tokens.allSatisfy({ (0...255).contains($0) }) else {
                return json(
                    errorBody(
                        "'tokens' must be a list of token ids", type: "BadRequestError", code: 400, param: "tokens"),
                    status: .badRequest)
            }
            return json(["prompt": String(decoding: tokens.map { UInt8($0) }, as: UTF8.self)])
        }
    }
}
