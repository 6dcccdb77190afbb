"""A trained checkpoint (full fine-tuning and LoRA-merged) loads in transformers'
Qwen2_5_VLForConditionalGeneration and gives the logits our model gives."""

from __future__ import annotations

import pytest
import torch

from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.processing import QwenVLProcessor
from qwen_vl.training.config import config_from_dict
from qwen_vl.training.train import Trainer
from qwen_vl.weights import load_state_dict
from tests.training.helpers import PROMPT, base_config, mixed_set  # noqa: F401


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}])
def test_trained_checkpoint_loads_in_transformers(tmp_path, lora):
    import transformers

    data = mixed_set(tmp_path / "data", n_text=2)
    Trainer(config_from_dict(base_config(tmp_path, data, stage=3, max_steps=3, batch_size=3, lora=lora))).fit()
    final = tmp_path / "run" / "final"
    start = load_state_dict(tmp_path / "tiny")
    assert not torch.equal(
        load_state_dict(final)["model.layers.0.self_attn.q_proj.weight"],
        start["model.layers.0.self_attn.q_proj.weight"],
    )

    ours = QwenVLForConditionalGeneration.from_pretrained(final)
    theirs = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(final, dtype=torch.float32).eval()
    processor = QwenVLProcessor.from_pretrained(final)
    image = str(tmp_path / "data" / "images" / "green.png")
    batch = processor(
        [
            [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": PROMPT}]}],
            [{"role": "user", "content": "How many shapes are there?"}],
        ]
    )
    image_id = ours.config.image_token_id
    with torch.no_grad():
        want = ours(**dict(batch.items())).logits
        got = theirs(**dict(batch.items()), mm_token_type_ids=(batch.input_ids == image_id).int()).logits
    real = batch.attention_mask.bool()
    assert want.abs().mean() > 0.1
    torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=1e-4)
