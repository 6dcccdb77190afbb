"""Training data: JSON Lines conversations, weighted mixing, deterministic order, encoding to
(input_ids, labels, vision inputs), and counting of the samples that had to be skipped.

A line is `{"messages": [...]}` in the content-list format; media paths are relative to the data
file. The sample order is a pure function of (seed, epoch), so a resumed run sees the same data."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from qwen_vl.errors import MediaError

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


class ConversationData:
    """Weighted mix of JSON Lines files -> encoded samples in a deterministic order."""

    def __init__(self, sources: list[DataSource], processor, max_seq_len: int):
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


__all__ = ["ConversationData", "Sample", "assistant_labels", "SKIP_REASONS", "IGNORE"]
