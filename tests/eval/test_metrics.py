"""Each metric on worked examples; expected values are computed by hand from the definitions."""

import math

import pytest

from qwen_vl.eval import metrics as m
from qwen_vl.eval.datasets import Sample
from qwen_vl.eval.report import markdown, ocrbench_summary, score_run
from qwen_vl.eval.scoring import METRICS, failed_value
from qwen_vl.eval.tasks import TASKS

# ---- VQA normalisation and accuracy -----------------------------------------------------------


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("Two", "2"),  # number word
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("eleven", "eleven"),  # only zero..ten are mapped
        ("The dog", "dog"),  # articles dropped
        ("an apple", "apple"),
        ("a", ""),
        ("yes.", "yes"),  # trailing period
        ("yes!", "yes"),  # trailing punctuation (replaced by a space, then split away)
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),  # comma between digits: punctuation deleted
        ("black/white", "black white"),  # punctuation not touching a space -> space
        ("red, blue", "red blue"),  # ", " touches a space -> deleted
        ("dont", "don't"),  # contraction restored
        ("Its  a\tcat\n", "its cat"),
        ("", ""),
    ],
)
def test_vqa_normalize(raw, normalised):
    assert m.vqa_normalize(raw) == normalised


@pytest.mark.parametrize(
    "humans_saying_dog, expected",
    [
        # leave-one-out: a "dog" reference sees k-1 other "dog"s, a "cat" reference sees k
        (0, 0.0),
        (1, (1 * 0 + 9 * (1 / 3)) / 10),  # 0.3
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        (3, (3 * (2 / 3) + 7 * 1) / 10),  # 0.9
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(humans_saying_dog, expected):
    answers = ["dog"] * humans_saying_dog + ["cat"] * (10 - humans_saying_dog)
    assert m.vqa_accuracy("The dog.", answers) == pytest.approx(expected)


def test_vqa_accuracy_normalises_both_sides():
    assert m.vqa_accuracy("two", ["2"] * 10) == 1.0
    assert m.vqa_accuracy("2", ["Two"] * 10) == 1.0
    assert m.vqa_accuracy("a dont", ["don't"] * 10) == 1.0
    assert m.vqa_accuracy("", ["yes"] * 10) == 0.0
    assert m.vqa_accuracy("yes", []) == 0.0
    assert m.vqa_accuracy("", [""] * 10) == 1.0
    assert m.vqa_accuracy("Yes", ["yes"]) == 1.0  # a single reference: exact match after normalising


# ---- ANLS --------------------------------------------------------------------------------------


def test_anls_threshold_edges():
    ref = "abcdefghijk"  # 11 characters
    five_wrong = "abcdefXXXXX"[:6] + "vwxyz"  # 5 substitutions: NL = 5/11, similarity 6/11 = 0.545
    six_wrong = "abcde" + "uvwxyz"  # 6 substitutions: NL = 6/11, similarity 5/11 = 0.4545 < 0.5
    assert m.levenshtein(ref, five_wrong) == 5 and m.levenshtein(ref, six_wrong) == 6
    assert m.anls(five_wrong, [ref]) == pytest.approx(6 / 11)  # just over the threshold: kept
    assert m.anls(six_wrong, [ref]) == 0.0  # just under: zero
    assert m.anls("abcdeVWXYZ", ["abcdefghij"]) == pytest.approx(0.5)  # exactly 0.5 is kept (RRC scorer)
    assert m.anls("abcdefWXYZ", ["abcdefghij"]) == pytest.approx(0.6)


def test_anls_case_whitespace_best_reference_and_empty():
    assert m.anls("  Hello   World ", ["hello world"]) == 1.0
    assert m.anls("hellp", ["xyz", "hello"]) == pytest.approx(0.8)  # best reference: 1 - 1/5
    assert m.anls("", [""]) == 1.0
    assert m.anls("", ["abc"]) == 0.0
    assert m.anls("abc", []) == 0.0


# ---- ChartQA relaxed accuracy --------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, answer, correct",
    [
        ("10.4", "10", True),  # 4% off
        ("10.5", "10", True),  # exactly 5%: within
        ("10.6", "10", False),  # 6% off
        ("-95", "-100", True),
        ("45%", "0.45", True),  # a percentage is x/100
        ("44%", "45%", True),  # |0.44 - 0.45| / 0.45 = 2.2%
        ("45%", "45", False),  # 0.45 vs 45
        ("0", "0", True),  # zero target: exact match
        ("0.0", "0", False),
        ("Yes", "yes", True),  # text: exact, case-insensitive
        ("Yes.", "yes", False),
        ("1,000", "1000", False),  # not a number as written: exact match fails
    ],
)
def test_relaxed_match(prediction, answer, correct):
    assert m.relaxed_match(prediction, answer) is correct


def test_relaxed_accuracy_any_reference():
    assert m.relaxed_accuracy("21", ["apple", "20"]) == 1.0
    assert m.relaxed_accuracy("22", ["apple", "20"]) == 0.0
    assert m.parse_number(" 12.5 % ") == pytest.approx(0.125)
    assert m.parse_number("nan") is None and m.parse_number("12a") is None


# ---- OCRBench -------------------------------------------------------------------------------------


def test_ocrbench_substring_rules():
    assert m.ocrbench_match("The text says HELLO world", ["hello"]) == 1.0
    assert m.ocrbench_match("The text says HELLO world", ["goodbye", "world"]) == 1.0
    assert m.ocrbench_match("hell", ["hello"]) == 0.0
    assert m.ocrbench_match("line one line two", "Line one\nline two") == 1.0  # a plain string answer
    # HME100k: spaces removed, case kept
    assert m.ocrbench_match("x ^ { 2 } + 1", ["x^{2}+1"], "HME100k") == 1.0
    assert m.ocrbench_match("X^{2}+1", ["x^{2}+1"], "HME100k") == 0.0
    assert m.ocrbench_match("X^{2}+1", ["x^{2}+1"], "IIIT5K") == 1.0


def test_ocrbench_categories_and_published_total():
    assert sum(m.OCRBENCH_CATEGORIES.values()) == 1000
    assert sum(m.OCRBENCH_CATEGORIES[c] for c in m.OCRBENCH_TEXT_RECOGNITION) == 300
    categories = {name: {"ocrbench": float(i + 1)} for i, name in enumerate(m.OCRBENCH_CATEGORIES)}
    summary = ocrbench_summary(categories)
    assert summary["groups"]["Text Recognition"] == 1 + 2 + 3 + 4 + 5 + 6
    assert summary["groups"]["Handwritten Mathematical Expression Recognition"] == 10
    assert summary["final_score"] == sum(range(1, 11)) and summary["out_of"] == 1000


# ---- multiple choice --------------------------------------------------------------------------------

OPTIONS = {"A": "cat", "B": "dog", "C": "red car", "D": "car"}


@pytest.mark.parametrize(
    "prediction, letter",
    [
        ("B", "B"),
        ("(C)", "C"),
        ("B.", "B"),
        (" [D] ", "D"),
        ("The answer is D.", "D"),
        ("Answer: (A)", "A"),
        ("I pick option B because it barks", "B"),
        ("C) red car", "C"),
        ("A dog.", "B"),  # "A" here is an article; the option text decides
        ("I think it's the red car", "C"),  # "car" lies inside the matching "red car"
        ("cat or dog", None),  # two options named: no answer
        ("E", None),  # not a candidate
        ("", None),
    ],
)
def test_extract_choice(prediction, letter):
    assert m.extract_choice(prediction, OPTIONS) == letter


def test_choice_accuracy():
    assert m.choice_accuracy("The answer is (b)", "B", OPTIONS) == 1.0
    assert m.choice_accuracy("B", "C", OPTIONS) == 0.0


# ---- exact match, CER, WER, event seconds --------------------------------------------------------------


def test_exact_match():
    assert m.exact_match("Hello  World.", ["hello world"]) == 1.0
    assert m.exact_match("hello", ["hello world"]) == 0.0
    assert m.exact_match("", [""]) == 1.0
    assert m.exact_match("x", []) == 0.0


def test_edit_distance_error_rates():
    assert m.levenshtein("kitten", "sitting") == 3
    assert m.levenshtein("", "abc") == 3
    assert m.cer("kitten", ["sitting"]) == pytest.approx(3 / 7)
    assert m.wer("the cat sat", ["the cat sat down"]) == pytest.approx(1 / 4)
    assert m.wer("a b c", ["x y z w", "a b d"]) == pytest.approx(1 / 3)  # closest reference
    assert m.error_rate(0, 0) == 0.0 and m.error_rate(2, 0) == 1.0
    # corpus level: all edits over all reference words, (1 + 0) / (4 + 6)
    wer = METRICS["wer"]
    assert wer.aggregate([[1, 4], [0, 6]]) == pytest.approx(10.0)
    sample = Sample(id="1", question="", answers=["one two three"])
    assert failed_value(wer, sample) == [3, 3]  # a failed sample: every reference word deleted
    words = METRICS["word_accuracy"]  # the OCR target: 100 - corpus WER, never below 0
    assert words.score("one two four", sample) == [1, 3]
    assert words.aggregate([[1, 4], [0, 6]]) == pytest.approx(90.0)
    assert words.aggregate([[9, 3]]) == 0.0 and failed_value(words, sample) == [3, 3]


def test_event_second():
    assert m.parse_event_second("At 4 seconds.") == 4
    assert m.parse_event_second("at 2.5 s") == 2.5
    assert m.parse_event_second("4 seconds") is None
    assert m.event_second_accuracy("At 5 seconds.", 4) == 1.0
    assert m.event_second_accuracy("At 3 seconds.", 4) == 1.0
    assert m.event_second_accuracy("At 6 seconds.", 4) == 0.0
    assert m.event_second_accuracy("soon", 4) == 0.0
    when = Sample("v", "", ["At 8 seconds."], meta={"event_second": 8})
    direction = Sample("d", "", ["To the right."], meta={"event_second": 3})
    seconds, answers = METRICS["event_second_accuracy"], METRICS["video_accuracy"]
    assert seconds.applies(when) and seconds.score("At 7 seconds.", when) == 1.0
    assert not seconds.applies(direction)  # no second to be within 1 s of
    assert answers.score("At 7 seconds.", when) == 1.0 and answers.score("At 5 seconds.", when) == 0.0
    assert answers.score("To the right.", direction) == 1.0 and answers.score("Up.", direction) == 0.0


def test_a_metric_skips_the_samples_it_does_not_apply_to_and_is_none_where_it_applies_to_none():
    task = TASKS["synthetic-video"]
    samples = [
        Sample("w", "", ["At 2 seconds."], category="appear", meta={"event_second": 2}),
        Sample("d", "", ["To the left."], category="direction", meta={"event_second": 4}),
        Sample("x", "", ["At 6 seconds."], category="appear", meta={"event_second": 6}),
    ]
    records = [{"id": "w", "prediction": "At 3 seconds."}, {"id": "d", "prediction": "To the left."}]
    records.append({"id": "x", "prediction": None, "error": "decode failed"})
    result = score_run(task, task.metrics, samples, records)
    assert result["metrics"] == {"event_second_accuracy": 50.0, "video_accuracy": pytest.approx(200 / 3)}
    assert result["categories"]["direction"] == {
        "num_samples": 1,
        "event_second_accuracy": None,
        "video_accuracy": 100.0,
    }
    assert "| direction | 1 | n/a | 100.00 |" in markdown(result)


def test_mean_aggregate_in_percent():
    assert METRICS["anls"].aggregate([1.0, 0.5, 0.0, 0.6]) == pytest.approx(52.5)
    assert METRICS["ocrbench"].aggregate([1.0, 0.0, 1.0]) == 2.0
    assert math.isclose(METRICS["exact_match"].aggregate([]), 0.0)
