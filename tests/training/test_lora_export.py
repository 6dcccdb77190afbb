"""A LoRA run saves whole checkpoints with the adapters merged into the weights: transformers'
Qwen2_5_VLForConditionalGeneration, loading `final`, greedily generates the tokens that the
adapter-wrapped model of the run generates (float32, tiny model)."""

from __future__ import annotations

import torch

from qwen_vl.processing import QwenVLProcessor
from qwen_vl.training.config import config_from_dict
from qwen_vl.training.train import Trainer
from qwen_vl.weights import load_state_dict
from tests.training.helpers import PROMPT, base_config, mixed_set

NEW_TOKENS = 8


def greedy(forward, batch: dict, steps: int) -> list[int]:
    """Tokens of a greedy decode of one prompt, recomputing the whole sequence at each step."""
    ids, mask, tokens = batch["input_ids"], batch["attention_mask"], []
    for _ in range(steps):
        with torch.no_grad():
            logits = forward({**batch, "input_ids": ids, "attention_mask": mask})
        token = int(logits[0, -1].argmax())
        tokens.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], dim=1)
    return tokens


def test_merged_lora_checkpoint_generates_what_the_adapters_generate(tmp_path):
    import transformers

    data = mixed_set(tmp_path / "data", n_text=2)
    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    config = base_config(
        tmp_path, data, stage=3, max_steps=4, batch_size=3, lora=lora, lr={"merger": 1e-2, "llm": 1e-2}
    )
    trainer = Trainer(config_from_dict(config))
    trainer.fit()
    final = tmp_path / "run" / "final"
    saved = load_state_dict(final)
    assert not any(".lora_" in name or "base_layer" in name for name in saved)
    start = load_state_dict(tmp_path / "tiny")
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.allclose(saved[name], start[name])  # the adapters moved the weights

    adapted = trainer.unwrapped.eval()
    assert any(".lora_A." in n for n, _ in adapted.named_parameters())
    merged = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(final, dtype=torch.float32).eval()
    processor = QwenVLProcessor.from_pretrained(final)
    image = str(tmp_path / "data" / "images" / "red.png")
    conversation = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": PROMPT}]}]
    batch = dict(processor([conversation], add_generation_prompt=True).items())
    image_id = adapted.config.image_token_id

    want = greedy(lambda b: adapted(**b).logits, batch, NEW_TOKENS)
    got = greedy(lambda b: merged(**b, mm_token_type_ids=(b["input_ids"] == image_id).int()).logits, batch, NEW_TOKENS)
    assert got == want
