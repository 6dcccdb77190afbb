"""Per-sample predictions as JSON Lines: appended batch by batch (flush + fsync), read back
tolerating a torn last line, and merged from the part files of data-parallel processes.

Layout of an output folder:
    predictions.jsonl            the merged predictions, one line per sample id, in data order
    predictions.part-<rank>.jsonl  what process <rank> of a multi-process run wrote (merged and
                                   removed at the end of the run)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from qwen_vl.fileio import atomic_path

PREDICTIONS = "predictions.jsonl"
PART_GLOB = "predictions.part-*.jsonl"


def part_path(out_dir: Path, rank: int) -> Path:
    return out_dir / f"predictions.part-{rank}.jsonl"


def read_records(path: Path) -> list[dict]:
    """The complete records of a predictions file; a torn (unparsable or unterminated) last line,
    left by a killed run, is ignored."""
    if not path.is_file():
        return []
    records = []
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # torn tail
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict) and "id" in record:
                records.append(record)
    return records


def all_records(out_dir: Path) -> list[dict]:
    """Records of the merged file and of every part file, first occurrence of each id kept."""
    seen: dict[str, dict] = {}
    for path in [out_dir / PREDICTIONS, *sorted(out_dir.glob(PART_GLOB))]:
        for record in read_records(path):
            seen.setdefault(str(record["id"]), record)
    return list(seen.values())


def truncate_torn_tail(path: Path) -> None:
    """Cut a file back to its last complete line, so appending never glues onto a torn one."""
    if not path.is_file():
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())


class PredictionLog:
    """Appends records to one JSON Lines file; each batch is on disk (fsync) before the next starts."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        truncate_torn_tail(path)
        self._handle = open(path, "a", encoding="utf-8")

    def append(self, records: Iterable[dict]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        self._handle.write(text)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def merge(out_dir: Path, order: list[str]) -> list[dict]:
    """Rewrite predictions.jsonl (atomically) from itself and every part file: one line per id, in
    `order` (ids not in `order` last), then delete the part files. Returns the records."""
    records = {str(r["id"]): r for r in all_records(out_dir)}
    position = {sample_id: i for i, sample_id in enumerate(order)}
    ordered = sorted(records.values(), key=lambda r: position.get(str(r["id"]), len(order)))
    with atomic_path(out_dir / PREDICTIONS) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in ordered:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    for part in out_dir.glob(PART_GLOB):
        part.unlink()
    return ordered
