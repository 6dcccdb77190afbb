"""Our CPU kernels (qwen_vl/kernels) against plain PyTorch references: products within
rounding, dequantization bit for bit, and the fallback when they cannot be built."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from qwen_vl import kernels
from qwen_vl.quantization import int4, int8
from qwen_vl.quantization.streamed import StreamedLinear

needs_kernels = pytest.mark.skipif(kernels.ops() is None, reason="needs AVX-512 BF16/VNNI and a C++ compiler")

# Shapes with tails: widths not a multiple of the 32/64-value vectors, heights not of the 4-row tiles.
SHAPES = [(7, 37), (64, 96), (257, 3420), (300, 2048)]


def randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def block_quantized(x: torch.Tensor, block: int) -> torch.Tensor:
    """x [rows, in] as our int kernels see it: per block of `block` values (256 for int8, the
    weight's group for int4), round(x / s) * s with s = max |x| / 127 (fp32)."""
    rows, width = x.shape
    padded = F.pad(x.float(), (0, -width % block)).view(rows, -1, block)
    scale = padded.abs().amax(-1, keepdim=True) / 127
    inverse = torch.where(scale > 0, 127 / padded.abs().amax(-1, keepdim=True), torch.zeros_like(scale))
    return ((padded * inverse).round() * scale).view(rows, -1)[:, :width]


def assert_close_to(got: torch.Tensor, reference: torch.Tensor, relative: float) -> None:
    scale = reference.float().abs().max()
    assert (got.float() - reference.float()).abs().max() <= relative * scale


@needs_kernels
@pytest.mark.parametrize("out_features,in_features", SHAPES)
@pytest.mark.parametrize("rows", [1, 3, 4, 6])
def test_bf16_product_equals_the_fp32_product_rounded(out_features, in_features, rows):
    x = randn(rows, in_features).bfloat16()
    w = randn(out_features, in_features, seed=1, scale=0.05).bfloat16()
    got = kernels.ops().linear_bf16(x, w)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, out_features)
    # fp32 sums in another order, then one bf16 rounding: within 2 bf16 ulps of the largest output
    assert_close_to(got, x.float() @ w.float().T, 2 * 2**-8)


@needs_kernels
@pytest.mark.parametrize("out_features,in_features", SHAPES)
@pytest.mark.parametrize("rows", [1, 4, 5])
def test_int8_product_equals_the_block_quantized_reference(out_features, in_features, rows):
    x = randn(rows, in_features).bfloat16()
    x[0, :5] = 0  # an all-zero stretch and a zero row must not divide by zero
    if rows > 1:
        x[1] = 0
    qweight, scales = int8.quantize(randn(out_features, in_features, seed=1, scale=0.05).bfloat16())
    got = kernels.ops().linear_int8(x, qweight, scales)
    weight = qweight.float() * scales.float()[:, None]
    assert_close_to(got, block_quantized(x.float(), 256) @ weight.T, 2 * 2**-8)
    # and the activation rounding itself costs about a percent of the largest output
    assert_close_to(got, x.float() @ weight.T, 0.03)


@needs_kernels
def test_int8_dequantization_is_bit_exact():
    qweight, scales = int8.quantize(randn(130, 200, scale=0.05).bfloat16())
    assert torch.equal(kernels.ops().dequantize_int8(qweight, scales), int8.dequantize(qweight, scales))


def int4_layer(out_features: int, in_features: int, group: int = 128):
    q, zeros, scales = int4.quantize(randn(out_features, in_features, seed=1, scale=0.05).bfloat16(), group)
    return int4.TiledInt4Linear.from_quantized(q, zeros, scales, None), int4.dequantize(q, zeros, scales, torch.float32)


@needs_kernels
@pytest.mark.parametrize("out_features,in_features,group", [(16, 128, 128), (320, 256, 128), (48, 384, 64)])
@pytest.mark.parametrize("rows", [1, 3, 4, 6])
def test_int4_product_equals_the_group_quantized_reference(out_features, in_features, group, rows):
    layer, weight = int4_layer(out_features, in_features, group)
    x = randn(rows, in_features).bfloat16()
    x[0, :group] = 0  # a group of zeros must not divide by zero
    got = kernels.ops().linear_int4(x, layer.tiles, layer.scales, layer.zeros)
    assert got.shape == (rows, out_features)
    assert_close_to(got, block_quantized(x, group) @ weight.T, 2 * 2**-8)
    assert_close_to(got, x.float() @ weight.T, 0.03)


@needs_kernels
def test_int4_tiles_dequantize_bit_exactly():
    layer, weight = int4_layer(64, 256)
    assert torch.equal(layer.dequantized_columns(16, 48), weight[16:48].bfloat16().T)


@needs_kernels
@pytest.mark.parametrize("rows", [5, 300])
def test_quantized_prefill_takes_dequantized_slices(rows, monkeypatch):
    monkeypatch.setattr(kernels, "SLICE_BYTES", 128 * 256 * 2)  # 128-row slices: three, the last one short
    linear = nn.Linear(256, 320).bfloat16()
    x = randn(rows, 256).bfloat16()
    with torch.inference_mode():
        for layer, weight in [
            (int8.Int8Linear.from_linear(linear), lambda layer: int8.dequantize(layer.qweight, layer.scales)),
            (
                int4.linear(*int4.quantize(linear.weight), linear.bias),
                lambda layer: layer.dequantized_columns(0, 320).T,
            ),
        ]:
            assert_close_to(layer(x), x.float() @ weight(layer).float().T + linear.bias.float(), 2 * 2**-8)


