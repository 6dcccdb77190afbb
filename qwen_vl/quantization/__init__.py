"""Inference-time weight formats, swapped in for nn.Linear at load time (the model's own modules
stay plain): oneDNN-packed bf16, int8 per channel, int4 in groups (also AWQ checkpoints)."""
