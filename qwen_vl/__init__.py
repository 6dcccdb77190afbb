"""qwen-vl: Qwen2.5-VL / Qwen2-VL vision-language models in compact PyTorch."""

__version__ = "0.1.0"
