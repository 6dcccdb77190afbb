"""Stage 3's time-code loss: each video token learns to hold its own second.

"When does the star appear?" is answered with the second of the event's tokens, and M-RoPE puts a
token's time only into attention scores, never into what the token holds: a head that finds the
event reads its colour and kind, not when it is. Learned from the answers alone, reading the time
does not form (docs/bundled_model.md). Here a linear probe on the output of one decoder layer is
asked each video token's second, so that the layer learns to write it into the token (from its
attention to the tokens before it, whose scores do carry the absolute-time ids); a later head
then reads the time of the token it finds as it reads a colour. The probe is dropped afterwards.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qwen_vl.modeling.text import LayerIO
from qwen_vl.training.data import Sample

MAX_SECOND = 15  # probe classes 0..MAX_SECOND; later seconds share the last class


def token_seconds(sample: Sample, merge_size: int) -> torch.Tensor:
    """The second at which each video token of a clip sample starts -> long [tokens], in the
    order the tokens appear (temporal, then raster)."""
    if sample.video_grid_thw is None:
        return torch.zeros(0, dtype=torch.long)
    parts = []
    for (t, h, w), step in zip(sample.video_grid_thw.tolist(), sample.second_per_grid_ts.tolist(), strict=True):
        per_frame = (h // merge_size) * (w // merge_size)
        seconds = torch.round(torch.arange(t) * step).long().clamp(max=MAX_SECOND)
        parts.append(seconds.repeat_interleave(per_frame))
    return torch.cat(parts)


class TimeCode(nn.Module):
    """Watches the output of decoder layer `layer` ([B, L, E], DecoderLayer.observe) and scores a
    linear probe's guess of each video token's second (call `loss` after the model's forward)."""

    def __init__(self, layer: nn.Module, width: int):
        super().__init__()
        self.probe = nn.Linear(width, MAX_SECOND + 1)
        self.hidden = None
        layer.observe(self._keep)

    def _keep(self, seen: LayerIO) -> None:
        self.hidden = seen.output

    def loss(self, video: torch.Tensor, seconds: torch.Tensor) -> tuple[torch.Tensor, float]:
        """video: bool [B, L], the video tokens; seconds: long [N], theirs in row-major order ->
        (cross-entropy, share guessed right)."""
        logits = self.probe(self.hidden[video].float())
        right = (logits.argmax(-1) == seconds).float().mean()
        return F.cross_entropy(logits, seconds), float(right)