@needs_kernels
def test_streamed_linear_decodes_with_the_kernel_and_trains_with_autograd():
    linear = nn.Linear(96, 50).bfloat16()
    layer = StreamedLinear.from_linear(linear)
    assert layer.weight is linear.weight  # shared, never copied
    x = randn(2, 1, 96).bfloat16()
    with torch.inference_mode():
        assert_close_to(layer(x), F.linear(x.float(), linear.weight.float(), linear.bias.float()), 2 * 2**-8)
    layer(randn(3, 96).bfloat16()).float().sum().backward()
    assert linear.weight.grad is not None and linear.weight.grad.shape == (50, 96)


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


def test_disabled_kernels_leave_pytorch_kernels():
    result = run_python("from qwen_vl import kernels; print(kernels.ops())", QWEN_VL_CPU_KERNELS="0")
    assert result.returncode == 0 and result.stdout.strip() == "None"


@needs_kernels
def test_an_unbuildable_cache_is_one_line_and_a_fallback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_python("from qwen_vl import kernels; print(kernels.ops())", QWEN_VL_KERNELS_CACHE=str(blocker))
    assert result.returncode == 0 and result.stdout.strip() == "None"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qwen-vl: CPU kernels unavailable (")


@needs_kernels
def test_load_model_streams_bf16_layers_and_keeps_the_logits(tmp_path):
    from qwen_vl.loading import load_model
    from qwen_vl.modeling.model import QwenVLForConditionalGeneration
    from tests.quantization.support import text_ids
    from tests.tiny import save_tiny_model_dir

    model, _ = load_model(save_tiny_model_dir(tmp_path), device="cpu", dtype=torch.bfloat16)
    assert isinstance(model.lm_head, StreamedLinear) and isinstance(model.model.layers[0].mlp.down_proj, StreamedLinear)
    plain = QwenVLForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    ids = text_ids(7)
    with torch.inference_mode():
        full = plain(ids).logits
        # the last position alone is a one-row product: the kernel's, within rounding of oneDNN's
        assert_close_to(model(ids, logits_to_keep=1).logits[:, -1], full[:, -1], 4 * 2**-8)
        assert torch.equal(model(ids).logits, full)  # seven rows: the plain GEMM, bit for bit
    model, _ = load_model(tmp_path, device="cpu", dtype=torch.float32)
    assert not any(isinstance(m, StreamedLinear) for m in model.modules())


@needs_kernels
@pytest.mark.parametrize("width", [37, 1280])
def test_fused_rms_norm_matches_the_unfused_one(width, monkeypatch):
    from qwen_vl.modeling.layers import RMSNorm

    norm = RMSNorm(width).bfloat16()
    norm.weight.data = (randn(width, seed=2) * 0.5 + 1).bfloat16()
    x = (randn(3, 5, width) * 4).bfloat16()
    with torch.inference_mode():
        fused = norm(x)
        monkeypatch.setattr(kernels, "ops", lambda: None)
        plain = norm(x)
    # sums of squares in another order: at most one bf16 step apart, and rarely that
    assert (fused.float() - plain.float()).abs().max() <= 2**-7 * plain.float().abs().max()
    assert (fused != plain).float().mean() < 0.01


@needs_kernels
def test_fused_rotary_matches_fp32_rotation_of_a_strided_view():
    from qwen_vl.modeling.layers import apply_rotary

    qkv = randn(50, 3, 4, 80).bfloat16()
    q = qkv[:, 1]  # [S, H, D] with a row stride of 3 * H * D, as the vision attention has it
    angles = randn(50, 1, 80, seed=3) * 20
    cos, sin = angles.cos(), angles.sin()
    got = kernels.ops().rotary_bf16(q, cos, sin)
    want = apply_rotary(q.float(), cos, sin)
    assert got.is_contiguous() and got.shape == (50, 4, 80)
    assert (got.float() - want).abs().max() <= 2**-8 * want.abs().max()


@needs_kernels
def test_bf16_model_with_fused_kernels_keeps_its_logits(monkeypatch):
    from tests.tiny import IMG, block, pixels, tiny_model

    model = tiny_model().to(torch.bfloat16)
    grid = (1, 8, 12)
    ids = torch.tensor([[3, 4] + block(IMG, grid) + [5, 6, 7]])
    inputs = {"pixel_values": pixels([grid], 1).bfloat16(), "image_grid_thw": torch.tensor([grid])}
    with torch.inference_mode():
        fused = model(ids, **inputs).logits.float()
        monkeypatch.setattr(kernels, "ops", lambda: None)
        plain = model(ids, **inputs).logits.float()
    assert (fused - plain).abs().max() <= 0.05 * plain.abs().max()


@needs_kernels
def test_a_failed_build_is_told_once_and_remembered(tmp_path):
    code = "from qwen_vl import kernels; print(kernels.ops())"
    env = {"QWEN_VL_KERNELS_CACHE": str(tmp_path), "CXX": str(tmp_path / "no-such-compiler")}
    first, second = run_python(code, **env), run_python(code, **env)
    assert first.stdout.strip() == second.stdout.strip() == "None"
    assert first.stderr.strip().splitlines()[-1].startswith("qwen-vl: CPU kernels unavailable (")
    assert "WARNING" not in first.stderr and second.stderr.strip() == ""
