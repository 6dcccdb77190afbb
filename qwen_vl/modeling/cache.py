"""A preallocated key/value cache for the decoder: one buffer per layer, written in place."""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer for `batch` rows of up to `capacity` tokens.

    `length` counts the tokens already cached; a forward pass writes its keys at
    [length, length + L) in every layer and then advances `length` once. `rope_deltas`
    carries the M-RoPE offset of the prompt into decoding."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, head_dim: int, capacity: int, dtype, device):
        shape = (num_layers, batch, kv_heads, capacity, head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.capacity = capacity
        self.length = 0
        self.rope_deltas: torch.Tensor | None = None  # [B, 1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v [B, Hkv, L, D] -> all cached keys and values of this layer [B, Hkv, length + L, D]."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} tokens > capacity {self.capacity}")
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, count: int) -> None:
        self.length += count

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the given batch rows (rows that finished early are dropped)."""
        self.keys = self.keys[:, rows]
        self.values = self.values[:, rows]
        if self.rope_deltas is not None:
            self.rope_deltas = self.rope_deltas[rows]
