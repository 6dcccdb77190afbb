"""`qwen-vl quantize`: a model directory rewritten with int8 or int4 (AWQ GEMM layout) weights,
which load_model reads back as stored, without quantizing again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import torch.nn as nn

from ..config import QwenVLConfig
from ..errors import CheckpointError
from ..weights import CheckpointTensors, save_state_dict
from . import int4
from .convert import check_bits, keep_for, kept, quantization_config, quantize_weight

# Files of a model directory besides config.json and the weights, copied as they are.
SIDE_FILES = (
    "*token*",
    "*.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "*.model",
)


def linear_weight_keys(config: QwenVLConfig) -> set[str]:
    """The `weight` keys of the model's nn.Linear layers (the tied head excluded)."""
    from ..modeling.model import QwenVLForConditionalGeneration, _no_weight_init

    with torch.device("meta"), _no_weight_init():
        model = QwenVLForConditionalGeneration(config)
    keys = {f"{name}.weight" for name, module in model.named_modules() if type(module) is nn.Linear}
    if config.tie_word_embeddings:
        keys.discard("lm_head.weight")
    return keys


def quantize_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    bits: str,
    dtype: torch.dtype = torch.bfloat16,
    keep: tuple[str, ...] | None = None,
    group_size: int = int4.GROUP_SIZE,
) -> tuple[int, int]:
    """Write `dst` from `src` with the Linears outside `keep` quantized to `bits`, all other
    tensors cast to `dtype` (the dtype the weights are quantized from, as load_model does).
    `keep` defaults to KEEP for `bits`. A tied output head outside `keep` is written quantized
    from the embedding table (`lm_head.qweight`, ...), which stays as it is for the lookup.
    Returns (layers quantized, layers left in `dtype`)."""
    check_bits(bits)
    keep = keep_for(bits, keep)
    src, dst = Path(src), Path(dst)
    config = QwenVLConfig.from_pretrained(src)
    if config.quantization_config:
        raise CheckpointError(f"{src}: already quantized ({config.quantization_config.get('quant_method')})")
    if dst.exists() and any(dst.iterdir()):
        raise CheckpointError(f"{dst}: exists and is not empty")
    linear_keys = linear_weight_keys(config)
    state, quantized, plain = {}, 0, 0
    with CheckpointTensors(src) as tensors:
        for key in tensors:
            if config.tie_word_embeddings and key == "lm_head.weight":
                continue
            tensor = tensors[key]
            tensor = tensor.to(dtype) if tensor.is_floating_point() else tensor
            prefix = key.removesuffix(".weight")
            stored = None
            if key in linear_keys and not kept(prefix, keep):
                stored = quantize_weight(bits, tensor, group_size)
            if key == "model.embed_tokens.weight" and config.tie_word_embeddings and not kept("lm_head", keep):
                head = quantize_weight(bits, tensor, group_size)
                if head is not None:
                    state.update({f"lm_head.{name}": value for name, value in head.items()})
                    quantized += 1
            if stored is None:
                state[key] = tensor
                plain += key in linear_keys
            else:
                state.update({f"{prefix}.{name}": value for name, value in stored.items()})
                quantized += 1
    save_state_dict(state, dst)
    config.quantization_config = quantization_config(bits, keep, group_size)
    config.torch_dtype = str(dtype).removeprefix("torch.")
    config.save_pretrained(dst)
    for pattern in SIDE_FILES:
        for path in src.glob(pattern):
            if path.is_file() and not (dst / path.name).exists():
                shutil.copy2(path, dst / path.name)
    return quantized, plain
