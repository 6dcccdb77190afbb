"""Window partition of the vision tokens (Qwen2.5-VL window attention).

Windows are `window_size` pixels square = `window_size / patch / merge` merge units per side
(112 px -> 4x4 merge units -> 8x8 patches). Tokens are reordered window by window, frame by
frame; windows at the bottom and right edges are smaller. The reorder works on whole merge units
(2x2 patch groups), so the merger sees each group intact, and it is undone after the merger.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_partition(grid_thw: torch.Tensor, merge_size: int, window_units: int) -> tuple[torch.Tensor, torch.Tensor]:
    """grid_thw [I, 3] in patches -> (unit_order [U] long: merge-unit index per reordered slot,
    window_lengths [W] long: patches per window, in reordered order)."""
    orders, lengths, offset = [], [], 0
    for t, h, w in grid_thw.tolist():
        gh, gw = h // merge_size, w // merge_size
        nh, nw = -(-gh // window_units), -(-gw // window_units)  # windows per column / row
        units = torch.arange(gh * gw).view(gh, gw)
        units = F.pad(units, (0, nw * window_units - gw, 0, nh * window_units - gh), value=-1)
        # [nh, wu, nw, wu] -> [nh, nw, wu, wu]: each window's units contiguous, row-major inside
        units = units.view(nh, window_units, nw, window_units).permute(0, 2, 1, 3).reshape(nh * nw, -1)
        per_window = (units >= 0).sum(1) * merge_size**2
        frame_order = units[units >= 0]
        for frame in range(t):
            orders.append(frame_order + offset + frame * gh * gw)
            lengths.append(per_window)
        offset += t * gh * gw
    return torch.cat(orders), torch.cat(lengths)


def frame_lengths(grid_thw: torch.Tensor) -> torch.Tensor:
    """Patches per frame, frame by frame: full attention stays within one temporal patch."""
    return torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0])
