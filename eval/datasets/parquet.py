"""Parquet files of the common Hugging Face mirrors (read with pyarrow; no `datasets` needed).

Columns are found by name, covering the mirrors' schemas:
    lmms-lab/VQAv2      question_id, question, answers [{answer, answer_confidence, answer_id}],
                        answer_type, question_type, multiple_choice_answer, image
    lmms-lab/textvqa    question_id, question, answers [str], image, ocr_tokens, ...
    lmms-lab/DocVQA     questionId, question, answers [str], image (DocVQA and InfographicVQA configs)
    lmms-lab/ChartQA    type (human / augmented), question, answer (str), image
    HuggingFaceM4/ChartQA  query, label [str], image
    echo840/OCRBench    dataset, question, question_type, answer [str], image
    lmms-lab/MMBench    index, question, hint, A, B, C, D, answer (letter), category, image
The image column holds the datasets `Image` struct {"bytes": binary, "path": str}, raw bytes, or a
path relative to the file. Images are read lazily, one row group at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, as_answers, check_unique, find_files
from qwen_vl.eval.datasets.mmbench import OPTION_LETTERS, choice_sample

ID_COLUMNS = ("question_id", "questionId", "index", "id")
QUESTION_COLUMNS = ("question", "query")
ANSWER_COLUMNS = ("answers", "answer", "label")
CATEGORY_COLUMNS = ("category", "answer_type", "type", "question_type")
SOURCE_COLUMNS = ("dataset_name", "dataset")
IMAGE_COLUMNS = ("image", "img", "image_bytes")


@dataclass(frozen=True)
class ParquetImage:
    """Where one image lives: file, row group, row within the group."""

    path: str
    column: str
    row_group: int
    row: int

    def load(self) -> bytes | str:
        value = _row_group_images(self.path, self.column, self.row_group)[self.row]
        if isinstance(value, dict):
            if value.get("bytes"):
                return value["bytes"]
            value = value.get("path") or ""
        if isinstance(value, str) and value:
            return str(Path(self.path).parent / value)
        return value or b""


@lru_cache(maxsize=1)
def _row_group_images(path: str, column: str, row_group: int) -> list:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_group(row_group, columns=[column]).column(column).to_pylist()


def open_parquet(path: Path, required: tuple[str, ...] = (), what: str = "") -> tuple:
    """(pyarrow ParquetFile, its column names) for one file; one DataError line for an unreadable
    file or one that lacks a `required` column (`what`: the layout named in that line)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    columns = handle.schema_arrow.names
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"{path}: not {what} file (no column {', '.join(sorted(missing))})")
    return handle, columns


def _first(columns: list[str], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in columns), None)


def load_parquet(root: Path, choice: bool = False) -> list[Sample]:
    """Every row of the Parquet files under `root`; `choice` rows are multiple choice (options A-D)."""
    samples = []
    for path in find_files(root, ("*.parquet",), "Parquet file (*.parquet)"):
        handle, columns = open_parquet(path)
        image_column = _first(columns, IMAGE_COLUMNS)
        question_column = _first(columns, QUESTION_COLUMNS)
        answer_column = _first(columns, ANSWER_COLUMNS)
        if image_column is None or question_column is None or answer_column is None:
            raise DataError(f"{path}: needs an image, a question and an answer column; has {', '.join(columns)}")
        id_column = _first(columns, ID_COLUMNS)
        category_column = _first(columns, CATEGORY_COLUMNS)
        source_column = _first(columns, SOURCE_COLUMNS)
        text_columns = [c for c in columns if c != image_column]
        offset = 0
        for group in range(handle.num_row_groups):
            rows = handle.read_row_group(group, columns=text_columns).to_pylist()
            for position, row in enumerate(rows):
                image = ParquetImage(str(path), image_column, group, position)
                sample_id = str(row[id_column]) if id_column else f"{path.stem}:{offset + position}"
                if choice:
                    samples.append(choice_sample(row, sample_id, image))
                    continue
                samples.append(
                    Sample(
                        id=sample_id,
                        question=str(row[question_column]),
                        answers=as_answers(row[answer_column]),
                        image=image,
                        category=str(row[category_column]) if category_column and row[category_column] else None,
                        meta={"dataset_name": row[source_column]} if source_column else {},
                    )
                )
            offset += len(rows)
    if not samples:
        raise DataError(f"{root}: the Parquet files hold no rows")
    return check_unique(_row_ids_if_repeated(samples), root)


def _row_ids_if_repeated(samples: list[Sample]) -> list[Sample]:
    """Mirrors whose id column repeats (OCRBench's ids repeat across its sub-datasets) get the row
    position as id ("0", "1", ...), the published id kept as meta["source_id"]."""
    if len({s.id for s in samples}) == len(samples):
        return samples
    for position, sample in enumerate(samples):
        sample.meta["source_id"] = sample.id
        sample.id = str(position)
    return samples


__all__ = ["ParquetImage", "load_parquet", "OPTION_LETTERS"]
