"""Stage 0b's comparison probe: the two halves of "Is there a {colour} {kind}?" get losses of their own.

"Is there a red star?" about a picture with a blue star is answered by finding the star (the lookup
loss, bundled_model/lookup.py) and comparing its colour with the asked one. Learned from the answer
alone, the comparison forms late or not at all (the LLM says yes whenever the kind is there):
neither half helps the answer until the other is there (docs/bundled_model.md). This probe asks the
output of one decoder layer (the lookup layer), at the position that predicts the answer, for both
halves through linear heads: the colour the question asks (exists questions), and the colour and the
third of the picture of its shape of the asked kind, "none" when there is none (colour, exists and
where questions). The layers after it are then left one step: equal or not (or which third). The
heads are dropped afterwards.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bundled_model.lookup import asked_questions, word_id
from bundled_model.synthetic_world import COLOURS, REGIONS
from qwen_vl.modeling.text import LayerIO
from qwen_vl.training.data import IGNORE, Sample

COLOUR_NAMES = list(COLOURS)
COMPARED_TYPES = ("colour", "exists", "where")
# the heads, by the name the held-out line gives them: their class counts ("found" ones: 0 is none)
PROBED = {
    "asked colour": len(COLOURS),
    "found colour": 1 + len(COLOURS),
    "found region": 1 + len(REGIONS),
}


def compare_targets(sample: Sample, tokenizer, image_token_id: int) -> list[tuple[int, int, int, int]]:
    """Per colour, exists or where turn of a grid chat whose pixel_values are slot words ([T, 3]:
    colour, kind, region ids): (position predicting the answer's first token, the asked colour's index
    in COLOUR_NAMES or IGNORE where none is asked, then the colour and the region of the shape of the
    asked kind: 1 + the index in COLOUR_NAMES and in REGIONS, or 0 when the picture has none)."""
    words = sample.pixel_values
    if sample.image_grid_thw is None or words is None:
        return []
    colour_of = {word_id(tokenizer, colour): 1 + i for i, colour in enumerate(COLOUR_NAMES)}
    region_of = {word_id(tokenizer, region): 1 + i for i, region in enumerate(REGIONS)}
    targets = []
    for position, question, qtype in asked_questions(sample, tokenizer, image_token_id):
        if qtype not in COMPARED_TYPES:
            continue
        *_, colour, kind = question.rstrip("?").split()  # "... a red star?"; colour questions end "the star?"
        asked = COLOUR_NAMES.index(colour) if qtype == "exists" else IGNORE
        held = words[words[:, 1] == word_id(tokenizer, kind)]  # one shape per kind: one colour and region
        colour_found, region_found = (colour_of[int(held[0, 0])], region_of[int(held[0, 2])]) if len(held) else (0, 0)
        targets.append((position, asked, colour_found, region_found))
    return targets


def batch_compare_targets(samples: list[Sample], tokenizer, image_token_id: int):
    """compare_targets of a batch -> ((batch row, position) pairs, long [N, len(PROBED)]: asked colour,
    found colour, found region)."""
    found = [(row, *t) for row, s in enumerate(samples) for t in compare_targets(s, tokenizer, image_token_id)]
    targets = torch.tensor([t[2:] for t in found]).view(-1, len(PROBED))
    return [(row, position) for row, position, *_ in found], targets


class CompareProbe(nn.Module):
    """Watches the output of decoder layer `layer` ([B, L, E], DecoderLayer.observe) and scores linear
    heads at given positions: the asked colour, the found shape's colour and its region (call `loss`
    after the model's forward)."""

    def __init__(self, layer: nn.Module, width: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(width, classes) for classes in PROBED.values())
        self.hidden = None
        layer.observe(self._keep)

    def _keep(self, seen: LayerIO) -> None:
        self.hidden = seen.output

    def loss(self, rows: list[tuple[int, int]], targets: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """rows: (batch row, position) pairs; targets: long [N, len(PROBED)] (batch_compare_targets) -> (the
        heads' summed mean cross-entropies, per head the share right: nan where it had no target)."""
        at = self.hidden[torch.tensor([r for r, _ in rows]), torch.tensor([p for _, p in rows])].float()
        loss, rights = at.new_zeros(()), []
        for head, target in zip(self.heads, targets.T, strict=True):
            named = target != IGNORE
            if not named.any():
                rights.append(float("nan"))
                continue
            logits = head(at[named])
            loss = loss + F.cross_entropy(logits, target[named])
            rights.append(float((logits.argmax(-1) == target[named]).float().mean()))
        return loss, rights
