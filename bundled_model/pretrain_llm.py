"""Stage 0: pre-train a small text-only Qwen2 LLM on the synthetic world's language.

Trains a byte-level BPE tokenizer on every phrase the world can say, then a Qwen2 decoder
(our own text model) on `world_text` lines and on `world_items` rendered as chat turns, packed
into fixed windows, and writes a Qwen2 LLM directory (`model_type: qwen2`, tokenizer with the ChatML
template) that stage 1 turns into a VL model with `QwenVLForConditionalGeneration.from_llm`.

The conversations are the VL stages' chat turns with the picture told in words inside the
vision block (`<|vision_start|>a red circle on the left<|vision_end|>Where is the circle?`).
The LLM thus already answers in the stages' format and has learned to read the answer from the
vision block, so that in stage 1 (LLM frozen) the vision tower only has to say what it sees in
a form the LLM reads; with empty blocks instead, a frozen LLM never looks at the image.

The token embeddings are drawn at random and kept fixed (`freeze_embeddings`): learned ones of
words the text uses interchangeably (the colours, the kinds) collapse onto one another, and an
LLM that cannot tell them apart cannot name what its vision block shows.

    python -m bundled_model.pretrain_llm --out runs/bundled/llm --steps 500
"""

from __future__ import annotations

import math
import sys
import time

import torch

from qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig
from qwen_vl.errors import OneLineParser
from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.processing import build_tokenizer
from qwen_vl.training.data import IGNORE, assistant_labels
from qwen_vl.training.params import small_normal_init_

from .synthetic import copy_lines, scene_qa_lines, tokenizer_corpus, world_items, world_text
from .synthetic_world import vqa_type


def parse_args(argv):
    p = OneLineParser(prog="python -m bundled_model.pretrain_llm", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="LLM directory to write")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--rope-theta", type=float, default=1e6, help="RoPE base of the decoder's (M-)RoPE frequencies")
    p.add_argument("--lines", type=int, default=20000, help="world_text lines to train on")
    p.add_argument("--chats", type=int, default=20000, help="world items drawn for chat conversations")
    p.add_argument(
        "--qa-lines", type=int, default=0, help="lines telling a scene, then four questions about it with their answers"
    )
    p.add_argument("--copy-lines", type=int, default=0, help="lines that say a run of words twice (a copying drill)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--steps",
        type=int,
        default=500,
        help="0 writes the untrained model: with frozen embeddings its tokenizer and embeddings are those a "
        "trained run writes, all the vision step reads, so the vision step can start beside the training",
    )
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--eval-every", type=int, default=0, metavar="N", help="print the answers read per question type every N steps"
    )
    p.add_argument(
        "--frozen-embeddings",
        type=float,
        default=0.1,
        metavar="STD",
        help="draw the (tied) token embeddings at this std and keep them fixed; 0 learns them",
    )
    p.add_argument(
        "--min-pixels", type=int, default=3136, help="smallest image pixel budget: smaller pictures are upscaled to it"
    )
    p.add_argument("--max-pixels", type=int, default=100352, help="image pixel budget of the VL model's processor")
    p.add_argument("--video-max-pixels", type=int, default=12544, help="pixel budget per video frame")
    args = p.parse_args(argv)
    if args.steps < 0:
        p.error(f"--steps is >= 0, got {args.steps}")
    if args.frozen_embeddings < 0:
        p.error(f"--frozen-embeddings: a std is >= 0, got {args.frozen_embeddings}")
    if not 3136 <= args.min_pixels <= args.max_pixels:
        p.error(f"--min-pixels is in [3136, --max-pixels], got {args.min_pixels}")
    return args


def save_processor(args, tokenizer) -> None:
    """The processor the VL stages inherit: small pixel budgets keep sequences short on a CPU."""
    from qwen_vl.processing import QwenVLProcessor
    from qwen_vl.processing.video import VideoSettings

    video = VideoSettings(min_pixels=min(3136, args.video_max_pixels), max_pixels=args.video_max_pixels)
    QwenVLProcessor(
        tokenizer, min_pixels=args.min_pixels, max_pixels=args.max_pixels, video_settings=video
    ).save_pretrained(args.out)


MAX_PADS = 16  # vision placeholders of a video part in stage-0 chats
MEDIA = {"caption": "image", "vqa": "image", "ocr": "image", "video": "video"}


