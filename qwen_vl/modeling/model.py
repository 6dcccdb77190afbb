"""QwenVLForConditionalGeneration: vision features scattered into the <|image_pad|>/<|video_pad|>
slots of the text embeddings, M-RoPE positions, the Qwen2 decoder, logits and loss."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import QwenVLConfig, TextConfig, VisionConfig, vision_config_from
from ..errors import CheckpointError
from ..hardware import as_dtype
from ..weights import CheckpointTensors, load_state_dict, save_state_dict
from .attention import Segments, resolve_backend
from .cache import KVCache
from .init import init_parameter_
from .rope import mrope_position_ids, text_position_ids
from .text import TextModel
from .vision import VisionEncoder


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, L or logits_to_keep, V]; [K, V] for a logits_to_keep mask
    loss: torch.Tensor | None = None
    rope_deltas: torch.Tensor | None = None  # [B, 1]
    cache: KVCache | None = None


class QwenVLForConditionalGeneration(nn.Module):
    def __init__(self, config: QwenVLConfig):
        super().__init__()
        self.config = config
        self.visual = VisionEncoder(config.vision)
        self.model = TextModel(config.text)
        self.lm_head = nn.Linear(config.text.hidden_size, config.text.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.attn_backend = "sdpa"

    # The embedding table is never swapped for a packed or quantized layer: it names the model's
    # device and dtype.
    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    # ---- inputs ----------------------------------------------------------------------------
    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids [B, L] -> embeddings [B, L, E] with vision features in the placeholder slots."""
        embeds = self.model.embed_tokens(input_ids)
        backend = resolve_backend(self.attn_backend, embeds.device)
        for pixels, grid, token_id, kind in (
            (pixel_values, image_grid_thw, self.config.image_token_id, "image"),
            (pixel_values_videos, video_grid_thw, self.config.video_token_id, "video"),
        ):
            if pixels is None:
                continue
            features = self.visual(pixels.to(self.device), grid, backend)  # [N/4, E]
            slots = input_ids == token_id
            if int(slots.sum()) != features.shape[0]:
                raise ValueError(
                    f"{kind} features and {kind} tokens do not match: {int(slots.sum())} placeholder tokens, "
                    f"{features.shape[0]} features"
                )
            embeds = embeds.masked_scatter(slots[..., None], features.to(embeds.dtype))
        return embeds

    def position_ids(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts=None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """M-RoPE ids of a prompt -> (position_ids [3, B, L], rope_deltas [B, 1])."""
        cfg = self.config
        return mrope_position_ids(
            input_ids,
            attention_mask,
            image_grid_thw,
            video_grid_thw,
            second_per_grid_ts,
            image_token_id=cfg.image_token_id,
            video_token_id=cfg.video_token_id,
            merge_size=cfg.vision.spatial_merge_size,
            tokens_per_second=cfg.vision.tokens_per_second,
        )

    # ---- forward ---------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,  # [B, L]
        attention_mask: torch.Tensor | None = None,  # [B, past + L]
        pixel_values: torch.Tensor | None = None,  # [N, 1176]
        image_grid_thw: torch.Tensor | None = None,  # [I, 3]
        pixel_values_videos: torch.Tensor | None = None,  # [M, 1176]
        video_grid_thw: torch.Tensor | None = None,  # [V, 3]
        second_per_grid_ts=None,  # [V]
        labels: torch.Tensor | None = None,  # [B, L], -100 = ignored
        logits_to_keep: int | torch.Tensor = 0,  # last N positions, [K] positions, or a bool [B, L] mask
        position_ids: torch.Tensor | None = None,  # [3, B, L] or [B, L]
        cache: KVCache | None = None,
        segment_ids: torch.Tensor | None = None,  # [B, L] packed sample ids
        mm_token_type_ids: torch.Tensor | None = None,  # accepted for transformers 5.x parity; derived from input_ids
        **_: object,
    ) -> ModelOutput:
        embeds = self.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
        past = cache.length if cache is not None else 0
        rope_deltas = cache.rope_deltas if cache is not None else None
        if position_ids is None:
            if past == 0:
                position_ids, rope_deltas = self.position_ids(
                    input_ids, attention_mask, image_grid_thw, video_grid_thw, second_per_grid_ts
                )
            else:  # decoding: text ids continue after the prompt, shifted by the prompt's rope_deltas
                text_ids = text_position_ids(attention_mask, *input_ids.shape, past, input_ids.device)
                position_ids = (text_ids + rope_deltas).expand(3, -1, -1)
        elif position_ids.ndim == 2:
            position_ids = position_ids.expand(3, -1, -1)
        if cache is not None:
            cache.rope_deltas = rope_deltas
        backend = resolve_backend(self.attn_backend, embeds.device)
        hidden = self.model(embeds, position_ids.to(embeds.device), attention_mask, cache, backend, segment_ids)
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
        elif logits_to_keep.dtype == torch.bool:  # training: only the positions a loss reads, [K, V]
            if labels is not None:
                raise ValueError("a logits_to_keep mask gives flat logits: compute the loss from them, not from labels")
            hidden = hidden[logits_to_keep.to(hidden.device)]
        else:
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss, rope_deltas=rope_deltas, cache=cache)

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        t = self.config.text
        return KVCache(t.num_hidden_layers, batch, t.num_key_value_heads, t.head_dim, capacity, self.dtype, self.device)

    def gradient_checkpointing_enable(self) -> None:
        self.visual.gradient_checkpointing = True
        self.model.gradient_checkpointing = True

    # ---- checkpoints -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | os.PathLike,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
        convert=None,
    ) -> QwenVLForConditionalGeneration:
        """Load a Hugging Face model directory (either key layout, single-file or sharded).

        Tensors are read one at a time and become the parameters as read (no second copy).
        `convert(name, linear, tensors)` may replace each nn.Linear right after it is filled
        (quantization.convert.LinearConversion: packed, int8, int4); a quantized checkpoint
        gets the conversion its quantization_config names unless one is given."""
        if not Path(model_dir).is_dir():
            raise CheckpointError(f"model directory not found: {model_dir}")
        config = QwenVLConfig.from_pretrained(model_dir)
        dtype = as_dtype(dtype or config.torch_dtype)
        if config.quantization_config and convert is None:
            from ..quantization.convert import LinearConversion, checkpoint_format

            convert = LinearConversion(dtype, stored=checkpoint_format(config.quantization_config))
        with CheckpointTensors(model_dir) as tensors:
            return cls._from_state(config, tensors, dtype, device, source=str(model_dir), convert=convert)

    @classmethod
    def _from_state(
        cls, config, state, dtype, device, source: str, allow_missing: tuple[str, ...] = (), convert=None
    ) -> QwenVLForConditionalGeneration:
        """Fill a model built on the meta device from `state` (a dict or CheckpointTensors)
        module by module; each nn.Linear goes to `convert` as soon as it is filled, so that a
        converted layer's original is freed before the next is read."""
        with torch.device("meta"), _no_weight_init():
            model = cls(config)
        tied = config.tie_word_embeddings
        _check_tensors(model, state, source, allow_missing, tied, reads_quantized=getattr(convert, "stored", None))
        for name in [name for name, _ in model.named_modules()]:  # names only: a swapped-out layer is freed
            module = model.get_submodule(name)
            if tied and name == "lm_head":
                continue  # tied to the embedding below
            for param_name, param in list(module.named_parameters(recurse=False)):
                key = f"{name}.{param_name}" if name else param_name
                if key in state:
                    # a Linear about to be converted: a private copy, freed with the original
                    converting = convert is not None and type(module) is nn.Linear and hasattr(state, "read")
                    tensor = state.read(key) if converting else state[key]
                    if tensor.is_floating_point() and tensor.dtype != dtype:
                        tensor = tensor.to(dtype)
                    setattr(module, param_name, nn.Parameter(tensor, requires_grad=param.requires_grad))
            if convert is not None and type(module) is nn.Linear and name != "lm_head":
                _swap(model, name, convert(name, module, state))
        if tied:
            model.lm_head.weight = model.model.embed_tokens.weight
        model.to_empty_missing(dtype)
        if convert is not None:
            head = model.lm_head
            if tied and hasattr(state, "read") and "lm_head.qweight" not in state:
                # converted from a private copy: the table stays untouched
                head = nn.Linear(head.in_features, head.out_features, bias=False, device="meta")
                head.weight = nn.Parameter(state.read("model.embed_tokens.weight").to(dtype), requires_grad=False)
            _swap(model, "lm_head", convert("lm_head", head, state))
        config.torch_dtype = str(dtype).removeprefix("torch.")
        if torch.device(device).type != "cpu":
            model.to(device=device)
        return model.eval()

    def to_empty_missing(self, dtype) -> None:
        """Give real, freshly initialised storage to parameters left on the meta device."""
        for prefix, module in self.named_modules():
            for name, param in list(module.named_parameters(recurse=False)):
                if param.is_meta:
                    fresh = init_parameter_(f"{prefix}.{name}", torch.empty(param.shape, dtype=dtype))
                    setattr(module, name, nn.Parameter(fresh))

    def save_pretrained(self, model_dir: str | os.PathLike, max_shard_size: int | str = "5GB") -> None:
        """Write config.json and safetensors weights (older key layout) atomically."""
        state = self.state_dict()
        if self.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        self.config.torch_dtype = str(self.dtype).removeprefix("torch.")
        save_state_dict(state, model_dir, max_shard_size)
        self.config.save_pretrained(model_dir)

    @classmethod
    def from_llm(
        cls,
        llm_dir: str | os.PathLike,
        vision_config: VisionConfig | dict | None = None,
        vision_state: dict[str, torch.Tensor] | None = None,
        dtype: torch.dtype | str | None = None,
        token_ids: dict[str, int] | None = None,
    ) -> QwenVLForConditionalGeneration:
        """A VL model from a text-only Qwen2 LLM directory plus a fresh (or given) vision tower.

        The merger's output width is set to the LLM's hidden size. Vision-token ids come from
        `token_ids`, else from the LLM directory's tokenizer, else the published defaults."""
        import json

        llm_dir = Path(llm_dir)
        if not (llm_dir / "config.json").is_file():
            raise CheckpointError(f"{llm_dir}: no config.json (not a model directory)")
        raw = json.loads((llm_dir / "config.json").read_text())
        if raw.get("model_type") not in ("qwen2",):
            raise CheckpointError(f"{llm_dir}: from_llm needs a qwen2 LLM, got model_type {raw.get('model_type')!r}")
        vision = vision_config_from(vision_config)
        text_raw = {**raw, "model_type": "qwen2_5_vl"}
        config = QwenVLConfig.from_dict({**text_raw, "vision_config": {}})
        vision.out_hidden_size = config.text.hidden_size
        config.vision = vision
        config.eos_token_id = raw.get("eos_token_id")
        for name, value in {**_tokenizer_ids(llm_dir), **(token_ids or {})}.items():
            setattr(config, name, value)
        dtype = as_dtype(dtype or raw.get("torch_dtype") or raw.get("dtype") or "float32")
        state = load_state_dict(llm_dir, dtype=dtype)
        state = {k: v for k, v in state.items() if not k.startswith("visual.")}
        if vision_state:
            state.update({f"visual.{k.removeprefix('visual.')}": v.to(dtype) for k, v in vision_state.items()})
        return cls._from_state(config, state, dtype, "cpu", source=str(llm_dir), allow_missing=("visual.",))

    def save_llm(self, llm_dir: str | os.PathLike) -> None:
        """Write the text decoder alone as a Qwen2 LLM directory (`model_type: qwen2`), the
        format from_llm reads and transformers' Qwen2ForCausalLM loads."""
        import json

        from ..fileio import atomic_write_text

        cfg = self.config
        cfg.torch_dtype = str(self.dtype).removeprefix("torch.")
        config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **cfg.text_dict()}
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("visual.")}
        if cfg.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_state_dict(state, llm_dir)
        atomic_write_text(Path(llm_dir) / "config.json", json.dumps(config, indent=2) + "\n")


