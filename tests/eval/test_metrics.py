"""Each metric on worked examples; expected values are computed by hand from the definitions."""

import math

import pytest

from qwen_vl.eval import metrics as m
from qwen_vl.eval.datasets import Sample
from qwen_vl.eval.report import markdown, ocrbench_summary, score_run
from qwen_vl.eval.scoring import METRICS, failed_value
from qwen_vl.eval.tasks import TASKS

# ---- VQA accuracy: vqaEval.py, lmms-eval's variant, TextVQA's evaluator -----------------------


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
        ("1,,000", "1 000"),  # two commas are not "a comma between digits": each becomes a space
        ("black/white", "black white"),  # punctuation not touching a space -> space
        ("red, blue", "red blue"),  # ", " touches a space -> deleted
        ("dont", "don't"),  # contraction restored
        ("Its  a\tcat\n", "its cat"),
        ("", ""),
    ],
)
def test_vqa_normalize(raw, normalised):
    assert m.vqa_normalize(raw) == normalised


def test_vqa_punctuation_removes_at_most_32_periods():
    # vqaEval.py passes re.UNICODE (32) as re.sub's count
    assert m.vqa_punctuation("." * 40) == "." * 8
    assert m.vqa_punctuation("a." * 33) == "a" * 32 + "a."


