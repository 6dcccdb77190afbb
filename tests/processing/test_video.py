"""Video sampling rules, real encoded videos through decord and PyAV, frame lists, bad inputs."""

import math

import av
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from qwen_vl.errors import MediaError
from qwen_vl.processing import (
    VIDEO_MIN_PIXELS,
    VIDEO_TOTAL_PIXELS,
    frame_range,
    preprocess_video,
    read_video,
    sample_frame_count,
    smart_resize,
)
from qwen_vl.processing.video_sampling import frame_max_pixels

HEIGHT, WIDTH, STRIPE = 64, 96, 12  # 8 vertical stripes: bit b of the frame index is stripe b white


def write_video(path, num_frames, fps, gop=None):
    """An H.264 file whose frame i shows i in binary, so tests can tell which frames were decoded."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "10"}
        if gop:
            stream.codec_context.gop_size = gop
        for i in range(num_frames):
            pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            for bit in range(8):
                if (i >> bit) & 1:
                    pixels[:, bit * STRIPE : (bit + 1) * STRIPE] = 255
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_numbers(frames: torch.Tensor) -> list[int]:
    centres = frames[:, :, STRIPE // 2 :: STRIPE, :].float().mean(dim=(1, 3))  # [T, 8]
    weights = torch.tensor([1 << b for b in range(8)])
    return ((centres > 127).long() * weights).sum(1).tolist()


def expected_indices(start, end, count):
    return [round(start + (end - start) * k / (count - 1)) for k in range(count)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    # 7.3 s at 25 fps (182 frames, short GOPs so seeking matters) and at 12 fps (87 frames).
    return {
        25: write_video(root / "clip25.mp4", math.floor(7.3 * 25), 25, gop=20),
        12: write_video(root / "clip12.mp4", math.floor(7.3 * 12), 12),
    }


@pytest.mark.parametrize("rate", [25, 12])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_sampled_frames_follow_the_rules(videos, rate, backend):
    total = math.floor(7.3 * rate)
    video = read_video(videos[rate], backend=backend)
    count = math.floor(min(max(total / rate * 2, 4), total) / 2) * 2  # 2 fps, floored to even
    assert count == 14
    indices = expected_indices(0, total - 1, count)
    assert video.backend == backend
    assert video.indices == indices
    assert frame_numbers(video.frames) == indices  # the decoded pixels are those frames
    assert video.sampled_fps == pytest.approx(count / total * rate)

    patches = preprocess_video(str(videos[rate]), backend=backend)
    h, w = smart_resize(HEIGHT, WIDTH, 28, VIDEO_MIN_PIXELS, 768 * 28 * 28)
    assert patches.grid_thw == (count // 2, h // 14, w // 14)
    assert patches.pixel_values.shape == (count // 2 * h * w // 196, 1176)
    assert patches.second_per_grid_t == pytest.approx(2 / video.sampled_fps)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_start_end_and_nframes(videos, backend):
    video = read_video(videos[25], backend=backend, video_start=1.0, video_end=3.0)
    start, end = 25, 75  # ceil(1.0*25), floor(3.0*25)
    count = math.floor(min(max(51 / 25 * 2, 4), 51) / 2) * 2
    assert video.indices == expected_indices(start, end, count)
    assert frame_numbers(video.frames) == video.indices
    assert video.sampled_fps == pytest.approx(count / 51 * 25)

    video = read_video(videos[12], backend=backend, nframes=11)  # round(11 / 2) * 2 = 12
    assert video.indices == expected_indices(0, 86, 12)
    assert frame_numbers(video.frames) == video.indices

    video = read_video(videos[25], backend=backend, fps=10)
    assert video.indices == expected_indices(0, 181, 72)  # 7.28 s * 10 = 72.8 -> 72
    assert frame_numbers(video.frames) == video.indices


def test_backends_agree(videos):
    for _rate, path in videos.items():
        a = read_video(path, backend="decord", fps=4, video_start=0.5)
        b = read_video(path, backend="pyav", fps=4, video_start=0.5)
        assert a.indices == b.indices
        assert frame_numbers(a.frames) == frame_numbers(b.frames) == a.indices
        assert a.sampled_fps == pytest.approx(b.sampled_fps)


def test_frame_list_is_a_video():
    frames = [Image.new("RGB", (90, 60), (i * 40, 0, 0)) for i in range(5)]
    patches = preprocess_video(frames, fps=1.0)
    h, w = smart_resize(60, 90, 28, VIDEO_MIN_PIXELS, 768 * 28 * 28)
    assert patches.grid_thw == (3, h // 14, w // 14)  # 5 frames padded to 6
    assert patches.second_per_grid_t == pytest.approx(2.0)
    rows = patches.pixel_values.view(3, -1, 3, 2, 196)
    assert torch.equal(rows[2, :, :, 0], rows[2, :, :, 1])  # the pad repeats the last frame


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(2, 20000),
    video_fps=st.floats(1.0, 120.0),
    fps=st.floats(0.1, 30.0),
    min_frames=st.integers(1, 16),
)
def test_frame_count_follows_published_rule(total, video_fps, fps, min_frames):
    low = math.ceil(min_frames / 2) * 2
    high = math.floor(min(768, total) / 2) * 2
    expected = math.floor(min(max(total / video_fps * fps, low), high, total) / 2) * 2
    if expected < 2:
        with pytest.raises(MediaError):
            sample_frame_count(total, video_fps, fps=fps, min_frames=min_frames)
        return
    count = sample_frame_count(total, video_fps, fps=fps, min_frames=min_frames)
    assert count == expected and count % 2 == 0 and 2 <= count <= min(768, total)


@settings(max_examples=200, deadline=None)
@given(nframes=st.integers(1, 1000), total=st.integers(2, 1000))
def test_nframes_rounds_to_even(nframes, total):
    expected = round(nframes / 2) * 2
    if not 2 <= expected <= total:
        with pytest.raises(MediaError):
            sample_frame_count(total, 30.0, nframes=nframes)
    else:
        assert sample_frame_count(total, 30.0, nframes=nframes) == expected


def test_total_pixel_budget_shares_across_frames():
    assert frame_max_pixels(16) == 768 * 28 * 28  # short clip: per-frame cap
    assert frame_max_pixels(768) == pytest.approx(VIDEO_TOTAL_PIXELS / 768 * 2)  # long clip: shared
    assert frame_max_pixels(100000) == int(VIDEO_MIN_PIXELS * 1.05)  # never below the floor
    assert frame_max_pixels(16, max_pixels=200 * 784) == 200 * 784  # a request may only lower it


def test_frame_range_rules():
    assert (frame_range(100, 10.0).start, frame_range(100, 10.0).end) == (0, 99)
    r = frame_range(100, 10.0, video_start=2.05, video_end=50)
    assert (r.start, r.end, r.count) == (21, 99, 79)
    with pytest.raises(MediaError, match="select no frames"):
        frame_range(100, 10.0, video_start=8, video_end=3)


# ---- bad inputs --------------------------------------------------------------------------


def test_fps_and_nframes_together(videos):
    with pytest.raises(MediaError, match="not both") as error:
        read_video(videos[25], fps=2, nframes=8)
    assert "clip25.mp4" in str(error.value)


def test_missing_and_empty_video(tmp_path):
    with pytest.raises(MediaError, match="not found") as error:
        read_video(str(tmp_path / "gone.mp4"))
    assert "gone.mp4" in str(error.value)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty") as error:
        read_video(str(tmp_path / "empty.mp4"))
    assert "empty.mp4" in str(error.value)


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_non_video_file(tmp_path, backend):
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(MediaError) as error:
        read_video(str(tmp_path / "notes.mp4"), backend=backend)
    message = str(error.value)
    assert "notes.mp4" in message and "\n" not in message


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_video_without_frames(tmp_path, backend):
    path = tmp_path / "hollow.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = WIDTH, HEIGHT
    with pytest.raises(MediaError) as error:
        read_video(str(path), backend=backend)
    message = str(error.value)
    assert "hollow.mp4" in message and "\n" not in message
