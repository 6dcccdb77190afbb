"""Referring-expression grounding: RefCOCO, RefCOCO+, RefCOCOg, and any JSON Lines set.

Every sample asks for the box of one referring expression; `meta["box"]` holds the annotated box
as [x1, y1, x2, y2] in ORIGINAL image pixels (converted from the releases' [x, y, w, h]), and
`category` the split (val, testA, ...), so the report gives the accuracy per split.

Published layout (refer toolkit; Yu et al. 2016, Mao et al. 2016), one folder per data set:
    DIR/refs(unc).p   a pickle: a list of {"ref_id", "ann_id", "image_id", "split" (train, val,
                      testA, testB, test), "sentences": [{"sent_id", "sent", "raw", "tokens"}], ...}
                      (RefCOCOg: refs(umd).p, or refs(google).p)
    DIR/instances.json  COCO: {"images": [{"id", "file_name", "width", "height"}],
                      "annotations": [{"id", "image_id", "bbox": [x, y, w, h], ...}], ...}
    images: COCO train2014 (COCO_train2014_<12 digits>.jpg) in DIR/images/, DIR/train2014/,
            DIR/../images/train2014/, DIR/../train2014/ or DIR/../images/
The train split is left out. Every sentence of a ref is one sample ("<ref_id>:<sent_id>").

Hugging Face mirrors (lmms-lab/RefCOCO, lmms-lab/RefCOCOplus, lmms-lab/RefCOCOg), Parquet files
named <split>-0000N-of-0000M.parquet with columns question_id, image ({bytes, path}), question (a
captioning instruction, not used), answer (the referring expressions), segmentation,
bbox ([x, y, w, h]), iscrowd, file_name. Every expression is one sample ("<question_id>:<k>").

Generic JSON Lines (task `grounding`), one object per line, paths relative to the file:
    {"id": "q1" (optional), "image": "a.png", "query": "the red car",
     "bbox": [x, y, w, h] | "bbox_2d": [x1, y1, x2, y2], "category": "..." (optional)}
"""

from __future__ import annotations

import pickle
from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, check_unique, find_files, read_json, resolve_media
from qwen_vl.eval.datasets.jsonl import _absolute, _lines
from qwen_vl.eval.datasets.parquet import ParquetImage, open_parquet

# The prompt Qwen2.5-VL's grounding examples use for one referred object.
REFERRING_PROMPT = "Outline the position of {} and output all the coordinates in JSON format."
REFS_FILES = ("refs(unc).p", "refs(umd).p", "refs(google).p")
SKIPPED_SPLITS = ("train",)


def referring_question(expression: str) -> str:
    return REFERRING_PROMPT.format(expression.strip().rstrip("."))


def xywh_to_corners(xywh) -> list[float]:
    x, y, w, h = (float(v) for v in xywh)
    return [x, y, x + w, y + h]


def box_answer(corners: list[float]) -> list[str]:
    """The reference box as the record's answer text (what a reader of predictions.jsonl sees)."""
    return ["[" + ", ".join(f"{v:g}" for v in corners) + "]"]


def load_refcoco(root: Path) -> list[Sample]:
    """RefCOCO / RefCOCO+ / RefCOCOg from the refer toolkit's files or the lmms-lab Parquet mirror."""
    root = Path(root)
    if root.suffix == ".parquet" or (root.is_dir() and any(root.rglob("*.parquet"))):
        return _load_parquet(root)
    refs_path = _refs_file(root)
    instances_path = refs_path.parent / "instances.json"
    if not instances_path.is_file():
        raise DataError(f"{refs_path.parent}: no instances.json beside {refs_path.name}")
    coco = read_json(instances_path)
    images = {image["id"]: image for image in coco["images"]}
    boxes = {ann["id"]: ann["bbox"] for ann in coco["annotations"]}
    base = refs_path.parent
    roots = [base / "images", base / "train2014", base.parent / "images" / "train2014", base.parent / "train2014"]
    roots.append(base.parent / "images")
    samples = []
    for ref in _read_refs(refs_path):
        if ref["split"] in SKIPPED_SPLITS:
            continue
        image = images[ref["image_id"]]
        for sentence in ref["sentences"]:
            samples.append(
                Sample(
                    id=f"{ref['ref_id']}:{sentence['sent_id']}",
                    question=referring_question(sentence["sent"]),
                    answers=box_answer(xywh_to_corners(boxes[ref["ann_id"]])),
                    image=resolve_media(image["file_name"], roots),
                    category=ref["split"],
                    meta={
                        "box": xywh_to_corners(boxes[ref["ann_id"]]),
                        "width": image["width"],
                        "height": image["height"],
                        "expression": sentence["sent"],
                    },
                )
            )
    if not samples:
        raise DataError(f"{refs_path}: holds no refs outside the train split")
    return check_unique(samples, refs_path)


