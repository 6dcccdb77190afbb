"""JSON Lines sets: the generic format and the synthetic suites of the bundled model.

Generic, one object per line (media paths relative to the file):
    {"id": "q1" (optional; default the line number), "image": "img.png" | "video": "clip.mp4",
     "question": "...", "answers": ["...", ...] | "answer": "...", "category": "..." (optional)}
Synthetic suites (bundled_model/synthetic.py writes DIR/<task>.jsonl), one object per line:
    {"messages": [{"role": "user", "content": [{"type": "image", "image": "images/000123.png"},
                  {"type": "text", "text": "..."}]}, {"role": "assistant", ...}],
     "task": "caption" | "vqa" | "ocr" | "video", "answer": "...",
     "question_type": "colour" (optional; the report's categories),
     "event_second": 4, "fps": 7 (video only), "scene": {...}}
Synthetic ground lines (task "ground") add the reference boxes and the frame of the answer:
    {"question_type": "one" | "every",
     "objects": [{"label": "red star", "bbox": [x1, y1, x2, y2] (ORIGINAL pixels), "bbox_2d": [...]}],
     "frame": {"width", "height", "model_width", "model_height"}}
The prompt is every message before the final assistant turn.
"""

from __future__ import annotations

import json
from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, as_answers, check_unique, find_files


def _lines(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield number, json.loads(line)
                    except json.JSONDecodeError as err:
                        raise DataError(f"{path}:{number}: not a JSON object ({err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not readable ({err.__class__.__name__})") from None


def _absolute(source, base: Path):
    """A media reference made absolute against the JSONL folder (URIs, bytes and frame lists of
    those are kept as they are)."""
    if isinstance(source, list):
        return [_absolute(item, base) for item in source]
    if isinstance(source, str) and "://" not in source and not source.startswith("data:"):
        return str((base / source).absolute())
    return source


def load_jsonl(root: Path) -> list[Sample]:
    path = find_files(root, ("*.jsonl",), "JSON Lines file (*.jsonl)")[0]
    base = path.parent
    samples = []
    for number, item in _lines(path):
        if "question" not in item or not ({"image", "video"} & set(item)):
            raise DataError(f"{path}:{number}: needs 'question' and 'image' or 'video'")
        answers = item["answers"] if "answers" in item else item.get("answer")
        samples.append(
            Sample(
                id=str(item.get("id", number)),
                question=item["question"],
                answers=as_answers(answers),
                image=_absolute(item["image"], base) if "image" in item else None,
                video=_absolute(item["video"], base) if "video" in item else None,
                category=item.get("category"),
            )
        )
    return check_unique(samples, path)


def load_synthetic(root: Path, kind: str) -> list[Sample]:
    """The lines of one synthetic task (caption | vqa | ocr | video | ground); DIR/<kind>.jsonl when DIR is a
    folder."""
    if root.is_dir() and (root / f"{kind}.jsonl").is_file():
        path = root / f"{kind}.jsonl"
    else:
        path = find_files(root, ("*.jsonl",), f"synthetic {kind} file ({kind}.jsonl)")[0]
    base = path.parent
    samples = []
    for number, item in _lines(path):
        if item.get("task", kind) != kind:
            continue
        messages = item.get("messages")
        if not isinstance(messages, list) or "answer" not in item:
            raise DataError(f"{path}:{number}: a synthetic line needs 'messages' and 'answer'")
        while messages and messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        prompt = [_absolute_message(m, base) for m in messages]
        question = " ".join(
            part.get("text", "") for m in prompt if isinstance(m.get("content"), list) for part in m["content"]
        ).strip()
        samples.append(
            Sample(
                id=str(item.get("id", number)),
                question=question,
                answers=as_answers(item["answer"]),
                messages=prompt,
                category=item.get("question_type"),
                meta=_ground_meta(item, path, number) if kind == "ground" else _video_meta(item),
            )
        )
    if not samples:
        raise DataError(f"{path}: no lines with task {kind!r}")
    return check_unique(samples, path)


def _video_meta(item: dict) -> dict:
    return {k: item[k] for k in ("event_second", "fps") if k in item}


def _ground_meta(item: dict, path: Path, number: int) -> dict:
    """A synthetic ground line's references in ORIGINAL pixels: `box` [x1, y1, x2, y2] for a one-shape
    prompt (the `grounding_accuracy` metric), `boxes` [{"label", "bbox"}] for an every-shape prompt
    (`boxes_matched`); the image size; and the frame the line's answer is written in, which scores a
    predictions file that carries no frame of its own."""
    objects, frame = item.get("objects"), item.get("frame")
    if (
        not isinstance(objects, list)
        or not isinstance(frame, dict)
        or item.get("question_type") not in ("one", "every")
    ):
        raise DataError(f"{path}:{number}: a synthetic ground line needs 'objects', 'frame' and 'question_type'")
    try:
        boxes = [{"label": str(o["label"]), "bbox": [float(v) for v in o["bbox"]]} for o in objects]
        frame = {k: int(frame[k]) for k in ("width", "height", "model_width", "model_height")}
        meta = {"width": frame["width"], "height": frame["height"], "frame": frame}
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}:{number}: malformed 'objects' or 'frame' in a synthetic ground line") from None
    if item["question_type"] == "one":
        if len(boxes) != 1:
            raise DataError(f"{path}:{number}: a one-shape ground line needs exactly one object")
        return meta | {"box": boxes[0]["bbox"]}
    return meta | {"boxes": boxes}


def _absolute_message(message: dict, base: Path) -> dict:
    content = message.get("content")
    if not isinstance(content, list):
        return message
    parts = []
    for part in content:
        part = dict(part)
        for key in ("image", "video"):
            if key in part:
                part[key] = _absolute(part[key], base)
        parts.append(part)
    return {**message, "content": parts}
