"""Three-stage training of Qwen2.5-VL models (alignment, multimodal pre-training, instruction
tuning) with sequence packing, checkpoints that resume exactly, and accelerate for distribution."""

from qwen_vl.training.config import ConfigError, TrainConfig, load_config

__all__ = ["ConfigError", "TrainConfig", "load_config"]
