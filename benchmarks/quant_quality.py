"""How far int8 / int4 weights move a model's next-token distributions from bf16.

Mean KL(bf16 || quantized) over every position of full conversations (prompt, image
placeholders and the reference answer, teacher-forced), for a model directory and a JSON Lines
file of conversations (`python -m bundled_model.synthetic --out DIR --task caption ...`), or, with
--random, over random token ids. A full sequence runs the many-row (prefill) products; the last
--decode positions are also fed one token at a time through the KV cache, as decoding does, which
runs the few-row products (where our kernels quantize the activations too), and reported apart
(the "bf16" line there is our one-row kernels against the full pass: rounding alone):

    python benchmarks/quant_quality.py --model DIR --data DIR/caption.jsonl [--n 100]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from qwen_vl.loading import load_model


def mean_kl(base_logits: torch.Tensor, other_logits: torch.Tensor, mask: torch.Tensor) -> float:
    """KL(base || other) per position [B, L], averaged over the positions `mask` keeps."""
    base, other = base_logits.float().log_softmax(-1), other_logits.float().log_softmax(-1)
    kl = (base.exp() * (base - other)).sum(-1)
    return float(kl[mask.bool()].mean())


def stepwise_logits(model, batch: dict, positions: int) -> torch.Tensor:
    """Logits [1, positions, V] at the last `positions` predicting positions (L-positions-1 ..
    L-2) of one sequence: a prefill up to there, then one token at a time through the cache."""
    ids = batch["input_ids"]
    split = ids.shape[1] - positions
    inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    cache = model.new_cache(1, ids.shape[1])
    logits = [model(ids[:, :split], cache=cache, logits_to_keep=1, **inputs).logits[:, -1:]]
    for p in range(split, ids.shape[1] - 1):
        logits.append(model(ids[:, p : p + 1], cache=cache).logits[:, -1:])
    return torch.cat(logits, 1)


def batches(processor, data: Path, n: int):
    rows = [json.loads(line) for line in data.read_text().splitlines()[:n]]
    for row in rows:
        yield processor([row["messages"]], add_generation_prompt=False, base_dir=data.parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    parser.add_argument("--data", type=Path, help="JSON Lines of conversations")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--random", action="store_true", help="random token ids instead of --data")
    parser.add_argument("--bits", nargs="+", default=["int8", "int4"])
    parser.add_argument("--decode", type=int, default=16, help="positions also run one token at a time")
    args = parser.parse_args()
    base, processor = load_model(args.model, device="cpu", dtype=torch.bfloat16)
    others = {bits: load_model(args.model, device="cpu", dtype=torch.bfloat16, quantize=bits)[0] for bits in args.bits}
    if args.random:
        gen = torch.Generator().manual_seed(0)
        vocab = base.config.vision_start_token_id
        inputs = [{"input_ids": torch.randint(0, vocab, (1, 64), generator=gen)} for _ in range(args.n)]
    else:
        inputs = list(batches(processor, args.data, args.n))
    totals = dict.fromkeys(args.bits, 0.0)
    stepwise = dict.fromkeys(["bf16", *args.bits], 0.0)
    with torch.inference_mode():
        for batch in inputs:
            batch = dict(batch)
            mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
            want = base(**batch).logits
            positions = min(args.decode, batch["input_ids"].shape[1] - 1)
            tail = want[:, -positions - 1 : -1]
            for bits, model in others.items():
                totals[bits] += mean_kl(want, model(**batch).logits, mask)
            for name, model in {"bf16": base, **others}.items():
                if positions > 0:
                    got = stepwise_logits(model, batch, positions)
                    stepwise[name] += mean_kl(tail, got, torch.ones(tail.shape[:2]))
    for bits, total in totals.items():
        print(f"{bits}: mean KL(bf16 || {bits}) = {total / len(inputs):.5f} nats over {len(inputs)} sequences")
    for name, total in stepwise.items():
        print(f"decoding, last {args.decode} positions: mean KL(bf16 || {name}) = {total / len(inputs):.5f} nats")


if __name__ == "__main__":
    main()
