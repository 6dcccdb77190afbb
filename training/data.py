"""Training data: JSON Lines conversations, weighted mixing, deterministic order, encoding to
(input_ids, labels, vision inputs), and counting of the samples that had to be skipped.

A line is `{"messages": [...]}` in the content-list format; media paths are relative to the data
file. An assistant turn may hold `{"type": "boxes", "boxes": [{"bbox_2d": [x1, y1, x2, y2],
"label": ...}], "points": [{"point_2d": [x, y], "label": ...}]}` in ORIGINAL pixels of the latest
image before it; encoding writes them as the model answers, in that image's resized coordinates.
The sample order is a pure function of (seed, epoch), so a resumed run sees the same data."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from qwen_vl.errors import MediaError
from qwen_vl.grounding import Box, Point, clip, format_answer, frame_for, to_model
from qwen_vl.processing.image import load_image

from .config import ConfigError, DataSource

IGNORE = -100

# Why a sample was skipped (keys of the skip counter, shown in the final summary).
SKIP_REASONS = {
    "bad_json": "line is not valid JSON or has no 'messages' list",
    "bad_messages": "messages do not fit the chat format",
    "missing_media": "an image or video file does not exist",
    "bad_media": "an image or video cannot be read or used",
    "too_long": "longer than max_seq_len tokens",
    "no_labels": "no assistant reply to learn from",
}


@dataclass
class Sample:
    """One encoded conversation."""

    input_ids: torch.Tensor  # long [L]
    labels: torch.Tensor  # long [L], IGNORE except assistant reply tokens and their <|im_end|>
    pixel_values: torch.Tensor | None = None  # [N, 1176]
    image_grid_thw: torch.Tensor | None = None  # [I, 3]
    pixel_values_videos: torch.Tensor | None = None  # [M, 1176]
    video_grid_thw: torch.Tensor | None = None  # [V, 3]
    second_per_grid_ts: torch.Tensor | None = None  # [V]

    def __len__(self) -> int:
        return self.input_ids.numel()

    @property
    def label_tokens(self) -> int:
        """Tokens the loss counts: positions t >= 1 whose label is set (predicted from t - 1)."""
        return int((self.labels[1:] != IGNORE).sum())


class JsonlFile:
    """Byte offsets of the non-blank lines of one file, so that any line can be read on demand."""

    def __init__(self, path: Path):
        self.path = path
        self.offsets: list[int] = []
        try:
            with open(path, "rb") as handle:
                offset = 0
                for line in handle:
                    if line.strip():
                        self.offsets.append(offset)
                    offset += len(line)
        except OSError as err:
            raise ConfigError(f"data file {path}: cannot read ({err.strerror or err})") from None

    def __len__(self) -> int:
        return len(self.offsets)

    def line(self, index: int) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(self.offsets[index])
            return handle.readline()


def assistant_labels(input_ids: list[int], tokenizer) -> list[int]:
    """Labels that keep only assistant replies: the tokens after `<|im_start|>assistant\\n` up to
    and including the closing `<|im_end|>`; the header itself and every other turn are IGNORE."""
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    role = tokenizer("assistant", add_special_tokens=False)["input_ids"]
    labels = [IGNORE] * len(input_ids)
    i = 0
    while i < len(input_ids):
        if input_ids[i] != im_start or input_ids[i + 1 : i + 1 + len(role)] != role:
            i += 1
            continue
        start = i + 1 + len(role)
        # the newline ending the header is its own token (Qwen's split keeps line breaks apart)
        if start < len(input_ids) and tokenizer.decode([input_ids[start]]).startswith("\n"):
            start += 1
        end = start
        while end < len(input_ids) and input_ids[end] != im_end:
            end += 1
        stop = min(end + 1, len(input_ids))  # include <|im_end|>
        labels[start:stop] = input_ids[start:stop]
        i = stop
    return labels


IMAGE_SIZE_OPTIONS = ("min_pixels", "max_pixels", "resized_height", "resized_width")


def place_boxes(messages: list[dict], base_dir, image_settings, model_type: str) -> list[dict]:
    """The messages with every `{"type": "boxes"}` item replaced by the text the model answers
    with: the boxes and points (original pixels of the latest image before them) mapped to that
    image's model coordinates, which depend on its size and pixel budget. Images of a conversation
    that has boxes are read here once and passed on as pictures. ValueError for a malformed item."""
    if not any(_is_boxes(item) for message in messages for item in _content(message)):
        return messages
    out, image, image_options = [], None, {}
    for message in messages:
        content = []
        for item in _content(message):
            if isinstance(item, dict) and item.get("type") == "image":
                image = load_image(item["image"], base_dir)
                image_options = {k: item[k] for k in IMAGE_SIZE_OPTIONS if k in item}
                item = {**item, "image": image}
            elif _is_boxes(item):
                if image is None:
                    raise ValueError("a boxes item comes before any image")
                frame = frame_for(model_type, image.width, image.height, image_settings, **image_options)
                item = {"type": "text", "text": _answer_text(item, frame, model_type)}
            content.append(item)
        out.append({**message, "content": content} if isinstance(message.get("content"), list) else message)
    return out


def _answer_text(item: dict, frame, model_type: str) -> str:
    boxes = [Box(*_coords(b, "bbox_2d", 4), _label(b)) for b in item.get("boxes", [])]
    points = [Point(*_coords(p, "point_2d", 2), _label(p)) for p in item.get("points", [])]
    return format_answer([_model_shape(b, frame) for b in boxes], [_model_shape(p, frame) for p in points], model_type)


def _label(entry: dict) -> str:
    return str(entry.get("label", ""))


def _content(message) -> list:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, list) else []


def _is_boxes(item) -> bool:
    return isinstance(item, dict) and item.get("type") == "boxes"


def _coords(entry: dict, key: str, count: int) -> list[float]:
    values = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(values, list) or len(values) != count:
        raise ValueError(f"{key} needs {count} numbers, got {values!r}")
    return [float(v) for v in values]


def _model_shape(shape, frame):
    """Original pixels -> whole model coordinates, kept inside the model's image."""
    return clip(to_model(shape, frame), frame.model_width, frame.model_height)


