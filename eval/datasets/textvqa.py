"""TextVQA in its published layout (textvqa.org, Singh et al. 2019).

DIR/TextVQA_0.5.1_val.json
    {"dataset_name": "textvqa", "dataset_version": "0.5.1", "data": [{"question", "image_id",
     "question_id", "answers": [10 strings], "image_classes", "image_width", "image_height",
     "flickr_original_url", "flickr_300k_url", "question_tokens", "set_name"}, ...]}
DIR/train_images/<image_id>.jpg   (train and val share train_images/; test uses test_images/)
"""

from __future__ import annotations

from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, as_answers, check_unique, find_files, read_json, resolve_media


def load_textvqa(root: Path) -> list[Sample]:
    path = find_files(root, ("TextVQA*.json", "*.json"), "TextVQA JSON file")[0]
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path}: not a TextVQA file (no 'data' list)")
    base = path.parent
    roots = [base / "train_images", base / "test_images", base / "images", base]
    samples = [
        Sample(
            id=str(item["question_id"]),
            question=item["question"],
            answers=as_answers(item.get("answers")),
            image=resolve_media(f"{item['image_id']}.jpg", roots),
        )
        for item in data["data"]
    ]
    return check_unique(samples, path)
