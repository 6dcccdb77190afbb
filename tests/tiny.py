"""Tiny random Qwen2.5-VL / Qwen2-VL models built in-process, and their transformers twins."""

from __future__ import annotations

import torch

from qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig
from qwen_vl.modeling.model import QwenVLForConditionalGeneration

VOCAB = 300
IDS = dict(vision_start_token_id=290, vision_end_token_id=291, image_token_id=292, video_token_id=293)


def tiny_config(family: str = "qwen2_5_vl", tie: bool = False, tokens_per_second: float = 2) -> QwenVLConfig:
    text = TextConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    )
    if family == "qwen2_5_vl":
        vision = VisionConfig(
            hidden_size=32,
            depth=4,
            num_heads=2,
            intermediate_size=48,
            out_hidden_size=64,
            fullatt_block_indexes=[1, 3],
            tokens_per_second=tokens_per_second,
        )
    else:
        vision = VisionConfig(
            hidden_size=32,
            depth=2,
            num_heads=2,
            intermediate_size=128,
            out_hidden_size=64,
            hidden_act="quick_gelu",
            window_size=None,
            fullatt_block_indexes=[],
            tokens_per_second=None,
            norm="layer",
        )
    return QwenVLConfig(
        model_type=family,
        vision=vision,
        text=text,
        tie_word_embeddings=tie,
        bos_token_id=None,
        eos_token_id=1,
        torch_dtype="float32",
        **IDS,
    )


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Weights large enough that a wrong index or a wrong order changes the logits visibly."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if (
                name.endswith("norm.weight")
                or "norm1" in name
                or "norm2" in name
                or "ln_q" in name
                or "layernorm" in name
            ):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))
    return model


def tiny_model(family: str = "qwen2_5_vl", seed: int = 0, **kw) -> QwenVLForConditionalGeneration:
    model = QwenVLForConditionalGeneration(tiny_config(family, **kw))
    return randomize(model, seed).eval()


def hf_twin(model: QwenVLForConditionalGeneration, tmp_path):
    """transformers' model loaded from our saved checkpoint (so the save path is exercised too)."""
    import transformers

    model.save_pretrained(tmp_path)
    cls = {
        "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
        "qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
    }[model.config.model_type]
    return cls.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager").eval()


CORPUS = [
    "a red circle on the left and a blue square on the right",
    "What does the text say? The text says hello world.",
    "How many shapes are there? There are three shapes.",
    "When does the green star appear? At 4 seconds.",
    "Describe this image. A yellow triangle on a white background.",
    "你好，世界 🙂 emoji and CJK text",
] * 4


def save_tiny_model_dir(path, family: str = "qwen2_5_vl", seed: int = 0, vocab_size: int = 400):
    """A complete tiny model directory: weights, config, tokenizer (ChatML template), preprocessor.

    Token ids come from the trained tokenizer, as in a real checkpoint."""
    from qwen_vl.processing import QwenVLProcessor, build_tokenizer

    tokenizer = build_tokenizer(CORPUS, vocab_size=vocab_size)
    config = tiny_config(family)
    config.text.vocab_size = len(tokenizer)
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in [
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]
    }
    for name, value in ids.items():
        setattr(config, name, value)
    config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config.pad_token_id = tokenizer.pad_token_id
    model = randomize(QwenVLForConditionalGeneration(config), seed).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    QwenVLProcessor(tokenizer).save_pretrained(path)
    return path


# ---- inputs for the tiny models: vision blocks of placeholder ids, random patches ----
IMG, VID, VS, VE = (
    IDS["image_token_id"],
    IDS["video_token_id"],
    IDS["vision_start_token_id"],
    IDS["vision_end_token_id"],
)


def block(token: int, grid) -> list[int]:
    t, h, w = grid
    return [VS] + [token] * (t * h * w // 4) + [VE]


def pixels(grids, seed):
    gen = torch.Generator().manual_seed(seed)
    count = sum(t * h * w for t, h, w in grids)
    return torch.randn(count, 1176, generator=gen)


def mm_types(ids):
    return (ids == IMG).int() + 2 * (ids == VID).int()
