"""Our CPU kernels: few-row products that stream bf16, int8 and int4 weights at
close to the memory bandwidth and dequantization for prefill (decode_products.cpp), and fused
bf16 RMSNorm and rotary (fused_ops.cpp), on the helpers of simd.h.

They are compiled on first use with torch's C++ extension builder (g++ and ninja, about 15 s),
into ~/.cache/qwen-vl/kernels (or $QWEN_VL_KERNELS_CACHE), once per source, torch version and
CPU. They need AVX-512 with BF16 and VNNI; elsewhere, without a compiler, or with
QWEN_VL_CPU_KERNELS=0, every layer uses PyTorch's own kernels and gives the same results within
rounding. A failed build is said once and remembered in its cache folder (delete it to retry). `ops()` is the registered operator namespace, or None.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
from pathlib import Path

from ..hardware import cpu_flags

HERE = Path(__file__).parent
SOURCES = (HERE / "decode_products.cpp", HERE / "fused_ops.cpp")
HEADERS = (HERE / "simd.h",)
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni")
STREAM_MAX_ROWS = 4  # rows one pass of the streaming products serves; more go to GEMMs
# bf16 bytes of weight dequantized at a time for a GEMM: a slice that stays in cache (and below
# glibc's mmap threshold, so its memory is reused instead of faulted in on every call). 4 MiB is
# 1,024 rows at width 2,048 and 176 at 11,008; 45 MB slices made int4 prefill 2x slower there.
SLICE_BYTES = 4 * 2**20
COMPILER_FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mavx512vnni", "-mfma", "-fopenmp"]


def cache_dir() -> Path:
    root = os.environ.get("QWEN_VL_KERNELS_CACHE") or Path.home() / ".cache" / "qwen-vl" / "kernels"
    return Path(root)


def build_name() -> str:
    """Changes with the source, torch and the CPU, so a stale or foreign build is never loaded."""
    import torch

    code = b"".join(path.read_bytes() for path in (*SOURCES, *HEADERS))
    key = code + torch.__version__.encode() + " ".join(sorted(cpu_flags())).encode()
    return "qwen_vl_cpu_" + hashlib.sha256(key).hexdigest()[:16]


def build(directory: Path, name: str) -> Path:
    """Compile SOURCES into directory/name.so (serialized across processes by torch)."""
    from torch.utils.cpp_extension import load

    directory.mkdir(parents=True, exist_ok=True)
    print("qwen-vl: compiling the CPU kernels (once, about 15 s)", file=sys.stderr, flush=True)
    builder_log = logging.getLogger("torch.utils.cpp_extension")
    level = builder_log.level
    builder_log.setLevel(logging.ERROR)  # its compiler-compatibility banners; a failure is our one line
    try:
        load(
            name=name,
            sources=[str(path) for path in SOURCES],
            extra_cflags=COMPILER_FLAGS,
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
            is_python_module=False,
            verbose=False,
        )
    finally:
        builder_log.setLevel(level)
    return directory / f"{name}.so"


@functools.cache
def ops():
    """torch.ops.qwen_vl_cpu once the library is loaded; None where the kernels cannot run here."""
    import torch

    if os.environ.get("QWEN_VL_CPU_KERNELS", "1") == "0" or not set(CPU_FLAGS) <= cpu_flags():
        return None
    name = build_name()
    directory = cache_dir() / name
    library, failed = directory / f"{name}.so", directory / "build-failed.txt"
    if failed.exists():  # told once, when the build failed; deleting the folder retries
        return None
    try:
        if not library.exists():
            library = build(directory, name)
        torch.ops.load_library(str(library))
    except Exception as err:  # no compiler, no ninja, a read-only home: run on PyTorch's kernels
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        print(f"qwen-vl: CPU kernels unavailable ({reason[:200]}); using PyTorch's", file=sys.stderr)
        try:
            failed.write_text(f"{reason}\n")
        except OSError:
            pass
        return None
    return torch.ops.qwen_vl_cpu


def sliced_product(x2d, out_features: int, weight_columns):
    """x2d [rows, in] @ W.T -> [rows, out], with W dequantized about SLICE_BYTES at a time (whole
    16-row tiles) by weight_columns(start, end) -> W[start:end].T, [in, end - start]."""
    import torch

    slice_rows = max(16, SLICE_BYTES // (2 * x2d.shape[1]) // 16 * 16)
    parts = [x2d @ weight_columns(s, min(s + slice_rows, out_features)) for s in range(0, out_features, slice_rows)]
    return torch.cat(parts, dim=-1)
