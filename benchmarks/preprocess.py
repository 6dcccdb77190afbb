"""Preprocessing speed, side by side in one run (a script, not a test).

1. images/s for a 1920x1080 JPEG (decode + preprocess): ours vs transformers'
   Qwen2VLImageProcessorPil, outputs checked equal first.
2. seconds to turn a 60 s 1080p video into model input at 2 fps: ours (decode only the sampled
   frames) vs decoding every frame with PyAV, then sampling; same resize + patchify after.

    python benchmarks/preprocess.py [--seconds 60] [--video-fps 25] [--image-runs 20]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import av
import numpy as np
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from qwen_vl.processing import MAX_PIXELS, image_to_patches, load_image, preprocess_video
from qwen_vl.processing.video import SampledVideo, video_to_patches
from qwen_vl.processing.video_sampling import frame_range, sample_frame_count, sample_indices, sampled_fps


def make_jpeg() -> bytes:
    """A 1920x1080 photo-like JPEG: smooth gradients plus noise (so it is not trivially compressible)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1080, 0:1920]
    base = np.stack([xx * 255 // 1920, yy * 255 // 1080, (xx + yy) % 256], -1)
    pixels = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def make_video(path: str, seconds: int, fps: int) -> None:
    """1080p H.264, x264 defaults (GOP 250) at preset ultrafast; low-detail moving gradient."""
    width, height = 1920, 1080
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        ramp = np.arange(width, dtype=np.uint16)[None, :] + np.arange(height, dtype=np.uint16)[:, None]
        for i in range(seconds * fps):
            grey = ((ramp + 4 * i) % 256).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.repeat(grey[:, :, None], 3, axis=2), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def timed(fn, runs: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs


def bench_images(runs: int) -> tuple[float, float, float]:
    data = make_jpeg()
    reference = Qwen2VLImageProcessorPil(max_pixels=MAX_PIXELS)

    def theirs():
        return reference(Image.open(io.BytesIO(data)), return_tensors="pt")

    def ours():
        return image_to_patches(load_image(data))

    expected, rows = theirs(), ours()
    diff = (rows[0] - expected["pixel_values"]).abs().max().item()
    assert list(rows[1]) == expected["image_grid_thw"][0].tolist() and diff <= 1e-5, diff
    # Interleaved so background load on the machine hits both sides alike.
    ours_s = theirs_s = 0.0
    for _ in range(runs):
        ours_s += timed(ours, 1)
        theirs_s += timed(theirs, 1)
    return runs / ours_s, runs / theirs_s, diff


def decode_all_then_sample(path: str) -> torch.Tensor:
    """The naive path: every frame decoded to RGB, then the same dynamic-FPS sample."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    selected = frame_range(len(frames), rate)
    count = sample_frame_count(selected.count, rate)
    indices = sample_indices(selected, count)
    video = SampledVideo(
        torch.from_numpy(np.stack([frames[i] for i in indices])),
        indices,
        sampled_fps(count, selected, rate),
        len(frames),
        rate,
        "pyav-all",
    )
    return video_to_patches(video).pixel_values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--video-fps", type=int, default=25)
    parser.add_argument("--image-runs", type=int, default=20)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, cpu cores: {os.cpu_count()}")

    ours_ips, theirs_ips, diff = bench_images(args.image_runs)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.mp4")
        start = time.perf_counter()
        make_video(path, args.seconds, args.video_fps)
        print(f"encoded {args.seconds} s 1080p@{args.video_fps} in {time.perf_counter() - start:.1f} s")
        results = {}
        for name, fn in [
            ("ours (decord)", lambda: preprocess_video(path, backend="decord").pixel_values),
            ("ours (PyAV sparse)", lambda: preprocess_video(path, backend="pyav").pixel_values),
            ("decode all + sample", lambda: decode_all_then_sample(path)),
        ]:
            start = time.perf_counter()
            results[name] = fn()
            results[name + " s"] = time.perf_counter() - start
        same = torch.equal(results["ours (PyAV sparse)"], results["decode all + sample"])

    naive = results["decode all + sample s"]
    print()
    print("| task | ours | transformers / naive | ratio |")
    print("|---|---|---|---|")
    print(f"| 1920x1080 JPEG, images/s | {ours_ips:.2f} | {theirs_ips:.2f} | {ours_ips / theirs_ips:.2f}x |")
    for name in ("ours (decord)", "ours (PyAV sparse)"):
        secs = results[name + " s"]
        print(
            f"| {args.seconds} s 1080p video -> input at 2 fps, s, {name} | {secs:.2f} | {naive:.2f} | {naive / secs:.2f}x |"
        )
    print()
    print(f"image max abs diff vs transformers: {diff:.2e}; PyAV sparse == decode-all output: {same}")


if __name__ == "__main__":
    main()
