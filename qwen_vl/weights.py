"""Checkpoint files: safetensors, single-file or sharded with an index, in both key layouts.

Our parameter names are the older published layout (`visual.*`, `model.*`, `lm_head.*`); the
newer transformers layout (`model.visual.*`, `model.language_model.*`) is mapped onto it on load.
We save the older layout, which every transformers version loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError
from .fileio import atomic_path, atomic_write_text

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

# new-layout prefix -> our prefix; the first that matches wins
_KEY_PREFIXES = (("model.visual.", "visual."), ("model.language_model.", "model."))


def canonical_key(key: str) -> str:
    for theirs, ours in _KEY_PREFIXES:
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    return key


def checkpoint_files(model_dir: str | os.PathLike) -> list[Path]:
    """The safetensors files of a model directory, checked to exist."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{index}: not a valid safetensors index ({err})") from None
        files = [model_dir / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{model_dir}: shard file(s) named in the index are missing: {', '.join(missing)}")
        return files
    single = model_dir / SINGLE_NAME
    if single.is_file():
        return [single]
    raise CheckpointError(f"{model_dir}: no {SINGLE_NAME} or {INDEX_NAME} (no weights to load)")


class CheckpointTensors(Mapping[str, torch.Tensor]):
    """A checkpoint's tensors under our key names, each read from its file only when asked for,
    so that a loader holds one tensor at a time beside the model it fills. Use as a context
    manager (the files stay open until it exits)."""

    def __init__(self, model_dir: str | os.PathLike, device="cpu"):
        self._device = str(device)
        self._handles = {}
        self._headers: dict[Path, dict] = {}
        self._where: dict[str, tuple[Path, str]] = {}  # our key -> (file, key in the file)
        for path in checkpoint_files(model_dir):
            for key in self._handle(path).keys():
                self._where[canonical_key(key)] = (path, key)

    def _handle(self, path: Path):
        if path not in self._handles:
            try:
                self._handles[path] = safe_open(str(path), framework="pt", device=self._device).__enter__()
            except (SafetensorError, OSError, ValueError, RuntimeError) as err:
                raise CheckpointError(f"{path}: unreadable or corrupt safetensors file ({err})") from None
        return self._handles[path]

    def __getitem__(self, key: str) -> torch.Tensor:
        path, name = self._where[key]
        try:
            return self._handle(path).get_tensor(name)
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path}: unreadable or corrupt safetensors file ({err})") from None

    def read(self, key: str) -> torch.Tensor:
        """A private copy of the tensor, read with file I/O instead of the shared mapping: a
        loader that converts a weight and drops the original then leaves none of its pages
        behind in this process's resident memory (the mapping would keep them until closed)."""
        path, name = self._where[key]
        header = self._headers.get(path)
        if header is None:
            header = self._headers[path] = read_header(path)
        meta = header[name]
        start, end = meta["data_offsets"]
        buffer = torch.empty(end - start, dtype=torch.uint8)
        with open(path, "rb") as f:
            f.seek(header["__data_start__"] + start)
            if f.readinto(buffer.numpy()) != end - start:
                raise CheckpointError(f"{path}: truncated safetensors file ({key})")
        return buffer.view(SAFETENSORS_DTYPES[meta["dtype"]]).view(meta["shape"])

    def shape(self, key: str) -> tuple[int, ...]:
        """The tensor's shape, from the file header (nothing read)."""
        path, name = self._where[key]
        return tuple(self._handle(path).get_slice(name).get_shape())

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def close(self) -> None:
        for handle in self._handles.values():
            handle.__exit__(None, None, None)
        self._handles.clear()

    def __enter__(self) -> CheckpointTensors:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


SAFETENSORS_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I8": torch.int8,
    "U8": torch.uint8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "BOOL": torch.bool,
}


MAX_HEADER_BYTES = 100 * 2**20  # the safetensors format's own limit


def read_header(path: Path) -> dict:
    """A safetensors file's header: {name: {dtype, shape, data_offsets}}, plus where data starts."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size > min(MAX_HEADER_BYTES, os.path.getsize(path) - 8):  # garbage there would read the world
                raise ValueError(f"header length {size} does not fit the file")
            header = json.loads(f.read(size))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable or corrupt safetensors file ({err})") from None
    header["__data_start__"] = 8 + size
    return header


def load_state_dict(
    model_dir: str | os.PathLike, dtype: torch.dtype | None = None, device="cpu"
) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint under our key names, optionally cast to `dtype`."""
    state = {}
    with CheckpointTensors(model_dir, device) as tensors:
        for key in tensors:
            tensor = tensors[key]
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            state[key] = tensor
    return state


def parse_size(size: int | str) -> int:
    """'5GB', '500MB', '10KB' or a byte count -> bytes."""
    if isinstance(size, int):
        return size
    units = {"GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}
    text = size.strip().upper()
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def save_state_dict(
    state: dict[str, torch.Tensor], model_dir: str | os.PathLike, max_shard_size: int | str = "5GB"
) -> None:
    """Write `state` as safetensors shards (each file written atomically, the index last)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = tensor.detach().contiguous().cpu()
        size += nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        with atomic_path(model_dir / SINGLE_NAME) as tmp:
            save_file(shards[0], str(tmp), metadata=metadata)
        (model_dir / INDEX_NAME).unlink(missing_ok=True)
        return
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        with atomic_path(model_dir / name) as tmp:
            save_file(shard, str(tmp), metadata=metadata)
        weight_map.update({key: name for key in shard})
        total += sum(t.numel() * t.element_size() for t in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    atomic_write_text(model_dir / INDEX_NAME, json.dumps(index, indent=2) + "\n")
    (model_dir / SINGLE_NAME).unlink(missing_ok=True)
