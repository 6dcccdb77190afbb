"""Training throughput: sequence packing vs padding on a mixed-length image/text set.

A small Qwen2.5-VL-shaped model (text hidden 512, 4 layers, vision hidden 256, 4 blocks) is
trained (stage 2: everything learns) on a mix of image-caption samples (56..224 px images) and
text chats whose lengths follow a long-tailed distribution (about 20 to 700 tokens). The same
samples in the same order are run packed (rows of max_seq_len) and padded (one sample per row).
Reported per mode: useful (non-padding) tokens per second, the share of computed positions that
are padding, and achieved model FLOP/s (6 x matmul parameters x tokens, attention not counted)
as a fraction of a plain fp32 matmul measured in the same run. Timings on a shared machine are
noisy; compare the ratio, not the absolute numbers.

    python benchmarks/train.py                    # 2 warm-up + 6 timed steps per mode
    python benchmarks/train.py --steps 10 --threads 2
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

WORDS = (
    "the a red blue green yellow circle square star triangle left right top bottom image shows "
    "there are three shapes text says hello world when does appear at seconds describe this"
).split()


def build_model_dir(path: Path) -> Path:
    from qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig
    from qwen_vl.modeling.model import QwenVLForConditionalGeneration
    from qwen_vl.processing import QwenVLProcessor, build_tokenizer

    tokenizer = build_tokenizer([" ".join(WORDS)] * 8, vocab_size=2048)
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in [
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]
    }
    config = QwenVLConfig(
        model_type="qwen2_5_vl",
        vision=VisionConfig(
            hidden_size=256, depth=4, num_heads=4, intermediate_size=512, out_hidden_size=512, fullatt_block_indexes=[3]
        ),
        text=TextConfig(
            vocab_size=len(tokenizer),
            hidden_size=512,
            intermediate_size=1408,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=2,
            max_position_embeddings=4096,
        ),
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        torch_dtype="float32",
        **ids,
    )
    torch.manual_seed(0)
    model = QwenVLForConditionalGeneration(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    QwenVLProcessor(tokenizer).save_pretrained(path)
    return path


def build_data(path: Path, samples: int, seed: int) -> Path:
    rng = random.Random(seed)
    (path / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(samples):
        if i % 3 == 0:  # image caption
            side = rng.choice([56, 84, 112, 168, 224])
            pixels = np.random.default_rng(i).integers(0, 255, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path / "images" / f"{i}.png")
            caption = " ".join(rng.choices(WORDS, k=rng.randint(5, 30)))
            messages = [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": f"images/{i}.png"},
                        {"type": "text", "text": "describe this image"},
                    ],
                },
                {"role": "assistant", "content": caption},
            ]
        else:  # text chat, long-tailed length
            words = min(int(rng.lognormvariate(4.0, 0.9)), 650)
            question = " ".join(rng.choices(WORDS, k=max(words // 3, 3)))
            answer = " ".join(rng.choices(WORDS, k=max(words - words // 3, 3)))
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        lines.append(json.dumps({"messages": messages}))
    (path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    return path / "mixed.jsonl"


def matmul_flops(threads: int, size: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def matmul_params(model) -> tuple[int, int]:
    """(LLM matmul parameters incl. lm_head, vision matmul parameters): weights of 2-D linears."""
    text = sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.ndim == 2 and not n.startswith(("visual.", "model.embed_tokens"))
    )
    vision = sum(p.numel() for n, p in model.named_parameters() if p.ndim >= 2 and n.startswith("visual."))
    return text, vision


def run_mode(root: Path, data: Path, model_dir: Path, packing: bool, args) -> dict:
    from qwen_vl.training.config import config_from_dict
    from qwen_vl.training.train import Trainer

    cfg = config_from_dict(
        {
            "init": {"model": str(model_dir)},
            "data": [{"path": str(data)}],
            "output_dir": str(root / f"run-{'packed' if packing else 'padded'}"),
            "stage": 2,
            "lr": {"vision": 1e-4, "merger": 1e-4, "llm": 1e-4},
            "max_steps": args.warmup + args.steps,
            "batch_size": args.batch_size,
            "max_seq_len": args.max_seq_len,
            "packing": packing,
            "save_every": 0,
            "progress": False,
            "tensorboard": False,
            "seed": args.seed,
        }
    )
    trainer = Trainer(cfg)
    for _ in range(args.warmup):
        trainer.train_step()
    computed = useful = patches = 0
    start = time.perf_counter()
    for _ in range(args.steps):
        record = trainer.train_step()
        useful += record["tokens"]
        patches += record["image_patches"]
        computed += record["computed"]
    seconds = time.perf_counter() - start
    text_params, vision_params = matmul_params(trainer.unwrapped)
    flops = 6 * (text_params * useful + vision_params * patches)
    return {
        "useful_tokens_per_s": useful / seconds,
        "padding_share": 1 - useful / computed,
        "seconds_per_step": seconds / args.steps,
        "model_flops_per_s": flops / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=240)
    parser.add_argument("--threads", type=int, default=1, help="1 gives steadier figures on a shared machine")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_model_dir(root / "model")
        data = build_data(root / "data", args.samples, args.seed)
        peak = matmul_flops(args.threads)
        results = {mode: run_mode(root, data, model_dir, mode == "packed", args) for mode in ("packed", "padded")}
    print(
        f"threads {args.threads}, batch {args.batch_size} samples/step, max_seq_len {args.max_seq_len}, {args.steps} timed steps"
    )
    print(f"fp32 matmul 1024^3: {peak / 1e9:.1f} GFLOP/s")
    print(f"{'mode':8} {'useful tok/s':>13} {'padding':>8} {'s/step':>7} {'GFLOP/s':>8} {'of matmul':>10}")
    for mode, r in results.items():
        print(
            f"{mode:8} {r['useful_tokens_per_s']:13.0f} {r['padding_share']:8.1%} {r['seconds_per_step']:7.2f} "
            f"{r['model_flops_per_s'] / 1e9:8.1f} {r['model_flops_per_s'] / peak:10.1%}"
        )
    ratio = results["packed"]["useful_tokens_per_s"] / results["padded"]["useful_tokens_per_s"]
    print(f"packing / padding useful tokens/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
