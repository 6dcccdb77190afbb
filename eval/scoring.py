"""Metrics as scorers of samples and aggregators over a data set.

A scorer turns (prediction, sample) into one per-sample value; an aggregate turns the values of a
set into the reported number. Accuracy-type metrics are reported in percent; OCRBench as the
count of correct answers (the published total is out of 1000); CER/WER in percent, corpus level
(all edits / all reference units), and OCR word accuracy as 100 - WER. MMBench's circular
accuracy keeps [question group, hit] per sample and counts a group only when all its hits are 1.
Boxes matched keeps [matched, true] boxes per sample and reports all matched over all true boxes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qwen_vl.eval import metrics
from qwen_vl.eval.datasets import Sample


@dataclass(frozen=True)
class Metric:
    name: str
    score: Callable[[str, Sample], float | list[int]]  # per-sample value
    aggregate: Callable[[list], float]  # values of a set -> reported number
    higher_is_better: bool = True
    applies: Callable[[Sample], bool] = lambda sample: True  # samples it does not apply to count as None


def _scored(values: list) -> list:
    return [v for v in values if v is not None]


def _mean_percent(values: list[float | None]) -> float:
    values = _scored(values)
    return 100.0 * sum(values) / len(values) if values else 0.0


def _corpus_rate_percent(values: list[list[int] | None]) -> float:
    values = _scored(values)
    edits = sum(v[0] for v in values)
    length = sum(v[1] for v in values)
    return 100.0 * metrics.error_rate(edits, length)


def _char_edits(prediction: str, sample: Sample) -> list[int]:
    return list(metrics.edit_errors(prediction, sample.answers, "char"))


def _word_edits(prediction: str, sample: Sample) -> list[int]:
    return list(metrics.edit_errors(prediction, sample.answers, "word"))


def _word_accuracy_percent(values: list[list[int] | None]) -> float:
    """OCR word accuracy: 100 - corpus WER, floored at 0 (insertions can push WER past 100)."""
    return max(0.0, 100.0 - _corpus_rate_percent(values))


def _count(values: list[float | None]) -> float:
    return float(sum(_scored(values)))


def _reference_second(sample: Sample) -> float | None:
    """The event second a synthetic video answer ("At N seconds.") names; None for other answers."""
    truth = metrics.parse_event_second(sample.answers[0]) if sample.answers else None
    return None if truth is None else float(sample.meta.get("event_second", truth))


def _video_answer(prediction: str, sample: Sample) -> float:
    """Synthetic video, every question: "At N seconds." answers by the ±1 s rule, the others ("To the
    right.") by exact match."""
    truth = _reference_second(sample)
    if truth is None:
        return metrics.exact_match(prediction, sample.answers)
    return metrics.event_second_accuracy(prediction, truth)


def _choice_hit(prediction: str, sample: Sample) -> float:
    return metrics.choice_accuracy(prediction, sample.answers[0] if sample.answers else "", sample.meta["options"])


def _circular_hit(prediction: str, sample: Sample) -> list:
    """[question group, 1.0 or 0.0]: a rotated copy counts toward its main question's group."""
    return [sample.meta.get("circular_group", sample.id), _choice_hit(prediction, sample)]


def _circular_percent(values: list[list | None]) -> float:
    """MMBench's circular protocol (VLMEvalKit): a question counts as right only when every one of
    its rotations is right; percent of questions."""
    groups: dict[str, bool] = {}
    for group, hit in _scored(values):
        groups[group] = groups.get(group, True) and hit == 1.0
    return 100.0 * sum(groups.values()) / len(groups) if groups else 0.0


def _mmmu_hit(prediction: str, sample: Sample) -> float:
    """MMMU: multiple choice by the letter extractor, open questions by MMMU's open-answer rules."""
    if sample.meta.get("question_type") == "multiple-choice":
        return _choice_hit(prediction, sample)
    return metrics.mmmu_open_match(prediction, sample.answers)


def _grounding_hit(prediction: str, sample: Sample) -> float:
    """RefCOCO-style accuracy; the sample's frame (how the model's coordinates map to its image)
    comes from the run's record, written when the answer was made."""
    from qwen_vl.grounding import Frame

    frame = sample.meta.get("frame")
    return metrics.grounding_hit(prediction, sample.meta["box"], Frame(**frame)) if frame else 0.0


def _boxes_matched(prediction: str, sample: Sample) -> list[int]:
    """[matched, true] boxes of an every-object answer (metrics.boxes_matched), in the frame of the
    run's record (else the one the data set gives)."""
    from qwen_vl.grounding import Frame

    frame, references = sample.meta.get("frame"), sample.meta["boxes"]
    if not frame:
        return [0, len(references)]
    return list(metrics.boxes_matched(prediction, references, Frame(**frame)))


def _matched_percent(values: list[list[int] | None]) -> float:
    """All matched boxes over all true boxes, in percent."""
    values = _scored(values)
    true = sum(v[1] for v in values)
    return 100.0 * sum(v[0] for v in values) / true if true else 0.0


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("vqa_accuracy", lambda p, s: metrics.vqa_accuracy(p, s.answers), _mean_percent),
        Metric("vqa_accuracy_lmms", lambda p, s: metrics.vqa_accuracy_lmms(p, s.answers), _mean_percent),
        Metric("textvqa_accuracy", lambda p, s: metrics.textvqa_accuracy(p, s.answers), _mean_percent),
        Metric("anls", lambda p, s: metrics.anls(p, s.answers), _mean_percent),
        Metric("relaxed_accuracy", lambda p, s: metrics.relaxed_accuracy(p, s.answers), _mean_percent),
        Metric(
            "ocrbench",
            lambda p, s: metrics.ocrbench_match(p, s.answers, s.meta.get("dataset_name", "")),
            _count,
        ),
        Metric("choice_accuracy", _choice_hit, _mean_percent),
        Metric("circular_accuracy", _circular_hit, _circular_percent),
        Metric("mmmu_accuracy", _mmmu_hit, _mean_percent),
        Metric(
            "mathvista_accuracy",
            lambda p, s: metrics.mathvista_match(p, s.answers[0] if s.answers else "", s.meta),
            _mean_percent,
            applies=lambda s: "answer_type" in s.meta,
        ),
        Metric("exact_match", lambda p, s: metrics.exact_match(p, s.answers), _mean_percent),
        Metric("cer", _char_edits, _corpus_rate_percent, False),
        Metric("wer", _word_edits, _corpus_rate_percent, False),
        Metric("word_accuracy", _word_edits, _word_accuracy_percent),
        # the temporal grounding: only the questions answered with a second ("When does ...?")
        Metric(
            "event_second_accuracy",
            lambda p, s: metrics.event_second_accuracy(p, _reference_second(s)),
            _mean_percent,
            applies=lambda s: _reference_second(s) is not None,
        ),
        Metric("video_accuracy", _video_answer, _mean_percent),
        Metric("grounding_accuracy", _grounding_hit, _mean_percent, applies=lambda s: "box" in s.meta),
        # every object of a picture (synthetic-ground's "every" prompts): boxes matched at IoU >= 0.5
        Metric("boxes_matched", _boxes_matched, _matched_percent, applies=lambda s: "boxes" in s.meta),
    ]
}


def failed_value(metric: Metric, sample: Sample) -> float | list[int]:
    """What a failed sample (no prediction) counts as: wrong for accuracies, an empty prediction
    (every reference unit deleted, no box found) for error rates and boxes matched."""
    if metric.score in (_char_edits, _word_edits, _boxes_matched):
        return metric.score("", sample)
    if metric.score is _circular_hit:
        return [sample.meta.get("circular_group", sample.id), 0.0]
    return 0.0
