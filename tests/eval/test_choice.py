"""The multiple-choice letter extractor on answers written the way instruction-tuned models write
them; None means refused (no letter, scored wrong)."""

import pytest

from qwen_vl.eval.choice import extract_choice

OPTIONS = {"A": "cat", "B": "dog", "C": "red car", "D": "car"}

ANSWERS = [
    # a bare or wrapped letter
    ("B", "B"),
    ("(C)", "C"),
    ("B.", "B"),
    (" [D] ", "D"),
    ("a", "A"),
    ("**B**", "B"),
    ("Answer:\n\nB", "B"),
    ("**Answer:** C", "C"),
    ("Correct answer: B", "B"),
    # containers
    ("\\boxed{B}", "B"),
    ("$\\boxed{C}$", "C"),
    ("\\boxed{\\text{D}}", "D"),
    ("<answer>B</answer>", "B"),
    ("<answer>B. dog</answer>", "B"),
    ("<answer>C</answer>\nExplanation: option A is wrong.", "C"),
    ("Let me think. The animal barks.\n<answer>(B)</answer>", "B"),
    ("\\boxed{B} or \\boxed{C}", None),
    ("<answer>dog</answer>", "B"),  # a container holding an option's text
    # statements
    ("The answer is D.", "D"),
    ("The answer is A.", "A"),
    ("Answer: (A)", "A"),
    ("The answer is (b)", "B"),
    ("ANSWER: B", "B"),
    ("I Choose C", "C"),
    ("So B.", "B"),
    ("The correct answer is **B**.", "B"),
    ("The best option is D: car.", "D"),
    ("The correct option is C, red car.", "C"),
    ("Option (C) is the right one.", "C"),
    ("I pick option B because it barks", "B"),
    ("I would choose D.", "D"),
    ("B is correct.", "B"),
    ("A is correct.", "A"),
    ("B is the correct answer because the animal barks.", "B"),
    ("The image shows a dog, so the answer is B.", "B"),
    ("Looking at the image, there is a red car. Therefore, the answer is C.", "C"),
    ("It's a cat, so A.", "A"),
    ("The answer is not A, it is C.", "C"),
    ("D is incorrect; the answer is A.", "A"),
    ("A and B are both plausible, but the answer is C.", "C"),
    ("The answer is B or C.", None),
    ("The answer is B. Wait, no, the answer is C.", None),
    # a leading letter
    ("B, because dogs bark.", "B"),
    ("B. The dog is sitting on a mat.", "B"),
    ("C) red car", "C"),
    ("A. cat", "A"),
    ("(A) cat", "A"),
    ("A: cat", "A"),
    ("B - the animal is a dog", "B"),
    ("B\n\nThe image shows a dog.", "B"),
    ("B and C", None),
    ("C or D", None),
    ("B Or C", None),
    ("A/B", None),
    ("A, C", None),
    # a single standalone letter, or none that is a choice
    ("It is a dog (B).", "B"),
    ("I think (D) fits best", "D"),
    ("Neither A nor B", None),
    ("Either B or C.", None),
    ("Both A and C are correct.", None),
    ("The answer is not A.", None),
    ("3D model", None),
    ("E", None),
    ("", None),
    ("I'm not sure.", None),
    ("I can't determine the answer.", None),
    # option texts
    ("A dog.", "B"),  # "A" here is an article; the option text decides
    ("A cat.", "A"),
    ("The animal in the picture is a dog.", "B"),
    ("I think it's the red car", "C"),  # "car" lies inside the matching "red car"
    ("cat or dog", None),  # two options named
    ("None of the options.", None),
]


@pytest.mark.parametrize("answer, letter", ANSWERS)
def test_extract_choice(answer, letter):
    assert extract_choice(answer, OPTIONS) == letter


def test_the_table_is_large():
    assert len(ANSWERS) >= 60


def test_only_the_options_present_are_candidates():
    two = {"A": "yes", "B": "no"}
    assert extract_choice("C", two) is None
    assert extract_choice("The answer is C.", two) is None
    assert extract_choice("yes", two) == "A"
    assert extract_choice("I pick (B).", two) == "B"
