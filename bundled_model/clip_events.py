"""Labels for reading a rendered clip's event time: which video tokens changed, and where the event shows.

"When does the star appear?" needs the second of the event's temporal token, and M-RoPE puts a token's
time only into attention scores. A time code (bundled_model/time_code.py) and a lookup of the event's
shape (bundled_model/lookup.py) are not enough on rendered clips: the head finds the shape in every
temporal token that shows it, not the first one. A third target makes the answers form
(bundled_model/video_time.py, docs/bundled_model.md): a linear probe on a decoder layer's output asked,
per video token, whether its content changed since the same place one temporal token before, and the
lookup told to look at the tokens that changed where the event happens. A change is local in (t, h, w),
so a head can learn it from M-RoPE offsets; the event's token is then the one changed token the
question's shape names.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw

from bundled_model.pretrain_vision import token_boxes
from bundled_model.synthetic_render import draw_shape
from bundled_model.synthetic_world import Background, Shape, VideoEvent, VideoScene
from qwen_vl.modeling.text import LayerIO
from qwen_vl.processing.video_sampling import FrameRange, sample_frame_count, sample_indices

WHEN_TYPES = ("appear", "disappear", "change", "start")  # clip questions answered with a second
INK_SHARE = 0.05  # a token's content counts as changed when this share of its pixels did


def scene_from_record(record: dict) -> VideoScene | None:
    """The VideoScene a line of bundled_model/synthetic.py's video set was rendered from; None for other lines."""
    scene = record.get("scene")
    if record.get("task") != "video" or not isinstance(scene, dict):
        return None
    return VideoScene(
        scene["width"],
        scene["height"],
        scene["fps"],
        scene["duration"],
        Background(**scene["background"]),
        [Shape(**shape) for shape in scene["shapes"]],
        VideoEvent(**scene["event"]),
    )


def shown_frames(scene: VideoScene, processor) -> list[int]:
    """The first frame of each temporal token, as the processor samples the clip's file (all of it, at
    its video fps, frame pairs per token)."""
    video = processor.video_settings
    count = sample_frame_count(scene.frame_count, scene.fps, video.fps, None, video.min_frames, video.max_frames)
    frames = sample_indices(FrameRange(0, scene.frame_count - 1), count)
    return frames[:: processor.image_settings.temporal_patch_size]


def changed_tokens(scene: VideoScene, shown: list[int], grid_h: int, grid_w: int, unit: int) -> torch.Tensor:
    """bool [T, grid_h * grid_w]: the merged tokens whose share of the event's shape's ink changed by
    more than INK_SHARE since the same token one temporal token before, or that hold ink of the shape
    when it changed colour (it came, went, moved or changed colour; the other shapes stay still). This
    includes the edge tokens whose content changed while their centre did not. The first temporal
    token has nothing before it: all False."""
    boxes = token_boxes(scene.height, scene.width, grid_h, grid_w, unit)
    kind = scene.shapes[scene.event.shape].kind
    under, colours = [], []
    for frame in shown:
        visible, colour, bbox = scene.shape_state(scene.event.shape, frame)
        if not visible:
            under.append(torch.zeros(len(boxes), dtype=torch.float32))
        else:
            under.append(ink_shares(kind, bbox, boxes, scene.width, scene.height))
        colours.append(colour)
    changed = torch.zeros(len(shown), len(boxes), dtype=torch.bool)
    for k in range(1, len(shown)):
        recoloured = colours[k] != colours[k - 1]
        held = (under[k] > INK_SHARE) | (under[k - 1] > INK_SHARE)
        changed[k] = ((under[k] - under[k - 1]).abs() > INK_SHARE) | (held & recoloured)
    return changed


def ink_shares(kind: str, bbox, boxes, width: int, height: int) -> torch.Tensor:
    """float [tokens]: the share of each token box's pixels that a shape of `kind` drawn in `bbox` covers."""
    mask = Image.new("L", (width, height), 0)
    draw_shape(ImageDraw.Draw(mask), kind, bbox, 1)
    summed = np.pad(np.asarray(mask, dtype=np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # integral image
    x0, y0, x1, y1 = np.round(np.asarray(boxes, dtype=np.float64)).astype(np.int64).T  # half to even, as round()
    x1, y1 = np.maximum(x1, x0 + 1), np.maximum(y1, y0 + 1)  # every box at least one pixel
    inside = summed[y1, x1] - summed[y0, x1] - summed[y1, x0] + summed[y0, x0]
    return torch.from_numpy(inside / ((x1 - x0) * (y1 - y0))).float()


def event_tokens(scene: VideoScene, shown: list[int], changed: torch.Tensor) -> torch.Tensor | None:
    """bool [T, tokens]: the changed tokens of the first temporal token at or after the event's second
    that shows a change (a move has not moved yet at its first second, so it shows one token later),
    where a "when" answer's number should look; None where the sampled frames show no change."""
    after = [k for k, frame in enumerate(shown) if frame >= scene.event.second * scene.fps]
    first = next((k for k in after if changed[k].any()), None)
    if first is None:
        return None
    target = torch.zeros_like(changed)
    target[first] = changed[first]
    return target


class ChangeProbe(nn.Module):
    """Watches the output of decoder layer `layer` ([B, L, E], DecoderLayer.observe) and scores a
    linear probe's guess of which video tokens changed (call `loss` after the model's forward)."""

    def __init__(self, layer: nn.Module, width: int):
        super().__init__()
        self.probe = nn.Linear(width, 1)
        self.hidden = None
        layer.observe(self._keep)

    def _keep(self, seen: LayerIO) -> None:
        self.hidden = seen.output

    def loss(self, video: torch.Tensor, changed: torch.Tensor) -> tuple[torch.Tensor, float]:
        """video: bool [B, L], the video tokens; changed: bool [N], theirs in row-major order ->
        (cross-entropy with the rare changed tokens weighted up to half the total, share of them found)."""
        logits = self.probe(self.hidden[video].float())[:, 0]
        share = float(changed.float().mean().clamp(min=1e-3))
        weights = torch.where(changed, 1.0 / share, 1.0)
        loss = F.binary_cross_entropy_with_logits(logits, changed.float(), weight=weights / weights.mean())
        found = float(((logits > 0) & changed).sum()) / max(int(changed.sum()), 1)
        return loss, found
