"""Model configuration: read from and written to Hugging Face `config.json`.

Two families share one set of objects: `qwen2_5_vl` (RMSNorm + SwiGLU vision blocks, window
attention, absolute-time video ids) and `qwen2_vl` (LayerNorm + QuickGELU blocks, full attention
everywhere, one temporal id per temporal patch). Both the older flat layout (text keys at the top
level) and the newer nested `text_config` layout are read; the flat, published layout is written,
which every transformers version loads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import CheckpointError
from .fileio import atomic_write_text

FAMILIES = ("qwen2_5_vl", "qwen2_vl")
ARCHITECTURES = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration"}


def default_mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 frequency slots into (t, h, w) like the published [16, 24, 24] of 128."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


@dataclass
class VisionConfig:
    hidden_size: int = 1280  # width of the ViT blocks
    depth: int = 32
    num_heads: int = 16
    intermediate_size: int = 3420  # MLP width (Qwen2-VL: hidden_size * mlp_ratio)
    out_hidden_size: int = 2048  # merger output = text hidden size
    hidden_act: str = "silu"  # Qwen2-VL: quick_gelu
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    window_size: int | None = 112  # pixels; None = full attention in every block (Qwen2-VL)
    fullatt_block_indexes: list[int] = field(default_factory=lambda: [7, 15, 23, 31])
    tokens_per_second: float | None = 2  # None = one temporal id per temporal patch (Qwen2-VL)
    norm: str = "rms"  # "rms" (Qwen2.5-VL) or "layer" (Qwen2-VL)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass
class TextConfig:
    vocab_size: int = 151936
    hidden_size: int = 2048
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    head_dim: int | None = None  # None = hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    mrope_section: list[int] | None = None  # None = default_mrope_section(head_dim)
    max_position_embeddings: int = 128000
    hidden_act: str = "silu"
    attention_bias: bool = True  # q/k/v projections carry a bias in Qwen2

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.mrope_section is None:
            self.mrope_section = default_mrope_section(self.head_dim)
        if sum(self.mrope_section) != self.head_dim // 2:
            raise CheckpointError(f"mrope_section {self.mrope_section} must sum to head_dim/2 = {self.head_dim // 2}")


@dataclass
class QwenVLConfig:
    model_type: str = "qwen2_5_vl"
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = 151645
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    torch_dtype: str = "bfloat16"  # dtype of the saved weights
    quantization_config: dict | None = None  # a quantized checkpoint's format (see quantization/)

    # ---- reading -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict) -> QwenVLConfig:
        model_type = raw.get("model_type")
        if model_type not in FAMILIES:
            raise CheckpointError(f"unsupported model_type {model_type!r}: qwen-vl loads {', '.join(FAMILIES)}")
        # Newer transformers nest the text keys under text_config; older ones keep them flat.
        text_raw = {**raw, **(raw.get("text_config") or {})}
        if text_raw.get("use_sliding_window"):
            raise CheckpointError("unsupported config: use_sliding_window=true (sliding-window attention)")
        return cls(
            model_type=model_type,
            vision=_vision_from_dict(model_type, raw.get("vision_config") or {}),
            text=_text_from_dict(text_raw),
            image_token_id=raw.get("image_token_id", 151655),
            video_token_id=raw.get("video_token_id", 151656),
            vision_start_token_id=raw.get("vision_start_token_id", 151652),
            vision_end_token_id=raw.get("vision_end_token_id", 151653),
            bos_token_id=text_raw.get("bos_token_id"),
            eos_token_id=text_raw.get("eos_token_id"),
            pad_token_id=text_raw.get("pad_token_id"),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", text_raw.get("tie_word_embeddings", False))),
            torch_dtype=str(raw.get("torch_dtype") or raw.get("dtype") or text_raw.get("dtype") or "bfloat16"),
            quantization_config=raw.get("quantization_config") or text_raw.get("quantization_config"),
        )

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike) -> QwenVLConfig:
        path = Path(model_dir) / "config.json"
        if not path.is_file():
            raise CheckpointError(f"{model_dir}: no config.json (not a model directory)")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(raw)

    # ---- writing -------------------------------------------------------------------------
    def text_dict(self) -> dict:
        """The decoder's keys as a Qwen2 LLM config.json holds them (shared by both layouts)."""
        t = self.text
        out = {
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "hidden_act": t.hidden_act,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": t.rope_theta,
            "max_position_embeddings": t.max_position_embeddings,
            "use_sliding_window": False,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": self.torch_dtype,
        }
        if t.head_dim != t.hidden_size // t.num_attention_heads:
            out["head_dim"] = t.head_dim
        if self.pad_token_id is not None:
            out["pad_token_id"] = self.pad_token_id
        return out

    def to_dict(self) -> dict:
        """The published flat layout: text keys at the top level, vision keys nested."""
        return {
            "architectures": [ARCHITECTURES[self.model_type]],
            "model_type": self.model_type,
            **self.text_dict(),
            "rope_scaling": {"type": "mrope", "mrope_section": list(self.text.mrope_section)},
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "vision_config": _vision_to_dict(self.model_type, self.vision),
            **({"quantization_config": self.quantization_config} if self.quantization_config else {}),
        }

    def save_pretrained(self, model_dir: str | os.PathLike) -> None:
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(model_dir) / "config.json", json.dumps(self.to_dict(), indent=2) + "\n")


