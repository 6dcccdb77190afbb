"""Small building blocks shared by the vision encoder and the text decoder."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..hardware import cpu_has_bf16_matmul

# Rows at or above which a bf16 product is faster in fp32 on a CPU without bf16 matrix units
# (measured: 8 rows of 896x4864 take the same time either way; one row is 2.4x faster in bf16).
FP32_GEMM_MIN_ROWS = 8


class Linear(nn.Linear):
    """nn.Linear that computes bf16 matrix products in fp32 where that is faster (AVX2 CPUs).

    Weights stay bf16 in memory; each product reads them, widens them and multiplies in fp32,
    which is several times faster than the CPU's bf16 GEMM there. One-row products (decoding)
    stay in bf16, where reading half the bytes wins."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if (
        x.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and x.numel() >= FP32_GEMM_MIN_ROWS * x.shape[-1]
        and not cpu_has_bf16_matmul()
    ):
        bias = None if bias is None else bias.float()
        return F.linear(x.float(), weight.float(), bias).to(x.dtype)
    return F.linear(x, weight, bias)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32, scale in the input dtype (the published models' numerics).
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + D/2) of x by the angles whose cos/sin are given; cos, sin broadcast to x."""
    return x * cos + rotate_half(x) * sin


def activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return lambda x: F.gelu(x, approximate="tanh")
    return {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}[name]
