"""Initial values of fresh parameters: small normal matrices, norm scales at one, other vectors zero.

Used where a model is built from nothing (the demo model's recipe) and where a checkpoint leaves
some parameters out (a VL model built from a text-only LLM: its vision tower and merger)."""

from __future__ import annotations

import torch
import torch.nn as nn


def is_norm_scale(name: str) -> bool:
    """Whether a parameter's dotted name is a norm's scale (RMSNorm / LayerNorm weight)."""
    return "norm" in name or "ln_" in name


@torch.no_grad()
def init_parameter_(name: str, tensor: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    """Fill `tensor` (the parameter called `name`) with its initial value, in place."""
    if tensor.ndim > 1:
        return tensor.normal_(0, std)
    return tensor.fill_(1.0) if is_norm_scale(name) else tensor.zero_()


def small_normal_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """GPT-2 style initialisation of every parameter of `module`, in place, in the order of named_parameters."""
    for name, param in module.named_parameters():
        init_parameter_(name, param, std)
    return module
