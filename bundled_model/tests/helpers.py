"""Shared helpers of the recipe's tests."""

from bundled_model.pretrain_llm import Sizes

# a tiny stage-0 LLM; four layers: stage 0b's lookup reads the one before the last and its kind copy layer 1,
# stage 3's probes layers 0-2
TINY = Sizes(hidden=32, layers=4, heads=2, kv_heads=1, intermediate=64, seq_len=32, batch_size=2)
