"""Weight-only int8 / int4 CPU kernels beside bf16, on the Qwen2.5-VL-3B text shapes.

For each shape, one-row (decode) and 128-row (prefill) products, in milliseconds (best of several: the host is shared):
  bf16        F.linear on the bf16 weight
  bf16-packed oneDNN-blocked bf16 weight (qwen_vl.quantization.packed)
  int8-mm     torch.ops.aten._weight_int8pack_mm, per-output-channel scales
  int4-mm     torch.ops.aten._weight_int4pack_mm_for_cpu, groups of 128
  deq8/deq4   dequantize to bf16 then F.linear (the plain reference path)
  ours-bf16 / ours-int8 / ours-int4  the layers load_model builds where our CPU kernels run
              (qwen_vl/kernels: streaming products up to 4 rows, dequantized slices beyond)
  ao-int8/ao-int4  torchao's weight-only configs, where torchao imports

One matrix at a time fits in a large L3 cache, so these figures flatter every kernel; reading
from memory, over a whole model, is what benchmarks/full_size.py measures.

    python benchmarks/quant_kernels.py [--threads N] [--rows 1 128]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = {  # name: (out, in)
    "q_proj 2048x2048": (2048, 2048),
    "k_proj 256x2048": (256, 2048),
    "gate_up 22016x2048": (22016, 2048),
    "down 2048x11008": (2048, 11008),
    "lm_head 151936x2048": (151936, 2048),
}


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def candidates(weight: torch.Tensor):
    from qwen_vl import kernels
    from qwen_vl.quantization import int4, int8, packed
    from qwen_vl.quantization.streamed import StreamedLinear

    q8, scales8 = int8.quantize(weight)
    q4, zeros4, scales4 = int4.quantize(weight)
    layer4 = int4.Int4Linear.from_quantized(q4, zeros4, scales4, None)
    packed_layer = packed.PackedLinear.from_weight(weight, None)
    yield "bf16", lambda x: F.linear(x, weight)
    if packed_layer is not None:
        yield "bf16-packed", packed_layer
    yield "int8-mm", lambda x: torch.ops.aten._weight_int8pack_mm(x, q8, scales8)
    yield "int4-mm", layer4.kernel_product
    yield "deq8", lambda x: F.linear(x, int8.dequantize(q8, scales8))
    yield "deq4", lambda x: F.linear(x, layer4.dequantized(x.dtype))
    if kernels.ops() is not None:
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        linear.weight.data.copy_(weight)
        yield "ours-bf16", StreamedLinear.from_linear(linear)
        yield "ours-int8", int8.Int8Linear.from_quantized(q8, scales8, None)
        yield "ours-int4", int4.TiledInt4Linear.from_quantized(q4, zeros4, scales4, None)
    yield from torchao_candidates(weight)


def torchao_candidates(weight: torch.Tensor):
    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except Exception:  # not installed, or built for another torch
        return
    for name, config in (
        ("ao-int8", lambda: Int8WeightOnlyConfig()),
        ("ao-int4", lambda: Int4WeightOnlyConfig(group_size=128, int4_packing_format="opaque")),
    ):
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        layer.weight.data.copy_(weight)
        try:
            quantize_(layer, config())
            layer(torch.randn(1, weight.shape[1], dtype=weight.dtype))
        except Exception as err:  # a config this torchao or CPU does not run
            print(f"  {name}: unavailable ({type(err).__name__}: {str(err).splitlines()[0][:80]})")
            continue
        yield name, layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, ms per product (best of several: the host is shared)")
    for name in args.shapes:
        out_features, in_features = SHAPES[name]
        weight = (torch.randn(out_features, in_features) * 0.02).to(torch.bfloat16)
        results = {}
        with torch.inference_mode():
            for label, fn in candidates(weight):
                for rows in args.rows:
                    x = torch.randn(rows, in_features, dtype=torch.bfloat16)
                    repeats = 20 if rows == 1 else 5
                    results[label, rows] = median_ms(lambda fn=fn, x=x: fn(x), repeats)
        labels = list(dict.fromkeys(label for label, _ in results))
        print(f"{name}:")
        for rows in args.rows:
            cells = "  ".join(f"{label} {results[label, rows]:.2f}" for label in labels)
            print(f"  rows {rows:>4}: {cells}")


if __name__ == "__main__":
    main()
