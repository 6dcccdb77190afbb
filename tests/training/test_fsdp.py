"""FSDP2 on two CPU processes (gloo) with the shipped accelerate config: the losses are those of a
DDP run on the same data, a run stopped after a checkpoint resumes to the same losses, and the saved
checkpoint is a normal one (whole weights, LoRA merged) that our loader and transformers load.

accelerate 1.x runs an FSDP launch on CPU processes as plain DDP; the trainer switches it to FSDP
(see `fsdp_on_cpu_processes`), and prints the mode it runs in, which the tests check."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.training.metrics import read_metrics
from qwen_vl.weights import load_state_dict
from tests.training.helpers import base_config, mixed_set, subprocess_env, write_config

REPO = Path(__file__).resolve().parents[2]
FSDP_CONFIG = REPO / "training" / "configs" / "accelerate" / "fsdp.yaml"

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")


def launch(config: Path, fsdp: bool, *extra: str) -> subprocess.CompletedProcess:
    """Two CPU processes (gloo) running training/train.py, with DDP or the shipped FSDP config."""
    mode = ["--config_file", str(FSDP_CONFIG)] if fsdp else ["--multi_gpu"]
    command = [
        "accelerate", "launch", *mode, "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "training/train.py", "--config", str(config), *extra,
    ]  # fmt: skip
    env = {**subprocess_env(), "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-20000:]
    assert ("(FSDP2)" if fsdp else "(DDP)") in done.stdout
    return done


def losses(run: Path) -> list[float]:
    return [row["loss"] for row in read_metrics(run / "metrics.csv")]


def configs(tmp_path: Path, **overrides) -> tuple[Path, Path]:
    """(DDP config, FSDP config): the same run into two output directories."""
    data = mixed_set(tmp_path / "data", n_text=6)
    common = dict(max_steps=4, grad_accum=2, warmup_steps=1, max_seq_len=160, save_every=2, keep_last=2, **overrides)
    return tuple(
        write_config(
            tmp_path / f"{name}.yaml", **base_config(tmp_path, data, output_dir=str(tmp_path / name), **common)
        )
        for name in ("ddp", "fsdp")
    )


def test_fsdp_stage2_matches_ddp_and_resumes(tmp_path):
    ddp, fsdp = configs(tmp_path, stage=2)
    launch(ddp, fsdp=False)
    launch(fsdp, fsdp=True)
    want = losses(tmp_path / "ddp")
    assert len(want) == 4
    assert losses(tmp_path / "fsdp") == pytest.approx(want, abs=1e-5)
    final = load_state_dict(tmp_path / "fsdp" / "final")
    for name, tensor in load_state_dict(tmp_path / "ddp" / "final").items():
        torch.testing.assert_close(final[name], tensor, atol=1e-5, rtol=1e-4)

    # a run stopped once checkpoint-2 was written: only that checkpoint is left
    run = tmp_path / "fsdp"
    for later in ("checkpoint-4", "final"):
        shutil.rmtree(run / later)
    resumed = launch(fsdp, True, "--resume")
    assert "resumed from" in resumed.stdout
    assert losses(run) == pytest.approx(want, abs=1e-5)


def test_fsdp_stage3_lora_resumes_and_saves_whole_checkpoints(tmp_path):
    import transformers

    ddp, fsdp = configs(tmp_path, stage=3, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    launch(ddp, fsdp=False)
    launch(fsdp, fsdp=True)
    want = losses(tmp_path / "ddp")
    assert losses(tmp_path / "fsdp") == pytest.approx(want, abs=1e-5)
    run = tmp_path / "fsdp"
    shutil.copytree(run / "checkpoint-4", tmp_path / "uninterrupted")
    for later in ("checkpoint-4", "final"):  # resume the adapters and optimizer from checkpoint-2
        shutil.rmtree(run / later)
    launch(fsdp, True, "--resume")
    assert losses(run) == pytest.approx(want, abs=1e-5)

    checkpoint = run / "checkpoint-4"
    state = load_state_dict(checkpoint)
    assert not any(".lora_" in name or "base_layer" in name for name in state)
    for other in (tmp_path / "ddp" / "checkpoint-4", tmp_path / "uninterrupted"):
        for name, tensor in load_state_dict(other).items():
            torch.testing.assert_close(state[name], tensor, atol=1e-5, rtol=1e-4)
    ours = QwenVLForConditionalGeneration.from_pretrained(checkpoint)
    theirs = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("running", "grad_accum", "error"),
    [
        ("MULTI_CPU", 1, "accelerate runs these cpu processes as MULTI_CPU without DeepSpeed"),
        ("DEEPSPEED", 4, "grad_accum must be 1"),
        ("DEEPSPEED", 1, None),
    ],
)
def test_deepspeed_launch_that_would_not_train_as_configured_is_refused(monkeypatch, running, grad_accum, error):
    """accelerate turns a DeepSpeed launch on CPU processes into DDP (measured: deepspeed 0.19.8
    imports with its CPU accelerator, and the run printed '2 process(es) (DDP)')."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from qwen_vl.training.config import ConfigError
    from qwen_vl.training.train import refuse_deepspeed

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    acc = SimpleNamespace(distributed_type=DistributedType[running], device=torch.device("cpu"))
    cfg = SimpleNamespace(grad_accum=grad_accum)
    if error is None:
        refuse_deepspeed(acc, cfg)
        return
    with pytest.raises(ConfigError, match=error):
        refuse_deepspeed(acc, cfg)
