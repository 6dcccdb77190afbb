"""Normalise uint8 pixels and cut them into flat vision-encoder patch rows.

One row holds C * temporal_patch_size * patch_size * patch_size values (3*2*14*14 = 1176),
laid out (channel, time, row, column). Rows are ordered merge group by merge group: the
merge_size x merge_size patches that the vision merger fuses into one token are adjacent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Published CLIP statistics used by every Qwen2-VL / Qwen2.5-VL checkpoint.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PATCH_SIZE = 14
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2


def normalization(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias) float32 [C, 1, 1]: (x / 255 - mean) / std folded into x * scale + bias,
    one fused multiply-add per value (differs from the two-step form by < 1e-6)."""
    std_t = torch.tensor(std, dtype=torch.float64).view(-1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float64).view(-1, 1, 1)
    return (1.0 / (255.0 * std_t)).float(), (-mean_t / std_t).float()


def patchify(
    frames: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """frames uint8 [T, H, W, C] (H, W multiples of patch_size*merge_size), scale/bias [C, 1, 1]
    -> (rows float32 [T'*gh*gw, C*tp*ps*ps], grid (T', gh, gw)) with T' = ceil(T / tp).

    A single frame (a still image) is repeated along time to fill the temporal patch; a video
    whose frame count is not a multiple of tp is padded with copies of its last frame.
    """
    num_frames, height, width, channels = frames.shape
    unit = patch_size * merge_size
    if height % unit or width % unit:
        raise ValueError(f"frame size {height}x{width} is not a multiple of {unit}")
    grid_h, grid_w = height // patch_size, width // patch_size
    row = channels * temporal_patch_size * patch_size * patch_size
    spatial = (grid_h // merge_size, merge_size, patch_size, grid_w // merge_size, merge_size, patch_size, channels)

    # Reorder while still uint8 (a quarter of the bytes of float32), then normalise in one
    # fused pass that writes the float32 output.
    if num_frames == 1:
        # (gh/m, m, ps, gw/m, m, ps, C) -> (gh/m, gw/m, m, m, C, 1, ps*ps)
        ordered = frames.view(*spatial).permute(0, 3, 1, 4, 6, 2, 5).reshape(-1, channels, 1, patch_size**2)
        values = torch.addcmul(bias, ordered, scale)  # float32 [N, C, 1, ps*ps]
        # A still image fills every temporal slot with the same values.
        rows = values.expand(-1, -1, temporal_patch_size, -1).reshape(-1, row)
        return rows, (1, grid_h, grid_w)

    if pad := -num_frames % temporal_patch_size:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
    grid_t = frames.shape[0] // temporal_patch_size
    # (T', tp, gh/m, m, ps, gw/m, m, ps, C) -> (T', gh/m, gw/m, m, m, C, tp, ps, ps)
    ordered = frames.view(grid_t, temporal_patch_size, *spatial).permute(0, 2, 5, 3, 6, 8, 1, 4, 7)
    ordered = ordered.reshape(-1, channels, temporal_patch_size * patch_size**2)
    rows = torch.addcmul(bias.view(-1, 1), ordered, scale.view(-1, 1)).view(-1, row)
    return rows, (grid_t, grid_h, grid_w)
