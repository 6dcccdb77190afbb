"""Attention backends behind one small interface.

Two shapes of attention occur in the model:
- segment attention (vision windows, vision frames, packed training samples): a flat sequence
  [S, H, D] cut into contiguous segments that attend only within themselves;
- decoder attention: [B, H, L, D] queries over [B, Hkv, T, D] cached keys, causal, with padding.

Backends: "sdpa" (PyTorch scaled_dot_product_attention; segments of equal length are batched
into one call rather than looped one by one), "eager" (explicit softmax, for debugging) and
"flash" (flash-attn varlen kernels, CUDA only, when installed).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "eager", "flash")


def flash_available(device: torch.device) -> bool:
    return device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None


def resolve_backend(name: str, device: torch.device) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "flash" and not flash_available(device):
        return "sdpa"
    return name


@dataclass
class Segments:
    """Contiguous segments of a flat token sequence, grouped by length for batched attention."""

    cu_seqlens: torch.Tensor  # [n+1] int32, segment boundaries
    max_len: int
    groups: list[tuple[int, torch.Tensor | None]]  # (length, token index [n_seg, length]); None = whole sequence

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor | list[int], device: torch.device | str = "cpu") -> Segments:
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        lengths = lengths[lengths > 0]
        cu = F.pad(lengths.cumsum(0), (1, 0))
        if lengths.unique().numel() == 1:  # all equal: a plain reshape, no gather
            return cls(cu.to(device, torch.int32), int(lengths[0]), [(int(lengths[0]), None)])
        groups = []
        starts = cu[:-1]
        for length in lengths.unique().tolist():
            seg_starts = starts[lengths == length]
            index = seg_starts[:, None] + torch.arange(length)
            groups.append((length, index.to(device)))
        return cls(cu.to(device, torch.int32), int(lengths.max()), groups)


def segment_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Segments, backend: str
) -> torch.Tensor:
    """q, k, v: [S, H, D] -> [S, H, D]; attention within each segment, no mask."""
    if backend == "flash":
        from flash_attn import flash_attn_varlen_func

        cu = segments.cu_seqlens
        return flash_attn_varlen_func(q, k, v, cu, cu, segments.max_len, segments.max_len)
    attend = _sdpa if backend == "sdpa" else _eager
    seq, heads, dim = q.shape
    out = torch.empty_like(q) if len(segments.groups) > 1 else None
    for length, index in segments.groups:
        if index is None:  # [n, L, H, D] -> [n, H, L, D]
            qs, ks, vs = (x.view(-1, length, heads, dim).transpose(1, 2) for x in (q, k, v))
            return attend(qs, ks, vs, None).transpose(1, 2).reshape(seq, heads, dim)
        qs, ks, vs = (x[index].transpose(1, 2) for x in (q, k, v))
        out[index.flatten()] = attend(qs, ks, vs, None).transpose(1, 2).reshape(-1, heads, dim)
    return out


def decoder_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, backend: str
) -> torch.Tensor:
    """q: [B, H, L, D]; k, v: [B, Hkv, T, D]; mask: bool [B, 1, L, T] (True = attend) -> [B, H, L, D].

    mask=None means plain causal attention (T == L), or all keys for a single query."""
    attend = _eager if backend == "eager" else _sdpa
    batch, heads, length, dim = q.shape
    kv_heads = k.shape[1]
    if kv_heads != heads and length == 1:
        # Decoding: fold the query heads that share a kv head into the query axis instead of
        # copying the cache n_rep times; a [B, 1, 1, T] mask broadcasts over them.
        out = attend(q.view(batch, kv_heads, heads // kv_heads, dim), k, v, mask)
        return out.view(batch, heads, 1, dim)
    if kv_heads != heads:
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
    return attend(q, k, v, mask, causal=mask is None and length > 1)


def _sdpa(q, k, v, mask, causal=False):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def _eager(q, k, v, mask, causal=False):
    scores = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    if causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1).to(v.dtype)) @ v
