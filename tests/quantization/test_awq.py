"""AWQ GEMM checkpoints (Qwen's -AWQ releases): the packing, checked against AutoAWQ's own
dequantization, and a checkpoint in the published layout loading and running on the int4 path."""

import importlib.util
import json

import pytest
import torch

from qwen_vl.loading import load_model
from qwen_vl.quantization import awq, int4
from qwen_vl.quantization.int4 import Int4Linear
from qwen_vl.weights import save_state_dict
from tests.quantization.support import GROUP, int4_ready_model, text_ids


def autoawq_packing():
    """AutoAWQ's pure-torch packing module (awq/utils/packing_utils.py), loaded by path: the
    package's __init__ imports its CUDA-era model zoo, which this test does not need."""
    spec = importlib.util.find_spec("awq")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("autoawq is not installed (pip install --no-deps autoawq)")
    path = f"{list(spec.submodule_search_locations)[0]}/utils/packing_utils.py"
    module_spec = importlib.util.spec_from_file_location("autoawq_packing_utils", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_pack_and_unpack_are_inverse():
    gen = torch.Generator().manual_seed(0)
    values = torch.randint(0, 16, (24, 64), generator=gen, dtype=torch.uint8)
    packed = awq.pack(values)
    assert packed.dtype == torch.int32 and packed.shape == (24, 8)
    assert torch.equal(awq.unpack(packed), values)


def test_nibble_order_is_the_published_one():
    values = torch.arange(8, dtype=torch.uint8).view(1, 8)  # column c holds the value c
    nibbles = [(int(awq.pack(values)[0, 0]) >> (4 * i)) & 0xF for i in range(8)]
    assert nibbles == [0, 2, 4, 6, 1, 3, 5, 7]


def test_dequantization_equals_autoawq():
    packing = autoawq_packing()
    weight = (torch.randn(256, 512, generator=torch.Generator().manual_seed(1)) * 0.05).to(torch.bfloat16)
    stored = awq.to_awq(*int4.quantize(weight))  # qweight [in, out/8], qzeros [in/128, out/8], scales [in/128, out]
    theirs = packing.dequantize_gemm(stored["qweight"], stored["qzeros"], stored["scales"], 4, 128)  # [in, out] fp16
    ours = int4.dequantize(*awq.from_awq(stored["qweight"], stored["qzeros"], stored["scales"]), torch.float32)
    assert torch.allclose(ours.t(), theirs.float(), rtol=2**-10, atol=0)  # theirs rounds to fp16 once
    x = torch.randn(3, 512).to(torch.bfloat16)
    reference = x.float() @ theirs.float()
    for layer in (
        Int4Linear.from_quantized(*awq.from_awq(stored["qweight"], stored["qzeros"], stored["scales"]), None),
        int4.linear(*awq.from_awq(stored["qweight"], stored["qzeros"], stored["scales"]), None),  # ours where it runs
    ):
        assert (layer(x).float() - reference).abs().max() <= 4 * 2**-8 * reference.abs().max()


def write_awq_checkpoint(model, path, keep=("visual", "lm_head")):
    """A checkpoint in the published AWQ layout, built from first principles: every text Linear
    as qweight/qzeros/scales (fp16), the rest in fp16, config.json with its quantization_config."""
    state = {}
    linears = {name for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    for key, tensor in model.state_dict().items():
        prefix = key.removesuffix(".weight")
        if key.endswith(".weight") and prefix in linears and not prefix.startswith(keep):
            state.update({f"{prefix}.{k}": v for k, v in awq.to_awq(*int4.quantize(tensor, GROUP)).items()})
        elif not (model.config.tie_word_embeddings and key == "lm_head.weight"):
            state[key] = tensor.to(torch.float16)
    save_state_dict(state, path)
    config = model.config.to_dict()
    config["torch_dtype"] = "float16"
    config["quantization_config"] = {
        "quant_method": "awq",
        "bits": 4,
        "group_size": GROUP,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": ["visual"],
    }
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_an_awq_checkpoint_loads_on_the_int4_path_and_runs(tmp_path):
    model = int4_ready_model()
    write_awq_checkpoint(model, tmp_path)
    from qwen_vl.modeling.model import QwenVLForConditionalGeneration

    loaded = QwenVLForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    layer = loaded.model.layers[0]
    assert all(
        isinstance(m, int4.LINEARS) for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.mlp.down_proj)
    )
    ids = text_ids(8)
    with torch.inference_mode():
        got = loaded(ids).logits.float().log_softmax(-1)
        want = model.to(torch.bfloat16)(ids).logits.float().log_softmax(-1)
    kl = (want.exp() * (want - got)).sum(-1).mean()
    assert kl < 0.05  # 4-bit weights: close to the model they came from, not equal


def test_awq_checkpoints_refuse_other_devices_and_formats(tmp_path, monkeypatch):
    from qwen_vl.errors import CheckpointError, OptionError

    write_awq_checkpoint(int4_ready_model(), tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr("qwen_vl.loading.pick_device", lambda device: "cuda")  # as if a GPU were there
        with pytest.raises(OptionError, match="CPU only"):
            load_model(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"]["version"] = "exllama"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unsupported quantization_config"):
        load_model(tmp_path, device="cpu")
