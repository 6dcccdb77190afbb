"""oneDNN-blocked bf16 weights for CPU inference: the same bits as F.linear, faster products."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from ..hardware import cpu_has_bf16_matmul


@functools.cache
def onednn_linear_available() -> bool:
    """oneDNN's packed bf16 linear, on a CPU with bf16 matrix units (measured only there)."""
    if not (torch.backends.mkldnn.is_available() and cpu_has_bf16_matmul()):
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight, torch.ops.mkldnn._linear_pointwise  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


def packable(weight: torch.Tensor) -> bool:
    """oneDNN can pack this weight: bf16, on a CPU with bf16 matrix units."""
    return weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and onednn_linear_available()


class PackedLinear(nn.Module):
    """A bf16 Linear whose weight lives only in oneDNN's blocked layout (inference only: no
    gradients). Products give the same bits as F.linear: 2-3x faster for one row (decoding),
    about 1.05x for large GEMMs. `weight` gives the plain [out, in] tensor back (a copy)."""

    def __init__(self, packed: torch.Tensor, bias: torch.Tensor | None, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.packed = packed  # opaque oneDNN tensor: a plain attribute, never in the state dict
        self.register_buffer("bias", bias)  # [out] or None

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> PackedLinear | None:
        """weight [out, in] -> a PackedLinear; None where oneDNN cannot pack it."""
        if not packable(weight):
            return None
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
        return cls(packed, None if bias is None else bias.detach(), weight.shape[1], weight.shape[0])

    @property
    def weight(self) -> torch.Tensor:
        return self.packed.to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] bf16 -> [..., out]
        if x.requires_grad:
            raise RuntimeError("PackedLinear is for inference: load the model unpacked to train it")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
