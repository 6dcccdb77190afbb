"""Vision encoder speed: ours vs transformers' on the same weights and input, in one run.

A Qwen2.5-VL-3B-sized vision tower (hidden 1280, 16 heads, MLP 3420, out 2048) truncated to 8
blocks with full attention at blocks 3 and 7, on one 1288x728 image and one 2576x1456 image,
in fp32 and bf16. Prints seconds per call, the speed ratio, the largest output difference, and
achieved GFLOP/s as a fraction of a plain matmul of the same dtype measured in the same run.

    python benchmarks/vision.py                 # both sizes, both dtypes
    python benchmarks/vision.py --sizes 1288x728 --dtypes float32 --repeats 1
"""

from __future__ import annotations

import argparse
import time

import torch

from qwen_vl.config import VisionConfig
from qwen_vl.hardware import as_dtype
from qwen_vl.modeling.vision import VisionEncoder
from qwen_vl.quantization.convert import pack_model


def build_pair(dtype):
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    shape = dict(
        depth=8,
        hidden_size=1280,
        num_heads=16,
        intermediate_size=3420,
        out_hidden_size=2048,
        fullatt_block_indexes=[3, 7],
        window_size=112,
        tokens_per_second=2,
    )
    ours = VisionEncoder(VisionConfig(**shape)).eval()
    hf_cfg = Qwen2_5_VLVisionConfig(**shape)
    hf_cfg._attn_implementation = "sdpa"
    theirs = Qwen2_5_VisionTransformerPretrainedModel._from_config(hf_cfg).eval()
    theirs.load_state_dict(ours.state_dict())
    ours.to(dtype)
    pack_model(ours)  # as qwen_vl.loading.load_model does on CPU (bf16 only)
    return ours, theirs.to(dtype)


def flops(cfg: VisionConfig, grid_thw: torch.Tensor) -> float:
    """Multiply-adds x 2 of the linear layers and the attention score/value products."""
    tokens = int(grid_thw.prod(-1).sum())
    e, m = cfg.hidden_size, cfg.intermediate_size
    linear = 2 * tokens * (e * 3 * e + e * e + 3 * e * m) * cfg.depth
    merged = cfg.hidden_size * cfg.spatial_merge_size**2
    linear += 2 * tokens // 4 * (merged * merged + merged * cfg.out_hidden_size) + 2 * tokens * 1176 * e
    frame = int(grid_thw[0, 1] * grid_thw[0, 2])
    full = len(cfg.fullatt_block_indexes)
    attention = 4 * tokens * e * (frame * full + 64 * (cfg.depth - full))  # windows hold <= 64 patches
    return linear + attention


def matmul_gflops(dtype, seconds=3.0) -> float:
    a = torch.randn(4096, 1280, dtype=dtype)
    w = torch.randn(3420, 1280, dtype=dtype)
    torch.nn.functional.linear(a, w)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.nn.functional.linear(a, w)
        calls += 1
    return 2 * 4096 * 1280 * 3420 * calls / (time.perf_counter() - start) / 1e9


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1288x728", "2576x1456"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    rows = []
    for dtype_name in args.dtypes:
        dtype = as_dtype(dtype_name)
        ours, theirs = build_pair(dtype)
        peak = matmul_gflops(dtype)
        for size in args.sizes:
            width, height = map(int, size.split("x"))
            grid = torch.tensor([[1, height // 14, width // 14]])
            pixels = torch.randn(int(grid.prod()), 1176).to(dtype)
            with torch.inference_mode():
                t_ours, out_ours = timed(lambda: ours(pixels, grid), args.repeats)
                t_theirs, out_theirs = timed(lambda: theirs(pixels, grid_thw=grid).pooler_output, args.repeats)
            diff = (out_ours.float() - out_theirs.float()).abs().max().item()
            gflops = flops(ours.cfg, grid) / t_ours / 1e9
            rows.append((dtype_name, size, t_ours, t_theirs, t_theirs / t_ours, gflops, gflops / peak, peak, diff))
            print(f"{dtype_name} {size}: ours {t_ours:.2f}s, transformers {t_theirs:.2f}s", flush=True)
    print(
        "\n| dtype | image | ours s | transformers s | speed-up | ours GFLOP/s | of matmul | matmul GFLOP/s | max diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f}x | {r[5]:.1f} | {r[6]:.0%} | {r[7]:.1f} | {r[8]:.1e} |"
        )


if __name__ == "__main__":
    main()
