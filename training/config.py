"""Training configuration: a YAML file, command-line overrides (`--set key=value`), validation.

Every mistake a user can make in a config is a `ConfigError` with one line naming the key."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from qwen_vl.errors import QwenVLError

COMPONENTS = ("vision", "merger", "llm")

# What learns in each published stage (a config's `train:` block overrides any of these).
STAGE_TRAINABLE = {
    1: {"vision": False, "merger": True, "llm": False},  # alignment
    2: {"vision": True, "merger": True, "llm": True},  # multimodal pre-training
    3: {"vision": False, "merger": True, "llm": True},  # instruction tuning
}


class ConfigError(QwenVLError):
    """A training config that cannot be used (unknown key, wrong type, missing file)."""


@dataclass
class DataSource:
    path: str  # a JSON Lines file of {"messages": [...]}
    weight: float = 1.0  # samples drawn per epoch = round(weight * lines in the file)


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class TrainConfig:
    init: dict  # {model: DIR} or {llm: DIR, vision: {...VisionConfig fields}, vision_weights?: FILE}
    data: list[DataSource]
    output_dir: str
    stage: int = 3
    train: dict = field(default_factory=dict)  # {vision, merger, llm}: bool, defaults from the stage
    lr: dict = field(default_factory=lambda: {"vision": 2e-6, "merger": 1e-5, "llm": 1e-5})
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # the cosine decays to lr * min_lr_ratio
    max_steps: int = 100
    batch_size: int = 1  # samples per process per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float | None = 1.0
    max_seq_len: int = 2048
    packing: bool = True
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    gradient_checkpointing: bool = False
    lora: LoraSettings | None = None
    seed: int = 0
    save_every: int = 100  # steps between checkpoints; 0 = only the final one
    keep_last: int = 2  # checkpoints kept on disk (older ones are deleted)
    log_every: int = 1
    tensorboard: bool = True
    progress: bool = True
    image: dict = field(default_factory=dict)  # processor image overrides: min_pixels, max_pixels

    def trainable(self) -> dict[str, bool]:
        return {**STAGE_TRAINABLE[self.stage], **self.train}


_FIELD_TYPES = {f.name: f for f in fields(TrainConfig)}


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config, apply `key=value` overrides (dotted keys reach into mappings), validate."""
    import yaml  # the [train] extra: imported here so that a missing one is reported by the caller

    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config {path}: file not found")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise ConfigError(f"config {path}: not valid YAML{line}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config {path}: the top level must be a mapping of keys to values")
    raw = copy.deepcopy(raw)
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw, source=str(path) if path else "config")


def apply_override(raw: dict, item: str) -> None:
    """`a.b=value` sets raw[a][b] to the YAML value of `value`."""
    import yaml

    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    target = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[parts[-1]] = value


def config_from_dict(raw: dict, source: str = "config") -> TrainConfig:
    unknown = sorted(set(raw) - set(_FIELD_TYPES))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; known keys: {', '.join(_FIELD_TYPES)}")
    for key in ("init", "data", "output_dir"):
        if raw.get(key) in (None, "", [], {}):
            raise ConfigError(f"{source}: {key!r} is required")
    values = dict(raw)
    values["init"] = _check_init(raw["init"], source)
    values["data"] = _check_data(raw["data"], source)
    values["output_dir"] = str(raw["output_dir"])
    if "lora" in raw:
        values["lora"] = _check_lora(raw["lora"], source)
    if "betas" in raw:
        values["betas"] = tuple(float(b) for b in raw["betas"])
    cfg = TrainConfig(**values)
    _check_scalars(cfg, source)
    return cfg


def _check_init(init, source: str) -> dict:
    if not isinstance(init, dict) or ("model" in init) == ("llm" in init):
        raise ConfigError(f"{source}: init needs exactly one of 'model: DIR' or 'llm: DIR' (with 'vision: {{...}}')")
    extra = set(init) - {"model", "llm", "vision", "vision_weights"}
    if extra:
        raise ConfigError(f"{source}: init has unknown key {sorted(extra)[0]!r}")
    if "vision" in init and not isinstance(init["vision"], dict):
        raise ConfigError(f"{source}: init.vision must be a mapping of VisionConfig fields")
    if "vision_weights" in init and "llm" not in init:
        raise ConfigError(f"{source}: init.vision_weights goes with init.llm (a fresh VL model), not init.model")
    return dict(init)


