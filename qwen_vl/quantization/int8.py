"""Weight-only int8: symmetric, one scale per output channel; products on the int8 weight."""

from __future__ import annotations

import torch
import torch.nn as nn

from .. import kernels
from . import in_row_slices


def quantize(weight: torch.Tensor, scale_dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] -> (qweight int8 [out, in], scales [out] in `scale_dtype`).

    The scale is rounded to its stored dtype before the weight is divided by it, so that the
    stored pair dequantizes to the values chosen here."""
    return in_row_slices(_quantize_rows, weight, scale_dtype)


def _quantize_rows(
    weight: torch.Tensor, scale_dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-10).to(scale_dtype)
    qweight = (w / scales.float()[:, None]).round().clamp(-127, 127).to(torch.int8)
    return qweight, scales


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """(qweight int8 [out, in], scales [out]) -> weight [out, in] in `dtype`. One multiply in
    `dtype`: int8 values are exact there and the product is rounded once, as in fp32."""
    return qweight.to(dtype) * scales.to(dtype)[:, None]


class Int8Linear(nn.Module):
    """A Linear whose weight is int8 with per-output-channel scales (inference only).

    With our CPU kernels (qwen_vl/kernels): up to 4 rows (decoding) run a VNNI product that
    quantizes the activations to int8 per block of 256, as llama.cpp's Q8_K does; more rows
    (prefill) dequantize the weight in slices and run bf16 GEMMs. Without them, aten's int8
    weight kernel: faster than bf16 for one row, 3-9x slower for hundreds."""

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", qweight)  # int8 [out, in]
        self.register_buffer("scales", scales)  # [out]
        self.register_buffer("bias", bias)  # [out] or None

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> Int8Linear:
        qweight, scales = quantize(layer.weight, layer.weight.dtype)
        return cls(qweight, scales, None if layer.bias is None else layer.bias.detach())

    @classmethod
    def from_quantized(cls, qweight, scales, bias, dtype: torch.dtype = torch.bfloat16) -> Int8Linear:
        return cls(qweight, scales.to(dtype), None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        x2d = x.reshape(-1, self.in_features)
        ops = kernels.ops() if x.dtype == torch.bfloat16 else None
        if ops is None:
            out = torch.ops.aten._weight_int8pack_mm(x2d, self.qweight, self.scales)
        elif x2d.shape[0] <= kernels.STREAM_MAX_ROWS:
            out = ops.linear_int8(x2d.contiguous(), self.qweight, self.scales)
        else:
            out = kernels.sliced_product(
                x2d,
                self.out_features,
                lambda start, end: ops.dequantize_int8(self.qweight[start:end], self.scales[start:end]).t(),
            )
        out = out.view(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
