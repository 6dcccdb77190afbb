"""MMBench-style multiple choice in its published TSV layout (OpenCompass MMBench, Liu et al. 2023;
also used by VLMEvalKit for SEED-Bench, AI2D, ScienceQA, ...).

    DIR/MMBench_DEV_EN.tsv   tab-separated, one header row; columns
        index, question, hint, A, B, C, D (E... when present), answer (letter), category,
        image (base64 JPEG/PNG), source, l2-category, comment, split
An `image` cell of at most 64 characters is the `index` of another row whose image it shares
(the compact form VLMEvalKit writes). Empty cells (or "nan") mean "absent".
"""

from __future__ import annotations

import base64
import binascii
import csv
import sys
from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, check_unique, find_files

OPTION_LETTERS = "ABCDEFGHI"
# MMBench's circular copies: the question of index i rotated k places has index i + k * 1e6
CIRCULAR_STRIDE = 1_000_000


def present(value) -> bool:
    return value is not None and str(value).strip() not in ("", "nan", "NaN", "None")


def choice_question(question: str, hint: str | None, options: dict[str, str]) -> str:
    """ "<hint>\n<question>\nA. <option>\nB. <option>..." (the layout of the Qwen-VL / LLaVA MMBench prompts)."""
    lines = [hint.strip()] if present(hint) else []
    lines.append(question.strip())
    lines += [f"{letter}. {text.strip()}" for letter, text in options.items()]
    return "\n".join(lines)


def circular_place(sample_id: str) -> dict:
    """{"circular_group", "rotation"} of an integer MMBench index; {} for other ids."""
    try:
        index = int(float(sample_id))
    except ValueError:
        return {}
    return {"circular_group": str(index % CIRCULAR_STRIDE), "rotation": index // CIRCULAR_STRIDE}


def main_questions(samples: list[Sample]) -> list[Sample]:
    """The samples that are not rotated copies (rotation 0 or none)."""
    return [s for s in samples if not s.meta.get("rotation")]


def choice_sample(row: dict, sample_id: str, image) -> Sample:
    options = {letter: str(row[letter]) for letter in OPTION_LETTERS if letter in row and present(row[letter])}
    if not options:
        raise DataError(f"multiple-choice sample {sample_id}: no options in columns A-D")
    return Sample(
        id=sample_id,
        question=choice_question(str(row["question"]), row.get("hint"), options),
        answers=[str(row.get("answer", "")).strip()],
        image=image,
        category=str(row["category"]) if present(row.get("category")) else None,
        meta={"options": options, **circular_place(sample_id)},
    )


def load_mmbench(root: Path) -> list[Sample]:
    path = find_files(root, ("*.tsv",), "MMBench TSV file (*.tsv)")[0]
    csv.field_size_limit(sys.maxsize)
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable TSV file ({err})") from None
    if rows and not {"index", "question", "answer", "image"} <= set(rows[0]):
        raise DataError(f"{path}: not an MMBench TSV (needs columns index, question, A.., answer, image)")
    images = {row["index"]: row["image"] for row in rows if len(row.get("image") or "") > 64}
    samples = []
    for row in rows:
        encoded = row.get("image") or ""
        if len(encoded) <= 64:
            encoded = images.get(encoded.strip(), "")
        try:
            image = base64.b64decode(encoded, validate=False) if encoded else b""
        except (binascii.Error, ValueError):
            image = b""  # fails at run time as an undecodable image, recorded with its reason
        samples.append(choice_sample(row, str(row["index"]), image))
    return check_unique(samples, path)
