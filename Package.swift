// swift-tools-version: 6.1
import PackageDescription

/// Settings every Swift target shares: Swift 6 mode with the upcoming features STYLE.md asks for.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "torpor",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "torpor", targets: ["torpor"]),
        .library(name: "TorporCheckpoint", targets: ["TorporCheckpoint"]),
        .library(name: "TorporEngine", targets: ["TorporEngine"]),
        .library(name: "TorporGateway", targets: ["TorporGateway"]),
        .library(name: "TorporGPU", targets: ["TorporGPU"]),
        // libtorpor: the C ABI (Sources/CTorporABI/include/torpor.h) that the Python package and vLLM plugin use.
        .library(name: "torpor-c", type: .dynamic, targets: ["LibTorpor"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // C shims, one per foreign library (libzstd for the zstd codec, libdeflate for CRC-32, Linux-only calls).
        .target(name: "CTorporZstd", linkerSettings: [.linkedLibrary("zstd")]),
        .target(name: "CTorporLinux"),
        // The hand-vectorized rANS kernels (AVX2 decoding; AVX-512 and AVX2 encoding): Swift has no gathers.
        .target(name: "CTorporSIMD"),
        // libdeflate's static archive: its CRC-32 uses carry-less multiplication, and the binary and libtorpor
        // need no libdeflate on the machines they are carried to.
        .target(name: "CTorporDeflate", linkerSettings: [.linkedLibrary(":libdeflate.a")]),
        // Declarations only: the CUDA driver and nvCOMP are loaded with dlopen, never linked.
        .target(name: "CTorporCUDA"),
        .target(name: "CTorporNVCOMP"),

        // The checkpoint manager: safetensors, the .torpor container, codecs, pack/unpack/verify.
        .target(
            name: "TorporCheckpoint",
            dependencies: [
                "CTorporZstd",
                "CTorporDeflate",
                "CTorporLinux",
                "CTorporSIMD",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),

        // Engines: the vLLM sleep-mode client and the simulated engine.
        .target(
            name: "TorporEngine",
            dependencies: [
                "CTorporLinux",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // The GPU path: the CUDA driver and nvCOMP through dlopen tables, GPU codecs, the loader.
        .target(
            name: "TorporGPU",
            dependencies: ["CTorporCUDA", "CTorporNVCOMP", "CTorporLinux", "TorporCheckpoint"],
            swiftSettings: swiftSettings
        ),

        // The gateway: OpenAI routing and streaming proxy, the sleep-aware scheduler, the admin API, metrics.
        .target(
            name: "TorporGateway",
            dependencies: [
                "TorporEngine",
                "TorporCheckpoint",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),

        // S3-compatible object storage for packs: SigV4, the S3 client, push and pull.
        .target(
            name: "TorporStorage",
            dependencies: [
                "TorporCheckpoint",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // libtorpor: the C ABI over the checkpoint manager and the GPU loader; its header is CTorporABI's.
        .target(name: "CTorporABI"),
        .target(
            name: "LibTorpor",
            dependencies: ["CTorporABI", "TorporCheckpoint", "TorporGPU"],
            swiftSettings: swiftSettings
        ),

        // The `torpor` command: a thin entry point over the libraries.
        .executableTarget(
            name: "torpor",
            dependencies: [
                "TorporCheckpoint",
                "TorporEngine",
                "TorporGateway",
                "TorporGPU",
                "TorporStorage",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // What several test targets share (polling); not a test target itself.
        .target(name: "TorporTestSupport", path: "Tests/TorporTestSupport", swiftSettings: swiftSettings),
        .testTarget(
            name: "TorporCheckpointTests",
            dependencies: ["TorporCheckpoint"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TorporEngineTests",
            dependencies: [
                "TorporEngine",
                "TorporTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            exclude: ["Clients"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TorporGatewayTests",
            dependencies: [
                "TorporGateway",
                "TorporTestSupport",
                "TorporEngine",
                "TorporCheckpoint",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["Clients"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TorporGPUTests",
            dependencies: ["TorporGPU"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TorporStorageTests",
            dependencies: ["TorporStorage", "TorporCheckpoint", "TorporTestSupport"],
            exclude: ["Clients"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "LibTorporTests",
            dependencies: ["LibTorpor"],
            exclude: ["C"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TorporCLITests",
            dependencies: ["TorporCheckpoint", "TorporTestSupport"],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
