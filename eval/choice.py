"""Which option letter a free-text multiple-choice answer picks, without a judge model.

Instruction-tuned models rarely answer with a bare letter: they write "**B**", "\\boxed{B}",
"<answer>B</answer>", "The correct answer is **B**.", "B is correct." or "B, because ...". The
extractor reads those forms and refuses (returns None, scored wrong) whenever the answer names
more than one letter at the level that decides, negates the letter it names, or names none.

Tiers, the first that finds a letter decides:
1. containers: the contents of <answer>...</answer> or \\boxed{...} (all of them must agree);
2. the whole answer is one letter, maybe wrapped: "B", "(B)", "B.", "[B]", "Option B";
3. statements: "answer is B", "Answer: (B)", "option B", "I choose B", "B is correct",
   "so the answer is B"; more than one letter stated, or "B or C", is refused;
4. a leading letter: "B. dog", "B) ...", "B, because ...", "B - ..."; "B and C" is refused;
5. standalone letters anywhere ("I think (B)", "... so B"): exactly one distinct letter; a
   capital "A" or "I" followed by an ordinary word is an article or a pronoun, not a choice;
6. option texts: exactly one option's text occurs in the answer (one lying inside another
   matching option's text does not count).
"""

from __future__ import annotations

import re

_MARKDOWN = re.compile(r"\*\*|__|[*`]")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_LONE = re.compile(
    r"^(?:(?:the\s+)?(?:answer|option|choice)\s*(?:is)?\s*[:\-]?\s*)?[(\[]?\s*([A-Za-z])\s*[)\]]?[.:;!]?$", re.I
)
# a letter as a choice: capital, or lower case only when wrapped "(b)"
_LETTER = r"(?:[(\[]\s*(?P<{name}>[A-Za-z])\s*[)\]]|(?<![A-Za-z0-9'])(?P<{name}2>[A-Z])(?![A-Za-z0-9]|['’][a-z]))"
_CONNECTIVES = r"(?i:and|or|nor|is|was|because|since|as|but|seems|would|could|should|&)"
_STATEMENTS = [
    # "answer is B", "the correct answer would be (B)", "Answer: B", "best option: B"
    r"\b(?i:answer|option|choice)s?\b\s*(?i:is|would be|should be|will be|must be|=|:|-)?\s*"
    r"(?:(?i:option|choice|letter)\s+)?" + _LETTER.format(name="a", name2="a2"),
    # "I choose B", "I'd go with option (B)", "select B"
    r"\b(?i:choose|chose|pick|picked|select|selected|go with|opt for)\s+(?:(?i:option|choice|answer)\s+)?"
    + _LETTER.format(name="b", name2="b2"),
    # "B is correct", "(B) is the correct answer", "B is right"
    _LETTER.format(name="c", name2="c2")
    + r"\s+(?i:is|would be|seems)\s+(?i:the\s+)?(?i:correct|right|best|answer|most\s+(?:likely|appropriate))\b",
    # "so B.", "therefore, (B)" at the end of a sentence
    r"\b(?i:so|therefore|thus|hence),?\s+" + _LETTER.format(name="d", name2="d2") + r"\s*(?:[.!]|$)",
]
_STATEMENT = re.compile("|".join(f"(?:{pattern})" for pattern in _STATEMENTS))
_NEGATED = re.compile(r"(?:\bnot|n't|\bno)\s*$", re.IGNORECASE)
_LEADING = re.compile(r"^[(\[]?\s*([A-Z])\s*(?:[)\].:,\-–—]|\s+" + _CONNECTIVES + r"\b|$)")
_LETTER_LIST = re.compile(r"^[(\[]?\s*[A-Z]\s*[)\]]?\s*(?:,|/|&|\b(?i:and|or)\b)\s*[(\[]?\s*([A-Z])\b")
_JOINED_AFTER = re.compile(r"\s*[)\]]?\s*(?:,|/|&|\b(?i:and|or)\b)\s*[(\[]?\s*[A-Z](?![A-Za-z0-9])")
_JOINED_BEFORE = re.compile(r"(?<![A-Za-z0-9])[A-Z]\s*[)\]]?\s*(?:,|/|&|\b(?i:and|or)\b)\s*[(\[]?\s*$")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9]|['’][a-z])")
_ORDINARY_WORD_AFTER = re.compile(r"\s+(?!" + _CONNECTIVES + r"\b)[a-z]")


def _plain(text: str) -> str:
    """The answer without Markdown emphasis and LaTeX text wrappers, stripped."""
    return _MARKDOWN.sub("", _LATEX_TEXT.sub(r"\1", text)).strip()


def _agreed(letters: list[str]) -> str | None:
    """The one letter all finds agree on; None when they disagree or there are none."""
    return letters[0] if letters and len(set(letters)) == 1 else None


def _from_containers(text: str, letters: list[str], options) -> tuple[bool, str | None]:
    """(found a container, its letter): <answer>...</answer> first, else \\boxed{...}."""
    for pattern in (_ANSWER_TAG, _BOXED):
        contents = pattern.findall(text)
        if contents:
            picks = [_extract_plain(_plain(c), letters, False, options) for c in contents]
            return True, None if None in picks else _agreed(picks)
    return False, None


def _letter_span(match: re.Match) -> tuple[str, int, int]:
    name = next(name for name, value in match.groupdict().items() if value)
    return match.group(name).upper(), match.start(name), match.end(name)


def _stated(text: str, letters: list[str]) -> list[str]:
    """Letters named by answer statements, skipping negated ones ("the answer is not A"); a
    letter joined to another ("B or C", "A and B is correct") adds a mark that never agrees."""
    found = []
    for match in _STATEMENT.finditer(text):
        letter, start, end = _letter_span(match)
        if letter not in letters or _NEGATED.search(text[:start].rstrip("([ ")):
            continue
        found.append(letter)
        if _JOINED_AFTER.match(text, end) or _JOINED_BEFORE.search(text[:start]):
            found.append("?")
    return found


def _is_word_not_letter(text: str, match: re.Match) -> bool:
    """A capital "A" or "I" followed by an ordinary word: an article or a pronoun."""
    return match.group(1) in "AI" and _ORDINARY_WORD_AFTER.match(text, match.end()) is not None


def _standalone(text: str, letters: list[str]) -> list[str]:
    found = []
    for match in _STANDALONE.finditer(text):
        if _is_word_not_letter(text, match) or _NEGATED.search(text[: match.start()]):
            continue
        if match.group(1) in letters:
            found.append(match.group(1))
    return found


def _by_option_text(text: str, options: dict[str, str], letters: list[str]) -> str | None:
    lowered = text.lower()
    hits = {letter: options[letter].strip().lower() for letter in letters if options[letter].strip()}
    hits = {letter: t for letter, t in hits.items() if t in lowered}
    hits = {letter: t for letter, t in hits.items() if not any(t != o and t in o for o in hits.values())}
    return next(iter(hits)) if len(hits) == 1 else None


def _extract_plain(text: str, letters: list[str], containers: bool = True, options=None) -> str | None:
    if not text:
        return None
    if containers:
        found, letter = _from_containers(text, letters, options)
        if found:
            return letter
    lone = _LONE.match(text)
    if lone:
        letter = lone.group(1).upper()
        return letter if letter in letters else None
    stated = _stated(text, letters)
    if stated:
        return _agreed(stated)
    leading = _LEADING.match(text)
    if leading and leading.group(1) in letters and not _is_word_not_letter(text, leading):
        return None if _LETTER_LIST.match(text) else leading.group(1)
    standalone = _standalone(text, letters)
    if standalone:
        return _agreed(standalone)
    return _by_option_text(text, options, letters) if options else None


def extract_choice(prediction: str, options: dict[str, str]) -> str | None:
    """The option letter a free-text answer picks, or None (see the module docstring)."""
    letters = [letter for letter, text in options.items() if text is not None]
    return _extract_plain(_plain(prediction), letters, options=options)
