#!/usr/bin/env bash
# Build llama.cpp's llama-bench and llama-quantize for benchmarks/full_size.py.
#
#   bash benchmarks/build_llama_cpp.sh [CACHE_DIR]
#
# CACHE_DIR defaults to $QWEN_VL_BENCH_CACHE or ~/.cache/qwen-vl-bench. The llama.cpp source is
# the copy vendored in the llama-cpp-python source distribution on PyPI (vendor/llama.cpp).
# Idempotent: each step is skipped when its output is already there.
#
# Flags: a portable build (GGML_NATIVE=OFF) with AVX2/FMA/F16C and AVX-512 (F, VNNI, BF16) on and
# the AMX kernels off (they stopped with an illegal instruction on a Sapphire Rapids VM).
# Afterwards `pip install <CACHE_DIR>/llama.cpp/gguf-py` gives the converter its `gguf` package
# (full_size.py does that itself when it converts the checkpoint).
set -euo pipefail

CACHE="${1:-${QWEN_VL_BENCH_CACHE:-$HOME/.cache/qwen-vl-bench}}"
SRC="$CACHE/llama.cpp"
BUILD="$SRC/build"
mkdir -p "$CACHE"

if [ ! -f "$SRC/CMakeLists.txt" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    sdist="$(ls "$CACHE"/llama_cpp_python-*.tar.gz 2>/dev/null | head -n1 || true)"
    if [ -z "$sdist" ]; then
        python -m pip download --no-binary :all: --no-deps llama-cpp-python -d "$CACHE"
        sdist="$(ls "$CACHE"/llama_cpp_python-*.tar.gz | head -n1)"
    fi
    tar -xzf "$sdist" -C "$tmp"
    rm -rf "$SRC"
    mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$SRC"
    echo "llama.cpp source: $SRC (from $(basename "$sdist"))"
fi

command -v cmake >/dev/null || { echo "cmake not found: apt-get install -y cmake" >&2; exit 1; }

if [ -x "$BUILD/bin/llama-bench" ] && [ -x "$BUILD/bin/llama-quantize" ]; then
    echo "already built: $BUILD/bin/llama-bench, $BUILD/bin/llama-quantize"
    exit 0
fi

start=$(date +%s)
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
    -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_AMX_TILE=OFF \
    -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
cmake --build "$BUILD" --target llama-bench llama-quantize -j2
echo "built in $(( $(date +%s) - start )) s: $BUILD/bin/llama-bench, $BUILD/bin/llama-quantize"
