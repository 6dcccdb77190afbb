"""Dtypes: the names we accept, and what the machine computes fast (default dtypes, matmul paths)."""

from __future__ import annotations

import functools

import torch


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none to read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_has_bf16_matmul() -> bool:
    """True where the CPU has bf16 matrix instructions (AVX512-BF16 or AMX).

    Without them (AVX2 machines) a bf16 GEMM runs several times slower than fp32, while a bf16
    GEMV (one row, memory-bound) is still faster; see benchmarks/vision.py."""
    flags = cpu_flags()
    if not flags:
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 where the device computes it natively, fp32 otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16_matmul() else torch.float32


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch dtype from a dtype or its name ("bfloat16", "bf16", "torch.float32"; "auto" = float32)."""
    from .errors import CheckpointError

    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    name = DTYPE_ALIASES.get(name, name)
    if name == "auto":
        return torch.float32
    if name not in DTYPES:
        raise CheckpointError(f"unsupported dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]
