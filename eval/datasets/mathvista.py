"""MathVista testmini in the Hugging Face Parquet layout of AI4Math/MathVista (Lu et al. 2024).

    DIR/data/testmini-0000N-of-0000M-<hash>.parquet   (also test-*; any folder depth)
        pid, question, image ("images/<pid>.jpg"), decoded_image (the datasets Image struct
        {bytes, path}), choices (list of strings; null for free-form), unit, precision (decimal
        places of a float answer), answer (a string: the choice text, or the number), question_type
        ("multi_choice" / "free_form"), answer_type ("text" / "integer" / "float" / "list"),
        metadata {split, source, task, category, context, grade, img_height, img_width, language,
                  skills}, query (the question with MathVista's hint and choices: the prompt)

The model is given `query` as it is. Only the testmini split is read (test has no answers). The
report breaks the score down by metadata.task.
"""

from __future__ import annotations

from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, check_unique, find_files
from qwen_vl.eval.datasets.parquet import ParquetImage, open_parquet

IMAGE_COLUMNS = ("decoded_image", "image")


def load_mathvista(root: Path, split: str = "testmini") -> list[Sample]:
    files = [p for p in find_files(root, ("*.parquet",), "MathVista Parquet file") if p.name.startswith(split)]
    if not files:
        raise DataError(f"{root}: no {split}-*.parquet files (the AI4Math/MathVista layout)")
    samples = []
    for path in files:
        handle, columns = open_parquet(path, ("pid", "query", "answer", "question_type", "answer_type"), "a MathVista")
        image_column = next((c for c in IMAGE_COLUMNS if c in columns), None)
        text_columns = [c for c in columns if c not in IMAGE_COLUMNS]
        for group in range(handle.num_row_groups):
            for position, row in enumerate(handle.read_row_group(group, columns=text_columns).to_pylist()):
                image = ParquetImage(str(path), image_column, group, position) if image_column else None
                samples.append(_sample(row, image))
    return check_unique(samples, root)


def _sample(row: dict, image) -> Sample:
    metadata = row.get("metadata") or {}
    return Sample(
        id=str(row["pid"]),
        question=str(row["query"]),
        answers=[str(row["answer"])],
        image=image,
        category=metadata.get("task"),
        meta={
            "question_type": row["question_type"],
            "answer_type": row["answer_type"],
            "choices": list(row.get("choices") or []),
            "precision": row.get("precision"),
        },
    )
