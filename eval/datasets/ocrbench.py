"""OCRBench (v1) in its published layout (github.com/Yuliang-Liu/MultimodalOCR).

DIR/OCRBench.json   [{"dataset_name": "IIIT5K", "id": 0, "image_path": "IIIT5K/<name>.png",
                      "question": "what is written in the image?", "answers": [...] or "...",
                      "type": "Regular Text Recognition"}, ...]
DIR/OCRBench_Images/<image_path>   (image_path is relative to the image folder; a path relative
                                    to DIR is accepted too)

The published `id`s repeat across sub-datasets (1,000 rows, 857 distinct ids), so a sample's id
is its row index ("0".."999") and the published id is kept as `meta["source_id"]`.
"""

from __future__ import annotations

from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, as_answers, check_unique, find_files, read_json, resolve_media


def load_ocrbench(root: Path) -> list[Sample]:
    path = find_files(root, ("OCRBench*.json", "*.json"), "OCRBench JSON file")[0]
    items = read_json(path)
    if not isinstance(items, list):
        raise DataError(f"{path}: not an OCRBench file (expected a list of questions)")
    roots = [path.parent / "OCRBench_Images", path.parent]
    samples = [
        Sample(
            id=str(position),
            question=item["question"],
            answers=as_answers(item["answers"]),
            image=resolve_media(item["image_path"].removeprefix("./"), roots),
            category=item["type"],
            meta={"dataset_name": item.get("dataset_name", ""), "source_id": item.get("id")},
        )
        for position, item in enumerate(items)
    ]
    return check_unique(samples, path)
