"""AutoAWQ "GEMM" packing of 4-bit weights (the layout of Qwen's published -AWQ checkpoints).

qweight int32 [in, out/8]      eight 4-bit values along the output dim, nibble i holding
                               column 8j + ORDER[i]
qzeros  int32 [in/group, out/8] zero points, packed the same way
scales  fp16  [in/group, out]
weight[o, i] = (q[i, o] - zero[i // group, o]) * scale[i // group, o]
"""

from __future__ import annotations

import torch

ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # which column of a group of eight each nibble holds
SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)  # nibble i at bits 4i..4i+3


def pack(values: torch.Tensor) -> torch.Tensor:
    """uint4 values [rows, cols] (any integer dtype, 0..15) -> int32 [rows, cols/8]."""
    rows, cols = values.shape
    groups = values.to(torch.int32).view(rows, cols // 8, 8)[..., list(ORDER)]
    packed = torch.zeros(rows, cols // 8, dtype=torch.int64)
    for i in range(8):
        packed |= groups[..., i].to(torch.int64) << (4 * i)
    return _to_int32(packed)


def _to_int32(packed: torch.Tensor) -> torch.Tensor:
    """int64 holding 32-bit patterns -> int32 with the same bits (values >= 2^31 wrap negative)."""
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """int32 [rows, cols/8] -> uint8 values [rows, cols] in natural column order."""
    rows = packed.shape[0]
    nibbles = (packed[..., None] >> SHIFTS.to(packed.device)) & 0xF  # [rows, cols/8, 8] nibble order
    natural = torch.empty_like(nibbles)
    natural[..., list(ORDER)] = nibbles
    return natural.reshape(rows, -1).to(torch.uint8)


def to_awq(qweight: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor) -> dict[str, torch.Tensor]:
    """Our int4 layout (int4.quantize: q uint8 [out, in], zeros uint8 [out, in/g], scales fp16
    [out, in/g]) -> the AWQ tensors {qweight, qzeros, scales}."""
    return {
        "qweight": pack(qweight.t().contiguous()),
        "qzeros": pack(zeros.t().contiguous()),
        "scales": scales.t().contiguous().to(torch.float16),
    }


def from_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor):
    """The AWQ tensors -> our int4 layout (q uint8 [out, in], zeros uint8 [out, in/g], scales [out, in/g])."""
    return unpack(qweight).t().contiguous(), unpack(qzeros).t().contiguous(), scales.t().contiguous()
