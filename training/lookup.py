"""Stage 0b's lookup loss: one attention head is told where a question's shape lies.

"What colour is the star?" is answered by finding the grid slots that hold " star" and reading
their colour. Learned from the answers alone, that lookup by kind did not form in thousands of
steps (the LLM answered with any colour in the picture: docs/bundled_model.md). This loss names
the slots instead: at the positions that predict an answer's words, one head of one layer
should put its attention on the image tokens of the shape the question asks about (colour and
where questions). "Is there a red circle?" names both words: the head should find the red circle
itself, or rest on <|vision_start|> when the picture has none, so that yes or no can be read off
where it looked (told only the circle, the LLM still had to compare colours and got half the
answers wrong). The loss is -log of that attention mass.
"""

from __future__ import annotations

import torch

from qwen_vl.modeling.layers import apply_rotary
from training.data import IGNORE, Sample
from training.synthetic_world import vqa_type

LOOKUP_TYPES = ("colour", "where", "exists")  # the questions that name a shape by its kind


def lookup_targets(
    sample: Sample, tokenizer, image_token_id: int, words: torch.Tensor | None = None
) -> list[tuple[int, torch.Tensor]]:
    """Per position predicting an answer word of a looked-up turn of a one-image chat (the
    answer's tokens before <|im_end|>): (that position, bool [L]: the tokens the head should
    attend to, the same for the whole answer). `words` are the slot words of its image
    tokens ([T, 3]: colour, kind, region ids, -1 for none); by default the sample's pixel_values,
    as in stage 0b's grids."""
    tokens, labels = sample.input_ids, sample.labels
    words = sample.pixel_values if words is None else words
    if sample.image_grid_thw is None or words is None:
        return []
    image = (tokens == image_token_id).nonzero()[:, 0]
    text = tokens.tolist()
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    vision_start = int(image[0]) - 1  # <|vision_start|>: where "none here" is looked up
    targets = []
    starts = ((labels != IGNORE) & (torch.roll(labels, 1) == IGNORE)).nonzero()[:, 0].tolist()
    for start in starts:
        header = max(i for i in range(start - 1) if text[i] == im_start)  # the assistant's header
        user = max(i for i in range(header) if text[i] == im_start)
        turn = [t for t in text[user:header] if t != image_token_id]
        question = tokenizer.decode(turn).split("<|vision_end|>")[-1].split("user\n")[-1]
        question = question.replace("<|im_end|>", "").strip()
        try:
            qtype = vqa_type(question)
        except ValueError:
            continue  # a caption
        if qtype not in LOOKUP_TYPES:
            continue
        named = [tokenizer.encode(" " + word)[0] for word in question.rstrip("?").split()[-2:]]
        holds = words[:, 1] == named[1]  # the kind, the question's last word
        mask = torch.zeros(len(tokens), dtype=torch.bool)
        if qtype == "exists":
            holds &= words[:, 0] == named[0]  # and the colour before it
            mask[image[holds] if holds.any() else vision_start] = True
        elif holds.any():
            mask[image[holds]] = True
        else:
            continue
        end = start
        while end + 1 < len(labels) and labels[end + 1] != IGNORE:
            end += 1  # the answer's <|im_end|>, not a word
        # "on the left": the side is said two tokens after the question, and read there
        targets += [(position, mask) for position in range(start - 1, end - 1)]
    return targets


def record_targets(record: dict, sample: Sample, processor, word_ids: dict) -> list[tuple[int, torch.Tensor]]:
    """lookup_targets of an encoded synthetic-world record about one picture, its slot words read
    off the record's scene (as vision pre-training labels its tokens); [] for any other record."""
    scene, grid = record.get("scene"), sample.image_grid_thw
    if not isinstance(scene, dict) or "shapes" not in scene or grid is None or len(grid) != 1:
        return []
    from training.pretrain_reading import slot_words  # stage 0b's module imports this one

    settings = processor.image_settings
    _, grid_h, grid_w = (int(n) // settings.merge_size for n in grid[0])
    words = slot_words(scene, scene["height"], scene["width"], grid_h, grid_w, settings.factor, word_ids)
    return lookup_targets(sample, processor.tokenizer, processor.image_token_id, words)


class LookupLoss:
    """Watches the attention input of `layer` of a decoder and scores head `head`'s attention at
    given rows against target keys (call `loss` after the model's forward)."""

    def __init__(self, layer: torch.nn.Module, head: int = 0):
        self.attn, self.head, self.inputs = layer.self_attn, head, None
        self.attn.register_forward_pre_hook(self._keep)

    def _keep(self, module, args):
        self.inputs = args[:4]  # x (normed), cos, sin, mask

    def loss(self, rows: list[tuple[int, int]], targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        """rows: (batch row, position) pairs; targets: bool [N, L] -> (mean -log attention mass on
        the targets, mean mass)."""
        x, cos, sin, mask = self.inputs
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
        mass = (probs * targets.to(probs.device)).sum(-1)
        return -torch.log(mass + 1e-6).mean(), float(mass.detach().mean())


def _head_rows(proj: torch.nn.Linear, x: torch.Tensor, head: int, dim: int) -> torch.Tensor:
    """The projection of x [B, L, E] onto one head's `dim` output rows -> [B, 1, L, D]."""
    rows = slice(head * dim, (head + 1) * dim)
    bias = proj.bias[rows] if proj.bias is not None else None
    return torch.nn.functional.linear(x, proj.weight[rows], bias).unsqueeze(1)
