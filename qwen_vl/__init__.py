"""qwen-vl: Qwen2.5-VL / Qwen2-VL vision-language models in compact PyTorch.

Names are imported lazily so that `qwen-vl --help` and other light commands start fast."""

__version__ = "0.1.0"

_LAZY = {
    "QwenVLForConditionalGeneration": "qwen_vl.modeling.model",
    "QwenVLConfig": "qwen_vl.config",
    "VisionConfig": "qwen_vl.config",
    "TextConfig": "qwen_vl.config",
    "QwenVLProcessor": "qwen_vl.processing.processor",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qwen_vl' has no attribute {name!r}")
