"""Inference-time weight formats, swapped in for nn.Linear at load time (the model's own modules
stay plain): oneDNN-packed bf16, int8 per channel, int4 in groups (also AWQ checkpoints)."""

QUANTIZE_ROWS = 4096  # rows quantized at a time: fp32 temporaries of a slice, not of a whole table


def in_row_slices(quantize, weight, *args):
    """quantize(weight [out, in], *args) -> tensors with `out` rows first, computed on slices of
    QUANTIZE_ROWS rows (rows quantize independently), so that a 151936-row output head does not
    need several fp32 copies of itself at once."""
    import torch

    if weight.shape[0] <= QUANTIZE_ROWS:
        return quantize(weight, *args)
    parts = [quantize(rows, *args) for rows in weight.split(QUANTIZE_ROWS)]
    return tuple(torch.cat(tensors) for tensors in zip(*parts, strict=True))
