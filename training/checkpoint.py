"""Checkpoints: `output_dir/checkpoint-STEP` holds a Hugging Face model directory (weights with
LoRA merged, config, tokenizer, preprocessor config) plus `training_state/` (optimizer, scheduler,
per-process RNG states, trainable tensors, step, data position, losses so far).

Each checkpoint is written into a hidden temp directory and renamed into place, so a run killed at
any moment leaves only complete checkpoints under their final names."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from qwen_vl.errors import CheckpointError
from qwen_vl.fileio import atomic_path, atomic_write_text
from qwen_vl.weights import save_state_dict

from .params import export_state_dict, trainable_state

STATE_DIR = "training_state"
STATE_FILE = "state.json"  # written last: its presence marks a complete checkpoint
_NAME = re.compile(r"^checkpoint-(\d+)$")


def save_model_dir(model, processor, directory: Path, model_state: dict | None = None) -> None:
    """A loadable HF model directory (plain key names, LoRA merged). `model_state`: the full state
    dict where the model's own is sharded (FSDP)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = export_state_dict(model, model_state)
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model.config.torch_dtype = str(model.dtype).removeprefix("torch.")
    save_state_dict(state, directory)
    model.config.save_pretrained(directory)
    processor.save_pretrained(directory)


def staging_dir(output_dir: Path, name: str) -> Path:
    return output_dir / f".{name}.tmp"


def publish(staging: Path, final: Path) -> None:
    """Rename a finished staging directory to its final name (replacing an older one)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_main_files(
    staging: Path, model, processor, optimizer_state: dict, scheduler, lora: bool, model_state: dict | None = None
) -> None:
    """Everything but the per-process RNG files (main process only). `model_state` and
    `optimizer_state` are full (gathered) state dicts."""
    save_model_dir(model, processor, staging, model_state)
    target = staging / STATE_DIR
    target.mkdir(parents=True, exist_ok=True)
    with atomic_path(target / "optimizer.pt") as tmp:
        torch.save(optimizer_state, tmp)
    with atomic_path(target / "scheduler.pt") as tmp:
        torch.save(scheduler.state_dict(), tmp)
    if lora:
        tensors = {k: v.contiguous().cpu() for k, v in trainable_state(model, model_state).items()}
        with atomic_path(target / "adapter.safetensors") as tmp:
            save_file(tensors, str(tmp))


def write_rng(staging: Path, rank: int) -> None:
    target = staging / STATE_DIR
    target.mkdir(parents=True, exist_ok=True)
    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    with atomic_path(target / f"rng_{rank}.pt") as tmp:
        torch.save(rng, tmp)


def write_state(staging: Path, state: dict) -> None:
    atomic_write_text(staging / STATE_DIR / STATE_FILE, json.dumps(state, indent=1) + "\n")


def load_rng(checkpoint: Path, rank: int) -> None:
    path = checkpoint / STATE_DIR / f"rng_{rank}.pt"
    if not path.is_file():  # resumed on more processes than saved: keep the seeded state
        return
    rng = torch.load(path, weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for entry in output_dir.iterdir():
        match = _NAME.match(entry.name)
        if match and (entry / STATE_DIR / STATE_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def read_state(checkpoint: Path) -> dict:
    try:
        return json.loads((checkpoint / STATE_DIR / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{checkpoint}: unreadable training state ({err})") from None


def read_optimizer(checkpoint: Path) -> dict:
    return torch.load(checkpoint / STATE_DIR / "optimizer.pt", weights_only=False)


def load_scheduler(checkpoint: Path, scheduler) -> None:
    scheduler.load_state_dict(torch.load(checkpoint / STATE_DIR / "scheduler.pt", weights_only=False))


def load_adapter(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / STATE_DIR / "adapter.safetensors"))


def prune(output_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints, and the remains of a deletion
    that a killed run left half done (checkpoints appear whole by rename, so a checkpoint
    directory without its state file is one)."""
    found = list_checkpoints(output_dir)
    complete = {path for _, path in found}
    doomed = [path for _, path in found[: max(len(found) - keep_last, 0)]]
    doomed += [p for p in output_dir.iterdir() if _NAME.match(p.name) and p.is_dir() and p not in complete]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)


def clean_staging(output_dir: Path) -> None:
    """Leftovers of a run killed while writing."""
    if output_dir.is_dir():
        for entry in output_dir.iterdir():
            if entry.name.startswith(".") and entry.name.endswith((".tmp", ".old")) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


__all__ = [
    "save_model_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "read_state",
    "prune",
    "publish",
    "staging_dir",
]
