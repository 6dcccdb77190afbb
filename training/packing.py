"""Batches from encoded samples: packed (several samples per row, attention kept inside each
sample, M-RoPE ids restarting per sample) or padded (one sample per row, right padding).

Vision inputs are concatenated in the order their placeholder tokens appear in the flattened
[B, L] ids (row by row), which is the order the model scatters vision features in."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from .data import IGNORE, Sample

_VISION = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


@dataclass
class Batch:
    input_ids: torch.Tensor  # long [B, L]
    labels: torch.Tensor  # long [B, L]
    position_ids: torch.Tensor  # long [3, B, L]
    attention_mask: torch.Tensor | None = None  # long [B, L] (padded batches)
    segment_ids: torch.Tensor | None = None  # long [B, L] (packed batches; 0 = padding)
    pixel_values: torch.Tensor | None = None  # [N, 1176]
    image_grid_thw: torch.Tensor | None = None  # [I, 3]
    pixel_values_videos: torch.Tensor | None = None  # [M, 1176]
    video_grid_thw: torch.Tensor | None = None  # [V, 3]
    second_per_grid_ts: torch.Tensor | None = None  # [V]
    samples: int = 0
    tokens: int = 0  # real (non-padding) tokens

    @property
    def label_tokens(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())

    def model_inputs(self) -> dict:
        skip = {"labels", "samples", "tokens"}
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in skip and getattr(self, f.name) is not None
        }

    def to(self, device) -> Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()})


PositionFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # model.position_ids


def sample_positions(sample: Sample, position_ids: PositionFn) -> torch.Tensor:
    """M-RoPE ids of one sample on its own -> [3, L]."""
    ids, _ = position_ids(
        sample.input_ids[None],
        None,
        sample.image_grid_thw,
        sample.video_grid_thw,
        sample.second_per_grid_ts,
    )
    return ids[:, 0]


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Sample indices per row, rows as even as possible: the fewest rows that the samples fit in
    (longest first, each into the emptiest row), since every row is padded to the longest one.
    Deterministic; samples keep stream order inside a row and rows are ordered by first sample.
    Every length must be <= capacity."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    count = max(math.ceil(sum(lengths) / capacity), 1)
    while True:
        rows: list[list[int]] = [[] for _ in range(count)]
        load = [0] * count
        for index in order:
            row = min(range(count), key=lambda r: (load[r], r))
            rows[row].append(index)
            load[row] += lengths[index]
        if max(load) <= capacity:
            return sorted((sorted(row) for row in rows if row), key=lambda row: row[0])
        count += 1


def packed_batch(samples: list[Sample], capacity: int, position_ids: PositionFn, pad_id: int) -> Batch:
    rows = pack_rows([len(s) for s in samples], capacity)
    return _assemble([[samples[i] for i in row] for row in rows], position_ids, pad_id, packed=True)


def padded_batch(samples: list[Sample], position_ids: PositionFn, pad_id: int) -> Batch:
    return _assemble([[s] for s in samples], position_ids, pad_id, packed=False)


def _assemble(rows: list[list[Sample]], position_ids: PositionFn, pad_id: int, packed: bool) -> Batch:
    width = max(sum(len(s) for s in row) for row in rows)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    labels = torch.full((batch, width), IGNORE, dtype=torch.long)
    positions = torch.zeros((3, batch, width), dtype=torch.long)
    segments = torch.zeros((batch, width), dtype=torch.long)
    vision: dict[str, list[torch.Tensor]] = {name: [] for name in _VISION}
    for r, row in enumerate(rows):
        at = 0
        for k, sample in enumerate(row, start=1):
            span = slice(at, at + len(sample))
            input_ids[r, span] = sample.input_ids
            # the first token of a sample is never a target: in a packed row it would otherwise be
            # "predicted" from the previous sample's last token
            labels[r, span] = sample.labels
            labels[r, at] = IGNORE
            positions[:, r, span] = sample_positions(sample, position_ids)
            segments[r, span] = k
            at += len(sample)
            for name in _VISION:
                value = getattr(sample, name)
                if value is not None:
                    vision[name].append(value)
    samples = sum(len(row) for row in rows)
    tokens = int((segments > 0).sum())
    return Batch(
        input_ids=input_ids,
        labels=labels,
        position_ids=positions,
        attention_mask=None if packed else (segments > 0).long(),
        segment_ids=segments if packed else None,
        **{name: torch.cat(values) if values else None for name, values in vision.items()},
        samples=samples,
        tokens=tokens,
    )


__all__ = ["Batch", "pack_rows", "packed_batch", "padded_batch", "sample_positions"]
