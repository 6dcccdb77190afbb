"""DocVQA and InfographicVQA in their published layouts (rrc.cvc.uab.es, Mathew et al. 2021/2022).

DocVQA (Task 1):
    DIR/val_v1.0.json (or val_v1.0_withQT.json)
        {"dataset_name": "docvqa", "dataset_split": "val", "data": [{"questionId", "question",
         "image": "documents/<name>.png", "docId", "ucsf_document_id", "ucsf_document_page_no",
         "answers": [...], "question_types", "data_split"}, ...]}
    DIR/documents/<name>.png
InfographicVQA (Task 3):
    DIR/infographicsVQA_val_v1.0_withQT.json
        {"dataset_name": "infographicVQA", "data": [{"questionId", "question", "image_local_name":
         "<name>.jpeg", "image_url", "ocr_output_file", "answers": [...], "answer_type", "evidence",
         "operation/reasoning", "data_split"}, ...]}
    DIR/<any image folder>/<name>.jpeg   (the released archives use infographicsvqa_images/)
"""

from __future__ import annotations

from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, as_answers, check_unique, find_files, read_json, resolve_media


def _data_file(root: Path, patterns: tuple[str, ...], what: str) -> tuple[Path, list[dict]]:
    for path in find_files(root, patterns, what):
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            return path, data["data"]
    raise DataError(f"{root}: no {what} with a 'data' list")


def _image_roots(base: Path) -> list[Path]:
    return [base, *sorted(p for p in base.iterdir() if p.is_dir())]


def load_docvqa(root: Path) -> list[Sample]:
    path, items = _data_file(root, ("*val*.json", "*.json"), "DocVQA JSON file")
    roots = _image_roots(path.parent)
    samples = [
        Sample(
            id=str(item["questionId"]),
            question=item["question"],
            answers=as_answers(item.get("answers")),
            image=resolve_media(item["image"], roots),
            category=(item.get("question_types") or [None])[0],
        )
        for item in items
    ]
    return check_unique(samples, path)


def load_infovqa(root: Path) -> list[Sample]:
    path, items = _data_file(root, ("*nfographic*.json", "*.json"), "InfographicVQA JSON file")
    roots = _image_roots(path.parent)
    samples = [
        Sample(
            id=str(item["questionId"]),
            question=item["question"],
            answers=as_answers(item.get("answers")),
            image=resolve_media(item["image_local_name"], roots),
        )
        for item in items
    ]
    return check_unique(samples, path)
