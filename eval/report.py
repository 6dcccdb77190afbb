"""Final scores of a run from its predictions: metrics JSON and a Markdown table."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from qwen_vl.eval import metrics as defs
from qwen_vl.eval.datasets import Sample
from qwen_vl.eval.scoring import METRICS, failed_value
from qwen_vl.eval.tasks import Task
from qwen_vl.fileio import atomic_write_text

MAX_LISTED_FAILURES = 50


def sample_values(metric_names: tuple[str, ...], sample: Sample, record: dict) -> dict:
    """Per-metric values of one sample from its prediction record (failed -> `failed_value`)."""
    if record.get("frame") is not None:  # grounding: the model's coordinate frame for this image
        sample = replace(sample, meta={**sample.meta, "frame": record["frame"]})
    values = {}
    for name in metric_names:
        metric = METRICS[name]
        if not metric.applies(sample):
            values[name] = None
        elif record.get("error") is not None or record.get("prediction") is None:
            values[name] = failed_value(metric, sample)
        else:
            values[name] = metric.score(record["prediction"], sample)
    return values


def score_run(task: Task, metric_names: tuple[str, ...], samples: list[Sample], records: list[dict]) -> dict:
    """Scores over `samples`; a sample without a record is reported as missing and not scored."""
    by_id = {str(r["id"]): r for r in records}
    values: dict[str, list] = defaultdict(list)
    by_category: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    failures, missing = {}, []
    for sample in samples:
        record = by_id.get(sample.id)
        if record is None:
            missing.append(sample.id)
            continue
        if record.get("error") is not None:
            failures[sample.id] = record["error"]
        for name, value in sample_values(metric_names, sample, record).items():
            values[name].append(value)
            if sample.category is not None:
                by_category[sample.category][name].append(value)
    scored = len(samples) - len(missing)
    result = {
        "task": task.name,
        "metrics": {name: aggregate(name, values[name]) for name in metric_names},
        "num_samples": len(samples),
        "num_scored": scored,
        "num_failed": len(failures),
        "num_missing": len(missing),
        "failures": dict(list(failures.items())[:MAX_LISTED_FAILURES]),
        "missing": missing[:MAX_LISTED_FAILURES],
    }
    if by_category:
        result["categories"] = {
            category: {
                "num_samples": len(next(iter(cat_values.values()))),
                **{name: aggregate(name, cat_values[name]) for name in metric_names},
            }
            for category, cat_values in sorted(by_category.items())
        }
    if "ocrbench" in metric_names and by_category:
        result["ocrbench"] = ocrbench_summary(result["categories"])
        result["ocrbench"]["sub_datasets"] = ocrbench_sub_datasets(samples, by_id)
    return result


def ocrbench_sub_datasets(samples: list[Sample], by_id: dict[str, dict]) -> dict:
    """Correct / total per source data set (IIIT5K, HME100k, ...), the breakdown the MultimodalOCR
    script prints for a partial run; a sample without a record counts in the total only."""
    counts: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for sample in samples:
        source = counts[sample.meta.get("dataset_name") or "unknown"]
        source[1] += 1
        record = by_id.get(sample.id)
        if record is not None:
            source[0] += sample_values(("ocrbench",), sample, record)["ocrbench"]
    return {name: {"correct": correct, "total": total} for name, (correct, total) in sorted(counts.items())}


def aggregate(name: str, values: list) -> float | None:
    """A metric over a set; None where it applies to none of the set's samples (event seconds of
    direction questions)."""
    if values and all(v is None for v in values):
        return None
    return METRICS[name].aggregate(values)


def ocrbench_summary(categories: dict) -> dict:
    """The published OCRBench breakdown: Text Recognition (six categories summed, out of 300), the
    four other groups, and the final score (the sum, out of 1000 on the full set)."""
    correct = {name: categories.get(name, {}).get("ocrbench", 0.0) for name in defs.OCRBENCH_CATEGORIES}
    text_recognition = sum(correct[name] for name in defs.OCRBENCH_TEXT_RECOGNITION)
    groups = {"Text Recognition": text_recognition}
    groups.update({name: correct[name] for name in list(defs.OCRBENCH_CATEGORIES)[6:]})
    return {"groups": groups, "final_score": sum(groups.values()), "out_of": defs.OCRBENCH_TOTAL}


def _number(value: float | None, name: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" if name == "ocrbench" else f"{value:.2f}"


def markdown(result: dict) -> str:
    names = list(result["metrics"])
    header = ["task", "samples", "failed", *[_label(n) for n in names]]
    row = [
        result["task"],
        str(result["num_samples"]),
        str(result["num_failed"]),
        *[_number(result["metrics"][n], n) for n in names],
    ]
    lines = [_table_row(header), _table_row(["---"] * len(header)), _table_row(row)]
    if result.get("categories"):
        lines += ["", _table_row(["category", "samples", *[_label(n) for n in names]])]
        lines.append(_table_row(["---"] * (2 + len(names))))
        for category, values in result["categories"].items():
            lines.append(_table_row([category, str(values["num_samples"]), *[_number(values[n], n) for n in names]]))
    if result.get("ocrbench"):
        summary = result["ocrbench"]
        lines += ["", _table_row(["OCRBench group", "correct"]), _table_row(["---", "---"])]
        lines += [_table_row([group, f"{value:.0f}"]) for group, value in summary["groups"].items()]
        lines.append(
            _table_row([f"Final score (of {summary['out_of']} on the full set)", f"{summary['final_score']:.0f}"])
        )
        if summary.get("sub_datasets"):
            lines += ["", _table_row(["OCRBench source", "correct", "total"]), _table_row(["---"] * 3)]
            for name, count in summary["sub_datasets"].items():
                lines.append(_table_row([name, f"{count['correct']:.0f}", str(count["total"])]))
    if result["num_failed"] or result["num_missing"]:
        lines += ["", f"{result['num_failed']} failed, {result['num_missing']} missing; see metrics.json."]
    return "\n".join(lines) + "\n"


def _label(name: str) -> str:
    return {"ocrbench": "ocrbench (correct)", "cer": "cer %", "wer": "wer %"}.get(name, f"{name} %")


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def write_report(out_dir: Path, result: dict) -> None:
    atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out_dir / "metrics.md", markdown(result))
