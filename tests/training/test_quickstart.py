"""The fine-tuning quick start (training/README.md) as CI runs it: its config and example data
train 5 LoRA steps from the bundled model, and the merged model loads."""

from __future__ import annotations

import json
from pathlib import Path

from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.training.train import main

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "training" / "configs" / "quickstart_lora.yaml"
DATA = REPO / "training" / "examples" / "quickstart.jsonl"


def test_quickstart_example_has_every_kind_of_sample():
    lines = [json.loads(line) for line in DATA.read_text().splitlines()]
    parts = [part for line in lines for turn in line["messages"] for part in turn["content"]]
    kinds = {part["type"] for part in parts}
    assert len(lines) == 10
    assert {"image", "video", "text", "boxes"} <= kinds
    assert any(sum(turn["role"] == "assistant" for turn in line["messages"]) > 1 for line in lines)
    for part in parts:
        for key in ("image", "video"):
            if part["type"] == key:
                assert (DATA.parent / part[key]).stat().st_size < 8000


def test_quickstart_config_trains_five_steps_from_the_bundled_model(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository
    overrides = {
        "init.model": "qwen_vl/assets/model",
        "output_dir": str(tmp_path / "run"),
        "max_steps": 5,
        "warmup_steps": 0,
        "save_every": 0,
        "mixed_precision": "no",
        "gradient_checkpointing": False,
        "max_seq_len": 512,
        "image.max_pixels": 12544,
        "batch_size": 2,
        "grad_accum": 1,
        "progress": False,
        "tensorboard": False,
    }
    argv = ["--config", str(CONFIG)] + [arg for k, v in overrides.items() for arg in ("--set", f"{k}={v}")]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 5
    assert summary["skipped"] == {}
    QwenVLForConditionalGeneration.from_pretrained(tmp_path / "run" / "final")
