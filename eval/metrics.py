"""Benchmark metrics, each defined in one place, as published.

Every function scores one prediction (a string) against its reference answers and returns a
float in [0, 1] (or edit counts for the error rates); averaging over a data set happens in
`eval.scoring`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# ---- edit distance --------------------------------------------------------------------------


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Fewest insertions, deletions and substitutions turning `a` into `b` (strings or token lists)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, item_a in enumerate(a, 1):
        current = [i]
        for j, item_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item_a != item_b)))
        previous = current
    return previous[-1]


# ---- VQA accuracy ---------------------------------------------------------------------------
# The answer normalisation of the official VQA evaluation (vqaEval.py of the VQA API,
# Antol et al. 2015 / Goyal et al. 2017, also run by the EvalAI servers for VQAv2 and TextVQA):
# punctuation, periods, number words, articles, contractions.

VQA_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
VQA_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
VQA_ARTICLES = ("a", "an", "the")
# Apostrophe-less spellings -> the contraction. Keys with a capital "I" never match (the text
# is lower-cased first); they are kept because the official table holds them.
VQA_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")


def vqa_normalize(answer: str) -> str:
    """The official VQA answer normalisation.

    1. newlines/tabs -> spaces, strip.
    2. Punctuation: each mark of VQA_PUNCTUATION is deleted where it touches a space in the text
       (or the text holds a comma between digits, "1,000"), else replaced by a space ("yes!" ->
       "yes ", "black/white" -> "black white"). A period not followed by a digit is deleted
       ("dog." -> "dog", "3.5" stays).
    3. Lower-case, split on whitespace, number words zero..ten (and "none") -> digits, drop the
       articles a/an/the, restore contractions ("dont" -> "don't"), join with single spaces.
    """
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    delete_all = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for mark in VQA_PUNCTUATION:
        if delete_all or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    out = _PERIOD_NOT_BEFORE_DIGIT.sub("", out)
    words = [VQA_NUMBER_WORDS.get(word, word) for word in out.lower().split()]
    words = [VQA_CONTRACTIONS.get(word, word) for word in words if word not in VQA_ARTICLES]
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy (Antol et al. 2015; official evaluation): min(#humans who gave the answer / 3, 1),
    averaged over the leave-one-out subsets of the (ten) human answers.

    For each reference i: acc_i = min(1, |{j != i : answers[j] == prediction}| / 3), all strings
    normalised with `vqa_normalize`; the result is mean_i acc_i. A single reference cannot be
    left out, so with one answer the result is exact match of the normalised strings."""
    if not answers:
        return 0.0
    predicted = vqa_normalize(prediction)
    references = [vqa_normalize(a) for a in answers]
    if len(references) == 1:
        return float(predicted == references[0])
    matches = sum(ref == predicted for ref in references)
    total = 0.0
    for ref in references:
        others_matching = matches - (ref == predicted)
        total += min(1.0, others_matching / 3)
    return total / len(references)


# ---- ANLS -----------------------------------------------------------------------------------
ANLS_THRESHOLD = 0.5


