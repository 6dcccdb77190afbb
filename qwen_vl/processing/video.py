"""Videos (files or frame lists) -> sampled frames -> patch rows with t = frames / 2."""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from qwen_vl.errors import MediaError
from qwen_vl.processing.image import (
    ImageSettings,
    checked_media_file,
    describe,
    load_image,
    pil_to_tensor,
    read_media_bytes,
    resize_bicubic,
    resolve_path,
    smart_resize,
)
from qwen_vl.processing.patches import normalization, patchify
from qwen_vl.processing.video_readers import native_logs_silenced, open_video
from qwen_vl.processing.video_sampling import (
    FPS,
    FPS_MIN_FRAMES,
    FRAME_FACTOR,
    VIDEO_MIN_PIXELS,
    VIDEO_TOTAL_PIXELS,
    frame_max_pixels,
    frame_range,
    sample_frame_count,
    sample_indices,
    sampled_fps,
)


@dataclass(frozen=True)
class VideoSettings:
    """Video defaults (published qwen-vl-utils values); per-item keys override them."""

    min_pixels: int = VIDEO_MIN_PIXELS
    max_pixels: int | None = None  # None: VIDEO_MAX_PIXELS shared down by total_pixels
    total_pixels: int = VIDEO_TOTAL_PIXELS
    fps: float = FPS
    min_frames: int = FPS_MIN_FRAMES
    max_frames: int | None = None  # None: min(768, frames in the video)


@dataclass
class SampledVideo:
    """Frames picked from a video, still at their decoded size."""

    frames: torch.Tensor  # uint8 [T, H, W, 3], T a multiple of FRAME_FACTOR
    indices: list[int]  # frame numbers in the source (presentation order)
    sampled_fps: float
    total_frames: int  # frames in the source video
    video_fps: float
    backend: str  # "decord", "pyav" or "frames"


@dataclass
class VideoPatches:
    pixel_values: torch.Tensor  # float32 [t*gh*gw, 3*2*14*14]
    grid_thw: tuple[int, int, int]  # (t, gh, gw) in patches, t = frames / temporal_patch_size
    sampled_fps: float
    second_per_grid_t: float  # temporal_patch_size / sampled_fps


def _local_video_path(source, base_dir) -> tuple[str, bool]:
    """(path, is_temporary): data: URIs and raw bytes go through a temporary file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif os.fspath(source).startswith("data:"):
        data = read_media_bytes(source, kind="video")
    else:
        return str(checked_media_file(source, resolve_path(source, base_dir), "video")), False
    if not data:
        raise MediaError(f"video {describe(source)}: data is empty")
    handle = tempfile.NamedTemporaryFile(suffix=".video", delete=False)
    with handle:
        handle.write(data)
    return handle.name, True


def read_video(
    source,
    fps: float | None = None,
    nframes: int | None = None,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int | None = None,
    video_start: float | None = None,
    video_end: float | None = None,
    backend: str = "auto",
    base_dir: str | os.PathLike | None = None,
) -> SampledVideo:
    """Decode only the frames the dynamic-FPS rule picks. backend: "auto" | "decord" | "pyav"."""
    name = f"video {describe(source)}"
    if fps is not None and nframes is not None:
        raise MediaError(f"{name}: give either fps or nframes, not both")
    path, temporary = _local_video_path(source, base_dir)
    try:
        reader = open_video(path, backend, name=describe(source))
        if not reader.fps > 0:
            raise MediaError(f"{name}: unknown frame rate")
        selected = frame_range(reader.total_frames, reader.fps, video_start, video_end, name)
        count = sample_frame_count(selected.count, reader.fps, fps, nframes, min_frames, max_frames, name)
        indices = sample_indices(selected, count)
        try:
            with native_logs_silenced():
                frames = reader.frames(indices)
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(f"{name}: frames cannot be decoded ({str(exc)[:120]})") from None
    finally:
        if temporary:
            os.unlink(path)
    return SampledVideo(
        frames=torch.from_numpy(np.ascontiguousarray(frames)),
        indices=indices,
        sampled_fps=sampled_fps(count, selected, reader.fps),
        total_frames=reader.total_frames,
        video_fps=reader.fps,
        backend=reader.backend,
    )


def frames_as_video(frames: list, fps: float | None = None, base_dir=None) -> SampledVideo:
    """A list of images (any load_image source) as a video sampled at `fps` (default 2).
    All frames take the first frame's size; an odd count is padded with the last frame."""
    if not frames:
        raise MediaError("video <frame list>: the frame list is empty")
    images = [load_image(frame, base_dir) for frame in frames]
    height, width = images[0].height, images[0].width
    images = [resize_bicubic(img, height, width) for img in images]
    images += [images[-1]] * (-len(images) % FRAME_FACTOR)
    stacked = torch.stack([pil_to_tensor(img) for img in images])  # uint8 [T, H, W, 3]
    rate = FPS if fps is None else float(fps)
    return SampledVideo(stacked, list(range(len(images))), rate, len(frames), rate, "frames")


