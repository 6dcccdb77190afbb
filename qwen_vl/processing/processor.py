"""Conversations -> model inputs: chat template, media preprocessing, placeholder expansion, padding."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from PIL import Image

from qwen_vl.errors import MediaError, OptionError, PromptTooLongError
from qwen_vl.fileio import atomic_write_text
from qwen_vl.processing.chat import (
    CHAT_TEMPLATE,
    IMAGE_PAD,
    VIDEO_PAD,
    expand_placeholders,
    media_items,
    normalize_messages,
)
from qwen_vl.processing.image import ImageSettings, describe, image_to_patches, load_image, open_image, target_size
from qwen_vl.processing.video import VideoSettings, preprocess_video

IMAGE_SIZE_KEYS = ("min_pixels", "max_pixels", "resized_height", "resized_width")
PREPROCESSOR_CONFIG = "preprocessor_config.json"
VIDEO_PREPROCESSOR_CONFIG = "video_preprocessor_config.json"


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(text: str) -> str:
    """`text` with lone surrogates (a command line's undecodable bytes, a JSON "\\ud800" escape)
    replaced by U+FFFD: the tokenizer refuses them, and every entry point passes through here."""
    return LONE_SURROGATE.sub("\ufffd", text)


@dataclass
class ProcessorOutput:
    """Model inputs for a batch of B conversations with I images and V videos in total."""

    input_ids: torch.Tensor  # long [B, L]
    attention_mask: torch.Tensor  # long [B, L], 0 on padding
    pixel_values: torch.Tensor | None = None  # float32 [sum t*h*w over images, 1176]
    image_grid_thw: torch.Tensor | None = None  # long [I, 3]
    pixel_values_videos: torch.Tensor | None = None  # float32 [sum t*h*w over videos, 1176]
    video_grid_thw: torch.Tensor | None = None  # long [V, 3]
    second_per_grid_ts: torch.Tensor | None = None  # float32 [V], temporal_patch_size / sampled fps

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def items(self):
        return [(k, getattr(self, k)) for k in self.keys()]

    def get(self, key: str, default=None):
        return getattr(self, key, None) if key in self.keys() else default

    def to(self, device) -> ProcessorOutput:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()}
        return ProcessorOutput(**moved)


class QwenVLProcessor:
    """Tokenizer + image/video preprocessing for Qwen2-VL / Qwen2.5-VL.

    processor(conversation) or processor([conversation, ...]) -> ProcessorOutput.
    """

    def __init__(
        self,
        tokenizer,
        image_settings: ImageSettings | None = None,
        video_settings: VideoSettings | None = None,
        base_dir: str | os.PathLike | None = None,
        video_backend: str = "auto",
        add_vision_id: bool = False,
        **image_kwargs,
    ):
        """image_kwargs: any ImageSettings field (min_pixels, max_pixels, patch_size, ...).
        add_vision_id: the default for calls that do not say (labels "Picture N: " / "Video N: ")."""
        self.tokenizer = tokenizer
        self.image_settings = image_settings or ImageSettings(**image_kwargs)
        if image_settings is not None and image_kwargs:
            raise TypeError("pass image_settings or individual image fields, not both")
        self.video_settings = video_settings or VideoSettings()
        self.base_dir = base_dir
        self.video_backend = video_backend
        self.add_vision_id = add_vision_id
        self.max_prompt_tokens: int | None = None  # the model's context, set by load_model; None = unchecked
        if not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = CHAT_TEMPLATE
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
        if self.image_token_id is None or self.video_token_id is None:
            raise ValueError(f"tokenizer lacks {IMAGE_PAD} / {VIDEO_PAD}")

    # ---- persistence -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, light_tokenizer: bool = False, **kwargs) -> QwenVLProcessor:
        """light_tokenizer: read the tokenizer without importing transformers (inference only;
        see light_tokenizer.py); otherwise transformers' AutoTokenizer."""
        directory = Path(directory)
        if light_tokenizer:
            from qwen_vl.processing.light_tokenizer import LightTokenizer

            tokenizer = LightTokenizer.from_pretrained(directory)
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(directory))
        settings = {}
        config_path = directory / PREPROCESSOR_CONFIG
        if config_path.exists():
            settings = image_settings_from_config(json.loads(config_path.read_text(encoding="utf-8")))
        settings.update({k: kwargs.pop(k) for k in list(kwargs) if k in ImageSettings.__dataclass_fields__})
        video_path = directory / VIDEO_PREPROCESSOR_CONFIG
        if "video_settings" not in kwargs and video_path.exists():
            kwargs["video_settings"] = video_settings_from_config(json.loads(video_path.read_text(encoding="utf-8")))
        return cls(tokenizer, ImageSettings(**settings), **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Tokenizer files and preprocessor_config.json; each file lands whole or not at all."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory, prefix=".tokenizer."))
        try:
            self.tokenizer.save_pretrained(str(staging))
            for item in staging.iterdir():
                os.replace(item, directory / item.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        atomic_write_text(directory / PREPROCESSOR_CONFIG, json.dumps(self.preprocessor_config(), indent=2) + "\n")
        video = video_preprocessor_config(self.video_settings)
        atomic_write_text(directory / VIDEO_PREPROCESSOR_CONFIG, json.dumps(video, indent=2) + "\n")

    def preprocessor_config(self) -> dict:
        """The Hugging Face preprocessor_config.json content (old and transformers-5 keys)."""
        return preprocessor_config(self.image_settings)

    # ---- text ----------------------------------------------------------------------------
    def apply_chat_template(
        self, conversation: list[dict], add_generation_prompt: bool = True, add_vision_id: bool | None = None
    ) -> str:
        """The prompt text of one conversation, its content parts normalised first (any accepted
        spelling renders the same placeholders under any Qwen template)."""
        add_vision_id = self.add_vision_id if add_vision_id is None else bool(add_vision_id)
        extra = {}
        if add_vision_id:
            self._check_vision_id_support()
            extra["add_vision_id"] = True
        return self.tokenizer.apply_chat_template(
            normalize_messages(conversation), tokenize=False, add_generation_prompt=add_generation_prompt, **extra
        )

    def _check_vision_id_support(self) -> None:
        # A template without the flag would ignore it and render no labels.
        if "add_vision_id" not in (getattr(self.tokenizer, "chat_template", None) or ""):
            raise OptionError("add_vision_id: this model's chat template has no 'Picture N:' labels")

    def decode(self, token_ids, **kwargs) -> str:
        return self.tokenizer.decode(token_ids, **kwargs)

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(sequences, **kwargs)

    # ---- main entry ----------------------------------------------------------------------
    def __call__(
        self,
        conversations: list[dict] | list[list[dict]],
        add_generation_prompt: bool = True,
        padding_side: str = "left",
        base_dir: str | os.PathLike | None = None,
        add_vision_id: bool | list[bool] | None = None,
    ) -> ProcessorOutput:
        """add_vision_id: True / False for every conversation, one flag per conversation, or None for
        the processor's default; numbering restarts with each conversation."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        batch = [conversations] if conversations and isinstance(conversations[0], dict) else conversations
        vision_ids = vision_id_flags(add_vision_id, len(batch))
        base_dir = self.base_dir if base_dir is None else base_dir
        merge_area = self.image_settings.merge_size**2

        sequences: list[list[int]] = []
        image_rows, image_grids, video_rows, video_grids, video_seconds = [], [], [], [], []
        for conversation, vision_id in zip(batch, vision_ids, strict=True):
            conversation = normalize_messages(conversation)
            text = valid_unicode(self.apply_chat_template(conversation, add_generation_prompt, vision_id))
            counts = []
            for item in media_items(conversation):
                if item.kind == "image":
                    sizes = {k: v for k, v in item.options.items() if k in IMAGE_SIZE_KEYS}
                    rows, grid = self._image_patches(item.source, base_dir, sizes)
                    image_rows.append(rows)
                    image_grids.append(grid)
                else:
                    video = preprocess_video(
                        item.source,
                        self.image_settings,
                        self.video_settings,
                        base_dir,
                        self.video_backend,
                        **item.options,
                    )
                    rows, grid = video.pixel_values, video.grid_thw
                    video_rows.append(rows)
                    video_grids.append(grid)
                    video_seconds.append(video.second_per_grid_t)
                counts.append((item.kind, grid[0] * grid[1] * grid[2] // merge_area))
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            sequences.append(self._expand(ids, counts))

        input_ids, attention_mask = self._pad(sequences, padding_side)
        return ProcessorOutput(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=torch.cat(image_rows) if image_rows else None,
            image_grid_thw=torch.tensor(image_grids, dtype=torch.long) if image_grids else None,
            pixel_values_videos=torch.cat(video_rows) if video_rows else None,
            video_grid_thw=torch.tensor(video_grids, dtype=torch.long) if video_grids else None,
            second_per_grid_ts=torch.tensor(video_seconds, dtype=torch.float32) if video_seconds else None,
        )

    def _image_patches(self, source, base_dir, sizes: dict) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """One image's patch rows and grid."""
        image = self.open_checked_image(source, base_dir, **sizes)
        return image_to_patches(load_image(image), self.image_settings, **sizes)

    def open_checked_image(self, source, base_dir=None, **sizes) -> Image.Image:
        """An image read up to its header, refused (one line naming it) where its shape or token count
        does not fit. Its size and the pixel budget fix the token count before any pixel is decoded,
        so an image that alone would overflow the context costs no memory."""
        image = open_image(source, self.base_dir if base_dir is None else base_dir)
        try:
            height, width = target_size(image.height, image.width, self.image_settings, **sizes)
        except MediaError as err:
            raise MediaError(f"image {describe(source)}: {err}") from None
        tokens = height * width // self.image_settings.factor**2
        if self.max_prompt_tokens is not None and tokens > self.max_prompt_tokens:
            raise PromptTooLongError(
                f"image {describe(source)}: {image.width}x{image.height} at this pixel budget is {tokens:,} tokens, "
                f"over the model's context of {self.max_prompt_tokens:,}; lower max_pixels"
            )
        return image

    def _expand(self, ids: list[int], counts: list[tuple[str, int]]) -> list[int]:
        return expand_placeholders(ids, {"image": self.image_token_id, "video": self.video_token_id}, counts)

    def _pad(self, sequences: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] ids padded with the pad token and the matching 0/1 attention mask."""
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        length = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, seq in enumerate(sequences):
            span = slice(length - len(seq), length) if side == "left" else slice(0, len(seq))
            input_ids[row, span] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, span] = 1
        return input_ids, attention_mask


def vision_id_flags(add_vision_id: bool | list[bool] | None, count: int) -> list[bool | None]:
    """One add_vision_id flag (None = the processor's default) per conversation of a batch."""
    if add_vision_id is None or isinstance(add_vision_id, bool):
        return [add_vision_id] * count
    flags = list(add_vision_id)
    if len(flags) != count:
        raise OptionError(f"add_vision_id: {len(flags)} flags for {count} conversations")
    return [None if f is None else bool(f) for f in flags]


def image_settings_from_config(config: dict) -> dict:
    """ImageSettings fields from a preprocessor_config.json: min/max_pixels or size{shortest_edge,
    longest_edge} (transformers 5), the latter winning when both are present."""
    settings = {}
    for key in ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size"):
        if config.get(key) is not None:
            settings[key] = int(config[key])
    size = config.get("size") or {}
    if size.get("shortest_edge") is not None:
        settings["min_pixels"] = int(size["shortest_edge"])
    if size.get("longest_edge") is not None:
        settings["max_pixels"] = int(size["longest_edge"])
    for key in ("image_mean", "image_std"):
        if config.get(key) is not None:
            settings[key] = tuple(float(v) for v in config[key])
    return settings


def video_settings_from_config(config: dict) -> VideoSettings:
    """VideoSettings from a video_preprocessor_config.json (unknown keys ignored)."""
    known = VideoSettings.__dataclass_fields__
    return VideoSettings(**{k: v for k, v in config.items() if k in known})


def video_preprocessor_config(s: VideoSettings) -> dict:
    """The video_preprocessor_config.json content for `s` (the settings that are set)."""
    return {"video_processor_type": "Qwen2VLVideoProcessor", **{k: v for k, v in asdict(s).items() if v is not None}}


def preprocessor_config(s: ImageSettings) -> dict:
    """The Hugging Face preprocessor_config.json content for `s` (old and transformers-5 keys)."""
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "do_resize": True,
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "image_mean": list(s.image_mean),
        "image_std": list(s.image_std),
        "min_pixels": s.min_pixels,
        "max_pixels": s.max_pixels,
        "size": {"shortest_edge": s.min_pixels, "longest_edge": s.max_pixels},
        "patch_size": s.patch_size,
        "temporal_patch_size": s.temporal_patch_size,
        "merge_size": s.merge_size,
    }


__all__ = ["QwenVLProcessor", "ProcessorOutput", "image_settings_from_config", "preprocessor_config"]
