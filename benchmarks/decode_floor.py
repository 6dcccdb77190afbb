"""Where a bf16 decode step's time goes, against the memory-read bound (issue 4's 70% target).

Same model and prompt as benchmarks/generate.py, packed as load_model packs it. Times, in one run:
- a whole decode step of ours (128 greedy tokens after the prompt);
- the step's weight products alone: each layer's fused q/k/v, o, fused gate/up and down, and the
  tied head, each on one row, back to back with nothing between them (best of 10);
- the read bandwidth of `sum` just before and after (what generate.py's bound uses).
Prints each as a fraction of the bound, so the products-only line is the ceiling that any
change outside the products can reach.

    python benchmarks/decode_floor.py [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import time

import torch
from generate import best_of, build_model, prompt, read_bandwidth

from qwen_vl.generation import SamplingConfig, generate_ids
from qwen_vl.quantization.convert import pack_model


def step_products(model) -> list:
    """The weight products of one decode step, in order, as calls on one-row inputs."""
    text = model.config.text
    hidden = torch.randn(1, 1, text.hidden_size, dtype=torch.bfloat16)
    inner = torch.randn(1, 1, text.intermediate_size, dtype=torch.bfloat16)
    calls = []
    for layer in model.model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        calls += [
            lambda a=attention: a.fused_qkv(hidden),
            lambda a=attention: a.o_proj(hidden),
            lambda m=mlp: m.fused_gate_up(hidden),
            lambda m=mlp: m.down_proj(inner),
        ]
    return [*calls, lambda: model.lm_head(hidden)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    if args.new_tokens < 2:
        parser.error("--new-tokens must be at least 2 (a decode step is timed from the tokens after the first)")
    model = build_model().to(torch.bfloat16)
    text_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if not n.startswith("visual."))
    if pack_model(model) == 0:
        raise SystemExit("error: this CPU has no oneDNN bf16 packing; the floor is measured on the packed path")
    batch, sampling = prompt(), SamplingConfig(max_new_tokens=args.new_tokens)
    products = step_products(model)

    def run_products():
        for call in products:
            call()

    with torch.inference_mode():
        generate_ids(model, batch, SamplingConfig(max_new_tokens=4), stop_ids=set())  # warm-up
        run_products()
        before = read_bandwidth()
        prefill = best_of(3, lambda: generate_ids(model, batch, SamplingConfig(max_new_tokens=1), stop_ids=set()))
        start = time.perf_counter()
        generate_ids(model, batch, sampling, stop_ids=set())
        step = (time.perf_counter() - start - prefill) / (args.new_tokens - 1)
        products_only = best_of(10, run_products)
        bandwidth = (before + read_bandwidth()) / 2
    bound = text_bytes / bandwidth
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; read bandwidth {bandwidth / 1e9:.1f} GB/s")
    print(f"text weights read per step: {text_bytes / 1e6:.0f} MB; bound {bound * 1e3:.2f} ms/step")
    print("\n| part | ms per step | of bandwidth bound |\n|---|---|---|")
    print(f"| whole decode step | {step * 1e3:.2f} | {bound / step:.0%} |")
    print(
        f"| weight products only ({len(products)}, back to back) | {products_only * 1e3:.2f} | {bound / products_only:.0%} |"
    )
    print(f"| everything else | {(step - products_only) * 1e3:.2f} | |")


if __name__ == "__main__":
    main()
