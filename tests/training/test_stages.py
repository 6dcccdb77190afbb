"""Each stage trains exactly its components: after a few steps the frozen parameters are
bit-identical to the start and every trained one has moved. LoRA and LLM-based starts too."""

from __future__ import annotations

import pytest
import torch

from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.training.config import config_from_dict
from qwen_vl.training.params import component_of
from qwen_vl.training.train import Trainer
from qwen_vl.weights import load_state_dict
from tests.training.helpers import base_config, mixed_set, model_dir  # noqa: F401

EXPECTED = {
    1: {"vision": False, "merger": True, "llm": False},
    2: {"vision": True, "merger": True, "llm": True},
    3: {"vision": False, "merger": True, "llm": True},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return mixed_set(tmp_path_factory.mktemp("data"), n_text=2)


def changed_by_component(before: dict, after: dict) -> dict[str, set[bool]]:
    seen: dict[str, set[bool]] = {}
    for name, tensor in before.items():
        seen.setdefault(component_of(name), set()).add(not torch.equal(tensor, after[name]))
    return seen


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_trains_only_its_components(tmp_path, data, stage):
    cfg = config_from_dict(base_config(tmp_path, data, stage=stage, max_steps=2, batch_size=3))
    before = load_state_dict(tmp_path / "tiny")
    Trainer(cfg).fit()
    after = load_state_dict(tmp_path / "run" / "final")
    seen = changed_by_component(before, after)
    for component, learns in EXPECTED[stage].items():
        assert seen[component] == {learns}, (stage, component, seen[component])


def test_stage1_with_vit_unfrozen(tmp_path, data):
    cfg = config_from_dict(base_config(tmp_path, data, stage=1, train={"vision": True}, max_steps=2, batch_size=3))
    before = load_state_dict(tmp_path / "tiny")
    Trainer(cfg).fit()
    seen = changed_by_component(before, load_state_dict(tmp_path / "run" / "final"))
    assert seen == {"vision": {True}, "merger": {True}, "llm": {False}}


def test_lora_trains_adapters_and_saves_merged_weights(tmp_path, data):
    cfg = config_from_dict(base_config(tmp_path, data, stage=3, lora={"r": 4, "alpha": 8}, max_steps=2, batch_size=3))
    before = load_state_dict(tmp_path / "tiny")
    trainer = Trainer(cfg)
    lora_names = [n for n, p in trainer.unwrapped.named_parameters() if p.requires_grad and ".lora_" in n]
    assert lora_names and all(n.startswith("model.layers.") for n in lora_names)
    assert not any(
        p.requires_grad for n, p in trainer.unwrapped.named_parameters() if n.startswith(("model.embed", "lm_head"))
    )
    trainer.fit()
    after = load_state_dict(tmp_path / "run" / "final")
    assert set(after) == set(before)  # plain names, no adapter tensors
    for name in before:
        moved = not torch.equal(before[name], after[name])
        linear_in_layers = name.startswith("model.layers.") and name.endswith("proj.weight")
        assert moved == (linear_in_layers or name.startswith("visual.merger.")), name
    # the merged checkpoint gives the same logits as the trained model with live adapters
    merged = QwenVLForConditionalGeneration.from_pretrained(tmp_path / "run" / "final")
    batch = trainer._micro_batch()
    with torch.no_grad():
        want = trainer.unwrapped.eval()(**batch.model_inputs()).logits
        got = merged(**batch.model_inputs()).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_stage1_from_text_llm_and_vision_config(tmp_path, data):
    import transformers

    vl_dir = model_dir(tmp_path / "tiny")
    tok = transformers.AutoTokenizer.from_pretrained(vl_dir)
    llm_config = transformers.Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(llm_config).save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    vision = {"hidden_size": 32, "depth": 2, "num_heads": 2, "intermediate_size": 48, "fullatt_block_indexes": [1]}
    cfg = config_from_dict(
        base_config(
            tmp_path, data, stage=1, init={"llm": str(tmp_path / "llm"), "vision": vision}, max_steps=2, batch_size=3
        )
    )
    Trainer(cfg).fit()
    llm = load_state_dict(tmp_path / "llm")
    final = load_state_dict(tmp_path / "run" / "final")
    for name, tensor in llm.items():
        assert torch.equal(final[name], tensor), name  # the LLM is frozen in stage 1
    assert any(k.startswith("visual.merger.") for k in final)
    model = QwenVLForConditionalGeneration.from_pretrained(tmp_path / "run" / "final")
    assert model.config.vision.depth == 2 and model.config.vision.out_hidden_size == 64


def test_gradient_checkpointing_gives_the_same_training(tmp_path, data):
    runs = {}
    for flag in (False, True):
        settings = base_config(tmp_path, data, max_steps=2, batch_size=3, gradient_checkpointing=flag)
        settings["output_dir"] = str(tmp_path / f"run-{flag}")
        runs[flag] = Trainer(config_from_dict(settings)).fit()["final_loss"]
        final = load_state_dict(tmp_path / f"run-{flag}" / "final")
        runs[f"w{flag}"] = final["model.layers.1.mlp.down_proj.weight"]
    assert runs[True] == pytest.approx(runs[False], abs=1e-6)
    torch.testing.assert_close(runs["wTrue"], runs["wFalse"], atol=1e-6, rtol=1e-6)


def test_bf16_mixed_precision_trains(tmp_path, data):
    import subprocess
    import sys
    from pathlib import Path

    from tests.training.helpers import subprocess_env, write_config

    config = write_config(
        tmp_path / "c.yaml", **base_config(tmp_path, data, max_steps=2, batch_size=3, mixed_precision="bf16")
    )
    result = subprocess.run(
        [sys.executable, "-m", "qwen_vl.training.train", "--config", str(config)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, env=subprocess_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    final = QwenVLForConditionalGeneration.from_pretrained(tmp_path / "run" / "final")
    assert final.dtype == torch.float32  # master weights stay fp32; autocast runs the products in bf16