def _anls_text(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """Average Normalized Levenshtein Similarity for one question (Biten et al., ICCV 2019, ST-VQA;
    the DocVQA / InfographicVQA metric).

    NL(a, p) = levenshtein(a, p) / max(|a|, |p|) (0 when both are empty), on lower-cased,
    whitespace-collapsed strings. The score is s = max over references of 1 - NL, set to 0 when
    s < threshold (0.5). This is the rule of the official RRC scorer: a similarity of exactly 0.5
    is kept (the paper writes the cut as NL >= 0.5 -> 0; the two differ only at equality)."""
    predicted = _anls_text(prediction)
    best = 0.0
    for answer in answers:
        reference = _anls_text(answer)
        length = max(len(reference), len(predicted))
        distance = 0.0 if length == 0 else levenshtein(reference, predicted) / length
        best = max(best, 1.0 - distance)
    return best if best >= threshold else 0.0


# ---- ChartQA relaxed accuracy ---------------------------------------------------------------
RELAXED_TOLERANCE = 0.05
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_number(text: str) -> float | None:
    """A number written alone ("12", "-3.5", "1e3"), or a percentage "45%" -> 0.45; else None."""
    text = text.strip()
    percent = text.endswith("%")
    if percent:
        text = text[:-1].strip()
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value / 100 if percent else value


def relaxed_match(prediction: str, answer: str, tolerance: float = RELAXED_TOLERANCE) -> bool:
    """Relaxed correctness (Methani et al. 2020, used by ChartQA, Masry et al. 2022): when both are
    numbers and the answer is non-zero, correct if |p - a| / |a| <= 5%; otherwise exact match
    (case-insensitive, surrounding spaces ignored). "x%" means x/100, so "45%" matches "0.45"
    (and not "45"), as in the reference implementation (pix2struct / Qwen-VL evaluate_vqa)."""
    predicted, target = parse_number(prediction), parse_number(answer)
    if predicted is not None and target:
        return abs(predicted - target) / abs(target) <= tolerance
    return prediction.strip().lower() == answer.strip().lower()


def relaxed_accuracy(prediction: str, answers: Sequence[str], tolerance: float = RELAXED_TOLERANCE) -> float:
    """1.0 if the prediction is relaxed-correct for any reference answer."""
    return float(any(relaxed_match(prediction, a, tolerance) for a in answers))


# ---- OCRBench -------------------------------------------------------------------------------
# OCRBench v1 (Liu et al. 2023, "On the Hidden Mystery of OCR in Large Multimodal Models"):
# 1000 questions in ten categories; the final score is the number answered correctly.
OCRBENCH_CATEGORIES = {
    "Regular Text Recognition": 50,
    "Irregular Text Recognition": 50,
    "Artistic Text Recognition": 50,
    "Handwriting Recognition": 50,
    "Digit String Recognition": 50,
    "Non-Semantic Text Recognition": 50,
    "Scene Text-centric VQA": 200,
    "Doc-oriented VQA": 200,
    "Key Information Extraction": 200,
    "Handwritten Mathematical Expression Recognition": 100,
}
OCRBENCH_TEXT_RECOGNITION = tuple(list(OCRBENCH_CATEGORIES)[:6])  # summed into "Text Recognition" (300)
OCRBENCH_TOTAL = 1000


def ocrbench_match(prediction: str, answers: Sequence[str] | str, dataset_name: str = "") -> float:
    """OCRBench's rule (MultimodalOCR evaluation scripts): correct if any reference answer is a
    substring of the prediction after normalisation. HME100k (handwritten formulas): strip,
    newlines -> spaces, then all spaces removed, case kept. Every other source: lower-case,
    strip, newlines -> spaces."""
    answers = [answers] if isinstance(answers, str) else list(answers)

    def normalize(text: str) -> str:
        if dataset_name == "HME100k":
            return text.strip().replace("\n", " ").replace(" ", "")
        return text.lower().strip().replace("\n", " ")

    predicted = normalize(prediction)
    return float(any(normalize(a) in predicted for a in answers))


# ---- multiple choice ------------------------------------------------------------------------
_LONE_LETTER = re.compile(r"^[\s(\[]*([A-Z])[\s)\].:,]*$")
_ANSWER_IS = re.compile(r"\b(?:answer|option|choice)\b\s*(?:is|:)?\s*[(\[]?([A-Z])\b(?![a-z'])", re.IGNORECASE)
_MARKED_LETTER = r"(?:\(\s*{L}\s*\)|\[\s*{L}\s*\]|(?<![A-Za-z]){L}(?=[.):]|$))"


def extract_choice(prediction: str, options: dict[str, str]) -> str | None:
    """The option letter a free-text answer picks, or None. In order:
    1. the whole answer is one letter, maybe wrapped: "B", "(B)", "B.", "[B]";
    2. "answer is B" / "Answer: (B)" / "option B";
    3. exactly one candidate letter written as a marked letter: "(B)", "[B]", "B.", "B)", "B:",
       or a letter ending the text (a bare "A" inside a sentence is an article, not a choice);
    4. exactly one option's text occurs in the answer (case-insensitive; an option whose text lies
       inside another matching option's text does not count)."""
    letters = [letter for letter, text in options.items() if text is not None]
    text = prediction.strip()
    lone = _LONE_LETTER.match(text)
    if lone and lone.group(1) in letters:
        return lone.group(1)
    said = _ANSWER_IS.search(text)
    if said and said.group(1).upper() in letters:
        return said.group(1).upper()
    marked = [letter for letter in letters if re.search(_MARKED_LETTER.format(L=letter), text)]
    if len(marked) == 1:
        return marked[0]
    lowered = text.lower()
    hits = {letter: options[letter].strip().lower() for letter in letters if options[letter].strip()}
    hits = {letter: t for letter, t in hits.items() if t in lowered}
    hits = {letter: t for letter, t in hits.items() if not any(t != o and t in o for o in hits.values())}
    if len(hits) == 1:
        return next(iter(hits))
    return None


def choice_accuracy(prediction: str, answer_letter: str, options: dict[str, str]) -> float:
    """Multiple-choice accuracy: 1.0 when the extracted letter is the answer letter."""
    return float(extract_choice(prediction, options) == answer_letter.strip().upper())


# ---- exact match, error rates, temporal grounding ---------------------------------------------


def _exact_text(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".").strip()


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the prediction equals a reference after lower-casing, collapsing whitespace and
    dropping trailing periods ("Hello  world." == "hello world")."""
    predicted = _exact_text(prediction)
    return float(any(predicted == _exact_text(a) for a in answers))


def edit_errors(prediction: str, answers: Sequence[str], unit: str) -> tuple[int, int]:
    """(edits, reference length) against the closest reference; unit "char" or "word"
    (whitespace-separated). Both strings are stripped first."""
    split = (lambda s: list(s.strip())) if unit == "char" else (lambda s: s.split())
    predicted = split(prediction)
    best = None
    for answer in answers or [""]:
        reference = split(answer)
        pair = (levenshtein(reference, predicted), len(reference))
        if best is None or pair[0] < best[0]:
            best = pair
    return best


def error_rate(edits: int, length: int) -> float:
    """CER / WER = (S + D + I) / N, N the reference length (Levenshtein edit distance). An empty
    reference gives 0 when nothing was predicted and 1 otherwise."""
    if length == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / length


def cer(prediction: str, answers: Sequence[str]) -> float:
    """Character error rate of one prediction against its closest reference."""
    return error_rate(*edit_errors(prediction, answers, "char"))


def wer(prediction: str, answers: Sequence[str]) -> float:
    """Word error rate of one prediction against its closest reference."""
    return error_rate(*edit_errors(prediction, answers, "word"))


_AT_SECONDS = re.compile(r"\bat\s+(-?\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s)\b", re.IGNORECASE)
EVENT_TOLERANCE_S = 1.0


def parse_event_second(text: str) -> float | None:
    """N from "At N seconds." (also "at 4.5 s"), else None."""
    found = _AT_SECONDS.search(text)
    return float(found.group(1)) if found else None


def event_second_accuracy(prediction: str, event_second: float, tolerance: float = EVENT_TOLERANCE_S) -> float:
    """Temporal grounding: 1.0 when the second read from the prediction is within ±1 s of the truth."""
    predicted = parse_event_second(prediction)
    return float(predicted is not None and abs(predicted - event_second) <= tolerance)


# ---- referring-expression grounding ----------------------------------------------------------
GROUNDING_IOU = 0.5  # RefCOCO / RefCOCO+ / RefCOCOg: a prediction is correct at IoU >= 0.5


def grounding_hit(prediction: str, reference: Sequence[float], frame, threshold: float = GROUNDING_IOU) -> float:
    """1.0 when the answer's first box, mapped from the model's coordinates (`frame`, a
    qwen_vl.grounding.Frame) to original pixels and clipped, has IoU >= threshold with the
    reference [x1, y1, x2, y2] in original pixels; an answer without a box scores 0."""
    from qwen_vl.grounding import Box, grounding_to_original, iou, parse_answer

    boxes = grounding_to_original(parse_answer(prediction), frame).boxes
    return float(bool(boxes) and iou(boxes[0], Box(*reference)) >= threshold)
