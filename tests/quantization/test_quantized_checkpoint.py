"""`qwen-vl quantize` checkpoints, load_model(quantize=...), and the CLI's --quantize option."""

import json

import pytest
import torch

from qwen_vl.loading import load_model
from qwen_vl.quantization import int4
from qwen_vl.quantization.checkpoint import quantize_checkpoint
from qwen_vl.quantization.int8 import Int8Linear
from tests.cli.support import assert_clean_error, qwen_vl
from tests.quantization.support import int4_ready_model, text_ids
from tests.tiny import save_tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("plain")
    int4_ready_model().save_pretrained(path)
    return path


@pytest.mark.parametrize("bits, kind", [("int8", Int8Linear), ("int4", int4.LINEARS)])
def test_saved_quantized_checkpoint_loads_without_quantizing_again(model_dir, tmp_path, bits, kind):
    quantized, _ = quantize_checkpoint(model_dir, tmp_path / "q", bits)
    # two decoder layers of 7 Linears; the vision tower is kept, and in int4 the (tied) head too
    assert quantized == 2 * 7 + (bits == "int8")
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert config["bits"] == (4 if bits == "int4" else 8)
    ids = text_ids(9)
    with torch.inference_mode():
        at_load, _ = load_model_dir(model_dir, bits)
        stored, _ = load_model_dir(tmp_path / "q", None)
        assert isinstance(stored.model.layers[1].mlp.up_proj, kind)
        assert isinstance(stored.lm_head, kind) == (bits == "int8") == isinstance(at_load.lm_head, kind)
        assert stored.model.embed_tokens.weight.dtype == torch.bfloat16  # the lookup table stays
        assert torch.equal(at_load(ids).logits, stored(ids).logits)


def load_model_dir(path, bits):
    save_processor_files(path)
    return load_model(path, device="cpu", dtype=torch.bfloat16, quantize=bits)


def save_processor_files(path):
    """load_model needs a tokenizer and preprocessor beside the weights."""
    if not (path / "tokenizer.json").exists():
        donor = save_tiny_model_dir(path.parent / f"{path.name}-donor")
        for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
            if (donor / name).exists():
                (path / name).write_bytes((donor / name).read_bytes())


def test_quantized_models_stay_close_to_bf16(model_dir):
    ids = text_ids(16, seed=3)
    save_processor_files(model_dir)
    with torch.inference_mode():
        base = load_model(model_dir, device="cpu", dtype=torch.bfloat16)[0](ids).logits.float().log_softmax(-1)
        int8 = load_model(model_dir, device="cpu", dtype=torch.bfloat16, quantize="int8")[0](ids).logits
    kl = (base.exp() * (base - int8.float().log_softmax(-1))).sum(-1).mean()
    assert kl < 1e-3


def test_cli_quantize_option_runs_on_the_bundled_model():
    for bits in ("int8", "int4"):
        result = qwen_vl("ask", "-q", "What is shown?", "--quantize", bits, "--max-new-tokens", "3", "--device", "cpu")
        assert result.returncode == 0, result.stderr


def test_bad_quantize_values_are_one_line_and_exit_2(tmp_path):
    assert_clean_error(qwen_vl("ask", "-q", "hi", "--quantize", "int3"), "--quantize int3")
    assert_clean_error(qwen_vl("quantize", str(tmp_path / "none"), str(tmp_path / "out")), "not found")
    assert_clean_error(qwen_vl("quantize", str(tmp_path), str(tmp_path / "out"), "--bits", "fp4"), "--bits fp4")


def test_cli_quantize_writes_a_loadable_checkpoint(tmp_path):
    from qwen_vl.loading import BUNDLED_MODEL_DIR

    result = qwen_vl("quantize", str(BUNDLED_MODEL_DIR), str(tmp_path / "q"), "--bits", "int4")
    assert result.returncode == 0, result.stderr
    answer = qwen_vl("ask", "-q", "What is shown?", "--model", tmp_path / "q", "--max-new-tokens", "3")
    assert answer.returncode == 0, answer.stderr