def render_chats(tokenizer, items: list[tuple[str, str, str, str]], seed: int) -> list[str]:
    """ChatML texts of the media items (kind, prompt, answer, content): the VL stages' turns
    with the picture told in words between the vision markers (a run of 1..MAX_PADS pad tokens
    where there are no words: video). The LLM learns to answer from what stands inside the
    vision block; stage 1 then puts the vision tower's tokens there."""
    rng = torch.Generator().manual_seed(seed)
    texts = []
    for kind, prompt, answer, content in items:
        if kind not in MEDIA:
            continue
        chat = [
            {"role": "user", "content": [{"type": MEDIA[kind]}, {"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
        pad = f"<|{MEDIA[kind]}_pad|>"
        inside = content or pad * int(torch.randint(1, MAX_PADS + 1, (1,), generator=rng))
        texts.append(tokenizer.apply_chat_template(chat, tokenize=False).replace(pad, inside, 1))
    return texts


def token_windows(tokenizer, texts: list[str], seq_len: int, seed: int = 0) -> torch.Tensor:
    """All texts in a seeded shuffled order, each ended by <|endoftext|>, concatenated and cut
    into windows [N, seq_len]."""
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    ids: list[int] = []
    for encoded in tokenizer([texts[i] for i in order], add_special_tokens=False)["input_ids"]:
        ids += encoded + [eos]
    usable = len(ids) // seq_len * seq_len
    return torch.tensor(ids[:usable]).view(-1, seq_len)


def answer_accuracy(model, tokenizer, seed: int, n: int = 300) -> dict[str, float]:
    """Share of whole answers of fresh caption, VQA (per question type) and OCR chats that the
    model predicts (teacher-forced): every such answer stands in the vision block, so this
    measures how well the LLM reads that block, which is what stages 0b and 1 build on."""
    items = [item for item in world_items(seed, n) if item[0] in ("caption", "vqa", "ocr")]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    counts: dict[str, list[int]] = {}
    with torch.no_grad():
        for (kind, prompt, _, _), text in zip(items, render_chats(tokenizer, items, seed), strict=True):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            labels = torch.tensor(assistant_labels(ids, tokenizer)[1:])
            logits = model(torch.tensor([ids]), position_ids=torch.arange(len(ids))[None]).logits[0, :-1]
            asked = (labels != IGNORE) & (labels != im_end)
            group = vqa_type(prompt) if kind == "vqa" else kind
            hits, total = counts.setdefault(group, [0, 0])
            counts[group] = [hits + bool((logits.argmax(-1)[asked] == labels[asked]).all()), total + 1]
    return {group: hits / total for group, (hits, total) in sorted(counts.items())}


def accuracy_line(shares: dict[str, float]) -> str:
    return ", ".join(f"{group} {share:.0%}" for group, share in shares.items())


def freeze_embeddings(model: QwenVLForConditionalGeneration, std: float) -> None:
    """Fixed random token embeddings (tied to the output head). In the world's text, the colours
    are interchangeable, and so are the kinds: learned embeddings of such words collapse onto
    one another (cosine 0.84 between colours and 0.91 between kinds after the 500-step recipe).
    An LLM that can hardly tell " red" from " blue" cannot name the colour its vision block
    shows, and stage 1 freezes it. Random vectors in 256 dimensions stay nearly orthogonal."""
    weight = model.model.embed_tokens.weight
    with torch.no_grad():
        weight.normal_(0, std)
    weight.requires_grad_(False)


def build(args, tokenizer) -> QwenVLForConditionalGeneration:
    ids = {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in [
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]
    }
    text = TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=4096,
        rope_theta=args.rope_theta,
    )
    # the vision tower is a placeholder here: only the text decoder is trained and saved
    vision = VisionConfig(hidden_size=32, depth=1, num_heads=1, intermediate_size=32, out_hidden_size=args.hidden)
    config = QwenVLConfig(
        vision=vision,
        text=text,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        torch_dtype="float32",
        **ids,
    )
    torch.manual_seed(args.seed)
    return small_normal_init_(QwenVLForConditionalGeneration(config))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.progress import Progress

    tokenizer = build_tokenizer(tokenizer_corpus(), vocab_size=args.vocab_size)
    if args.steps == 0:
        model = build(args, tokenizer)
        if args.frozen_embeddings:
            freeze_embeddings(model, args.frozen_embeddings)
        model.eval().save_llm(args.out)
        save_processor(args, tokenizer)
        print(f"wrote {args.out}: the untrained model (0 steps)")
        return 0
    chats = render_chats(tokenizer, world_items(args.seed + 1, args.chats), args.seed)
    lines = world_text(args.seed, args.lines) + scene_qa_lines(args.seed + 3, args.qa_lines)
    lines += copy_lines(args.seed + 4, args.copy_lines)
    windows = token_windows(tokenizer, lines + chats, args.seq_len, args.seed)
    pads = torch.tensor(tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>"]))
    positions = torch.arange(args.seq_len).expand(args.batch_size, -1)
    model = build(args, tokenizer).train()
    if args.frozen_embeddings:
        freeze_embeddings(model, args.frozen_embeddings)
    params = [p for n, p in model.named_parameters() if not n.startswith("visual.") and p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)),
    )
    gen = torch.Generator().manual_seed(args.seed)
    start, losses = time.time(), []
    with Progress(disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("stage 0 (text)", total=args.steps)
        for step in range(args.steps):
            batch = windows[torch.randint(len(windows), (args.batch_size,), generator=gen)]
            labels = batch.masked_fill(torch.isin(batch, pads), IGNORE)  # pads stand for pictures: not predicted
            loss = model(batch, labels=labels, position_ids=positions).loss  # plain 1-D ids: no media here
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            progress.update(task, advance=1, description=f"stage 0 (text) loss {loss.item():.3f}")
            if step % 50 == 0 or step == args.steps - 1:
                print(f"step {step + 1}/{args.steps} loss {loss.item():.4f}", flush=True)
            if args.eval_every and (step + 1) % args.eval_every == 0 and step < args.steps - 1:
                shares = answer_accuracy(model.eval(), tokenizer, args.seed + 2)
                model.train()
                print(f"step {step + 1}: answers read from the vision block: {accuracy_line(shares)}", flush=True)
    model.eval().save_llm(args.out)
    save_processor(args, tokenizer)
    print(
        f"wrote {args.out}: {sum(p.numel() for p in params) / 1e6:.2f} M parameters, "
        f"{len(windows)} windows of {args.seq_len} tokens, final loss {sum(losses[-20:]) / min(20, len(losses)):.3f}, "
        f"{time.time() - start:.0f} s; answers read from the vision block: "
        f"{accuracy_line(answer_accuracy(model, tokenizer, args.seed + 2))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
