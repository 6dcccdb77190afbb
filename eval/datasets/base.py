"""A benchmark sample and the small helpers every loader shares."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_vl.errors import QwenVLError


class DataError(QwenVLError):
    """A data set directory or file that is missing, malformed, or not in the expected layout."""


@dataclass
class Sample:
    """One question of a benchmark.

    `image` / `video` are an absolute path or raw bytes (None when absent). `messages`, when set,
    is the whole prompt conversation (synthetic suites) and replaces image + question + prompt."""

    id: str
    question: str
    answers: list[str]
    image: str | bytes | None = None
    video: str | bytes | list | None = None  # a list: frame files (MVBench's frame folders)
    messages: list[dict] | None = None
    category: str | None = None  # per-category breakdown in the report
    meta: dict[str, Any] = field(default_factory=dict)  # options, dataset_name, event_second, ...
    more_images: list = field(default_factory=list)  # further images after `image`, in order (MMMU)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err.__class__.__name__}: {err})") from None


def find_files(root: Path, patterns: tuple[str, ...], what: str) -> list[Path]:
    """Files under `root` (or `root` itself) matching any glob pattern, sorted; DataError if none."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"{root}: no such file or directory")
    found = sorted({p for pattern in patterns for p in root.rglob(pattern) if p.is_file()})
    if not found:
        raise DataError(f"{root}: no {what} found (looked for {', '.join(patterns)})")
    return found


def resolve_media(name: str, roots: list[Path]) -> str:
    """The first existing `root/name`; else the first candidate (so the sample fails later with a
    MediaError naming it, instead of being dropped)."""
    candidates = [root / name for root in roots]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    return str(candidates[0].absolute())


def as_answers(value: Any) -> list[str]:
    """A reference answer field as a list of strings: a string, a list of strings, or a list of
    VQA-style dicts {"answer": ...}."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    out = []
    for item in value:
        out.append(str(item["answer"]) if isinstance(item, dict) else str(item))
    return out


def check_unique(samples: list[Sample], source: Path) -> list[Sample]:
    seen: set[str] = set()
    for sample in samples:
        if sample.id in seen:
            raise DataError(f"{source}: sample id {sample.id!r} occurs twice")
        seen.add(sample.id)
    return samples
