"""Stage 0b's comparison probe: the two halves of "Is there a {colour} {kind}?" get losses of their own.

"Is there a red star?" about a picture with a blue star is answered by finding the star (the lookup
loss, training/lookup.py) and comparing its colour with the asked one. Where "Is there" did not form,
the LLM said yes whenever the kind was there: the comparison is learned from the answer alone, and
neither half helps the answer until the other is there (docs/bundled_model.md). This probe asks the
output of one decoder layer (the lookup layer), at the position that predicts the answer, for both
halves through two linear heads: the colour the question asks (exists questions), and the colour of
the picture's shape of the asked kind, "none" when there is none (exists and colour questions). The
layers after it are then left one step: equal or not. The heads are dropped afterwards.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.data import IGNORE, Sample
from training.lookup import asked_questions, word_id
from training.synthetic_world import COLOURS

COLOUR_NAMES = list(COLOURS)

COMPARED_TYPES = ("colour", "exists")


def compare_targets(sample: Sample, tokenizer, image_token_id: int) -> list[tuple[int, int, int]]:
    """Per colour or exists turn of a grid chat whose pixel_values are slot words ([T, 3]: colour,
    kind, region ids): (position predicting the answer's first token, the asked colour's index in
    COLOUR_NAMES or IGNORE for a colour question, 1 + the index of the colour of the shape of the asked
    kind or 0 when the picture has none)."""
    words = sample.pixel_values
    if sample.image_grid_thw is None or words is None:
        return []
    colour_of = {word_id(tokenizer, colour): i for i, colour in enumerate(COLOUR_NAMES)}
    targets = []
    for position, question, qtype in asked_questions(sample, tokenizer, image_token_id):
        if qtype not in COMPARED_TYPES:
            continue
        *_, colour, kind = question.rstrip("?").split()  # "... a red star?"; colour questions end "the star?"
        asked = COLOUR_NAMES.index(colour) if qtype == "exists" else IGNORE
        held = words[words[:, 1] == word_id(tokenizer, kind), 0]  # one shape per kind: one colour
        found = 1 + colour_of[int(held[0])] if len(held) else 0
        targets.append((position, asked, found))
    return targets


def batch_compare_targets(samples: list[Sample], tokenizer, image_token_id: int):
    """compare_targets of a batch -> ((batch row, position) pairs, asked long [N], found long [N])."""
    found = [(row, *t) for row, s in enumerate(samples) for t in compare_targets(s, tokenizer, image_token_id)]
    rows = [(row, position) for row, position, _, _ in found]
    return rows, torch.tensor([t[2] for t in found], dtype=torch.long), torch.tensor([t[3] for t in found])


class CompareProbe(nn.Module):
    """Watches the output of `layer` ([B, L, E]) and scores two linear heads at given positions: the
    asked colour and the found shape's colour (call `loss` after the model's forward)."""

    def __init__(self, layer: nn.Module, width: int):
        super().__init__()
        self.asked = nn.Linear(width, len(COLOURS))
        self.found = nn.Linear(width, 1 + len(COLOURS))
        self.hidden = None
        layer.register_forward_hook(self._keep)

    def _keep(self, module, args, output):
        self.hidden = output

    def loss(self, rows: list[tuple[int, int]], asked: torch.Tensor, found: torch.Tensor):
        """rows: (batch row, position) pairs; asked, found: long [N] -> (mean cross-entropy of both
        heads, share of asked colours right, share of found colours right)."""
        at = self.hidden[torch.tensor([r for r, _ in rows]), torch.tensor([p for _, p in rows])].float()
        asked_logits, found_logits = self.asked(at), self.found(at)
        named = asked != IGNORE
        loss = F.cross_entropy(found_logits, found)
        asked_right = float("nan")
        if named.any():
            loss = loss + F.cross_entropy(asked_logits[named], asked[named])
            asked_right = float((asked_logits[named].argmax(-1) == asked[named]).float().mean())
        return loss, asked_right, float((found_logits.argmax(-1) == found).float().mean())
