"""bf16 products computed in fp32, for CPUs without bf16 matrix units (AVX2 machines)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# Rows at or above which a bf16 product is faster in fp32 on a CPU without bf16 matrix units
# (measured: 8 rows of 896x4864 take the same time either way; one row is 2.4x faster in bf16).
FP32_GEMM_MIN_ROWS = 8


class WidenedLinear(nn.Linear):
    """nn.Linear (same parameters, trainable) whose bf16 products of 8 rows or more run in fp32:
    the weight stays bf16 in memory and is widened per product, which beats the bf16 GEMM of
    such CPUs. Fewer rows (decoding) stay in bf16, faster there."""

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> WidenedLinear:
        layer.__class__ = cls  # same parameters, same state dict; only the product changes
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16 and x.is_cpu and x.numel() >= FP32_GEMM_MIN_ROWS * x.shape[-1]:
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias).to(x.dtype)
        return F.linear(x, self.weight, self.bias)
