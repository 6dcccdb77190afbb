"""Weight-only int4: asymmetric, groups of 128 input channels, a zero point per group (the AWQ
scheme); products through aten's CPU int4 kernel.

Our layout, shared with awq.py: q uint8 [out, in] in 0..15, zeros uint8 [out, in/g] in 0..15,
scales fp16 [out, in/g]; weight = (q - zero) * scale.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .. import kernels
from . import in_row_slices

GROUP_SIZE = 128


def quantize(weight: torch.Tensor, group_size: int = GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """weight [out, in] -> (q uint8 [out, in], zeros uint8 [out, in/g], scales fp16 [out, in/g]).
    Scales are rounded to fp16 (the AWQ storage dtype) before the weight is divided by them."""
    return in_row_slices(_quantize_rows, weight, group_size)


def _quantize_rows(
    weight: torch.Tensor, group_size: int = GROUP_SIZE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out_features, in_features = weight.shape
    if in_features % group_size:
        raise ValueError(f"int4 needs input features divisible by {group_size}, got {in_features}")
    w = weight.detach().float().view(out_features, -1, group_size)
    low, high = w.amin(-1), w.amax(-1)
    scales = ((high - low) / 15).clamp(min=1e-5).to(torch.float16)
    zeros = (-low / scales.float()).round().clamp(0, 15)
    q = ((w / scales.float()[..., None]).round() + zeros[..., None]).clamp(0, 15)
    return q.view(out_features, in_features).to(torch.uint8), zeros.to(torch.uint8), scales


def dequantize(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, dtype=torch.bfloat16) -> torch.Tensor:
    """Our int4 layout -> weight [out, in] in `dtype` (computed in fp32)."""
    group_size = q.shape[1] // zeros.shape[1]
    w = (q.float().view(q.shape[0], -1, group_size) - zeros.float()[..., None]) * scales.float()[..., None]
    return w.view(q.shape).to(dtype)


def kernel_tensors(q, zeros, scales, dtype=torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    """Our layout -> (packed uint8 [out, in/2], scales_and_zeros [in/g, out, 2] in `dtype`) for
    aten's CPU kernel, which computes (q - 8) * scale + offset: offset = (8 - zero) * scale."""
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
    offsets = (8 - zeros.float()) * scales.float()
    scales_and_zeros = torch.stack([scales.float().t(), offsets.t()], -1).to(dtype).contiguous()
    return packed, scales_and_zeros


def fits(out_features: int, in_features: int, group_size: int = GROUP_SIZE) -> bool:
    """Whether a [out, in] weight can take this layout: whole groups, and whole 64-row blocks
    of the kernel's packing (whose order unpack_kernel_layout knows)."""
    return in_features % group_size == 0 and out_features % KERNEL_BLOCK == 0


KERNEL_BLOCK = 64  # output rows per block of aten's CPU int4 packing


