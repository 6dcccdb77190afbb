"""ChartQA in its published layout (github.com/vis-nlp/ChartQA, Masry et al. 2022).

    DIR/test_human.json, DIR/test_augmented.json    [{"imgname": "<name>.png", "query": "...",
                                                      "label": "..."}, ...]
    DIR/png/<name>.png
(DIR is the split folder, e.g. "ChartQA Dataset/test".) The published score is the relaxed
accuracy over both files; the report also breaks it down by file ("human", "augmented").
Samples carry no id in the files: the id is "<file stem>:<position>".
"""

from __future__ import annotations

from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, as_answers, check_unique, find_files, read_json, resolve_media


def load_chartqa(root: Path) -> list[Sample]:
    files = find_files(root, ("*_human.json", "*_augmented.json"), "ChartQA file (*_human.json / *_augmented.json)")
    samples = []
    for path in files:
        items = read_json(path)
        if not isinstance(items, list):
            raise DataError(f"{path}: not a ChartQA file (expected a list of {{imgname, query, label}})")
        category = path.stem.split("_")[-1]
        roots = [path.parent / "png", path.parent]
        for position, item in enumerate(items):
            samples.append(
                Sample(
                    id=f"{path.stem}:{position}",
                    question=item["query"],
                    answers=as_answers(item["label"]),
                    image=resolve_media(item["imgname"], roots),
                    category=category,
                )
            )
    return check_unique(samples, root)
