"""A tiny model overfits four coloured images with their captions: the loss falls by at least
90 % and greedy decoding then reproduces each caption from its image."""

from __future__ import annotations

from qwen_vl.generation import SamplingConfig, generate_text
from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.processing import QwenVLProcessor
from qwen_vl.training.config import config_from_dict
from qwen_vl.training.metrics import read_metrics
from qwen_vl.training.train import Trainer
from tests.training.helpers import CAPTIONS, PROMPT, base_config, caption_set  # noqa: F401


def test_tiny_model_overfits_captions(tmp_path):
    data = caption_set(tmp_path / "data")
    cfg = config_from_dict(
        base_config(
            tmp_path,
            data,
            stage=2,
            lr={"vision": 2e-3, "merger": 2e-3, "llm": 2e-3},
            warmup_steps=5,
            max_steps=60,
            batch_size=4,
            max_seq_len=256,
        )
    )
    summary = Trainer(cfg).fit()
    losses = [row["loss"] for row in read_metrics(tmp_path / "run" / "metrics.csv")]
    assert len(losses) == 60 and summary["final_loss"] == losses[-1]
    assert losses[-1] <= 0.1 * losses[0], (losses[0], losses[-1])

    final = tmp_path / "run" / "final"
    model = QwenVLForConditionalGeneration.from_pretrained(final)
    processor = QwenVLProcessor.from_pretrained(final)
    images = {colour: str(tmp_path / "data" / "images" / f"{colour}.png") for colour in CAPTIONS}
    conversations = [
        [{"role": "user", "content": [{"type": "image", "image": path}, {"type": "text", "text": PROMPT}]}]
        for path in images.values()
    ]
    answers = generate_text(model, processor, conversations, SamplingConfig(max_new_tokens=12))
    assert answers == list(CAPTIONS.values())
