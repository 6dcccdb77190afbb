"""Helpers of the training tests: a tiny model directory, a coloured-shape caption set, configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from tests.tiny import save_tiny_model_dir

COLOURS = {"red": (230, 20, 20), "blue": (20, 20, 230), "green": (20, 200, 20), "yellow": (240, 230, 20)}
CAPTIONS = {
    "red": "a red circle",
    "blue": "a blue square",
    "green": "the green star",
    "yellow": "a yellow triangle",
}
PROMPT = "Describe this image."


def subprocess_env() -> dict:
    """Environment for training subprocesses: one thread each, the repo importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def write_image(path: Path, rgb, size: int = 56) -> Path:
    Image.fromarray(np.full((size, size, 3), rgb, dtype=np.uint8)).save(path)
    return path


def caption_messages(image: str, caption: str) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": PROMPT}]},
        {"role": "assistant", "content": [{"type": "text", "text": caption}]},
    ]


def text_messages(question: str, answer: str) -> list[dict]:
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


def write_jsonl(path: Path, records: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def caption_set(directory: Path) -> Path:
    """Four solid-colour 56x56 images (one 2x2 grid of merge units each) with their captions."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "images").mkdir(exist_ok=True)
    records = []
    for name, rgb in COLOURS.items():
        write_image(directory / "images" / f"{name}.png", rgb)
        records.append({"messages": caption_messages(f"images/{name}.png", CAPTIONS[name])})
    return write_jsonl(directory / "captions.jsonl", records)


def mixed_set(directory: Path, n_text: int = 6) -> Path:
    """Image captions plus text-only chats of different lengths."""
    directory.mkdir(parents=True, exist_ok=True)
    caption_set(directory)
    records = [json.loads(line) for line in (directory / "captions.jsonl").read_text().splitlines()]
    for i in range(n_text):
        records.append(
            {
                "messages": text_messages(
                    "How many shapes are there?" * (1 + i % 3), "There are three shapes." * (1 + i % 2)
                )
            }
        )
    return write_jsonl(directory / "mixed.jsonl", records)


def model_dir(directory: Path) -> Path:
    if not (directory / "config.json").is_file():
        save_tiny_model_dir(directory)
    return directory


def write_config(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def base_config(tmp_path: Path, data: Path, **overrides) -> dict:
    config = {
        "init": {"model": str(model_dir(tmp_path / "tiny"))},
        "data": [{"path": str(data), "weight": 1.0}],
        "output_dir": str(tmp_path / "run"),
        "stage": 2,
        "lr": {"vision": 1e-3, "merger": 1e-3, "llm": 1e-3},
        "max_steps": 3,
        "batch_size": 2,
        "max_seq_len": 128,
        "save_every": 0,
        "progress": False,
        "tensorboard": False,
    }
    config.update(overrides)
    return config
