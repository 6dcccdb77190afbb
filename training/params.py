"""Which parameters learn: components (vision / merger / LLM), stage freezing, LoRA on the LLM's
linear layers, optimizer parameter groups, and the plain (LoRA-merged) state dict to save."""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import COMPONENTS, TrainConfig

LORA_ADAPTER = "default"


def component_of(name: str) -> str:
    """'vision' | 'merger' | 'llm' for a parameter name of QwenVLForConditionalGeneration."""
    if name.startswith("visual.merger."):
        return "merger"
    if name.startswith("visual."):
        return "vision"
    return "llm"


def apply_lora(model: nn.Module, cfg: TrainConfig) -> None:
    """Inject LoRA adapters (peft) into the LLM decoder's linear layers, in place."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = "|".join(cfg.lora.targets)
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=rf"model\.layers\.\d+\.(self_attn|mlp)\.({targets})",
    )
    inject_adapter_in_model(lora, model, adapter_name=LORA_ADAPTER)


def is_lora(name: str) -> bool:
    return ".lora_" in name


def set_trainable(model: nn.Module, cfg: TrainConfig) -> dict[str, int]:
    """requires_grad per the stage; with LoRA the LLM's own weights stay frozen and only the
    adapters learn. Returns trainable parameter counts per component."""
    trainable = cfg.trainable()
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, param in model.named_parameters():
        component = component_of(name)
        if cfg.lora is not None and component == "llm":
            learn = trainable["llm"] and is_lora(name)
        else:
            learn = trainable[component] and not is_lora(name)
        param.requires_grad_(learn)
        counts[component] += param.numel() if learn else 0
    return counts


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """One AdamW group per (component, decays): matrices decay, biases and norm scales do not."""
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((component_of(name), param.ndim >= 2), []).append(param)
    return [
        {
            "params": params,
            "lr": cfg.lr[component],
            "weight_decay": cfg.weight_decay if decays else 0.0,
            "name": f"{component}{'' if decays else '.no_decay'}",
        }
        for (component, decays), params in sorted(groups.items())
    ]


def trainable_state(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Only the learning tensors (what a LoRA checkpoint must keep besides the frozen base), taken
    from `state` (a full state dict, e.g. gathered from FSDP shards) where given."""
    learning = [name for name, p in model.named_parameters() if p.requires_grad]
    if state is None:
        params = dict(model.named_parameters())
        return {name: params[name].detach() for name in learning}
    return {name: state[name] for name in learning}


def lora_scalings(model: nn.Module) -> dict[str, float]:
    """Module name -> alpha / r of every layer that carries our LoRA adapter."""
    from peft.tuners.lora import LoraLayer

    return {
        name: module.scaling[LORA_ADAPTER]
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and LORA_ADAPTER in module.lora_A
    }


def export_state_dict(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict under its plain names, LoRA deltas (B @ A * alpha / r, as peft merges
    them) added to the base weights. `state` is the full state dict where the model's own is sharded."""
    state = model.state_dict() if state is None else state
    plain = {key.replace(".base_layer.", "."): t.detach().clone() for key, t in state.items() if not is_lora(key)}
    with torch.no_grad():
        for name, scale in lora_scalings(model).items():
            a = state[f"{name}.lora_A.{LORA_ADAPTER}.weight"]
            b = state[f"{name}.lora_B.{LORA_ADAPTER}.weight"]
            weight = plain[f"{name}.weight"]
            plain[f"{name}.weight"] = weight + ((b @ a) * scale).to(weight.dtype)
    return plain


__all__ = [
    "component_of",
    "apply_lora",
    "set_trainable",
    "param_groups",
    "trainable_state",
    "lora_scalings",
    "export_state_dict",
]
