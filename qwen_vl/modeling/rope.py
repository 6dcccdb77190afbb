"""3D M-RoPE: position ids (temporal, height, width) for text, images and videos, and the rotary
angles they select.

The rule (Qwen reference code, transformers 4.x):
- text tokens carry the same id on all three axes, counting up by one;
- a vision block starts at s = (last id + 1): temporal id s + floor(t * second_per_grid_t *
  tokens_per_second) for Qwen2.5-VL video (absolute time; 0 for images; one step per temporal
  patch for Qwen2-VL), height id s + merged row, width id s + merged column;
- text after a vision block resumes at (max id so far + 1);
- rope_deltas = max id + 1 - number of real tokens, carried into decoding.
Padding (attention_mask == 0) takes id 0 and does not count.
"""

from __future__ import annotations

import functools

import torch


def mrope_position_ids(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    image_grid_thw: torch.Tensor | None,
    video_grid_thw: torch.Tensor | None,
    second_per_grid_ts: torch.Tensor | list[float] | None,
    *,
    image_token_id: int,
    video_token_id: int,
    merge_size: int,
    tokens_per_second: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids [B, L] -> (position_ids [3, B, L] long, rope_deltas [B, 1] long).

    Images and videos are consumed in order of appearance across the batch, as their grids are.
    `tokens_per_second=None` is the Qwen2-VL rule (temporal id = temporal patch index)."""
    batch, length = input_ids.shape
    position_ids = torch.zeros(3, batch, length, dtype=torch.long)
    deltas = torch.zeros(batch, 1, dtype=torch.long)
    grids = {
        image_token_id: iter((image_grid_thw if image_grid_thw is not None else torch.empty(0, 3)).tolist()),
        video_token_id: iter((video_grid_thw if video_grid_thw is not None else torch.empty(0, 3)).tolist()),
    }
    seconds = iter(
        torch.as_tensor(second_per_grid_ts, dtype=torch.float).tolist() if second_per_grid_ts is not None else []
    )
    ids_cpu = input_ids.cpu()
    mask_cpu = (
        attention_mask.cpu().bool() if attention_mask is not None else torch.ones(batch, length, dtype=torch.bool)
    )
    for row in range(batch):
        tokens = ids_cpu[row][mask_cpu[row]]
        pieces, next_id, pos = [], 0, 0
        while pos < len(tokens):
            token = int(tokens[pos])
            if token in grids:
                t, h, w = next(grids[token], (None, None, None))
                if t is None:
                    raise ValueError(f"more vision placeholder runs than grids for token id {token}")
                is_video = token == video_token_id
                per_second = None if tokens_per_second is None else (next(seconds, 1.0) if is_video else 0.0)
                block = _vision_block_ids(t, h // merge_size, w // merge_size, next_id, per_second, tokens_per_second)
                pieces.append(block)
                pos += block.shape[1]
            else:
                end = pos
                while end < len(tokens) and int(tokens[end]) not in grids:
                    end += 1
                pieces.append(torch.arange(next_id, next_id + end - pos).expand(3, -1))
                pos = end
            next_id = int(pieces[-1].max()) + 1
        ids = torch.cat(pieces, 1) if pieces else torch.zeros(3, 0, dtype=torch.long)
        position_ids[:, row, mask_cpu[row]] = ids
        deltas[row] = next_id - len(tokens)
    return position_ids.to(input_ids.device), deltas.to(input_ids.device)


def _vision_block_ids(t, h, w, start, second_per_grid_t, tokens_per_second) -> torch.Tensor:
    """Ids [3, t*h*w] of one image or video block in raster order (t, then row, then column)."""
    if tokens_per_second is None:  # Qwen2-VL: one step per temporal patch
        temporal = torch.arange(t)
    else:  # Qwen2.5-VL: absolute time, tokens_per_second ids per second of video
        temporal = (torch.arange(t) * (tokens_per_second * second_per_grid_t)).long()
    tt = temporal.view(t, 1, 1).expand(t, h, w)
    hh = torch.arange(h).view(1, h, 1).expand(t, h, w)
    ww = torch.arange(w).view(1, 1, w).expand(t, h, w)
    return torch.stack([tt, hh, ww]).reshape(3, -1) + start


def text_position_ids(attention_mask: torch.Tensor | None, batch: int, length: int, past: int, device) -> torch.Tensor:
    """Ids [B, L] of plain text tokens: count real tokens (left padding aware), after `past` cached ones."""
    if attention_mask is None:
        return torch.arange(past, past + length, device=device).expand(batch, -1)
    ids = attention_mask.long().cumsum(-1) - 1
    return ids.clamp(min=0)[:, -length:]


def mrope_angles(
    position_ids: torch.Tensor, head_dim: int, theta: float, mrope_section: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """position_ids [3, B, L] -> cos, sin [B, 1, L, D] fp32.

    The D/2 frequency slots are split by mrope_section: the first slots rotate by the temporal
    id, the next by the height id, the last by the width id."""
    inv_freq, slot_axis = _frequencies(head_dim, theta, tuple(mrope_section), position_ids.device)
    # For each slot pick its axis' id: [D/2, B, L] -> [B, L, D/2]
    slot_pos = position_ids[slot_axis].permute(1, 2, 0).float()
    angles = slot_pos * inv_freq
    angles = torch.cat([angles, angles], -1)[:, None]
    return angles.cos(), angles.sin()


@functools.cache
def _frequencies(
    head_dim: int, theta: float, mrope_section: tuple[int, ...], device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse frequencies [D/2] and the axis (0 = t, 1 = h, 2 = w) each slot rotates by [D/2]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=device) / head_dim))
    slot_axis = torch.repeat_interleave(torch.arange(3, device=device), torch.tensor(mrope_section, device=device))
    return inv_freq, slot_axis
