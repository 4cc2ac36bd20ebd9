#!/usr/bin/env bash
# Builds libtorpor.so with the Swift runtime linked in, so it loads where no Swift toolchain is (a Python wheel,
# the GPU machine): a release build of the torpor-c product, relinked with -static-stdlib (SwiftPM links dynamic
# library products against the shared Swift runtime), stripped. Usage: scripts/build-libtorpor.sh [OUT]
# (default python/torpor/libtorpor.so, where the Python package looks first after TORPOR_LIBRARY).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-python/torpor/libtorpor.so}
scripts/setup.sh
static=$(dirname "$(dirname "$(command -v swift)")")/lib/swift_static/linux
swift build -c release --product torpor-c --scratch-path .build-static
build=.build-static/$(uname -m)-unknown-linux-gnu/release
# Foundation's static archives reference each other: link them as a group, and refuse any symbol left undefined
# (a shared library links with undefined symbols by default and fails only when loaded).
swiftc -static-stdlib -lstdc++ -L "$build" -o "$out.partial" -module-name torpor_c -emit-library \
    -Xlinker --gc-sections @"$build/torpor-c.product/Objects.LinkFileList" -l:libdeflate.a -lz -lzstd -L "$static" \
    -Xlinker --start-group $(printf -- "$static/lib%s.a " Foundation FoundationInternationalization _FoundationICU \
        FoundationEssentials _FoundationCollections _FoundationCShims CoreFoundation swiftDispatch dispatch \
        BlocksRuntime swiftSynchronization swift_StringProcessing swift_RegexParser swift_Concurrency swiftCore) \
    -Xlinker --end-group -Xlinker --no-undefined
strip "$out.partial"
if ldd "$out.partial" | grep -q libswift; then
    echo "build-libtorpor: $out still needs the shared Swift runtime" >&2
    exit 1
fi
mv "$out.partial" "$out"
echo "$out"
