"""The qwen-vl command line, end to end in subprocesses, on a tiny model directory."""

import json
import shutil

import pytest
from PIL import Image

from tests.cli.support import assert_clean_error, qwen_vl


def test_caption_folder_glob_and_json(tiny_dir, media):
    result = qwen_vl("caption", media / "imgs", "--model", tiny_dir, "--max-new-tokens", "4", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in rows] == [str(media / "imgs" / f"{i}.png") for i in range(3)]
    assert all(isinstance(r["caption"], str) for r in rows)

    plain = qwen_vl(
        "caption", str(media / "imgs" / "*.png"), "--model", tiny_dir, "--max-new-tokens", "4", "--batch-size", "1"
    )
    assert plain.returncode == 0, plain.stderr
    # greedy, so batching does not change the answers
    assert [line.split("\t", 1)[1] for line in plain.stdout.splitlines()] == [r["caption"] for r in rows]


def test_ask_about_an_image_and_a_video(tiny_dir, media):
    result = qwen_vl(
        "ask",
        media / "imgs" / "0.png",
        media / "clip.mp4",
        "-q",
        "What happens?",
        "--fps",
        "4",
        "--model",
        tiny_dir,
        "--max-new-tokens",
        "5",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")


def test_chat_session_with_commands(tiny_dir, media):
    script = (
        "\n".join(
            [
                f"/image {media / 'imgs' / '1.png'}",
                "What colour is it?",
                f"/image {media / 'text.jpg'}",
                f"/video {media / 'clip.mp4'}",
                "And now?",
                "/reset",
                "Hello",
                "/exit",
            ]
        )
        + "\n"
    )
    result = qwen_vl("chat", "--model", tiny_dir, "--max-new-tokens", "3", "--stop", "\n", stdin=script)
    assert result.returncode == 0, result.stderr
    assert "error: image" in result.stderr and "text.jpg" in result.stderr
    assert result.stderr.count("(attached") == 2 and "(conversation cleared)" in result.stderr
    assert result.stdout.count("\n") == 3  # three answers, each cut at its first newline


def test_info(tiny_dir):
    result = qwen_vl("info", tiny_dir)
    assert result.returncode == 0, result.stderr
    assert "qwen2_5_vl" in result.stdout and "2 layers, hidden 64" in result.stdout and "F32" in result.stdout


def test_hub_name_resolves_offline_from_the_cache(tiny_dir, tmp_path):
    snapshot = tmp_path / "hub" / "models--acme--tiny-vl" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_dir, snapshot)
    (tmp_path / "hub" / "models--acme--tiny-vl" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-vl" / "refs" / "main").write_text("0123abcd")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = qwen_vl("info", "acme/tiny-vl", env=env)
    assert result.returncode == 0, result.stderr
    assert str(snapshot) in result.stdout
    missing = qwen_vl("info", "acme/other", env=env)
    assert_clean_error(missing, "acme/other", "not in the local Hugging Face cache")


@pytest.mark.parametrize(
    "name,fragment",
    [
        ("text.jpg", "not a recognised image format"),
        ("empty.png", "empty"),
        ("missing.png", "missing.png"),
    ],
)
def test_bad_images(tiny_dir, media, name, fragment):
    result = qwen_vl("caption", media / name, "--model", tiny_dir)
    assert_clean_error(result, name, fragment)


def test_bad_video_and_bad_model(tiny_dir, media, tmp_path):
    assert_clean_error(qwen_vl("ask", media / "notes.mp4", "-q", "x", "--model", tiny_dir), "notes.mp4")
    assert_clean_error(qwen_vl("caption", media / "imgs", "--model", tmp_path / "nope"), "model directory not found")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert_clean_error(qwen_vl("info", tmp_path / "odd"), "unsupported model_type 'llama'")


def test_prompt_longer_than_the_context(tiny_dir, tmp_path):
    small = tmp_path / "small"
    shutil.copytree(tiny_dir, small)
    config = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 16}))
    result = qwen_vl(
        "ask",
        "-q",
        "a question " * 20,
        "--model",
        small,
        "--max-new-tokens",
        "2",
        str(tiny_dir / "config.json").replace("config.json", "x.png"),
    )
    assert result.returncode == 2
    Image.new("RGB", (56, 56)).save(tmp_path / "x.png")
    result = qwen_vl("ask", tmp_path / "x.png", "-q", "a question " * 20, "--model", small)
    assert_clean_error(result, "context is 16")
