"""The loss as a token sum, so that any split of a step's samples (rows, packing, micro-batches,
processes) divides by the same global count of label tokens and gives the same mean."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import IGNORE


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits [B, L, V], labels [B, L] -> sum of next-token cross-entropy over set labels (scalar)."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, 1:].flatten().to(logits.device),
        ignore_index=IGNORE,
        reduction="sum",
    )


def predicting_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """labels [B, L] -> (bool [B, L]: the positions whose next token is labelled, long [K]: those labels)."""
    next_labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    keep = next_labels != IGNORE
    return keep, next_labels[keep]


def answer_loss(model, inputs: dict, labels: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """token_loss_sum of `model(**inputs)` (or the mean, with reduction="mean"), with the output head run
    only where a label follows: answers are a few percent of a row's tokens, and the head's product over
    the whole vocabulary is 3-4% of a training step's forward and backward."""
    keep, targets = predicting_positions(labels)
    logits = model(**inputs, logits_to_keep=keep).logits  # [K, V]
    return F.cross_entropy(logits.float(), targets.to(logits.device), reduction=reduction)