class ConversationData:
    """Weighted mix of JSON Lines files -> encoded samples in a deterministic order.

    model_type (config.json's) decides how boxes are written (see place_boxes)."""

    def __init__(self, sources: list[DataSource], processor, max_seq_len: int, model_type: str = "qwen2_5_vl"):
        self.sources = sources
        self.files = []
        for source in sources:
            path = Path(source.path)
            if not path.is_file():
                raise ConfigError(f"data file {path}: file not found")
            self.files.append(JsonlFile(path))
        if not any(len(f) for f in self.files):
            raise ConfigError(f"data: no samples in {', '.join(s.path for s in sources)}")
        self.processor = processor
        self.max_seq_len = max_seq_len
        self.model_type = model_type
        self.skipped: Counter[str] = Counter()
        self._order_cache: tuple[int, int, list[tuple[int, int]]] | None = None

    # ---- order -----------------------------------------------------------------------------
    def epoch_order(self, seed: int, epoch: int) -> list[tuple[int, int]]:
        """(file index, line index) pairs of one epoch: round(weight * lines) draws per file
        (whole copies plus a random remainder), shuffled; a function of (seed, epoch) only."""
        if self._order_cache and self._order_cache[:2] == (seed, epoch):
            return self._order_cache[2]
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        refs: list[tuple[int, int]] = []
        for index, (source, file) in enumerate(zip(self.sources, self.files, strict=True)):
            n = len(file)
            draws = round(source.weight * n)
            copies, rest = divmod(draws, n) if n else (0, 0)
            lines = list(range(n)) * copies + torch.randperm(n, generator=gen)[:rest].tolist()
            refs.extend((index, line) for line in lines)
        if not refs:
            raise ConfigError("data: every weight rounds to zero samples per epoch")
        order = [refs[i] for i in torch.randperm(len(refs), generator=gen).tolist()]
        self._order_cache = (seed, epoch, order)
        return order

    def epoch_length(self) -> int:
        return sum(round(s.weight * len(f)) for s, f in zip(self.sources, self.files, strict=True))

    def refs_at(self, seed: int, start: int, count: int) -> list[tuple[int, int]]:
        """The `count` sample references from global position `start` of the endless stream
        epoch 0, epoch 1, ..."""
        length = self.epoch_length()
        out = []
        for position in range(start, start + count):
            epoch, index = divmod(position, length)
            out.append(self.epoch_order(seed, epoch)[index])
        return out

    # ---- encoding --------------------------------------------------------------------------
    def encode(self, ref: tuple[int, int]) -> Sample | None:
        """The sample at `ref`, or None (counted in self.skipped) when it cannot be used."""
        file = self.files[ref[0]]
        try:
            record = json.loads(file.line(ref[1]))
            messages = record["messages"]
            if not isinstance(messages, list):
                raise TypeError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return self._skip("bad_json")
        try:
            messages = place_boxes(messages, file.path.parent, self.processor.image_settings, self.model_type)
            batch = self.processor(
                messages, add_generation_prompt=False, padding_side="right", base_dir=file.path.parent
            )
        except MediaError as err:
            return self._skip("missing_media" if "not found" in str(err) else "bad_media")
        except (ValueError, TypeError, KeyError, AttributeError):
            return self._skip("bad_messages")
        except Exception as err:  # a template error from jinja and the like: still the sample's fault
            if type(err).__module__.startswith("jinja2"):
                return self._skip("bad_messages")
            raise
        ids = batch.input_ids[0]
        if ids.numel() > self.max_seq_len:
            return self._skip("too_long")
        labels = torch.tensor(assistant_labels(ids.tolist(), self.processor.tokenizer), dtype=torch.long)
        sample = Sample(
            input_ids=ids,
            labels=labels,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            pixel_values_videos=batch.pixel_values_videos,
            video_grid_thw=batch.video_grid_thw,
            second_per_grid_ts=batch.second_per_grid_ts,
        )
        if sample.label_tokens == 0:
            return self._skip("no_labels")
        return sample

    def _skip(self, reason: str) -> None:
        self.skipped[reason] += 1
        return None


__all__ = ["ConversationData", "Sample", "assistant_labels", "place_boxes", "SKIP_REASONS", "IGNORE"]
