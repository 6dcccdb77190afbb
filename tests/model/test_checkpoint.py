"""Checkpoints: both directions with transformers, both key layouts, sharding, from_llm, errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwen_vl.errors import CheckpointError
from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from tests.tiny import IDS as TOKEN_IDS
from tests.tiny import IMG, block, hf_twin, mm_types, pixels, tiny_model

GRID = (1, 6, 8)
IDS = torch.tensor([[3, 4] + block(IMG, GRID) + [5, 6]])
VISION = dict(pixel_values=pixels([GRID], 1), image_grid_thw=torch.tensor([GRID]))


def logits(model, **extra):
    with torch.no_grad():
        return model(IDS, **VISION, **extra).logits


@pytest.mark.parametrize("family,tie", [("qwen2_5_vl", False), ("qwen2_5_vl", True), ("qwen2_vl", False)])
def test_transformers_sharded_checkpoint_loads_in_ours(tmp_path, family, tie):
    ours = tiny_model(family, tie=tie)
    hf = hf_twin(ours, tmp_path / "first")
    hf.save_pretrained(tmp_path / "hf", max_shard_size="30KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    loaded = QwenVLForConditionalGeneration.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    with torch.no_grad():
        theirs = hf(input_ids=IDS, mm_token_type_ids=mm_types(IDS), **VISION).logits
    assert (logits(loaded) - theirs).abs().max() <= 1e-4
    assert loaded.config.tie_word_embeddings == tie
    if tie:
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


def test_ours_saves_what_transformers_loads_sharded_and_back(tmp_path):
    model = tiny_model("qwen2_5_vl")
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(files) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    import transformers

    hf = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32)
    with torch.no_grad():
        theirs = hf(input_ids=IDS, mm_token_type_ids=mm_types(IDS), **VISION).logits
    assert (logits(model) - theirs).abs().max() <= 1e-4
    again = QwenVLForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(logits(again), logits(model))


def test_newer_key_layout_loads(tmp_path):
    model = tiny_model("qwen2_5_vl")
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    renamed = {}
    for key, value in state.items():
        if key.startswith("visual."):
            key = "model." + key
        elif key.startswith("model."):
            key = "model.language_model." + key.removeprefix("model.")
        renamed[key] = value
    save_file(renamed, tmp_path / "model.safetensors")
    again = QwenVLForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(logits(again), logits(model))


def test_bf16_load_and_save_keeps_dtype(tmp_path):
    model = tiny_model("qwen2_5_vl")
    model.save_pretrained(tmp_path / "fp32")
    half = QwenVLForConditionalGeneration.from_pretrained(tmp_path / "fp32", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    half.save_pretrained(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    again = QwenVLForConditionalGeneration.from_pretrained(tmp_path / "bf16")
    assert again.dtype == torch.bfloat16
    assert (logits(again).float() - logits(model)).abs().max() < 0.5  # bf16 rounding only


def test_from_llm_keeps_the_llm_text_logits(tmp_path):
    import transformers

    cfg = transformers.Qwen2Config(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    llm = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in llm.parameters():
            p.normal_(0, 0.2)
    llm.save_pretrained(tmp_path)
    vl = QwenVLForConditionalGeneration.from_llm(
        tmp_path,
        vision_config=dict(hidden_size=32, depth=2, num_heads=2, intermediate_size=48, fullatt_block_indexes=[1]),
        token_ids=TOKEN_IDS,
    )
    ids = torch.randint(0, 280, (2, 19))
    with torch.no_grad():
        ours, theirs = vl(ids).logits, llm(ids).logits
    assert ours.abs().mean() > 0.1
    assert (ours - theirs).abs().max() <= 1e-4
    assert vl.config.vision.out_hidden_size == 64
    # the fresh vision tower works on an image prompt
    with torch.no_grad():
        out = vl(
            torch.tensor([[3] + [vl.config.vision_start_token_id] + [vl.config.image_token_id] * 4 + [5]]),
            pixel_values=torch.randn(16, 1176),
            image_grid_thw=torch.tensor([[1, 4, 4]]),
        )
    assert torch.isfinite(out.logits).all()


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="model directory not found"):
        QwenVLForConditionalGeneration.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        QwenVLForConditionalGeneration.from_pretrained(tmp_path)

    model = tiny_model("qwen2_5_vl")
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        QwenVLForConditionalGeneration.from_pretrained(tmp_path / "m")
    weights.unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        QwenVLForConditionalGeneration.from_pretrained(tmp_path / "m")

    model.save_pretrained(tmp_path / "s", max_shard_size="40KB")
    next((tmp_path / "s").glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="missing: model-00002"):
        QwenVLForConditionalGeneration.from_pretrained(tmp_path / "s")

    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    with pytest.raises(CheckpointError, match="unsupported model_type 'llava'"):
        QwenVLForConditionalGeneration.from_pretrained(tmp_path / "m")

    model.save_pretrained(tmp_path / "w")
    (tmp_path / "w" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match="missing .*model.layers.2"):
        QwenVLForConditionalGeneration.from_pretrained(tmp_path / "w")


def test_attention_backends_agree():
    model = tiny_model("qwen2_5_vl")
    sdpa = logits(model)
    model.attn_backend = "eager"
    assert (logits(model) - sdpa).abs().max() <= 1e-4


def test_save_llm_writes_a_qwen2_llm_that_transformers_and_from_llm_load(tmp_path):
    import transformers

    model = tiny_model("qwen2_5_vl", tie=True)
    model.save_llm(tmp_path)
    llm = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.randint(0, 280, (1, 15))
    with torch.no_grad():
        ours, theirs = model(ids).logits, llm(ids).logits
    assert (ours - theirs).abs().max() <= 1e-4
    again = QwenVLForConditionalGeneration.from_llm(
        tmp_path,
        vision_config=model.config.vision,
        vision_state={k.removeprefix("visual."): v for k, v in model.state_dict().items() if k.startswith("visual.")},
        token_ids=TOKEN_IDS,
    )
    assert torch.equal(logits(again), logits(model))
