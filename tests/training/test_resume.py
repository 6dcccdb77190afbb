"""Kill a real training process with SIGKILL once checkpoint k exists, resume, and get the same
losses as an uninterrupted run; whatever is on disk after the kill loads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.training.checkpoint import STATE_DIR, STATE_FILE, latest_checkpoint, prune
from qwen_vl.training.config import config_from_dict
from qwen_vl.training.metrics import read_metrics
from qwen_vl.training.train import Trainer
from tests.training.helpers import base_config, mixed_set, subprocess_env, write_config  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
STEPS = 16


def run_until(config: Path, resume: bool, checkpoint: Path | None) -> int:
    """Start a training process; SIGKILL it as soon as `checkpoint` exists (None: let it finish)."""
    command = [sys.executable, "-m", "qwen_vl.training.train", "--config", str(config)] + (
        ["--resume"] if resume else []
    )
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=subprocess_env()
    )
    deadline = time.monotonic() + 120
    while checkpoint is not None and process.poll() is None and time.monotonic() < deadline:
        if checkpoint.exists():
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    _, err = process.communicate(timeout=120)
    assert checkpoint is not None or process.returncode == 0, err.decode()
    return process.returncode


def test_killed_run_resumes_with_identical_losses(tmp_path):
    data = mixed_set(tmp_path / "data", n_text=6)
    settings = base_config(
        tmp_path, data, max_steps=STEPS, batch_size=2, grad_accum=2, warmup_steps=3, save_every=1, keep_last=2
    )

    reference = config_from_dict({**settings, "output_dir": str(tmp_path / "reference")})
    Trainer(reference).fit()
    want = [row["loss"] for row in read_metrics(tmp_path / "reference" / "metrics.csv")]
    assert len(want) == STEPS

    run = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", **settings)
    for kill_at in (3, 9):
        code = run_until(config, resume=kill_at != 3, checkpoint=run / f"checkpoint-{kill_at}")
        if code != -signal.SIGKILL:
            pytest.fail(f"the run ended with {code} before it could be killed at step {kill_at}")
        assert not (run / "final").exists()
        last = latest_checkpoint(run)
        assert last is not None and int(last.name.split("-")[1]) >= kill_at
        QwenVLForConditionalGeneration.from_pretrained(last)  # the newest checkpoint loads
        kept = sorted(p.name for p in run.glob("checkpoint-*"))
        assert len(kept) <= 3  # keep_last, plus one when killed between publishing and pruning
    run_until(config, resume=True, checkpoint=None)

    got = [row["loss"] for row in read_metrics(run / "metrics.csv")]
    assert [int(row["step"]) for row in read_metrics(run / "metrics.csv")] == list(range(1, STEPS + 1))
    assert got == pytest.approx(want, abs=1e-6)
    assert (run / "final" / "model.safetensors").is_file()


def test_resume_without_flag_refuses_to_mix_runs(tmp_path):
    data = mixed_set(tmp_path / "data", n_text=2)
    settings = base_config(tmp_path, data, max_steps=2, save_every=1)
    Trainer(config_from_dict(settings)).fit()
    config = write_config(tmp_path / "c.yaml", **settings)
    result = subprocess.run(
        [sys.executable, "-m", "qwen_vl.training.train", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert result.returncode == 2 and "already holds checkpoints; pass --resume" in result.stderr


def test_lora_run_resumes_from_adapters(tmp_path):
    data = mixed_set(tmp_path / "data", n_text=4)
    settings = base_config(tmp_path, data, stage=3, lora={"r": 4, "alpha": 8}, max_steps=4, batch_size=2, save_every=0)
    Trainer(config_from_dict({**settings, "output_dir": str(tmp_path / "reference")})).fit()
    want = [row["loss"] for row in read_metrics(tmp_path / "reference" / "metrics.csv")]

    interrupted = Trainer(config_from_dict(settings))
    for _ in range(2):
        interrupted.history.append(interrupted.train_step())
    interrupted.save_checkpoint()
    assert (tmp_path / "run" / "checkpoint-2" / "training_state" / "adapter.safetensors").is_file()
    Trainer(config_from_dict(settings), resume=True).fit()
    got = [row["loss"] for row in read_metrics(tmp_path / "run" / "metrics.csv")]
    assert got == pytest.approx(want, abs=1e-6)


def test_prune_keeps_the_newest_and_clears_a_half_deleted_checkpoint(tmp_path):
    for step in (1, 2, 3, 4):
        (tmp_path / f"checkpoint-{step}" / STATE_DIR).mkdir(parents=True)
        (tmp_path / f"checkpoint-{step}" / STATE_DIR / STATE_FILE).write_text("{}")
    (tmp_path / "checkpoint-1" / STATE_DIR / STATE_FILE).unlink()  # a deletion killed half way
    (tmp_path / "notes").mkdir()
    prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3", "checkpoint-4", "notes"]
