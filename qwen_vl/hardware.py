"""What the machine can do fast: used to pick default dtypes and matmul paths."""

from __future__ import annotations

import functools

import torch


@functools.cache
def cpu_has_bf16_matmul() -> bool:
    """True where the CPU has bf16 matrix instructions (AVX512-BF16 or AMX).

    Without them (AVX2 machines) a bf16 GEMM runs several times slower than fp32, while a bf16
    GEMV (one row, memory-bound) is still faster; see benchmarks/vision.py."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 where the device computes it natively, fp32 otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16_matmul() else torch.float32
