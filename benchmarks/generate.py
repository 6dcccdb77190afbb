"""Generation speed: ours vs transformers' generate() on the same weights, in one run.

A Qwen2.5-VL-shaped model with a 0.5B-class text decoder (hidden 896, 14 heads, 2 kv heads,
MLP 4864, vocab 151936, tied embeddings) truncated to 6 layers, and a Qwen2.5-VL vision tower
(width 1280) truncated to 4 blocks. Prompt: one 448x448 image (256 vision tokens) and a question.
Prints prefill seconds (best of 3) and decode tokens/s (128 new tokens, greedy, no early stop) for fp32 and
bf16, the ratios, and decode bytes/s as a fraction of the memory-read bandwidth measured
just before and after our decode run (the mean of the two).

    python benchmarks/generate.py [--dtypes float32 bfloat16] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig
from qwen_vl.generation import SamplingConfig, generate_ids
from qwen_vl.hardware import as_dtype
from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.quantization.convert import pack_model, stream_model

IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 151655, 151656, 151652, 151653


def build_model() -> QwenVLForConditionalGeneration:
    text = TextConfig(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=6,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
    )
    vision = VisionConfig(
        hidden_size=1280, depth=4, num_heads=16, intermediate_size=3420, out_hidden_size=896, fullatt_block_indexes=[3]
    )
    config = QwenVLConfig(
        vision=vision, text=text, tie_word_embeddings=True, eos_token_id=151645, torch_dtype="float32"
    )
    torch.manual_seed(0)
    model = QwenVLForConditionalGeneration(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


def prompt() -> dict:
    grid = torch.tensor([[1, 32, 32]])
    ids = (
        [151644, 872, 198, VISION_START]
        + [IMAGE_TOKEN] * 256
        + [VISION_END]
        + list(range(1000, 1012))
        + [151645, 198, 151644, 77091, 198]
    )
    return {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "pixel_values": torch.randn(int(grid.prod()), 1176, generator=torch.Generator().manual_seed(1)),
        "image_grid_thw": grid,
    }


def read_bandwidth() -> float:
    """Bytes/s of summing a 512 MiB array (best of 5): what decoding can read at most."""
    x = torch.ones(128 * 1024 * 1024)
    return x.numel() * 4 / best_of(5, x.sum)


def best_of(repeats, fn) -> float:
    """Fewest seconds of `repeats` calls: prefill is short enough for scheduler noise to show."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def ours_run(model, batch, new_tokens):
    prefill = best_of(3, lambda: generate_ids(model, batch, SamplingConfig(max_new_tokens=1), stop_ids=set()))
    start = time.perf_counter()
    out = generate_ids(model, batch, SamplingConfig(max_new_tokens=new_tokens), stop_ids=set())[0]
    total = time.perf_counter() - start
    return prefill, (new_tokens - 1) / (total - prefill), out


def theirs_run(hf, batch, new_tokens):
    ids = batch["input_ids"]
    mm = (ids == IMAGE_TOKEN).int()
    kw = dict(**batch, mm_token_type_ids=mm, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.inference_mode():
        prefill = best_of(3, lambda: hf.generate(**kw, max_new_tokens=1))
        start = time.perf_counter()
        out = hf.generate(**kw, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        total = time.perf_counter() - start
    return prefill, (new_tokens - 1) / (total - prefill), out[0, ids.shape[1] :].tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    base = build_model()
    batch = prompt()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base.save_pretrained(tmp)
        for name in args.dtypes:
            dtype = as_dtype(name)
            ours = QwenVLForConditionalGeneration.from_pretrained(tmp, dtype=dtype)
            stream_model(ours) or pack_model(ours)  # as qwen_vl.loading.load_model does on CPU
            hf = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
                tmp, dtype=dtype, attn_implementation="sdpa"
            ).eval()
            ours_run(ours, batch, 4)  # warm-up both
            theirs_run(hf, batch, 4)
            # The read bandwidth of a shared machine drifts: measure it beside our decode run.
            before = read_bandwidth()
            p_ours, tps_ours, out_ours = ours_run(ours, batch, args.new_tokens)
            bandwidth = (before + read_bandwidth()) / 2
            p_theirs, tps_theirs, out_theirs = theirs_run(hf, batch, args.new_tokens)
            text_bytes = sum(
                p.numel() * p.element_size() for n, p in ours.named_parameters() if not n.startswith("visual.")
            )
            same = sum(a == b for a, b in zip(out_ours, out_theirs, strict=True))
            rows.append((name, p_ours, p_theirs, tps_ours, tps_theirs, tps_ours * text_bytes / bandwidth, same))
            print(
                f"{name}: prefill {p_ours:.2f}s vs {p_theirs:.2f}s, decode {tps_ours:.1f} vs {tps_theirs:.1f} tok/s, "
                f"read bandwidth around our decode {bandwidth / 1e9:.1f} GB/s",
                flush=True,
            )
            del ours, hf
    print(
        "\n| dtype | prefill ours s | prefill transformers s | prefill speed-up | decode ours tok/s | decode transformers tok/s | decode speed-up | of bandwidth bound | same tokens |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, po, pt, to, tt, frac, same in rows:
        print(
            f"| {name} | {po:.2f} | {pt:.2f} | {pt / po:.2f}x | {to:.1f} | {tt:.1f} | {to / tt:.2f}x | {frac:.0%} | {same}/{args.new_tokens} |"
        )


if __name__ == "__main__":
    main()
