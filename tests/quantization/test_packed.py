"""oneDNN-packed bf16 Linears, swapped in at load time: the same bits as the plain path."""

import pytest
import torch
import torch.nn as nn

from qwen_vl import kernels
from qwen_vl.generation import SamplingConfig, generate_ids
from qwen_vl.loading import load_model
from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.quantization.convert import pack_model
from qwen_vl.quantization.packed import PackedLinear, onednn_linear_available
from tests.quantization.support import text_ids
from tests.tiny import save_tiny_model_dir, tiny_model

needs_onednn = pytest.mark.skipif(
    not onednn_linear_available(), reason="oneDNN packed bf16 linear needs a CPU with bf16 matrix units"
)


@needs_onednn
@pytest.mark.parametrize("rows", [1, 3, 37])
def test_packed_linear_gives_the_same_bits(rows):
    torch.manual_seed(0)
    layer = nn.Linear(96, 160).to(torch.bfloat16)
    x = torch.randn(2, rows, 96, dtype=torch.bfloat16)
    packed = PackedLinear.from_weight(layer.weight, layer.bias)
    with torch.inference_mode():
        assert torch.equal(layer(x), packed(x))
    assert torch.equal(packed.weight, layer.weight)  # the plain weight comes back from the blocked copy


def test_fp32_weights_are_not_packed():
    assert PackedLinear.from_weight(torch.randn(8, 8), None) is None


@needs_onednn
def test_packed_model_generates_the_same_tokens():
    model = tiny_model(tie=True).to(torch.bfloat16).eval()
    ids = text_ids(9)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    sampling = SamplingConfig(max_new_tokens=10)
    linears = sum(type(m) is nn.Linear for m in model.modules())
    with torch.inference_mode():
        plain_logits = model(ids).logits
        plain = generate_ids(model, batch, sampling, stop_ids=set())
        assert pack_model(model) == linears  # every Linear, the tied head included
        packed_logits = model(ids).logits
        packed = generate_ids(model, batch, sampling, stop_ids=set())
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert torch.equal(plain_logits, packed_logits)
    assert packed == plain


@needs_onednn
def test_packed_layers_refuse_gradients():
    layer = PackedLinear.from_weight(torch.randn(8, 16, dtype=torch.bfloat16), None)
    with pytest.raises(RuntimeError, match="inference"):
        layer(torch.randn(1, 16, dtype=torch.bfloat16, requires_grad=True))


@needs_onednn
def test_load_model_packs_on_cpu_in_bf16_only_without_our_kernels(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "ops", lambda: None)
    model, _ = load_model(save_tiny_model_dir(tmp_path), device="cpu", dtype=torch.bfloat16)
    assert isinstance(model.lm_head, PackedLinear) and isinstance(model.visual.blocks[0].attn.qkv, PackedLinear)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16  # the embedding stays a plain table
    model, _ = load_model(tmp_path, device="cpu", dtype=torch.float32)
    assert not any(isinstance(m, PackedLinear) for m in model.modules())


def test_loaded_bf16_model_gives_the_bits_of_the_model_it_was_saved_from(tmp_path):
    """Loading reads each tensor once and assigns it: the logits are those of the saved model."""
    model = tiny_model(tie=True)
    model.save_pretrained(tmp_path)
    ids = text_ids(7)
    with torch.inference_mode():
        want = model.to(torch.bfloat16)(ids).logits
        plain = QwenVLForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
        got = plain(ids).logits
    assert torch.equal(want, got)
    assert plain.lm_head.weight is plain.model.embed_tokens.weight  # still tied


def test_plainly_loaded_model_trains(tmp_path):
    tiny_model(tie=True).save_pretrained(tmp_path)
    model = QwenVLForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32).train()
    ids = text_ids(6)
    model(ids, labels=ids).loss.backward()
    assert model.lm_head.weight.grad is not None and model.model.layers[0].self_attn.k_proj.weight.grad is not None
