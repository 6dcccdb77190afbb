"""The native-resolution vision encoder: patch embed -> 2D rotary -> blocks -> 2x2 merger.

Qwen2.5-VL: RMSNorm, SiLU-gated MLP, window attention with full attention (per frame) at
`fullatt_block_indexes`. Qwen2-VL: LayerNorm, QuickGELU MLP (fc1/fc2), full attention everywhere.
Module names follow the published checkpoint keys (`visual.blocks.{i}.attn.qkv`, ...).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import VisionConfig
from .attention import Segments, segment_attention
from .layers import RMSNorm, activation, apply_rotary, by_rows, fused_cpu_ops
from .windows import frame_lengths, window_partition


class PatchEmbed(nn.Module):
    """A Conv3d whose kernel equals its stride: one matmul over the flattened patch rows."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        t, p = cfg.temporal_patch_size, cfg.patch_size
        self.proj = nn.Conv3d(cfg.in_channels, cfg.hidden_size, (t, p, p), stride=(t, p, p), bias=False)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:  # [N, C*T*P*P] -> [N, E]
        weight = self.proj.weight
        return F.linear(patches.to(weight.dtype), weight.view(weight.shape[0], -1))


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x, cos, sin, segments: Segments, backend: str):  # x [S, E]
        seq = x.shape[0]
        q, k, v = self.qkv(x).view(seq, 3, self.num_heads, -1).unbind(1)  # each [S, H, D]
        # Rotary in fp32 as the reference does: bf16 angles lose the position of far patches.
        ops = fused_cpu_ops(q)
        if ops is not None:  # one pass instead of fp32 copies and five element-wise ops
            q, k = ops.rotary_bf16(q, cos, sin), ops.rotary_bf16(k, cos, sin)
        else:
            q, k = (
                by_rows(lambda rows, c, s: apply_rotary(rows.float(), c, s).to(v.dtype), t, cos, sin) for t in (q, k)
            )
        out = segment_attention(q, k, v, segments, backend)
        return self.proj(out.reshape(seq, -1))


class GatedMLP(nn.Module):
    """Qwen2.5-VL vision MLP: down(act(gate(x)) * up(x)), with biases."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class PlainMLP(nn.Module):
    """Qwen2-VL vision MLP: fc2(act(fc1(x)))."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def make_norm(cfg: VisionConfig, dim: int) -> nn.Module:
    return RMSNorm(dim, eps=1e-6) if cfg.norm == "rms" else nn.LayerNorm(dim, eps=1e-6)


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = make_norm(cfg, cfg.hidden_size)
        self.norm2 = make_norm(cfg, cfg.hidden_size)
        self.attn = VisionAttention(cfg)
        self.mlp = GatedMLP(cfg) if cfg.norm == "rms" else PlainMLP(cfg)

    def forward(self, x, cos, sin, segments: Segments, backend: str):
        x = x + self.attn(self.norm1(x), cos, sin, segments, backend)
        return x + by_rows(lambda rows: self.mlp(self.norm2(rows)), x)


class PatchMerger(nn.Module):
    """Concatenate each 2x2 group of patch features and project them to the text width."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        merged = cfg.hidden_size * cfg.spatial_merge_size**2
        self.ln_q = make_norm(cfg, cfg.hidden_size)
        self.mlp = nn.Sequential(nn.Linear(merged, merged), nn.GELU(), nn.Linear(merged, cfg.out_hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [S, E] -> [S/4, out]
        return self.mlp(self.ln_q(x).view(-1, self.mlp[0].in_features))


def patch_positions(grid_thw: torch.Tensor, merge_size: int) -> torch.Tensor:
    """(row, col) of every patch in merge-group order, frame after frame -> [N, 2] long."""
    out = []
    for t, h, w in grid_thw.tolist():
        rows = torch.arange(h).view(h, 1).expand(h, w)
        cols = torch.arange(w).view(1, w).expand(h, w)
        rc = torch.stack([rows, cols], -1)  # [h, w, 2] -> merge groups contiguous
        rc = rc.view(h // merge_size, merge_size, w // merge_size, merge_size, 2).transpose(1, 2).reshape(-1, 2)
        out.append(rc.repeat(t, 1))
    return torch.cat(out)


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg)
        self.gradient_checkpointing = False

    def rotary(self, positions: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [N, 2] -> cos, sin [N, 1, D] fp32: D/4 frequencies for rows, D/4 for columns."""
        quarter = self.cfg.head_dim // 2
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, quarter, 2, dtype=torch.float, device=device) / quarter))
        angles = (positions.to(device)[..., None].float() * inv_freq).flatten(1)  # [N, D/2]
        angles = torch.cat([angles, angles], -1)[:, None, :]
        return angles.cos(), angles.sin()

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
        """pixel_values [N, C*T*P*P], grid_thw [I, 3] -> merged features [N / merge^2, out_hidden_size]."""
        cfg, device = self.cfg, pixel_values.device
        grid_thw = grid_thw.cpu()
        unit = cfg.spatial_merge_size**2
        positions = patch_positions(grid_thw, cfg.spatial_merge_size)
        frames = Segments.from_lengths(frame_lengths(grid_thw), device)
        if cfg.window_size:
            window_units = cfg.window_size // cfg.patch_size // cfg.spatial_merge_size
            unit_order, window_lengths = window_partition(grid_thw, cfg.spatial_merge_size, window_units)
            windows = Segments.from_lengths(window_lengths, device)
            patch_order = (unit_order[:, None] * unit + torch.arange(unit)).flatten()
            pixel_values = pixel_values[patch_order.to(device)]
            positions = positions[patch_order]
        cos, sin = self.rotary(positions, device)

        x = self.patch_embed(pixel_values)
        for i, block in enumerate(self.blocks):
            full = not cfg.window_size or i in cfg.fullatt_block_indexes
            segments = frames if full else windows
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, segments, backend, use_reentrant=False)
            else:
                x = block(x, cos, sin, segments, backend)
        merged = self.merger(x)
        if cfg.window_size:  # back to raster order of merge units
            merged = merged[torch.argsort(unit_order).to(device)]
        return merged
