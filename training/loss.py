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
