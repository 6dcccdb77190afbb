"""Dynamic-FPS video sampling rules (the published qwen-vl-utils behaviour), as pure functions.

Which frames to take (count, range, indices) and how many pixels each may keep. No decoding here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from qwen_vl.errors import MediaError
from qwen_vl.processing.image import IMAGE_FACTOR, MAX_PIXELS, MIN_PIXELS

FRAME_FACTOR = 2  # frame counts are multiples of the temporal patch size
FPS = 2.0
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
# Total pixel budget across all frames of one video: 90% of a 128k-token context's worth of
# pixels (each token covers 28x28 px), the qwen-vl-utils default and transformers'
# `max_video_tokens=128000` cap. It only bites on long videos: at the default per-frame cap
# (768 tokens) the share falls below VIDEO_MAX_PIXELS beyond ~300 sampled frames.
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)


def round_by_factor(number: float, factor: int) -> int:
    return round(number / factor) * factor


def ceil_by_factor(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor


@dataclass(frozen=True)
class FrameRange:
    """Inclusive frame range [start, end] selected by video_start / video_end, and its length."""

    start: int
    end: int

    @property
    def count(self) -> int:
        return self.end - self.start + 1


def frame_range(
    total_frames: int,
    video_fps: float,
    video_start: float | None = None,
    video_end: float | None = None,
    name: str = "video",
) -> FrameRange:
    """Frames covered by [video_start, video_end] seconds (clamped to the video); whole video by default."""
    if total_frames < 1:
        raise MediaError(f"{name}: has no frames")
    if video_start is None and video_end is None:
        return FrameRange(0, total_frames - 1)
    duration = total_frames / video_fps
    start = 0
    if video_start is not None:
        start = math.ceil(max(0.0, min(float(video_start), duration)) * video_fps)
    end = total_frames - 1
    if video_end is not None:
        end = min(math.floor(max(0.0, min(float(video_end), duration)) * video_fps), total_frames - 1)
    if start >= end:
        raise MediaError(
            f"{name}: video_start={video_start} / video_end={video_end} select no frames "
            f"(video is {duration:.2f} s long)"
        )
    return FrameRange(start, end)


def sample_frame_count(
    total_frames: int,
    video_fps: float,
    fps: float | None = None,
    nframes: int | None = None,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int | None = None,
    name: str = "video",
) -> int:
    """How many frames to sample from total_frames (a multiple of FRAME_FACTOR).

    nframes given: rounded to FRAME_FACTOR. Otherwise duration * fps (default 2), clamped to
    [min_frames, min(max_frames, total_frames)] and floored to FRAME_FACTOR."""
    if fps is not None and nframes is not None:
        raise MediaError(f"{name}: give either fps or nframes, not both")
    if total_frames < FRAME_FACTOR:
        raise MediaError(
            f"{name}: has {total_frames} frame; a video needs at least {FRAME_FACTOR} (send a still picture as an image)"
        )
    if nframes is not None:
        count = round_by_factor(nframes, FRAME_FACTOR)
    else:
        fps = FPS if fps is None else float(fps)
        if not fps > 0:
            raise MediaError(f"{name}: fps must be positive, got {fps}")
        low = ceil_by_factor(min_frames, FRAME_FACTOR)
        high = floor_by_factor(min(FPS_MAX_FRAMES, total_frames) if max_frames is None else max_frames, FRAME_FACTOR)
        wanted = total_frames / video_fps * fps
        count = floor_by_factor(min(max(wanted, low), high, total_frames), FRAME_FACTOR)
    if not FRAME_FACTOR <= count <= total_frames:
        raise MediaError(
            f"{name}: cannot sample {count} frames from {total_frames} (need between {FRAME_FACTOR} and {total_frames})"
        )
    return count


def sample_indices(selected: FrameRange, count: int) -> list[int]:
    """count evenly spaced frame indices over the inclusive range, ends included."""
    return torch.linspace(selected.start, selected.end, count).round().long().tolist()


def sampled_fps(count: int, selected: FrameRange, video_fps: float) -> float:
    """Frames per second of the sampled sequence (sets second_per_grid_t = tp / this)."""
    return count / max(selected.count, 1e-6) * video_fps


def frame_max_pixels(
    count: int,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int | None = None,
    total_pixels: int = VIDEO_TOTAL_PIXELS,
) -> float:
    """Per-frame pixel cap: VIDEO_MAX_PIXELS, lowered to an even share of total_pixels per
    temporal patch, never below 1.05 * min_pixels; a requested max_pixels may only lower it."""
    cap = max(min(VIDEO_MAX_PIXELS, total_pixels / count * FRAME_FACTOR), int(min_pixels * 1.05))
    if max_pixels is not None:
        cap = min(cap, max_pixels)
    return cap


__all__ = [
    "FRAME_FACTOR",
    "FPS",
    "FPS_MIN_FRAMES",
    "FPS_MAX_FRAMES",
    "VIDEO_MIN_PIXELS",
    "VIDEO_MAX_PIXELS",
    "VIDEO_TOTAL_PIXELS",
    "FrameRange",
    "frame_range",
    "sample_frame_count",
    "sample_indices",
    "sampled_fps",
    "frame_max_pixels",
    "IMAGE_FACTOR",
    "MIN_PIXELS",
    "MAX_PIXELS",
]