@pytest.mark.parametrize(
    "humans_saying_dog, expected",
    [
        # leave-one-out: a "dog" reference sees k-1 other "dog"s, a "cat" reference sees k
        (0, 0.0),
        (1, (1 * 0 + 9 * (1 / 3)) / 10),  # 0.3
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        (3, (3 * (2 / 3) + 7 * 1) / 10),  # 0.9
        (4, 1.0),
        (9, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(humans_saying_dog, expected):
    answers = ["dog"] * humans_saying_dog + ["cat"] * (10 - humans_saying_dog)
    assert m.vqa_accuracy("The dog.", answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    "prediction, answers, official, lmms, textvqa",
    [
        # vqaEval.py normalises only when the ten answers are not all the same
        ("Yes", ["yes"] * 10, 0.0, 1.0, 1.0),
        ("yes.", ["yes"] * 10, 0.0, 1.0, 1.0),
        ("two", ["2"] * 10, 0.0, 1.0, 1.0),
        ("The dog.", ["dog"] * 10, 0.0, 1.0, 1.0),
        (" yes\n", ["yes"] * 10, 1.0, 1.0, 1.0),  # newlines and the ends are cleaned always
        ("yes", ["yes"] * 10, 1.0, 1.0, 1.0),
        ("Yes", ["yes"] * 9 + ["no"], 1.0, 1.0, 1.0),  # answers differ: normalised
        ("two", ["2"] * 3 + ["3"] * 7, 0.9, 0.9, 0.9),
        # TextVQA's processor lower-cases first, drops "?" and ",", splits "'s" off
        ("John's", ["john's"] * 10, 0.0, 1.0, 1.0),
        ("john's", ["john 's"] * 9 + ["x"], 0.0, 0.0, 1.0),
        ("why?", ["why"] * 9 + ["x"], 1.0, 1.0, 1.0),
        ("1,,000", ["1000"] * 9 + ["x"], 0.0, 1.0, 1.0),  # the EvalAI digit-comma test allows ",,"
        ("", ["yes"] * 10, 0.0, 0.0, 0.0),
        ("", [""] * 10, 1.0, 1.0, 1.0),
    ],
)
def test_vqa_accuracy_variants(prediction, answers, official, lmms, textvqa):
    assert m.vqa_accuracy(prediction, answers) == pytest.approx(official)
    assert m.vqa_accuracy_lmms(prediction, answers) == pytest.approx(lmms)
    assert m.textvqa_accuracy(prediction, answers) == pytest.approx(textvqa)


def test_vqa_accuracy_edges():
    assert m.vqa_accuracy("yes", []) == 0.0
    assert m.vqa_accuracy("Yes", ["yes"]) == 0.0  # one answer: exact match of the cleaned strings
    assert m.vqa_accuracy(" yes ", ["yes"]) == 1.0
    assert m.evalai_normalize("What's the Coca-Cola, sign?") == "what 's coca cola sign"


# ---- ANLS (the RRC scorer) --------------------------------------------------------------------------


def test_anls_threshold_edges():
    ref = "abcdefghijk"  # 11 characters
    five_wrong = "abcdefXXXXX"[:6] + "vwxyz"  # 5 substitutions: NL = 5/11, similarity 6/11 = 0.545
    six_wrong = "abcde" + "uvwxyz"  # 6 substitutions: NL = 6/11, similarity 5/11 = 0.4545 < 0.5
    assert m.levenshtein(ref, five_wrong) == 5 and m.levenshtein(ref, six_wrong) == 6
    assert m.anls(five_wrong, [ref]) == pytest.approx(6 / 11)  # just over the threshold: kept
    assert m.anls(six_wrong, [ref]) == 0.0  # just under: zero
    assert m.anls("abcdeVWXYZ", ["abcdefghij"]) == pytest.approx(0.5)  # exactly 0.5 is kept
    assert m.anls("abcdefWXYZ", ["abcdefghij"]) == pytest.approx(0.6)


def test_anls_divides_by_the_raw_lengths():
    # the distance is taken on stripped, lower-cased, collapsed strings ...
    assert m.anls("  Hello   World ", ["hello world"]) == 1.0
    # ... but divided by the longer raw string: "  abcd  " is 8 long, 1 edit -> 1 - 1/8
    assert m.anls("abcd", ["abce"]) == pytest.approx(0.75)
    assert m.anls("  abcd  ", ["abce"]) == pytest.approx(0.875)
    assert m.anls("Hello  World", ["hello world!"]) == pytest.approx(1 - 1 / 12)
    # upper-casing "ß" gives "SS": lengths 2 and 1, one edit -> 0.5, kept
    assert m.anls("ß", ["s"]) == pytest.approx(0.5)


def test_anls_best_reference_and_empty():
    assert m.anls("hellp", ["xyz", "hello"]) == pytest.approx(0.8)  # best reference: 1 - 1/5
    assert m.anls("", [""]) == 1.0
    assert m.anls("", ["abc"]) == 0.0
    assert m.anls("abc", []) == 0.0


# ---- ChartQA relaxed accuracy (pix2struct's relaxed_correctness) -------------------------------------


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
        ("12 %", "0.12", True),  # float() reads "12 "
        ("0", "0", True),  # zero target: the strings decide
        ("0.0", "0", False),
        ("1e1", "10", True),  # float() reads exponents ...
        ("1_000", "1000", True),  # ... and digit underscores
        ("1,000", "1000", False),  # not a float: exact match fails
        ("nan", "nan", False),  # NaN compares false
        ("Yes", "yes", True),  # text: equal after lower-casing
        ("Yes.", "yes", False),
        ("yes ", "yes", False),  # nothing stripped inside the rule
    ],
)
def test_relaxed_match(prediction, answer, correct):
    assert m.relaxed_match(prediction, answer) is correct


def test_relaxed_accuracy_any_reference_stripped_prediction():
    assert m.relaxed_accuracy("21", ["apple", "20"]) == 1.0
    assert m.relaxed_accuracy("22", ["apple", "20"]) == 0.0
    assert m.relaxed_accuracy(" yes\n", ["yes"]) == 1.0
    assert m.parse_number("12.5%") == pytest.approx(0.125)
    assert m.parse_number(" 12.5 % ") is None and m.parse_number("12a") is None


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


# ---- multiple choice (the extractor's table is in test_choice.py) ----------------------------------------

OPTIONS = {"A": "cat", "B": "dog", "C": "red car", "D": "car"}


def test_choice_accuracy():
    assert m.choice_accuracy("The answer is (b)", "B", OPTIONS) == 1.0
    assert m.choice_accuracy("B", "C", OPTIONS) == 0.0
    assert m.choice_accuracy("B and C", "C", OPTIONS) == 0.0  # refused, scored wrong


def test_circular_accuracy_needs_every_rotation():
    circular = METRICS["circular_accuracy"]
    rotations = [Sample(str(i + k * 1_000_000), "", ["B"], meta={"options": OPTIONS, "circular_group": str(i)})
                 for i in (1, 2) for k in range(4)]  # fmt: skip
    values = [circular.score("B", s) for s in rotations]
    assert circular.aggregate(values) == 100.0
    values[5] = circular.score("C", rotations[5])  # one rotation of question 2 wrong
    assert circular.aggregate(values) == 50.0
    values[0] = failed_value(circular, rotations[0])
    assert values[0] == ["1", 0.0] and circular.aggregate(values) == 0.0


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


# ---- MMMU open answers (the rules of MMMU's eval_utils.py) ----------------------------------------------


@pytest.mark.parametrize(
    "prediction, answers, correct",
    [
        ("So the result is 3.14159", ["3.14"], True),  # numbers compare rounded to 2 decimals
        ("12", ["12.001"], True),
        ("x = 12.50", ["12.5"], True),  # "=" marks the answer on the last line
        ("It is a rhombus.", ["square", "rhombus"], True),  # the answer text inside the tail after "is "
        ("It is blue.\nSo the answer is Blue", ["blue"], True),
        ("a", ["a"], True),  # one character: matched with a space on one side
        ("banana", ["a"], False),  # ... so not inside a word
        ("The answer is 1,234.5 dollars", ["1234.5"], False),  # read as 1,234 and 234.5
        ("The answer is 1,234 dollars", ["1234"], True),
        ("It is a circle", ["square"], False),
    ],
)
def test_mmmu_open_match(prediction, answers, correct):
    assert m.mmmu_open_match(prediction, answers) == float(correct)


# ---- MathVista (calculate_score.py's normalisation; rules instead of its GPT-4 extraction) --------------

CHOICES = {"question_type": "multi_choice", "answer_type": "text", "choices": ["3", "4", "5"], "precision": None}
INTEGER = {"question_type": "free_form", "answer_type": "integer", "choices": [], "precision": None}
FLOAT = {"question_type": "free_form", "answer_type": "float", "choices": [], "precision": 2.0}
LIST = {"question_type": "free_form", "answer_type": "list", "choices": [], "precision": None}


@pytest.mark.parametrize(
    "prediction, answer, meta, correct",
    [
        ("4", "4", CHOICES, True),  # the response is a choice
        ("The answer is (B).", "4", CHOICES, True),  # a letter names its choice
        ("**B**", "4", CHOICES, True),
        ("B and C", "4", CHOICES, False),  # refused by the extractor, then the nearest choice: "3"
        ("I think it is four", "4", CHOICES, False),  # no letter, no choice text: nearest choice, "3"
        ("", "3", CHOICES, True),  # empty: every choice is 1 edit away, the first wins
        ("12", "12", INTEGER, True),
        ("12.0", "12", INTEGER, True),  # str(int(float(x)))
        ("There are 12 apples, so the answer is 12.", "12", INTEGER, True),
        ("x = 3 + 9 = 12", "12", INTEGER, True),  # the number after the last "="
        ("Answer: 1,200", "1200", INTEGER, True),
        ("twelve", "12", INTEGER, False),
        ("3.14159", "3.14", FLOAT, True),  # rounded to the answer's precision
        ("The answer is 3.1.", "3.14", FLOAT, False),
        ('The answer is "3.14".', "3.14", FLOAT, True),  # the script's quick rule
        ("The list is [1, 2, 3].", "[1, 2, 3]", LIST, True),
        ("1, 2, 3", "[1, 2, 3]", LIST, False),
    ],
)
def test_mathvista_match(prediction, answer, meta, correct):
    assert m.mathvista_match(prediction, answer, meta) == float(correct)