def _check_tensors(
    model: nn.Module, state, source: str, allow_missing: tuple[str, ...], tied: bool, reads_quantized=None
) -> None:
    """Raise a CheckpointError naming what does not fit: missing, unexpected or misshapen tensors.
    A quantized Linear's `qweight`/`qzeros`/`scales` stand for its `weight`."""
    from ..quantization.convert import QUANTIZED_SUFFIXES

    shapes = {k: v.shape for k, v in model.state_dict().items()}
    if tied:
        shapes.pop("lm_head.weight", None)
    present = set(state)
    if tied:
        present = {k for k in present if not k.startswith("lm_head.")}
    quantized = {k.rsplit(".", 1)[0] for k in present if k.endswith(".qweight")}
    if quantized and not reads_quantized:
        raise CheckpointError(f"{source}: quantized tensors (e.g. {min(quantized)}.qweight) but no quantization_config")
    stored = {f"{p}.{s}" for p in quantized for s in QUANTIZED_SUFFIXES}
    covered = present - stored | {f"{p}.weight" for p in quantized}
    missing = sorted(k for k in shapes.keys() - covered if not k.startswith(allow_missing))
    unexpected = sorted(covered - shapes.keys())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{source}: weights do not fit the config: " + "; ".join(parts))
    for key in sorted(present - stored):
        have = tuple(state.shape(key) if hasattr(state, "shape") else state[key].shape)
        if have != tuple(shapes[key]):
            raise CheckpointError(f"{source}: {key} has shape {have}, config says {tuple(shapes[key])}")


def _swap(model: nn.Module, name: str, replacement: nn.Module | None) -> None:
    """Put `replacement` in place of the submodule `name` (None: keep it)."""
    if replacement is not None:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, replacement)


@contextlib.contextmanager
def _no_weight_init():
    """Skip the random initialisation of layers built on the meta device: it is meaningless
    there, and the meta path of `normal_` imports torch._dynamo (over a second)."""
    layers = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.Conv3d)
    saved = [layer.reset_parameters for layer in layers]
    for layer in layers:
        layer.reset_parameters = lambda self: None
    try:
        yield
    finally:
        for layer, method in zip(layers, saved, strict=True):
            layer.reset_parameters = method


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device), ignore_index=-100
    )


def _tokenizer_ids(model_dir: Path) -> dict[str, int]:
    """Vision-token ids read from a tokenizer in `model_dir`, if there is one."""
    names = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    if not (model_dir / "tokenizer.json").is_file():
        return {}
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    found = {field: tok.token_to_id(token) for field, token in names.items()}
    return {k: v for k, v in found.items() if v is not None}


__all__ = ["QwenVLForConditionalGeneration", "ModelOutput", "TextConfig", "VisionConfig", "Segments"]