def video_target_size(
    video: SampledVideo,
    image_settings: ImageSettings,
    video_settings: VideoSettings,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    resized_height: int | None = None,
    resized_width: int | None = None,
    total_pixels: int | None = None,
) -> tuple[int, int]:
    """Frame resolution: per-frame budget shared down by the total budget, or explicit size.

    An explicit size is snapped to the factor grid within the image bounds, or within this
    item's own min_pixels / max_pixels when given (as for still images); the video budget and
    total_pixels size only frames that have no explicit size (qwen-vl-utils rule)."""
    count, height, width = video.frames.shape[:3]
    if (resized_height is None) != (resized_width is None):
        raise MediaError("video: resized_height and resized_width must be given together")
    if resized_height is not None:
        bounds = {k: int(v) for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
        return smart_resize(int(resized_height), int(resized_width), image_settings.factor, **bounds)
    return frame_size(count, height, width, image_settings, video_settings, min_pixels, max_pixels, total_pixels)


def frame_size(
    count: int,
    height: int,
    width: int,
    image_settings: ImageSettings,
    video_settings: VideoSettings,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    total_pixels: int | None = None,
) -> tuple[int, int]:
    """Model resolution of `count` sampled frames of height x width: the per-frame budget, shared
    down by the total budget (the item's total_pixels, else the settings')."""
    low = video_settings.min_pixels if min_pixels is None else int(min_pixels)
    requested = video_settings.max_pixels if max_pixels is None else int(max_pixels)
    total = video_settings.total_pixels if total_pixels is None else total_pixels
    cap = frame_max_pixels(count, low, requested, total)
    return smart_resize(height, width, image_settings.factor, low, cap)


_RESIZE_POOL = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> uint8 [T, height, width, 3], PIL bicubic per frame (threads:
    PIL releases the GIL while resampling)."""
    if frames.shape[1:3] == (height, width):
        return frames
    out = torch.empty(frames.shape[0], height, width, 3, dtype=torch.uint8)

    def one(i: int) -> None:
        image = Image.fromarray(frames[i].numpy())
        out[i].copy_(pil_to_tensor(image.resize((width, height), Image.Resampling.BICUBIC)))

    list(_RESIZE_POOL.map(one, range(frames.shape[0])))
    return out


def video_to_patches(
    video: SampledVideo,
    image_settings: ImageSettings = ImageSettings(),
    video_settings: VideoSettings = VideoSettings(),
    **overrides,
) -> VideoPatches:
    """Sampled frames -> patch rows. overrides: min_pixels, max_pixels, resized_height/width."""
    height, width = video_target_size(video, image_settings, video_settings, **overrides)
    frames = resize_frames(video.frames, height, width)
    scale, bias = normalization(image_settings.image_mean, image_settings.image_std)
    rows, grid = patchify(
        frames, scale, bias, image_settings.patch_size, image_settings.merge_size, image_settings.temporal_patch_size
    )
    return VideoPatches(rows, grid, video.sampled_fps, image_settings.temporal_patch_size / video.sampled_fps)


VIDEO_ITEM_KEYS = ("fps", "nframes", "min_frames", "max_frames", "video_start", "video_end", "sample_fps")
SIZE_KEYS = ("min_pixels", "max_pixels", "resized_height", "resized_width", "total_pixels")
# How frames are picked from a file; a frame list is used whole, so these have no meaning there.
FILE_SAMPLING_KEYS = ("nframes", "min_frames", "max_frames", "video_start", "video_end")


def frame_list_fps(options: dict, name: str) -> float | None:
    """The rate of a frame list: `sample_fps` (qwen-vl-utils 0.0.14) or `fps` (earlier
    releases and this project), which must agree when both are given."""
    misplaced = [k for k in FILE_SAMPLING_KEYS if options.get(k) is not None]
    if misplaced:
        raise MediaError(f"{name}: {misplaced[0]} picks frames from a video file; a frame list is used whole")
    fps, sample_fps = options.get("fps"), options.get("sample_fps")
    if fps is not None and sample_fps is not None and float(fps) != float(sample_fps):
        raise MediaError(f"{name}: fps={fps} and sample_fps={sample_fps} disagree; give one")
    rate = sample_fps if sample_fps is not None else fps
    if rate is not None and not float(rate) > 0:
        raise MediaError(f"{name}: fps must be positive, got {rate}")
    return rate


def preprocess_video(
    source,
    image_settings: ImageSettings = ImageSettings(),
    video_settings: VideoSettings = VideoSettings(),
    base_dir=None,
    backend: str = "auto",
    **options,
) -> VideoPatches:
    """A video file/URI/bytes or a list of frames, with per-item options (fps, nframes,
    min_frames, max_frames, video_start, video_end, min_pixels, max_pixels, resized_height,
    resized_width, total_pixels; sample_fps for frame lists) -> VideoPatches."""
    unknown = set(options) - set(VIDEO_ITEM_KEYS) - set(SIZE_KEYS)
    if unknown:
        raise MediaError(f"video {describe(source)}: unknown option(s) {sorted(unknown)}")
    sizes = {k: options[k] for k in SIZE_KEYS if options.get(k) is not None}
    if isinstance(source, (list, tuple)):
        rate = frame_list_fps(options, "video <frame list>")
        video = frames_as_video(list(source), rate, base_dir)
    elif options.get("sample_fps") is not None:
        raise MediaError(f"video {describe(source)}: sample_fps is the rate of a frame list; use fps for a file")
    else:
        video = read_video(
            source,
            fps=options.get("fps", None if options.get("nframes") is not None else video_settings.fps),
            nframes=options.get("nframes"),
            min_frames=options.get("min_frames", video_settings.min_frames),
            max_frames=options.get("max_frames", video_settings.max_frames),
            video_start=options.get("video_start"),
            video_end=options.get("video_end"),
            backend=backend,
            base_dir=base_dir,
        )
    return video_to_patches(video, image_settings, video_settings, **sizes)