def _pick(raw: dict, cls, **renames) -> dict:
    """The keys of `raw` that are fields of dataclass `cls`, after renaming."""
    names = {f.name for f in fields(cls)}
    picked = {k: v for k, v in raw.items() if k in names}
    for ours, theirs in renames.items():
        if theirs in raw:
            picked[ours] = raw[theirs]
    return picked


def _text_from_dict(raw: dict) -> TextConfig:
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    kwargs = _pick(raw, TextConfig)
    kwargs.pop("mrope_section", None)
    kwargs["rope_theta"] = float(rope.get("rope_theta", raw.get("rope_theta", 1_000_000.0)))
    kwargs["mrope_section"] = list(rope["mrope_section"]) if "mrope_section" in rope else None
    if kwargs.get("num_key_value_heads") is None:
        kwargs["num_key_value_heads"] = kwargs.get("num_attention_heads", TextConfig.num_attention_heads)
    return TextConfig(**kwargs)


def _vision_from_dict(model_type: str, raw: dict) -> VisionConfig:
    if model_type == "qwen2_5_vl":
        kwargs = _pick(raw, VisionConfig, in_channels="in_chans")
        kwargs.setdefault("hidden_size", 1280)
        return VisionConfig(norm="rms", **kwargs)
    # Qwen2-VL names the ViT width embed_dim and the merger output hidden_size.
    width = raw.get("embed_dim", 1280)
    return VisionConfig(
        hidden_size=width,
        depth=raw.get("depth", 32),
        num_heads=raw.get("num_heads", 16),
        intermediate_size=int(width * raw.get("mlp_ratio", 4)),
        out_hidden_size=raw.get("hidden_size", 3584),
        hidden_act=raw.get("hidden_act", "quick_gelu"),
        patch_size=raw.get("patch_size", 14),
        temporal_patch_size=raw.get("temporal_patch_size", 2),
        spatial_merge_size=raw.get("spatial_merge_size", 2),
        in_channels=raw.get("in_channels", raw.get("in_chans", 3)),
        window_size=None,
        fullatt_block_indexes=[],
        tokens_per_second=None,
        norm="layer",
    )


def _vision_to_dict(model_type: str, v: VisionConfig) -> dict:
    common = {
        "depth": v.depth,
        "num_heads": v.num_heads,
        "hidden_act": v.hidden_act,
        "patch_size": v.patch_size,
        "temporal_patch_size": v.temporal_patch_size,
        "spatial_merge_size": v.spatial_merge_size,
        "in_channels": v.in_channels,
    }
    if model_type == "qwen2_5_vl":
        return {
            **common,
            "model_type": "qwen2_5_vl",
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "out_hidden_size": v.out_hidden_size,
            "window_size": v.window_size,
            "fullatt_block_indexes": list(v.fullatt_block_indexes),
            "tokens_per_second": v.tokens_per_second,
        }
    return {
        **common,
        "model_type": "qwen2_vl",
        "embed_dim": v.hidden_size,
        "mlp_ratio": _ratio(v.intermediate_size, v.hidden_size),
        "hidden_size": v.out_hidden_size,
    }


def _ratio(a: int, b: int) -> int | float:
    return a // b if a % b == 0 else a / b


def vision_config_from(value: VisionConfig | dict | None, model_type: str = "qwen2_5_vl") -> VisionConfig:
    """A VisionConfig from an object, a config.json-style dict, or None (the published default)."""
    if isinstance(value, VisionConfig):
        return value
    return _vision_from_dict(model_type, value or {})


__all__ = ["QwenVLConfig", "TextConfig", "VisionConfig", "default_mrope_section", "vision_config_from"]
