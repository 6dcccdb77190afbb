"""Benchmark metrics, each defined in one place, as published.

Every function scores one prediction (a string) against its reference answers and returns a
float in [0, 1] (or counts: edits for the error rates, boxes for `boxes_matched`); averaging over
a data set happens in `eval.scoring`.
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
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")  # vqaEval.py
_COMMAS_BETWEEN_DIGITS = re.compile(r"(?<=\d)(,)+(?=\d)")  # the EvalAI answer processor
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# Both scripts pass re.UNICODE (= 32) where re.sub takes its `count`: at most 32 periods go.
VQA_PERIODS_REMOVED = 32


def _vqa_clean(text: str) -> str:
    """Newlines and tabs to spaces, then strip: done to every answer before anything else."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_punctuation(text: str, comma_between_digits: re.Pattern = _COMMA_BETWEEN_DIGITS) -> str:
    """Each mark of VQA_PUNCTUATION is deleted when it touches a space anywhere in the text (or the
    text holds a comma between digits, "1,000"), else replaced by a space; then periods not before
    a digit are deleted (the first 32)."""
    delete_all = comma_between_digits.search(text) is not None
    out = text
    for mark in VQA_PUNCTUATION:
        if delete_all or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=VQA_PERIODS_REMOVED)


def vqa_digits_articles(text: str) -> str:
    """Lower-case, split on whitespace, number words zero..ten (and "none") -> digits, drop the
    articles a/an/the, restore contractions ("dont" -> "don't"), join with single spaces."""
    words = [VQA_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [VQA_CONTRACTIONS.get(word, word) for word in words if word not in VQA_ARTICLES]
    return " ".join(words)


def vqa_normalize(answer: str) -> str:
    """The full answer normalisation of vqaEval.py: clean, punctuation, digits and articles."""
    return vqa_digits_articles(vqa_punctuation(_vqa_clean(answer)))


def evalai_normalize(answer: str) -> str:
    """The EvalAI answer processor (TextVQA's evaluator, also lmms-eval's): lower-case, delete
    every "," and "?", split "'s" off as its own word, then clean, punctuation (its own
    comma-between-digits test), digits and articles."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return vqa_digits_articles(vqa_punctuation(_vqa_clean(text), _COMMAS_BETWEEN_DIGITS))


def _leave_one_out(predicted: str, references: list[str]) -> float:
    """Mean over references i of min(1, #references other than i equal to the prediction / 3)."""
    matches = sum(ref == predicted for ref in references)
    return sum(min(1.0, (matches - (ref == predicted)) / 3) for ref in references) / len(references)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy exactly as the official vqaEval.py (VQA API, GT-Vision-Lab/VQA) scores it.

    Every answer is cleaned (newlines/tabs -> spaces, stripped). Only when the human answers are
    not all the same are they and the prediction normalised (`vqa_normalize`); when all agree the
    cleaned strings are compared as they are, so "Yes" against ten "yes" scores 0. Then the
    leave-one-out mean of min(1, matches / 3). The script has no single-answer case (it would
    score 0); here one answer is an exact match of the cleaned strings."""
    if not answers:
        return 0.0
    predicted = _vqa_clean(prediction)
    references = [_vqa_clean(a) for a in answers]
    if len(references) == 1:
        return float(predicted == references[0])
    if len(set(references)) > 1:
        predicted = vqa_normalize(predicted)
        references = [vqa_normalize(r) for r in references]
    return _leave_one_out(predicted, references)


def vqa_accuracy_lmms(prediction: str, answers: Sequence[str]) -> float:
    """lmms-eval's VQAv2 variant: the prediction and every answer are always cleaned and normalised
    (the EvalAI processor's punctuation step, without its lower-casing tokenizer), whether or not
    the human answers agree; then the same leave-one-out mean."""
    if not answers:
        return 0.0

    def normalize(text: str) -> str:
        return vqa_digits_articles(vqa_punctuation(_vqa_clean(text), _COMMAS_BETWEEN_DIGITS))

    return _leave_one_out(normalize(prediction), [normalize(a) for a in answers])


def textvqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """TextVQA accuracy as its evaluator scores it (TextVQAAccuracyEvaluator of MMF / Pythia, run
    on EvalAI; lmms-eval's textvqa is the same): the prediction and all answers go through
    `evalai_normalize`, always; then the leave-one-out mean of min(1, matches / 3)."""
    if not answers:
        return 0.0
    return _leave_one_out(evalai_normalize(prediction), [evalai_normalize(a) for a in answers])


# ---- ANLS -----------------------------------------------------------------------------------
ANLS_THRESHOLD = 0.5


def _collapsed_lower(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """ANLS for one question exactly as the RRC scorer of DocVQA / InfographicVQA computes it
    (Biten et al. 2019; rrc.cvc.uab.es, the same code in lmms-eval and Qwen-VL's eval).

    Per reference a: NL = lev(a', p') / max(len(a.upper()), len(p.upper())), where a' and p' are
    stripped, lower-cased, whitespace-collapsed, but the lengths are those of the raw strings
    (upper-cased, spaces and all); NL = 0 when both raw strings are empty. The question scores
    1 - min NL, set to 0 when below 0.5 (exactly 0.5 is kept)."""
    if not answers:
        return 0.0
    predicted = _collapsed_lower(prediction)
    distances = []
    for answer in answers:
        length = max(len(answer.upper()), len(prediction.upper()))
        distances.append(0.0 if length == 0 else levenshtein(_collapsed_lower(answer), predicted) / length)
    similarity = 1.0 - min(distances)
    return 0.0 if similarity < threshold else similarity


# ---- ChartQA relaxed accuracy ---------------------------------------------------------------
RELAXED_TOLERANCE = 0.05


def parse_number(text: str) -> float | None:
    """The number Python's float() reads ("12", " -3.5 ", "1e3", "1_000", "nan"), a trailing "%"
    (any number of them) meaning /100: "45%" -> 0.45; else None."""
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_match(prediction: str, answer: str, tolerance: float = RELAXED_TOLERANCE) -> bool:
    """Relaxed correctness as pix2struct's `relaxed_correctness` scores ChartQA (the code Qwen-VL,
    lmms-eval and VLMEvalKit run; ChartQA's own repository ships no relaxed scorer): when both
    read as numbers and the answer's is non-zero, correct if |p - a| / |a| <= 5%; otherwise the
    strings must be equal after lower-casing (nothing stripped)."""
    predicted, target = parse_number(prediction), parse_number(answer)
    if predicted is not None and target:
        return abs(predicted - target) / abs(target) <= tolerance
    return prediction.lower() == answer.lower()


def relaxed_accuracy(prediction: str, answers: Sequence[str], tolerance: float = RELAXED_TOLERANCE) -> float:
    """1.0 if the prediction, stripped (as Qwen-VL's evaluate_vqa.py does before scoring), is
    relaxed-correct for any reference answer."""
    prediction = prediction.strip()
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
# The letter extractor lives in eval/choice.py.
from qwen_vl.eval.choice import extract_choice  # noqa: E402


def choice_accuracy(prediction: str, answer_letter: str, options: dict[str, str]) -> float:
    """Multiple-choice accuracy: 1.0 when the extracted letter is the answer letter."""
    return float(extract_choice(prediction, options) == answer_letter.strip().upper())


# ---- MMMU ------------------------------------------------------------------------------------
# The rules of MMMU's eval_utils.py (MMMU-Benchmark/MMMU; the same code in lmms-eval's mmmu task)
# for open answers; multiple choice is read by eval/choice.py instead of its parser, which guesses
# a random letter when it finds none.
_NUMBER_WITH_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUMBER_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUMBER_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")
_MMMU_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_MMMU_TRIVIAL = (":", ",", ".", "!", "?", ";", "'")


def mmmu_numbers(text: str) -> list[str]:
    """Numbers written with thousands commas, in scientific notation, then plain ones."""
    return _NUMBER_WITH_COMMAS.findall(text) + _NUMBER_SCIENTIFIC.findall(text) + _NUMBER_SIMPLE.findall(text)


def mmmu_normalize(text: str) -> list[str | float]:
    """A number (commas dropped) rounded to 2 decimals; else the lower-cased text, a single
    character padded with a space on either side (two forms) so it cannot match inside a word."""
    text = text.strip()
    try:
        return [round(float(text.replace(",", "")), 2)]
    except ValueError:
        pass
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def _mmmu_key_parts(response: str) -> list[str]:
    """Per line of the lower-cased response, the shortest tail after an indicator ("is ", "so ",
    "answer ", ...; "=" on the last line too); the whole response when no line has one. The
    sentence split of the script looks for a capital after ". " in lower-cased text, so only
    newlines split."""
    response = response.strip().strip(".").lower()
    lines = re.split(r"\.\s(?=[A-Z])|\n", response)
    parts = []
    for index, line in enumerate(lines):
        indicators = _MMMU_INDICATORS + (("=",) if index == len(lines) - 1 else ())
        tails = [line.split(indicator)[-1].strip() for indicator in indicators if indicator in line]
        shortest = min(tails, key=len) if tails else ""
        if shortest and shortest not in _MMMU_TRIVIAL:
            parts.append(shortest)
    return parts or [response]


def mmmu_open_predictions(response: str) -> list[str | float]:
    """Candidate answers of an open response: its key parts and the numbers in them, normalised."""
    parts = _mmmu_key_parts(response)
    candidates = parts + [number for part in parts for number in mmmu_numbers(part)]
    return list({value for candidate in candidates for value in mmmu_normalize(candidate)})


def mmmu_open_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when a candidate number equals a normalised answer number, or a normalised answer text
    lies inside a candidate text."""
    references = [value for answer in answers for value in mmmu_normalize(answer)]
    for candidate in mmmu_open_predictions(prediction):
        if isinstance(candidate, str):
            if any(isinstance(ref, str) and ref in candidate for ref in references):
                return 1.0
        elif candidate in references:
            return 1.0
    return 0.0


# ---- MathVista -------------------------------------------------------------------------------
# MathVista's calculate_score.py normalises an extracted answer and compares it with the answer
# string; its extract_answer.py asks GPT-4 for the extraction unless a quick rule applies. Here the
# GPT step is replaced by rules (`mathvista_extract`), the quick rules and the scoring are the
# script's.
_QUOTED_ANSWER = re.compile(r'The answer is "(.*)"\.')
_ANSWER_CUE = re.compile(r"(?:answer\s*(?:is|:)|=)\s*", re.IGNORECASE)
_SIGNED_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_BRACKETED_LIST = re.compile(r"\[[^\[\]]*\]")


def _last_number(text: str) -> str | None:
    """The last number written in the text, thousands commas dropped."""
    numbers = [n.replace(",", "").rstrip(".") for n in _SIGNED_NUMBER.findall(text)]
    numbers = [n for n in numbers if n not in ("", "-")]
    return numbers[-1] if numbers else None


def mathvista_extract(response: str, question_type: str, answer_type: str, choices: Sequence[str]) -> str:
    """The answer part of a response. The script's quick rules first (empty; a response that is a
    choice; one that int() / float() reads; 'The answer is "x".'), then, instead of its GPT-4 call:
    multiple choice, the option letter `eval.choice` reads, as the choice text, else the response
    (the scorer then takes the most similar choice); numbers, the last number after the last
    "answer is" / "answer:" / "=", else the last number; lists, the last "[...]"; else the response."""
    if response == "":
        return ""
    if question_type == "multi_choice" and response in choices:
        return response
    for convert in {"integer": (int,), "float": (float,)}.get(answer_type, ()):
        try:
            return str(convert(response))
        except ValueError:
            pass
    quoted = _QUOTED_ANSWER.search(response)
    if quoted:
        return quoted.group(1)
    if question_type == "multi_choice":
        letter = extract_choice(response, {chr(ord("A") + i): c for i, c in enumerate(choices)})
        return choices[ord(letter) - ord("A")] if letter else response.strip()
    if answer_type in ("integer", "float"):
        cues = list(_ANSWER_CUE.finditer(response))
        after_cue = _last_number(response[cues[-1].end() :]) if cues else None
        return after_cue or _last_number(response) or response.strip()
    if answer_type == "list":
        lists = _BRACKETED_LIST.findall(response)
        return lists[-1] if lists else response.strip()
    return response.strip()


def mathvista_normalize(
    extraction: str, question_type: str, answer_type: str, choices: Sequence[str], precision
) -> str | None:
    """calculate_score.py's normalisation: multiple choice, a letter ("B" or "(B)" anywhere) names
    its choice, anything else becomes the choice nearest in edit distance (the first on ties);
    integers str(int(float(x))); floats str(round(float(x), precision)); lists str(x); None when
    the number does not read. Free-form text, which the script does not handle, is stripped."""
    if question_type == "multi_choice":
        extraction = extraction.strip()
        letters = re.findall(r"\(([a-zA-Z])\)", extraction)
        if letters:
            extraction = letters[0].upper()
        sequential = [chr(ord("A") + i) for i in range(len(choices))]
        if extraction in sequential:
            return choices[sequential.index(extraction)]
        distances = [levenshtein(extraction, choice) for choice in choices]
        return choices[distances.index(min(distances))] if choices else None
    try:
        if answer_type == "integer":
            return str(int(float(extraction)))
        if answer_type == "float":
            return str(round(float(extraction), int(precision)))
    except (ValueError, TypeError, OverflowError):
        return None
    return str(extraction) if answer_type == "list" else extraction.strip()


def mathvista_match(prediction: str, answer: str, meta: dict) -> float:
    """1.0 when the normalised extraction equals the answer string."""
    question_type, answer_type = meta["question_type"], meta["answer_type"]
    choices = meta.get("choices") or []
    extraction = mathvista_extract(prediction, question_type, answer_type, choices)
    normalized = mathvista_normalize(extraction, question_type, answer_type, choices, meta.get("precision"))
    return float(normalized == answer)


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


def boxes_matched(
    prediction: str, references: Sequence[dict], frame, threshold: float = GROUNDING_IOU
) -> tuple[int, int]:
    """Every-object grounding: (matched, true) for one answer, where `true` is the number of
    reference boxes ({"label", "bbox": [x1, y1, x2, y2]} in original pixels) and `matched` how many
    of them a predicted box of the same label (case and spacing aside) covers at IoU >= threshold,
    one to one. The answer's boxes are read and mapped to original pixels as in `grounding_hit`.

    An answer with more boxes than the references (an extra box) matches none of them, so
    sum(matched) / sum(true) over a set is the share of boxes found at IoU >= 0.5 in answers that
    drew no extra boxes. A missed or misplaced box only costs itself.

    Matching is greedy: the pairs of a reference and a prediction with equal labels and IoU >= the
    threshold are taken in falling IoU, each box used once. The synthetic world names every shape
    of a picture differently, so each prediction can pair with one reference only and the greedy
    matching is also a largest one (what the Hungarian method would find)."""
    from qwen_vl.grounding import Box, grounding_to_original, iou, parse_answer

    predicted = grounding_to_original(parse_answer(prediction), frame).boxes
    truth = [Box(*ref["bbox"], ref["label"]) for ref in references]
    if len(predicted) > len(truth):
        return 0, len(truth)

    def same(a: str, b: str) -> bool:
        return " ".join(a.lower().split()) == " ".join(b.lower().split())

    pairs = [
        (-iou(t, p), i, j)
        for i, t in enumerate(truth)
        for j, p in enumerate(predicted)
        if same(t.label, p.label) and iou(t, p) >= threshold
    ]
    used_truth, used_predicted = set(), set()
    for _, i, j in sorted(pairs):
        if i not in used_truth and j not in used_predicted:
            used_truth.add(i)
            used_predicted.add(j)
    return len(used_truth), len(truth)