def _refs_file(root: Path) -> Path:
    if root.is_file():
        return root
    for name in REFS_FILES:
        found = sorted(root.rglob(name)) if root.is_dir() else []
        if found:
            return found[0]
    raise DataError(f"{root}: no {' / '.join(REFS_FILES)} (the refer toolkit's files) and no Parquet files")


class _PlainUnpickler(pickle.Unpickler):
    """The refs files hold only lists, dicts, strings and numbers: anything else is refused, so a
    data file cannot run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}")


def _read_refs(path: Path) -> list[dict]:
    try:
        with open(path, "rb") as handle:
            # written by Python 2: its byte strings are UTF-8 text
            refs = _PlainUnpickler(handle, encoding="utf-8", errors="replace").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataError(f"{path}: not a readable refs pickle ({err})") from None
    if not isinstance(refs, list):
        raise DataError(f"{path}: not a refs pickle (expected a list of refs)")
    return refs


def _load_parquet(root: Path) -> list[Sample]:
    samples = []
    for path in find_files(root, ("*.parquet",), "Parquet file (*.parquet)"):
        handle, columns = open_parquet(path, ("image", "answer", "bbox"), "a RefCOCO mirror")
        split = path.name.split("-")[0]
        text_columns = [c for c in ("question_id", "answer", "bbox") if c in columns]
        offset = 0
        for group in range(handle.num_row_groups):
            rows = handle.read_row_group(group, columns=text_columns).to_pylist()
            for position, row in enumerate(rows):
                image = ParquetImage(str(path), "image", group, position)
                row_id = row.get("question_id") or f"{path.stem}:{offset + position}"
                expressions = [row["answer"]] if isinstance(row["answer"], str) else list(row["answer"] or [])
                for k, expression in enumerate(expressions):
                    samples.append(
                        Sample(
                            id=f"{row_id}:{k}",
                            question=referring_question(expression),
                            answers=box_answer(xywh_to_corners(row["bbox"])),
                            image=image,
                            category=split,
                            meta={"box": xywh_to_corners(row["bbox"]), "expression": expression},
                        )
                    )
            offset += len(rows)
    if not samples:
        raise DataError(f"{root}: the Parquet files hold no referring expressions")
    return check_unique(samples, root)


def load_grounding(root: Path) -> list[Sample]:
    """The generic JSON Lines grounding set (layout in the module docstring)."""
    path = find_files(root, ("*.jsonl",), "JSON Lines file (*.jsonl)")[0]
    samples = []
    for number, item in _lines(path):
        if "image" not in item or "query" not in item or not ({"bbox", "bbox_2d"} & set(item)):
            raise DataError(f"{path}:{number}: needs 'image', 'query' and 'bbox' [x, y, w, h] or 'bbox_2d'")
        corners = xywh_to_corners(item["bbox"]) if "bbox" in item else [float(v) for v in item["bbox_2d"]]
        samples.append(
            Sample(
                id=str(item.get("id", number)),
                question=referring_question(item["query"]),
                answers=box_answer(corners),
                image=_absolute(item["image"], path.parent),
                category=item.get("category"),
                meta={"box": corners, "expression": item["query"]},
            )
        )
    return check_unique(samples, path)


__all__ = ["load_refcoco", "load_grounding", "referring_question", "REFERRING_PROMPT"]