def unpack_kernel_layout(packed: torch.Tensor) -> torch.Tensor:
    """aten's CPU int4 packing uint8 [out, in/2] -> q uint8 [out, in]. In each block of 64
    output rows, byte [k, j] holds row j (low nibble) and row j + 32 (high nibble) at column k."""
    out_features, in_features = packed.shape[0], packed.shape[1] * 2
    blocks = packed.view(out_features // KERNEL_BLOCK, in_features, KERNEL_BLOCK // 2)
    halves = torch.stack([blocks & 0xF, blocks >> 4], 1)  # [out/64, 2, in, 32]
    return halves.permute(0, 1, 3, 2).reshape(out_features, in_features)


class Int4Linear(nn.Module):
    """A Linear whose weight is int4 in groups (inference only, CPU).

    Products run aten's int4 kernel: about 3x faster than bf16 for one row (decoding), 3-9x
    slower for hundreds of rows (prefill); see benchmarks/quant_kernels.py. Where our CPU
    kernels run, `linear` builds a TiledInt4Linear instead."""

    def __init__(self, packed, scales_and_zeros, bias, in_features: int, group_size: int):
        super().__init__()
        self.in_features, self.group_size = in_features, group_size
        self.out_features = packed.shape[0]
        self.register_buffer("packed", packed)  # uint8 [out, in/2], aten's CPU int4 layout
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # [in/g, out, 2]
        self.register_buffer("bias", bias)  # [out] or None

    @classmethod
    def from_quantized(cls, q, zeros, scales, bias, dtype: torch.dtype = torch.bfloat16) -> Int4Linear:
        """From our int4 layout (see the module docstring)."""
        packed, scales_and_zeros = kernel_tensors(q, zeros, scales, dtype)
        bias = None if bias is None else bias.to(dtype)
        return cls(packed, scales_and_zeros, bias, q.shape[1], q.shape[1] // zeros.shape[1])

    @classmethod
    def from_linear(cls, layer: nn.Linear, group_size: int = GROUP_SIZE) -> Int4Linear:
        q, zeros, scales = quantize(layer.weight, group_size)
        return cls.from_quantized(q, zeros, scales, layer.bias, layer.weight.dtype)

    def kernel_product(self, x2d: torch.Tensor) -> torch.Tensor:  # [rows, in] -> [rows, out]
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x2d, self.packed, self.group_size, self.scales_and_zeros)

    def dequantized(self, dtype: torch.dtype, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Weight rows [start, end) as [rows, in] in `dtype`, as the kernel computes them:
        (q - 8) * scale + offset. Rows in whole 64-row blocks."""
        end = self.out_features if end is None else end
        q = unpack_kernel_layout(self.packed[start:end]).view(end - start, -1, self.group_size)
        scales, offsets = self.scales_and_zeros[:, start:end].permute(2, 1, 0)[..., None]  # [rows, in/g, 1] each
        weight = torch.addcmul(offsets.float(), q.to(torch.float32) - 8, scales.float())
        return weight.reshape(end - start, self.in_features).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        x2d = x.reshape(-1, self.in_features).to(self.scales_and_zeros.dtype)
        out = self.kernel_product(x2d).to(x.dtype).view(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias


TILE_ROWS = 16  # output rows per tile of our kernel's layout


def to_tiles(q, zeros, scales) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Our int4 layout -> the tiled one of qwen_vl/kernels (decode_products.cpp): tiles uint8
    [out/16, in/8, 16, 4] where byte i of row r in column chunk c holds q[r, 8c + i] (low nibble)
    and q[r, 8c + 4 + i] (high); scales fp16 and zeros uint8 as [out/16, in/g, 16]."""
    out_features, in_features = q.shape
    nibbles = q.view(out_features // TILE_ROWS, TILE_ROWS, in_features // 8, 2, 4)
    tiles = (nibbles[:, :, :, 0] | (nibbles[:, :, :, 1] << 4)).permute(0, 2, 1, 3).contiguous()
    by_tile = lambda t: t.view(out_features // TILE_ROWS, TILE_ROWS, -1).transpose(1, 2).contiguous()  # noqa: E731
    return tiles, by_tile(scales.to(torch.float16)), by_tile(zeros.to(torch.uint8))


class TiledInt4Linear(nn.Module):
    """A Linear whose int4 weight is in our kernel's tiles (inference only, CPU, our kernels).

    Up to 4 rows (decoding) run our VNNI product, which quantizes the activations to int8 per
    group of the weight's; more rows (prefill) dequantize slices of the weight and run bf16
    GEMMs, where aten's int4 kernel is 3-9x slower than bf16."""

    def __init__(self, tiles, scales, zeros, bias):
        super().__init__()
        self.out_features, self.in_features = tiles.shape[0] * TILE_ROWS, tiles.shape[1] * 8
        self.group_size = self.in_features // scales.shape[1]
        self.register_buffer("tiles", tiles)  # uint8 [out/16, in/8, 16, 4]
        self.register_buffer("scales", scales)  # fp16 [out/16, in/g, 16]
        self.register_buffer("zeros", zeros)  # uint8 [out/16, in/g, 16]
        self.register_buffer("bias", bias)  # [out] or None

    @classmethod
    def from_quantized(cls, q, zeros, scales, bias, dtype: torch.dtype = torch.bfloat16) -> TiledInt4Linear:
        return cls(*to_tiles(q, zeros, scales), None if bias is None else bias.to(dtype))

    def dequantized_columns(self, start: int, end: int) -> torch.Tensor:
        """Weight rows [start, end) (whole tiles) transposed, bf16 [in, end - start]."""
        tiles = slice(start // TILE_ROWS, end // TILE_ROWS)
        return kernels.ops().dequantize_int4_tiles(self.tiles[tiles], self.scales[tiles], self.zeros[tiles])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        x2d = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if x2d.shape[0] <= kernels.STREAM_MAX_ROWS:
            out = kernels.ops().linear_int4(x2d.contiguous(), self.tiles, self.scales, self.zeros)
        else:
            out = kernels.sliced_product(x2d, self.out_features, self.dequantized_columns)
        out = out.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


LINEARS = (Int4Linear, TiledInt4Linear)


def linear(q, zeros, scales, bias, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """The int4 Linear for this machine: tiled for our kernels where they run, else aten's."""
    module = TiledInt4Linear if kernels.ops() is not None else Int4Linear
    return module.from_quantized(q, zeros, scales, bias, dtype)
