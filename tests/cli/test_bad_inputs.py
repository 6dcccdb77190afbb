"""Inputs that used to break the CLI: each is one clear line naming the input and exit code 2 (or a real
answer where the input is fine), with no traceback, no hang and bounded memory."""

import os
import resource
import shutil

import av
import numpy as np
import pytest
from PIL import Image

from tests.cli.support import assert_clean_error, qwen_vl


@pytest.fixture(scope="module")
def odd(tmp_path_factory, media):
    root = tmp_path_factory.mktemp("odd")
    os.mkfifo(root / "fifo.png")
    (root / "zero.png").symlink_to("/dev/zero")
    Image.new("RGB", (6000, 20), "red").save(root / "wide.png")
    Image.new("RGB", (4000, 4000), "blue").save(root / "huge.png")
    clip = (media / "clip.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(clip[: len(clip) // 2])
    (root / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    shutil.copy(media / "imgs" / "0.png", root / "picture.mp4")
    with av.open(str(root / "one_frame.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.mux(stream.encode(av.VideoFrame.from_image(Image.new("RGB", (64, 48), "green"))))
        out.mux(stream.encode())
    return root


def only_error_line(result) -> str:
    """The single line on stderr besides notes: native decoders' own logs must not show."""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("note:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("fifo.png", "not a regular file"),
        ("zero.png", "not a regular file"),
        ("wide.png", "aspect ratio"),
    ],
)
def test_special_and_odd_images_are_one_line_naming_the_file(tiny_dir, odd, name, fragment):
    result = qwen_vl("caption", odd / name, "--model", tiny_dir)
    assert_clean_error(result, fragment)
    assert name in only_error_line(result)


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("truncated.mp4", "not a decodable video"),
        ("random.mp4", "not a decodable video"),
        ("one_frame.mp4", "has 1 frame; a video needs at least 2"),
        ("picture.mp4", "has 1 frame; a video needs at least 2"),
    ],
)
def test_bad_videos_are_one_line_with_no_decoder_logs(tiny_dir, odd, name, fragment):
    result = qwen_vl("ask", odd / name, "-q", "What happens?", "--model", tiny_dir)
    assert_clean_error(result, fragment)
    assert name in only_error_line(result)


def test_a_pixel_budget_past_the_context_is_refused_before_decoding(tiny_dir, odd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = qwen_vl("caption", odd / "huge.png", "--max-pixels", 10**10, "--model", tiny_dir)
    assert_clean_error(result, "huge.png", "tokens, over the model's context of 4,096")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert peak_kb < 2 * 1024 * 1024 or peak_kb == before  # a larger earlier child leaves the figure unchanged


@pytest.mark.parametrize(
    "device, fragment",
    [("cuda", "cuda requested but this torch has no CUDA"), ("tpu9", "not a device"), ("meta", "not supported")],
)
def test_bad_devices_are_one_line(tiny_dir, media, device, fragment):
    if device == "cuda":
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    result = qwen_vl("caption", media / "imgs" / "0.png", "--model", tiny_dir, "--device", device)
    assert_clean_error(result, f"--device {device}", fragment)


def test_undecodable_bytes_in_a_question_are_replaced_not_fatal(tiny_dir, media):
    question = os.fsdecode(b"what\xff colour?")  # as Python decodes a command line's bytes
    result = qwen_vl("ask", media / "imgs" / "0.png", "-q", question, "--model", tiny_dir, "--max-new-tokens", 3)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_a_question_without_media_is_answered(tiny_dir):
    result = qwen_vl("ask", "-q", "hello", "--model", tiny_dir, "--max-new-tokens", 3)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and "Usage" not in result.stderr


@pytest.mark.parametrize(
    "weights, fragment",
    [(b"xxxxxxxxgarbage", "does not fit the file"), (b"\x02\x00\x00\x00\x00\x00\x00\x00[]", "not a JSON object")],
    ids=["header length past the file", "header not an object"],
)
def test_info_on_a_corrupt_safetensors_header_is_one_line(tiny_dir, tmp_path, weights, fragment):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    (model / "model.safetensors").write_bytes(weights)
    result = qwen_vl("info", model)
    assert_clean_error(result, "model.safetensors", fragment)
    assert only_error_line(result).startswith("error:")
