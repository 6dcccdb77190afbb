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


def failed(record: dict) -> bool:
    """A record without an answer (its media could not be read, or the model call failed)."""
    return record.get("error") is not None or record.get("prediction") is None


def all_records(out_dir: Path) -> list[dict]:
    """Records of the merged file and of every part file, one per id: the first answered one, else
    the last failed one (so a sample retried by --resume takes its new record)."""
    seen: dict[str, dict] = {}
    for path in [out_dir / PREDICTIONS, *sorted(out_dir.glob(PART_GLOB))]:
        for record in read_records(path):
            sample_id = str(record["id"])
            if sample_id not in seen or failed(seen[sample_id]):
                seen[sample_id] = record
    return list(seen.values())


def read_prediction_file(path: Path) -> dict[str, dict]:
    """{"id", "prediction"} lines of a JSON Lines file by id (a later line of an id wins); other
    fields ("error", "frame") are kept. DataError naming the line when one is not such an object."""
    from qwen_vl.eval.datasets import DataError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable predictions file ({err.__class__.__name__}: {err})") from None
    by_id = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or "id" not in record or "prediction" not in record:
            raise DataError(f'{path}:{number}: not a {{"id", "prediction"}} JSON object')
        prediction = record["prediction"]
        if prediction is not None and not isinstance(prediction, str):
            raise DataError(f"{path}:{number}: the prediction is not a string")
        by_id[str(record["id"])] = record
    return by_id


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
