"""What each nn.Linear of a model becomes at load time, and the swap itself.

The loader fills the model module by module and hands every Linear to a `LinearConversion`,
which returns its replacement (Int8Linear, Int4Linear, PackedLinear) or None to keep it. The
original weight is dropped as soon as its replacement exists, so at most one layer is held
twice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import CheckpointError, OptionError
from . import awq, int4, int8
from .packed import PackedLinear
from .widened import WidenedLinear

BITS = ("int8", "int4")
# Stay in the model dtype: the vision tower (prefill-only GEMMs, where int kernels do not pay;
# also what Qwen's AWQ checkpoints do) and, in int4, the output head (see docs/quantization.md).
KEEP = {"int4": ("visual", "lm_head"), "int8": ("visual",)}
QUANTIZED_SUFFIXES = ("qweight", "qzeros", "scales")  # tensors that replace a Linear's `weight`
INT8_METHOD = "qwen_vl_int8"


def check_bits(bits: str | None, option: str = "--quantize") -> str | None:
    if bits not in (None, *BITS):
        raise OptionError(f"{option} {bits}: not a weight format (choose {' or '.join(BITS)})")
    return bits


def checkpoint_format(quantization_config: dict | None) -> str | None:
    """'int4' for AWQ GEMM checkpoints, 'int8' for ours, None for plain ones; other formats are
    an error naming what is supported."""
    if not quantization_config:
        return None
    method = str(quantization_config.get("quant_method", "")).lower()
    bits, version = quantization_config.get("bits"), str(quantization_config.get("version", "gemm")).lower()
    if method == "awq" and bits == 4 and version == "gemm" and quantization_config.get("zero_point", True):
        return "int4"
    if method == INT8_METHOD and bits == 8:
        return "int8"
    raise CheckpointError(
        f"unsupported quantization_config (quant_method={method!r}, bits={bits}, version={version!r}): "
        "qwen-vl loads AWQ GEMM 4-bit and its own int8 checkpoints"
    )


def quantization_config(bits: str, keep: tuple[str, ...] | None = None, group_size: int = int4.GROUP_SIZE) -> dict:
    """The config.json entry of a checkpoint quantized by `qwen-vl quantize`."""
    keep = keep_for(bits, keep)
    if bits == "int4":
        return {
            "quant_method": "awq",
            "bits": 4,
            "group_size": group_size,
            "zero_point": True,
            "version": "gemm",
            "modules_to_not_convert": list(keep),
        }
    return {"quant_method": INT8_METHOD, "bits": 8, "group_size": -1, "modules_to_not_convert": list(keep)}


def keep_for(bits: str, keep: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The module prefixes left unquantized: `keep`, or KEEP's for `bits` when it is None."""
    return KEEP[bits] if keep is None else keep


def kept(name: str, keep: tuple[str, ...]) -> bool:
    return any(name == k or name.startswith(k + ".") for k in keep)


def quantize_weight(
    bits: str, weight: torch.Tensor, group_size: int = int4.GROUP_SIZE
) -> dict[str, torch.Tensor] | None:
    """weight [out, in] -> the checkpoint tensors of its quantized form (AWQ layout for int4);
    None where the shape does not fit the format."""
    if bits == "int8":
        qweight, scales = int8.quantize(weight, weight.dtype)
        return {"qweight": qweight, "scales": scales}
    if not int4.fits(*weight.shape, group_size):
        return None
    return awq.to_awq(*int4.quantize(weight, group_size))


def from_checkpoint_tensors(fmt: str, stored: Mapping[str, torch.Tensor], bias, dtype) -> nn.Module | torch.Tensor:
    """A quantized layer's checkpoint tensors -> its module; the dequantized weight [out, in]
    instead where the kernel's layout does not fit its shape."""
    if fmt == "int8":
        return int8.Int8Linear.from_quantized(stored["qweight"], stored["scales"], bias, dtype)
    q, zeros, scales = awq.from_awq(stored["qweight"], stored["qzeros"], stored["scales"])
    if not int4.fits(*q.shape, q.shape[1] // zeros.shape[1]):
        return int4.dequantize(q, zeros, scales, dtype)
    return int4.linear(q, zeros, scales, bias, dtype)


@dataclass
class LinearConversion:
    """Load-time policy for Linears: read quantized checkpoint layers (`stored`), quantize plain
    weights to `bits` outside `keep`; of the bf16 ones left, oneDNN-pack them where `pack`, or
    compute their products in fp32 where `widen` (CPUs without bf16 matrix units)."""

    dtype: torch.dtype
    bits: str | None = None
    stored: str | None = None  # the checkpoint's own format: 'int4' (AWQ) or 'int8'
    pack: bool = False
    widen: bool = False
    keep: tuple[str, ...] | None = None  # None: KEEP for `bits`
    group_size: int = int4.GROUP_SIZE

    @property
    def changes_anything(self) -> bool:
        """False for the policy that keeps every Linear as it is (the loader then maps the weights
        instead of reading private copies to convert)."""
        return bool(self.bits or self.stored or self.pack or self.widen)

    def __call__(self, name: str, layer: nn.Linear, tensors: Mapping[str, torch.Tensor]) -> nn.Module | None:
        bias = None if layer.bias is None else layer.bias.detach()
        if self.stored and f"{name}.qweight" in tensors:
            stored = {s: tensors[f"{name}.{s}"] for s in QUANTIZED_SUFFIXES if f"{name}.{s}" in tensors}
            module = from_checkpoint_tensors(self.stored, stored, bias, self.dtype)
            if isinstance(module, nn.Module):
                return module
            layer.weight = nn.Parameter(module, requires_grad=False)  # the dequantized fallback
        if self.bits and not kept(name, keep_for(self.bits, self.keep)) and layer.weight.device.type == "cpu":
            module = self.quantized(layer)
            if module is not None:
                return module
        if self.pack:
            return PackedLinear.from_weight(layer.weight, bias)
        if self.widen:
            return WidenedLinear.from_linear(layer)
        return None

    def quantized(self, layer: nn.Linear) -> nn.Module | None:
        """The same module as a checkpoint written by quantize_weight loads to (AWQ packing is
        lossless, so int4 skips it here)."""
        weight, bias = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
        if self.bits == "int8":
            return int8.Int8Linear.from_quantized(*int8.quantize(weight, weight.dtype), bias, self.dtype)
        if not int4.fits(*weight.shape, self.group_size):
            return None
        return int4.linear(*int4.quantize(weight, self.group_size), bias, self.dtype)


def swap_linears(model: nn.Module, convert, tensors: Mapping[str, torch.Tensor] | None = None) -> int:
    """Replace every nn.Linear under `model` by what `convert(name, layer, tensors)` returns
    (None keeps it), one layer at a time; how many were replaced."""
    swapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                full = f"{name}.{child_name}" if name else child_name
                replacement = convert(full, child, tensors or {})
                if replacement is not None:
                    setattr(module, child_name, replacement)
                    swapped += 1
    return swapped


def stream_model(model: nn.Module) -> int:
    """Give every bf16 Linear of a loaded model our streaming kernel for few-row products (CPU
    inference; the weights stay where they are); how many. 0 where the kernels cannot run."""
    from .streamed import StreamedLinear

    return swap_linears(model, lambda name, layer, tensors: StreamedLinear.from_linear(layer))


def pack_model(model: nn.Module) -> int:
    """oneDNN-pack every bf16 Linear of an already loaded model (CPU inference); how many."""
    return swap_linears(model, LinearConversion(dtype=torch.bfloat16, pack=True))
