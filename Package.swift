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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    ],
    targets: [
        // C shims, one per foreign library (libzstd for the zstd codec, zlib for CRC-32, Linux-only calls).
        .target(name: "CTorporZstd", linkerSettings: [.linkedLibrary("zstd")]),
        .target(name: "CTorporLinux"),
        // The one hand-vectorized kernel (AVX2 rANS decoding): Swift has no gather instructions.
        .target(name: "CTorporSIMD"),
        .target(name: "CTorporZlib", linkerSettings: [.linkedLibrary("z")]),

        // The checkpoint manager: safetensors, the .torpor container, codecs, pack/unpack/verify.
        .target(
            name: "TorporCheckpoint",
            dependencies: [
                "CTorporZstd",
                "CTorporZlib",
                "CTorporLinux",
                "CTorporSIMD",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),

        // The `torpor` command: a thin entry point over the libraries.
        .executableTarget(
            name: "torpor",
            dependencies: [
                "TorporCheckpoint",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),

        .testTarget(
            name: "TorporCheckpointTests",
            dependencies: ["TorporCheckpoint"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TorporCLITests",
            dependencies: ["TorporCheckpoint"],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
