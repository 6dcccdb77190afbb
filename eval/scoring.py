"""Metrics as scorers of samples and aggregators over a data set.

A scorer turns (prediction, sample) into one per-sample value; an aggregate turns the values of a
set into the reported number. Accuracy-type metrics are reported in percent; OCRBench as the
count of correct answers (the published total is out of 1000); CER/WER in percent, corpus level
(all edits / all reference units).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eval import metrics
from eval.datasets import Sample


@dataclass(frozen=True)
class Metric:
    name: str
    score: Callable[[str, Sample], float | list[int]]  # per-sample value
    aggregate: Callable[[list], float]  # values of a set -> reported number
    higher_is_better: bool = True


def _mean_percent(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def _corpus_rate_percent(values: list[list[int]]) -> float:
    edits = sum(v[0] for v in values)
    length = sum(v[1] for v in values)
    return 100.0 * metrics.error_rate(edits, length)


def _count(values: list[float]) -> float:
    return float(sum(values))


def _video_second(prediction: str, sample: Sample) -> float:
    """Synthetic video: "At N seconds." answers are scored by the ±1 s rule against event_second;
    other video answers ("To the right.") by exact match."""
    truth = metrics.parse_event_second(sample.answers[0]) if sample.answers else None
    if truth is None:
        return metrics.exact_match(prediction, sample.answers)
    return metrics.event_second_accuracy(prediction, float(sample.meta.get("event_second", truth)))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("vqa_accuracy", lambda p, s: metrics.vqa_accuracy(p, s.answers), _mean_percent),
        Metric("anls", lambda p, s: metrics.anls(p, s.answers), _mean_percent),
        Metric("relaxed_accuracy", lambda p, s: metrics.relaxed_accuracy(p, s.answers), _mean_percent),
        Metric(
            "ocrbench",
            lambda p, s: metrics.ocrbench_match(p, s.answers, s.meta.get("dataset_name", "")),
            _count,
        ),
        Metric(
            "choice_accuracy",
            lambda p, s: metrics.choice_accuracy(p, s.answers[0] if s.answers else "", s.meta["options"]),
            _mean_percent,
        ),
        Metric("exact_match", lambda p, s: metrics.exact_match(p, s.answers), _mean_percent),
        Metric("cer", lambda p, s: list(metrics.edit_errors(p, s.answers, "char")), _corpus_rate_percent, False),
        Metric("wer", lambda p, s: list(metrics.edit_errors(p, s.answers, "word")), _corpus_rate_percent, False),
        Metric("event_second_accuracy", _video_second, _mean_percent),
    ]
}


def failed_value(metric: Metric, sample: Sample) -> float | list[int]:
    """What a failed sample (no prediction) counts as: wrong for accuracies, an empty prediction
    (every reference unit deleted) for error rates."""
    if metric.name in ("cer", "wer"):
        return metric.score("", sample)
    return 0.0
