"""Stage 0b's lookup loss: one attention head is told where a question's shape lies.

"What colour is the star?" is answered by finding the grid slots that hold " star" and reading
their colour. Learned from the answers alone, that lookup by kind does not form in thousands of
steps (the LLM answers with any colour in the picture: docs/bundled_model.md). This loss names
the slots instead: at the position that predicts an answer's first token, one head of one layer
should put its attention on the image tokens of the shape the question asks about (colour, where
and exists questions whose kind is in the picture). The loss is -log of that attention mass.
Stage 3 (bundled_model/video_time.py) uses the same loss to point a head at where a clip's event
shows, at the position that predicts the answer's number.
"""

from __future__ import annotations

import torch

from bundled_model.synthetic_world import vqa_type
from qwen_vl.modeling.layers import apply_rotary
from qwen_vl.modeling.text import LayerIO
from qwen_vl.training.data import IGNORE, Sample

LOOKUP_TYPES = ("colour", "where", "exists")  # questions naming a shape by its kind
NUMBER_AT = 2  # "At 4 seconds." is "At", " ", "4", ...: the number is the answer's third token


def lookup_targets(
    sample: Sample, tokenizer, image_token_id: int, kind_word: bool = False
) -> list[tuple[int, torch.Tensor]]:
    """Per looked-up turn of an image chat whose pixel_values are slot words ([T, 3]: colour,
    kind, region ids): (position predicting the answer's first token, bool [L]: the image tokens
    whose slot holds the asked kind). With `kind_word`, the target is the question's own kind word
    instead (the token a head before the lookup copies to the answer position)."""
    tokens, words = sample.input_ids, sample.pixel_values
    if sample.image_grid_thw is None or words is None:
        return []
    image = (tokens == image_token_id).nonzero()[:, 0]
    targets = []
    for position, question, qtype in asked_questions(sample, tokenizer, image_token_id):
        if qtype not in LOOKUP_TYPES:
            continue
        kind = question.rstrip("?").split()[-1]  # "... a red star?"; colour questions end "the star?"
        mask = torch.zeros(len(tokens), dtype=torch.bool)
        if kind_word:  # its last mention before the answer is the question's own
            mask[int((tokens[:position] == word_id(tokenizer, kind)).nonzero()[-1, 0])] = True
            targets.append((position, mask))
            continue
        mask[image[words[:, 1] == word_id(tokenizer, kind)]] = True
        if mask.any():
            targets.append((position, mask))
    return targets


def number_position(sample: Sample) -> int:
    """The position that predicts the number of a one-answer sample's "At 4 seconds."."""
    return int((sample.labels != IGNORE).nonzero()[0, 0]) + NUMBER_AT - 1


def asked_questions(sample: Sample, tokenizer, image_token_id: int) -> list[tuple[int, str, str]]:
    """(position predicting the answer's first token, question, VQA type) of each VQA turn of a
    grid chat (captions are passed over)."""
    tokens, labels = sample.input_ids, sample.labels
    text = tokens.tolist()
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    asked = []
    starts = ((labels != IGNORE) & (torch.roll(labels, 1) == IGNORE)).nonzero()[:, 0].tolist()
    for start in starts:
        header = max(i for i in range(start - 1) if text[i] == im_start)  # the assistant's header
        user = max(i for i in range(header) if text[i] == im_start)
        turn = [t for t in text[user:header] if t != image_token_id]
        question = tokenizer.decode(turn).split("<|vision_end|>")[-1].split("user\n")[-1]
        question = question.replace("<|im_end|>", "").strip()
        try:
            asked.append((start - 1, question, vqa_type(question)))
        except ValueError:
            continue  # a caption
    return asked


def word_id(tokenizer, word: str) -> int:
    return tokenizer.encode(" " + word)[0]  # the world's words are single tokens after a space


def batch_targets(samples: list[Sample], tokenizer, image_token_id: int, width: int, **which):
    """lookup_targets (`which`: its kind_word) of a right-padded batch of `samples`
    -> ((batch row, position) pairs, bool targets [N, width])."""
    found = [(row, *t) for row, s in enumerate(samples) for t in lookup_targets(s, tokenizer, image_token_id, **which)]
    targets = torch.zeros(len(found), width, dtype=torch.bool)
    for i, (_, _, mask) in enumerate(found):
        targets[i, : len(mask)] = mask
    return [(row, position) for row, position, _ in found], targets


class LookupLoss:
    """Watches the attention inputs of decoder layer `layer` (DecoderLayer.observe) and scores head
    `head`'s attention at given rows against target keys (call `loss` after the model's forward)."""

    def __init__(self, layer: torch.nn.Module, head: int = 0):
        self.attn, self.head, self.seen = layer.self_attn, head, None
        layer.observe(self._keep)

    def _keep(self, seen: LayerIO) -> None:
        self.seen = seen

    def loss(self, rows: list[tuple[int, int]], targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        """rows: (batch row, position) pairs; targets: bool [N, L] -> (mean -log attention mass on
        the targets, mean mass)."""
        seen = self.seen
        x, cos, sin, mask = seen.attention_input, seen.cos, seen.sin, seen.mask
        attn, dim = self.attn, self.attn.head_dim
        group = attn.heads // attn.kv_heads
        length = x.shape[1]
        q = _head_rows(attn.q_proj, x, self.head, dim)  # [B, 1, L, D]: only this head's projection
        k = _head_rows(attn.k_proj, x, self.head // group, dim)
        q, k = apply_rotary(q, cos, sin)[:, 0], apply_rotary(k, cos, sin)[:, 0]  # [B, L, D]
        batch_rows = torch.tensor([r for r, _ in rows])
        positions = torch.tensor([p for _, p in rows])
        scores = (q[batch_rows, positions, None, :] @ k[batch_rows].transpose(1, 2))[:, 0] / dim**0.5  # [N, L]
        allowed = torch.arange(length)[None, :] <= positions[:, None]
        if mask is not None:
            allowed = allowed & mask[batch_rows, 0, positions]
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        mass = (probs * targets).sum(-1)
        return -torch.log(mass + 1e-6).mean(), float(mass.detach().mean())


def _head_rows(proj: torch.nn.Linear, x: torch.Tensor, head: int, dim: int) -> torch.Tensor:
    """The projection of x [B, L, E] onto one head's `dim` output rows -> [B, 1, L, D]."""
    rows = slice(head * dim, (head + 1) * dim)
    bias = proj.bias[rows] if proj.bias is not None else None
    return torch.nn.functional.linear(x, proj.weight[rows], bias).unsqueeze(1)
