"""VQAv2 in its published layout (visualqa.org, Goyal et al. 2017).

DIR/v2_OpenEnded_mscoco_val2014_questions.json
    {"data_subtype": "val2014", "questions": [{"image_id", "question", "question_id"}, ...], ...}
DIR/v2_mscoco_val2014_annotations.json
    {"annotations": [{"question_id", "image_id", "question_type", "answer_type",
                      "multiple_choice_answer", "answers": [{"answer", "answer_confidence",
                      "answer_id"} x 10]}, ...], ...}
DIR/val2014/COCO_val2014_000000XXXXXX.jpg   (COCO naming: image id zero-padded to 12 digits;
                                             also accepted under DIR/images/val2014/)
"""

from __future__ import annotations

from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, as_answers, check_unique, find_files, read_json, resolve_media


def coco_image_name(subtype: str, image_id: int) -> str:
    return f"COCO_{subtype}_{int(image_id):012d}.jpg"


def load_vqav2(root: Path) -> list[Sample]:
    questions_file = find_files(root, ("*questions*.json",), "VQAv2 questions file (*questions*.json)")[0]
    annotations_file = find_files(root, ("*annotations*.json",), "VQAv2 annotations file (*annotations*.json)")[0]
    questions = read_json(questions_file)
    annotations = read_json(annotations_file)
    if not isinstance(questions, dict) or "questions" not in questions:
        raise DataError(f"{questions_file}: not a VQAv2 questions file (no 'questions' list)")
    if not isinstance(annotations, dict) or "annotations" not in annotations:
        raise DataError(f"{annotations_file}: not a VQAv2 annotations file (no 'annotations' list)")
    by_question = {a["question_id"]: a for a in annotations["annotations"]}
    subtype = questions.get("data_subtype", "val2014")
    base = questions_file.parent
    roots = [base / subtype, base / "images" / subtype, base]
    samples = []
    for q in questions["questions"]:
        annotation = by_question.get(q["question_id"])
        if annotation is None:
            raise DataError(f"{annotations_file}: no annotation for question_id {q['question_id']}")
        samples.append(
            Sample(
                id=str(q["question_id"]),
                question=q["question"],
                answers=as_answers(annotation["answers"]),
                image=resolve_media(coco_image_name(subtype, q["image_id"]), roots),
                category=annotation.get("answer_type"),
            )
        )
    return check_unique(samples, questions_file)
