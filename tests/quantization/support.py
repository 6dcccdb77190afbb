"""A tiny model whose Linears fit the int4 layout (inputs in groups, outputs in 64-row blocks)."""

from __future__ import annotations

import torch

from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from tests.tiny import IDS, randomize, tiny_config

GROUP = 32  # small groups, so that the tiny widths hold several


def int4_ready_config():
    config = tiny_config(tie=True)
    config.text.hidden_size, config.text.intermediate_size = 128, 256
    config.text.num_attention_heads, config.text.num_key_value_heads = 2, 1
    config.text.head_dim, config.text.mrope_section = 64, [8, 12, 12]  # q out 128, k/v out 64
    config.vision.out_hidden_size = 128
    config.text.vocab_size = 320
    return config


def int4_ready_model(seed: int = 0) -> QwenVLForConditionalGeneration:
    return randomize(QwenVLForConditionalGeneration(int4_ready_config()), seed, std=0.05).eval()


def text_ids(length: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, IDS["vision_start_token_id"], (1, length), generator=gen)
