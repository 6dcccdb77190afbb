"""int8 / int4 weight-only Linears: products against dequantize-then-matmul, within rounding."""

import pytest
import torch
import torch.nn.functional as F

from qwen_vl.quantization import int4, int8


def bf16_weight(out_features: int, in_features: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(out_features, in_features, generator=gen) * 0.05).to(torch.bfloat16)


def assert_within_rounding(got: torch.Tensor, reference: torch.Tensor) -> None:
    """Equal up to bf16 output rounding and a different summation order (a few ulps of the
    largest outputs)."""
    tolerance = 4 * 2**-8 * reference.float().abs().max()
    assert (got.float() - reference.float()).abs().max() <= tolerance


def test_int8_round_trip_is_within_half_a_step():
    weight = bf16_weight(64, 96)
    qweight, scales = int8.quantize(weight)
    assert qweight.dtype == torch.int8 and scales.shape == (64,)
    error = (int8.dequantize(qweight, scales, torch.float32) - weight.float()).abs()
    assert (error <= scales.float()[:, None] / 2 + 1e-6).all()


@pytest.mark.parametrize("rows", [1, 5, 40])
def test_int8_products_match_dequantize_then_matmul(rows):
    weight, bias = bf16_weight(128, 96), bf16_weight(1, 128, seed=1)[0]
    qweight, scales = int8.quantize(weight)
    layer = int8.Int8Linear.from_quantized(qweight, scales, bias)
    x = torch.randn(2, rows, 96).to(torch.bfloat16)
    reference = F.linear(x.float(), int8.dequantize(qweight, scales, torch.float32), bias.float())
    with torch.inference_mode():
        assert_within_rounding(layer(x), reference)


def test_int4_round_trip_is_within_half_a_step():
    weight = bf16_weight(64, 256)
    q, zeros, scales = int4.quantize(weight)
    assert q.shape == (64, 256) and zeros.shape == scales.shape == (64, 2) and scales.dtype == torch.float16
    assert int(q.max()) <= 15 and int(zeros.max()) <= 15
    error = (int4.dequantize(q, zeros, scales, torch.float32) - weight.float()).abs()
    assert (error <= scales.float().repeat_interleave(128, 1) / 2 + 1e-3 * weight.float().abs().max()).all()


def test_the_kernel_layout_unpacks_to_the_values_packed():
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (192, 256), generator=gen, dtype=torch.uint8)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
    assert torch.equal(int4.unpack_kernel_layout(packed), q)


@pytest.mark.parametrize("rows", [1, 5, 300])
def test_int4_products_match_dequantize_then_matmul(rows):
    weight, bias = bf16_weight(128, 256), bf16_weight(1, 128, seed=1)[0]
    q, zeros, scales = int4.quantize(weight, group_size=64)
    layer = int4.Int4Linear.from_quantized(q, zeros, scales, bias)
    x = torch.randn(rows, 256).to(torch.bfloat16)
    reference = F.linear(x.float(), int4.dequantize(q, zeros, scales, torch.float32), bias.float())
    with torch.inference_mode():
        assert_within_rounding(layer(x), reference)
    # the module's own dequantization is the format's, up to bf16 rounding of scales and offsets
    assert_within_rounding(layer.dequantized(torch.float32), int4.dequantize(q, zeros, scales, torch.float32))


def test_int4_refuses_widths_that_are_not_whole_groups():
    with pytest.raises(ValueError, match="divisible"):
        int4.quantize(bf16_weight(64, 100))
    assert not int4.fits(96, 256) and int4.fits(128, 256)


def test_quantizing_in_row_slices_gives_the_same_tensors(monkeypatch):
    import qwen_vl.quantization as quantization

    weight = bf16_weight(300, 256)
    whole = int8.quantize(weight) + int4.quantize(weight)
    monkeypatch.setattr(quantization, "QUANTIZE_ROWS", 64)  # five slices, the last one short
    sliced = int8.quantize(weight) + int4.quantize(weight)
    assert all(torch.equal(a, b) for a, b in zip(whole, sliced, strict=True))
