"""Video-MME in the layout of its Hugging Face release (lmms-lab/Video-MME; Fu et al. 2024).

    DIR/videomme/test-0000N-of-0000M.parquet   (any folder depth)
        video_id ("001"), duration ("short" / "medium" / "long"), domain, sub_category, url,
        videoID (the YouTube id), question_id ("001-1"), task_type, question,
        options (["A. ...", "B. ...", "C. ...", "D. ..."]), answer (a letter)
    DIR/data/<videoID>.mp4   (the unzipped videos_chunked_*.zip; also videos/ or DIR itself)

The prompt is the one of Video-MME's README (without subtitles): the instruction, the question,
the four options as published, "The best answer is:". Frames are sampled as the processor does
for any video (2 per second, at most 768: the setting Qwen2.5-VL reports Video-MME with). The
report breaks the accuracy down by duration, Video-MME's headline split.
"""

from __future__ import annotations

import re
from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, check_unique, find_files, resolve_media

VIDEOMME_INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)
VIDEOMME_ANSWER_CUE = "The best answer is:"
_OPTION_PREFIX = re.compile(r"^\s*([A-Z])[.)]\s*")


def option_texts(options: list[str]) -> dict[str, str]:
    """{"A": text, ...} from the published "A. text" strings (a missing prefix takes its position)."""
    texts = {}
    for position, option in enumerate(options):
        prefix = _OPTION_PREFIX.match(option)
        letter = prefix.group(1) if prefix else chr(ord("A") + position)
        texts[letter] = option[prefix.end() :] if prefix else option
    return texts


def load_videomme(root: Path) -> list[Sample]:
    import pyarrow.parquet as pq

    files = find_files(root, ("*.parquet",), "Video-MME Parquet file (*.parquet)")
    samples = []
    for path in files:
        table = pq.read_table(path)
        missing = {"videoID", "question_id", "question", "options", "answer", "duration"} - set(table.column_names)
        if missing:
            raise DataError(f"{path}: not a Video-MME file (no column {', '.join(sorted(missing))})")
        base = path.parent
        roots = [folder / "data" for folder in (base, base.parent)] + [base / "videos", base.parent / "videos", base]
        for row in table.to_pylist():
            options = [str(option) for option in row["options"]]
            samples.append(
                Sample(
                    id=str(row["question_id"]),
                    question="\n".join([VIDEOMME_INSTRUCTION, str(row["question"]), *options, VIDEOMME_ANSWER_CUE]),
                    answers=[str(row["answer"]).strip()],
                    video=resolve_media(f"{row['videoID']}.mp4", roots),
                    category=str(row["duration"]),
                    meta={"options": option_texts(options), "task_type": row.get("task_type")},
                )
            )
    return check_unique(samples, root)