def _check_data(data, source: str) -> list[DataSource]:
    if isinstance(data, str):
        data = [{"path": data}]
    if not isinstance(data, list):
        raise ConfigError(f"{source}: data must be a list of {{path, weight}} entries")
    out = []
    for i, entry in enumerate(data):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or "path" not in entry or set(entry) - {"path", "weight"}:
            raise ConfigError(f"{source}: data[{i}] must be {{path: FILE, weight: NUMBER}}")
        try:
            weight = float(entry.get("weight", 1.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: data[{i}].weight must be a number, got {entry['weight']!r}") from None
        if weight < 0:
            raise ConfigError(f"{source}: data[{i}].weight must be >= 0, got {weight}")
        out.append(DataSource(str(entry["path"]), weight))
    return out


def _check_lora(lora, source: str) -> LoraSettings | None:
    if lora in (None, False):
        return None
    if lora is True:
        return LoraSettings()
    if not isinstance(lora, dict):
        raise ConfigError(f"{source}: lora must be a mapping (r, alpha, dropout, targets) or false")
    known = {f.name for f in fields(LoraSettings)}
    if set(lora) - known:
        raise ConfigError(f"{source}: lora has unknown key {sorted(set(lora) - known)[0]!r}")
    return LoraSettings(**lora)


_NUMBERS = {
    "weight_decay": (float, 0.0),
    "warmup_steps": (int, 0),
    "min_lr_ratio": (float, 0.0),
    "max_steps": (int, 1),
    "batch_size": (int, 1),
    "grad_accum": (int, 1),
    "max_seq_len": (int, 8),
    "seed": (int, 0),
    "save_every": (int, 0),
    "keep_last": (int, 1),
    "log_every": (int, 1),
    "stage": (int, 1),
}


def _check_scalars(cfg: TrainConfig, source: str) -> None:
    for name, (kind, low) in _NUMBERS.items():
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise ConfigError(f"{source}: {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        if value < low:
            raise ConfigError(f"{source}: {name} must be >= {low}, got {value}")
        setattr(cfg, name, kind(value))
    if cfg.stage not in STAGE_TRAINABLE:
        raise ConfigError(f"{source}: stage must be 1, 2 or 3, got {cfg.stage}")
    for block in ("train", "lr"):
        value = getattr(cfg, block)
        if not isinstance(value, dict) or set(value) - set(COMPONENTS):
            raise ConfigError(f"{source}: {block} must be a mapping with keys among {', '.join(COMPONENTS)}")
    for name, flag in cfg.train.items():
        if not isinstance(flag, bool):
            raise ConfigError(f"{source}: train.{name} must be true or false, got {flag!r}")
    for name, rate in cfg.lr.items():
        if isinstance(rate, str):
            try:
                rate = float(rate)
            except ValueError:
                raise ConfigError(f"{source}: lr.{name} must be a number, got {rate!r}") from None
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0:
            raise ConfigError(f"{source}: lr.{name} must be a number >= 0, got {rate!r}")
        cfg.lr[name] = float(rate)
    for name in COMPONENTS:
        if cfg.trainable()[name] and name not in cfg.lr:
            raise ConfigError(f"{source}: {name} is trained but lr.{name} is not set")
    if cfg.mixed_precision is False:  # YAML 1.1 reads a bare `no` as false
        cfg.mixed_precision = "no"
    if cfg.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"{source}: mixed_precision must be no, bf16 or fp16, got {cfg.mixed_precision!r}")
    if cfg.max_grad_norm is not None and (not isinstance(cfg.max_grad_norm, (int, float)) or cfg.max_grad_norm <= 0):
        raise ConfigError(f"{source}: max_grad_norm must be a positive number or null, got {cfg.max_grad_norm!r}")
    for name in ("packing", "gradient_checkpointing", "tensorboard", "progress"):
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(f"{source}: {name} must be true or false, got {getattr(cfg, name)!r}")
    if not any(cfg.trainable().values()):
        raise ConfigError(f"{source}: nothing is trained (train: vision, merger and llm are all false)")
    if cfg.warmup_steps > cfg.max_steps:
        raise ConfigError(f"{source}: warmup_steps ({cfg.warmup_steps}) exceeds max_steps ({cfg.max_steps})")


__all__ = ["TrainConfig", "DataSource", "LoraSettings", "ConfigError", "load_config", "config_from_dict"]
