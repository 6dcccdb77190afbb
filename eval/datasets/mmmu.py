"""MMMU validation in the Hugging Face Parquet layout of MMMU/MMMU (Yue et al. 2024).

    DIR/<Subject>/validation-0000N-of-0000M.parquet   (also dev-* and test-*; one folder per
                                                       subject: Accounting, Art, ..., Sociology)
        id ("validation_Accounting_1"), question, options (a Python list literal as a string,
        "['$6', '$7']"; "[]" for open questions), explanation, image_1 .. image_7 (the datasets
        Image struct {bytes, path}, null when unused), img_type, answer (a letter, or the open
        answer; a list literal for open questions with several accepted answers),
        topic_difficulty, question_type ("multiple-choice" / "open"), subfield

The question text names its images with "<image 1>" .. "<image 7>"; the images it or its options
name go before the text in number order, and the tags stay in the text (lmms-eval's layout).
Multiple choice gets "A. <option>" lines and the letter instruction; open questions the short
answer instruction. Only the validation split is read (the test split has no answers).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, check_unique, find_files
from qwen_vl.eval.datasets.parquet import ParquetImage, open_parquet

MMMU_CHOICE_PROMPT = "Answer with the option's letter from the given choices directly."
MMMU_OPEN_PROMPT = "Answer the question using a single word or phrase."
_IMAGE_TAG = re.compile(r"<image (\d+)>")
MAX_IMAGES = 7


def _literal_list(text: str | None) -> list[str]:
    """A list written as a Python literal ("['a', 'b']"); [] for an empty or unreadable one."""
    try:
        value = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return []
    return [str(item) for item in value] if isinstance(value, list | tuple) else []


def open_answers(answer: str) -> list[str]:
    """An open question's accepted answers: a list literal gives several, anything else one."""
    listed = _literal_list(answer) if answer.strip().startswith("[") else []
    return listed or [answer]


def mmmu_text(question: str, options: list[str]) -> str:
    if not options:
        return f"{question}\n\n{MMMU_OPEN_PROMPT}"
    lines = "\n".join(f"{chr(ord('A') + i)}. {option}" for i, option in enumerate(options))
    return f"{question}\n{lines}\n\n{MMMU_CHOICE_PROMPT}"


def named_images(question: str, options: list[str]) -> list[int]:
    """The image numbers the question and its options name, in number order."""
    return sorted({int(n) for n in _IMAGE_TAG.findall(question + " " + " ".join(options))})


def _subject(sample_id: str, path: Path) -> str:
    parts = sample_id.split("_")
    return "_".join(parts[1:-1]) if len(parts) >= 3 else path.parent.name


def load_mmmu(root: Path, split: str = "validation") -> list[Sample]:
    files = [p for p in find_files(root, ("*.parquet",), "MMMU Parquet file") if p.name.startswith(split)]
    if not files:
        raise DataError(f"{root}: no {split}-*.parquet files (the MMMU/MMMU layout: <Subject>/{split}-*.parquet)")
    samples = []
    for path in files:
        handle, columns = open_parquet(path, ("id", "question", "options", "answer", "question_type"), "an MMMU")
        text_columns = [c for c in columns if not c.startswith("image_")]
        for group in range(handle.num_row_groups):
            for position, row in enumerate(handle.read_row_group(group, columns=text_columns).to_pylist()):
                samples.append(_sample(row, path, group, position, columns))
    return check_unique(samples, root)


def _sample(row: dict, path: Path, group: int, position: int, columns: list[str]) -> Sample:
    options = _literal_list(row["options"])
    choice = row["question_type"] == "multiple-choice" and bool(options)
    numbers = [n for n in named_images(row["question"], options) if f"image_{n}" in columns and n <= MAX_IMAGES]
    images = [ParquetImage(str(path), f"image_{n}", group, position) for n in numbers]
    answer = str(row["answer"])
    return Sample(
        id=str(row["id"]),
        question=mmmu_text(row["question"], options),
        answers=[answer.strip()] if choice else open_answers(answer),
        image=images[0] if images else None,
        category=_subject(str(row["id"]), path),
        meta={
            "question_type": "multiple-choice" if choice else "open",
            "options": {chr(ord("A") + i): option for i, option in enumerate(options)} if choice else {},
        },
        more_images=images[1:],
    )
