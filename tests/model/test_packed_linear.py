"""oneDNN-packed bf16 weights for CPU inference: same bits as the plain path, never used in training."""

import pytest
import torch

from qwen_vl.generation import SamplingConfig, generate_ids
from qwen_vl.loading import load_model
from qwen_vl.modeling.layers import Linear, onednn_linear_available
from tests.tiny import IDS, save_tiny_model_dir, tiny_model

needs_onednn = pytest.mark.skipif(
    not onednn_linear_available(), reason="oneDNN packed bf16 linear needs a CPU with bf16 matrix units"
)


def bf16_tiny():
    torch.manual_seed(0)
    return tiny_model(tie=True).to(torch.bfloat16).eval()


def text_ids(length: int) -> torch.Tensor:
    return torch.randint(0, IDS["vision_start_token_id"], (1, length))  # below the vision tokens


@needs_onednn
@pytest.mark.parametrize("rows", [1, 3, 37])
def test_packed_linear_gives_the_same_bits(rows):
    torch.manual_seed(0)
    layer = Linear(96, 160).to(torch.bfloat16)
    x = torch.randn(2, rows, 96, dtype=torch.bfloat16)
    with torch.inference_mode():
        plain = layer(x)
        assert layer.pack()
        packed = layer(x)
    assert torch.equal(plain, packed)


def test_fp32_weights_are_not_packed():
    layer = Linear(8, 8)
    assert not layer.pack() and layer.packed is None


@needs_onednn
def test_packed_model_generates_the_same_tokens():
    model = bf16_tiny()
    ids = text_ids(9)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    sampling = SamplingConfig(max_new_tokens=10)
    with torch.inference_mode():
        plain_logits = model(ids).logits
        plain = generate_ids(model, batch, sampling, stop_ids=set())
        packed_count = model.pack_for_inference()
        packed_logits = model(ids).logits
        packed = generate_ids(model, batch, sampling, stop_ids=set())
    layers = model.model.layers
    # every Linear is packed; a decoder layer's q/k/v and gate/up each as one fused product
    assert packed_count == sum(isinstance(m, Linear) for m in model.modules()) - 3 * len(layers)
    assert all(layer.self_attn.fused_qkv and layer.mlp.fused_gate_up for layer in layers)
    assert layers[0].self_attn.q_proj.packed is None  # the fused copy replaces the layer's own
    assert model.lm_head.packed is not None  # the tied head too
    assert torch.equal(plain_logits, packed_logits)
    assert packed == plain


@needs_onednn
def test_training_mode_drops_packed_copies_and_gradients_flow():
    model = bf16_tiny()
    model.pack_for_inference()
    keys = set(model.state_dict())
    model.visual.train()  # any part switched to training drops its own copies
    assert all(m.packed is None for m in model.visual.modules() if isinstance(m, Linear))
    assert model.lm_head.packed is not None
    model.train()
    assert all(m.packed is None for m in model.modules() if isinstance(m, Linear))
    assert not any(layer.self_attn.fused_qkv or layer.mlp.fused_gate_up for layer in model.model.layers)
    assert set(model.state_dict()) == keys  # packing never touches the checkpoint's tensors
    ids = text_ids(6)
    model(ids, labels=ids).loss.backward()
    assert model.lm_head.weight.grad is not None


@needs_onednn
def test_packed_copy_is_not_used_when_gradients_are_needed():
    layer = Linear(16, 8).to(torch.bfloat16)
    layer.pack()
    with torch.no_grad():
        layer.weight.zero_()  # the packed copy is now stale; a grad-enabled call must not read it
    x = torch.randn(1, 16, dtype=torch.bfloat16, requires_grad=True)
    assert torch.equal(layer(x), layer.bias.expand(1, 8))


@needs_onednn
def test_load_model_packs_on_cpu_in_bf16(tmp_path):
    model, _ = load_model(save_tiny_model_dir(tmp_path), device="cpu", dtype=torch.bfloat16)
    assert model.lm_head.packed is not None
    model, _ = load_model(tmp_path, device="cpu", dtype=torch.float32)
    assert model.lm_head.packed is None
    assert model.model.layers[0].self_attn.fused_qkv is None and model.model.layers[0].mlp.fused_gate_up is None


@needs_onednn
def test_fused_products_are_not_used_when_gradients_are_needed():
    model = bf16_tiny()
    model.pack_for_inference()  # eval mode: the fused copies stay, but a grad-enabled pass must not read them
    ids = text_ids(6)
    model(ids, labels=ids).loss.backward()
    attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert attention.fused_qkv is not None
    assert attention.k_proj.weight.grad is not None and mlp.up_proj.weight.grad is not None
