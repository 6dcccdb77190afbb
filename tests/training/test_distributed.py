"""Two CPU processes launched by accelerate give the same losses and weights as
one process with the doubled per-device batch: each process takes its half of every global
micro-batch, and the loss is summed over tokens and divided by the global token count.

accelerate 1.x runs `accelerate launch --cpu --num_processes 2` as ONE process unless MPI is used
(`--mpirun_hostfile`); torchrun-style CPU processes come from `--multi_gpu` with
ACCELERATE_USE_CPU=1 (gloo backend, DistributedType.MULTI_CPU), which is what this test runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qwen_vl.training.metrics import read_metrics
from qwen_vl.weights import load_state_dict
from tests.training.helpers import base_config, mixed_set, subprocess_env, write_config  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
def test_two_processes_match_one_with_doubled_batch(tmp_path):
    data = mixed_set(tmp_path / "data", n_text=8)
    common = dict(max_steps=4, grad_accum=2, warmup_steps=1, max_seq_len=160)
    one = write_config(
        tmp_path / "one.yaml", **base_config(tmp_path, data, batch_size=4, output_dir=str(tmp_path / "one"), **common)
    )
    two = write_config(
        tmp_path / "two.yaml", **base_config(tmp_path, data, batch_size=2, output_dir=str(tmp_path / "two"), **common)
    )
    single = subprocess.run(
        [sys.executable, "-m", "qwen_vl.training.train", "--config", str(one)],
        cwd=REPO, capture_output=True, text=True, env=subprocess_env(),
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    launch = [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "training/train.py", "--config", str(two),
    ]  # fmt: skip
    env = {**subprocess_env(), "ACCELERATE_USE_CPU": "1"}
    double = subprocess.run(launch, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert double.returncode == 0, double.stderr[-30000:]
    assert "2 process(es)" in double.stdout

    rows_one = read_metrics(tmp_path / "one" / "metrics.csv")
    rows_two = read_metrics(tmp_path / "two" / "metrics.csv")
    assert [r["label_tokens"] for r in rows_two] == [r["label_tokens"] for r in rows_one]
    assert [r["samples"] for r in rows_two] == [8.0] * 4
    assert [r["loss"] for r in rows_two] == pytest.approx([r["loss"] for r in rows_one], abs=1e-4)
    final_one = load_state_dict(tmp_path / "one" / "final")
    final_two = load_state_dict(tmp_path / "two" / "final")
    for name, tensor in final_one.items():
        torch.testing.assert_close(final_two[name], tensor, atol=1e-5, rtol=1e-4)
