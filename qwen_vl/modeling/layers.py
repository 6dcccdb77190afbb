"""Small building blocks shared by the vision encoder and the text decoder."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..hardware import cpu_has_bf16_matmul

# Rows at or above which a bf16 product is faster in fp32 on a CPU without bf16 matrix units
# (measured: 8 rows of 896x4864 take the same time either way; one row is 2.4x faster in bf16).
FP32_GEMM_MIN_ROWS = 8


class Linear(nn.Linear):
    """nn.Linear with two CPU bf16 fast paths.

    - Without bf16 matrix units (AVX2 CPUs) products of 8 rows or more run in fp32: weights
      stay bf16 in memory, each product widens them, which beats the CPU's bf16 GEMM there.
    - `pack()` keeps a oneDNN-blocked copy of a bf16 weight for inference. Products on it give
      the same bits and run faster: 2-3x for one row (decoding), where the plain path leaves
      most of the memory bandwidth unused, and about 1.05x for large GEMMs."""

    packed: torch.Tensor | None = None  # opaque oneDNN tensor; not in the state dict

    def pack(self) -> bool:
        """Pack the weight for inference where oneDNN can; False (and no copy) elsewhere.
        The copy is a snapshot: call again, or `unpack()`, after changing the weight."""
        self.packed = onednn_pack(self.weight) if packable(self.weight) else None
        return self.packed is not None

    def unpack(self) -> None:
        self.packed = None

    def train(self, mode: bool = True) -> Linear:
        if mode:  # the packed copy is an inference snapshot: training would make it stale
            self.unpack()
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None and packed_path_applies(x):
            return packed_linear(x, self.packed, self.bias)
        return linear(x, self.weight, self.bias)


class FusedLinears:
    """Linears that read the same input, packed as one oneDNN product for inference: one call and
    one pass over the input instead of one per Linear (a decoder layer's q/k/v, its gate/up).
    Like `Linear.pack`, a snapshot of the weights, used only where `packed_path_applies`."""

    def __init__(self, packed: torch.Tensor, bias: torch.Tensor | None, sizes: list[int]):
        self.packed, self.bias, self.sizes = packed, bias, sizes

    @classmethod
    def pack(cls, *layers: Linear) -> FusedLinears | None:
        """The fused copy, and the layers' own packed copies dropped (it replaces them); None
        where oneDNN cannot pack these weights."""
        if not all(packable(layer.weight) for layer in layers):
            return None  # before the concatenation: an fp32 model would copy its weights for nothing
        weight = torch.cat([layer.weight.detach() for layer in layers])
        bias = None
        if any(layer.bias is not None for layer in layers):
            bias = torch.cat(
                [
                    layer.bias.detach() if layer.bias is not None else weight.new_zeros(layer.out_features)
                    for layer in layers
                ]
            )
        for layer in layers:
            layer.unpack()
        return cls(onednn_pack(weight), bias, [layer.out_features for layer in layers])

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return packed_linear(x, self.packed, self.bias).split(self.sizes, -1)


def packable(weight: torch.Tensor) -> bool:
    """oneDNN can pack this weight: bf16, on a CPU with bf16 matrix units."""
    return weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and onednn_linear_available()


def onednn_pack(weight: torch.Tensor) -> torch.Tensor:
    """weight [out, in] -> an opaque oneDNN-blocked copy, laid out for one-row products."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def packed_path_applies(x: torch.Tensor) -> bool:
    """Packed copies serve bf16 CPU inputs without gradients (they are detached snapshots)."""
    return x.dtype == torch.bfloat16 and x.is_cpu and not torch.is_grad_enabled()


def pack_linears(module: nn.Module) -> int:
    """Pack every Linear under `module` for inference (see Linear.pack); how many were packed."""
    return sum(layer.pack() for layer in module.modules() if isinstance(layer, Linear))


@functools.cache
def onednn_linear_available() -> bool:
    """oneDNN's packed bf16 linear, on a CPU with bf16 matrix units (measured only there)."""
    if not (torch.backends.mkldnn.is_available() and cpu_has_bf16_matmul()):
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight, torch.ops.mkldnn._linear_pointwise  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if (
        x.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and x.numel() >= FP32_GEMM_MIN_ROWS * x.shape[-1]
        and not cpu_has_bf16_matmul()
    ):
        bias = None if bias is None else bias.float()
        return F.linear(x.float(), weight.float(), bias).to(x.dtype)
    return F.linear(x, weight, bias)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32, scale in the input dtype (the published models' numerics).
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + D/2) of x by the angles whose cos/sin are given; cos, sin broadcast to x."""
    return x * cos + rotate_half(x) * sin


def activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return lambda x: F.gelu(x, approximate="tanh")
    return {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}[name]
