"""The Qwen2 decoder: GQA attention with q/k/v bias, RMSNorm, SwiGLU MLP, M-RoPE angles, a KV cache.

Module names follow the published checkpoint keys (`model.layers.{i}.self_attn.q_proj`, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import TextConfig
from .attention import decoder_attention
from .cache import KVCache
from .layers import RMSNorm, activation, apply_rotary, by_rows, fused_cpu_ops
from .rope import mrope_angles


class TextAttention(nn.Module):
    def __init__(self, cfg: TextConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.heads * self.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, cache: KVCache | None, backend: str):  # x [B, L, E]
        b, length, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(b, length, self.heads, self.head_dim)  # [B, L, H, D]
        k = k.view(b, length, self.kv_heads, self.head_dim)
        v = v.view(b, length, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, L, D]
        ops = fused_cpu_ops(q)
        if ops is not None:  # one pass per row and tensor
            q, k = (fused_rotary(ops, t, cos, sin) for t in (q, k))
        else:
            q, k = (apply_rotary(t.transpose(1, 2), cos, sin) for t in (q, k))  # [B, H, L, D]
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # [B, Hkv, past + L, D]
        out = decoder_attention(q, k, v, mask, backend)
        return self.o_proj(out.transpose(1, 2).reshape(b, length, -1))


def fused_rotary(ops, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, L, H, D] bf16, cos / sin [B, 1, L, D] -> rotated [B, H, L, D] by our fused kernel,
    row by row (the kernel takes one row's [L, H, D])."""
    rows = [ops.rotary_bf16(x[i], cos[i, 0].float(), sin[i, 0].float()) for i in range(x.shape[0])]
    return torch.stack(rows).transpose(1, 2)


class TextMLP(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act = activation(cfg.hidden_act)

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


@dataclass
class LayerIO:
    """What one DecoderLayer forward read and wrote, by name (see DecoderLayer.observe)."""

    attention_input: torch.Tensor  # [B, L, E]: the normed hidden states its self_attn reads
    cos: torch.Tensor  # the M-RoPE angles self_attn rotates q and k by
    sin: torch.Tensor
    mask: torch.Tensor | None  # bool [B, 1, L, past + L] (True = attend); None: plain causal
    output: torch.Tensor  # [B, L, E]: the layer's output


class DecoderLayer(nn.Module):
    observers: tuple[Callable[[LayerIO], None], ...] = ()  # see observe()

    def __init__(self, cfg: TextConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = TextAttention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = TextMLP(cfg)

    def observe(self, observer: Callable[[LayerIO], None]) -> Callable[[], None]:
        """Call `observer` with a LayerIO after each forward of this layer (for probes and auxiliary
        losses that read a layer's attention inputs or output); returns a function that detaches it.
        The tensors are the forward's own, in its autograd graph. With no observer the forward is
        the plain one."""
        self.observers = (*self.observers, observer)

        def detach() -> None:
            self.observers = tuple(o for o in self.observers if o is not observer)

        return detach

    def forward(self, x, cos, sin, mask, cache, backend):
        if self.observers:
            return self._observed_forward(x, cos, sin, mask, cache, backend)
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, backend)
        return x + by_rows(lambda rows: self.mlp(self.post_attention_layernorm(rows)), x, dim=1)  # x [B, L, E]

    def _observed_forward(self, x, cos, sin, mask, cache, backend):
        normed = self.input_layernorm(x)
        x = x + self.self_attn(normed, cos, sin, mask, cache, backend)
        out = x + self.mlp(self.post_attention_layernorm(x))
        for observer in self.observers:
            observer(LayerIO(normed, cos, sin, mask, out))
        return out


class TextModel(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.gradient_checkpointing = False

    def forward(
        self,
        inputs_embeds: torch.Tensor,  # [B, L, E]
        position_ids: torch.Tensor,  # [3, B, L]
        attention_mask: torch.Tensor | None,  # [B, past + L], 1 = real token
        cache: KVCache | None,
        backend: str,
        segment_ids: torch.Tensor | None = None,  # [B, L]: packed samples attend only within their id
    ) -> torch.Tensor:  # [B, L, E]
        cfg = self.cfg
        cos, sin = mrope_angles(position_ids, cfg.head_dim, cfg.rope_theta, cfg.mrope_section)
        cos, sin = cos.to(inputs_embeds.dtype), sin.to(inputs_embeds.dtype)
        past = cache.length if cache is not None else 0
        mask = build_mask(
            attention_mask, segment_ids, inputs_embeds.shape[0], inputs_embeds.shape[1], past, inputs_embeds.device
        )
        x = inputs_embeds
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, cache, backend, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, cache, backend)
        if cache is not None:
            cache.advance(inputs_embeds.shape[1])
        return self.norm(x)


def build_mask(attention_mask, segment_ids, batch: int, length: int, past: int, device) -> torch.Tensor | None:
    """bool [B, 1, L, past + L] (True = attend): causal, real keys only, within one packed sample;
    None when plain causal attention is all that is needed.

    A query that would see no key at all (a left pad) is allowed to see itself, so that no row of
    the softmax is empty (an empty row turns into NaN and poisons the padded positions)."""
    total = past + length
    if attention_mask is None and segment_ids is None and (length == 1 or past == 0):
        return None  # plain causal: the attention kernel's own is_causal path
    q_pos = torch.arange(past, total, device=device).view(length, 1)
    k_pos = torch.arange(total, device=device).view(1, total)
    mask = (k_pos <= q_pos).expand(batch, 1, length, total)
    if attention_mask is not None:
        mask = mask & attention_mask.bool().view(batch, 1, 1, total)
    if segment_ids is not None:  # no cache when packing: total == length
        mask = mask & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    return mask | (k_pos == q_pos)
