"""Small building blocks shared by the vision encoder and the text decoder."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import kernels


def fused_cpu_ops(*tensors: torch.Tensor):
    """Our fused CPU kernels (qwen_vl/kernels) where they can stand in for PyTorch's element-wise
    chains: bf16 CPU tensors and no gradient to keep. None otherwise."""
    if any(t.dtype != torch.bfloat16 or t.device.type != "cpu" for t in tensors):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    return kernels.ops()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32, scale in the input dtype (the published models' numerics).
        ops = fused_cpu_ops(x, self.weight)
        if ops is not None:
            return ops.rms_norm_bf16(x.contiguous(), self.weight, self.eps)
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


ROWS_PER_CHUNK = 512  # row-wise work on long inputs, a slice at a time: bounds the temporaries


def by_rows(fn, *tensors: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """fn applied to slices of `tensors` along `dim` (sliced alike), outputs concatenated: the
    same rows out, with fp32 and MLP temporaries held for one slice instead of all rows."""
    if tensors[0].shape[dim] <= ROWS_PER_CHUNK:
        return fn(*tensors)
    slices = zip(*(t.split(ROWS_PER_CHUNK, dim) for t in tensors), strict=True)
    return torch.cat([fn(*parts) for parts in slices], dim=dim)
