"""bf16 Linears whose few-row products (decoding) run our streaming kernel (qwen_vl/kernels):
1.2-1.3x the read bandwidth oneDNN's GEMV reaches on full-size weights. The weight is the
same tensor, memory-mapped or not; more rows and training go through F.linear."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import kernels


class StreamedLinear(nn.Module):
    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = weight  # [out, in] bf16, shared with the layer it replaces
        self.bias = bias  # [out] or None

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> StreamedLinear | None:
        """None where the kernel cannot serve this layer (not bf16 on a CPU, or no kernel here)."""
        weight = layer.weight
        if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or kernels.ops() is None:
            return None
        return cls(weight, layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        rows = x.numel() // self.in_features
        if (
            rows > kernels.STREAM_MAX_ROWS
            or x.dtype != torch.bfloat16
            or (torch.is_grad_enabled() and self.weight.requires_grad)
        ):
            return F.linear(x, self.weight, self.bias)
        out = kernels.ops().linear_bf16(x.reshape(rows, self.in_features).contiguous(), self.weight.contiguous())
        out = out.view(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
