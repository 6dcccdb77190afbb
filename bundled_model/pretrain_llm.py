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
from dataclasses import dataclass

import torch

from qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig
from qwen_vl.errors import OneLineParser
from qwen_vl.modeling.init import small_normal_init_
from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.processing import build_tokenizer
from qwen_vl.training.data import IGNORE, assistant_labels

from .loop import Loop
from .synthetic import tokenizer_corpus, world_items, world_text
from .synthetic_world import vqa_type

VOCAB_SIZE = 1024
LR = 3e-3
SEED = 0
EMBEDDING_STD = 0.1  # the fixed random token embeddings' std (freeze_embeddings)
MIN_PIXELS = 50176  # smallest image pixel budget of the VL model's processor: smaller pictures are upscaled
MAX_PIXELS = 100352  # its largest
VIDEO_MAX_PIXELS = 12544  # its pixel budget per video frame


@dataclass(frozen=True)
class Sizes:
    """The decoder's sizes and the training windows' (the tests pass tiny ones)."""

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 768
    seq_len: int = 128
    batch_size: int = 16


def parse_args(argv):
    p = OneLineParser(prog="python -m bundled_model.pretrain_llm", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="LLM directory to write")
    p.add_argument("--lines", type=int, default=20000, help="world_text lines to train on")
    p.add_argument("--chats", type=int, default=12000, help="world items drawn for chat conversations")
    p.add_argument(
        "--steps",
        type=int,
        default=500,
        help="0 writes the untrained model: with frozen embeddings its tokenizer and embeddings are those a "
        "trained run writes, all the vision step reads, so the vision step can start beside the training",
    )
    args = p.parse_args(argv)
    if args.steps < 0:
        p.error(f"--steps is >= 0, got {args.steps}")
    return args


def save_processor(out: str, tokenizer) -> None:
    """The processor the VL stages inherit: small pixel budgets keep sequences short on a CPU."""
    from qwen_vl.processing import QwenVLProcessor
    from qwen_vl.processing.video import VideoSettings

    video = VideoSettings(min_pixels=min(3136, VIDEO_MAX_PIXELS), max_pixels=VIDEO_MAX_PIXELS)
    QwenVLProcessor(tokenizer, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, video_settings=video).save_pretrained(out)


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


def freeze_embeddings(model: QwenVLForConditionalGeneration) -> None:
    """Fixed random token embeddings (tied to the output head). In the world's text, the colours
    are interchangeable, and so are the kinds: learned embeddings of such words collapse onto
    one another (cosine 0.84 between colours and 0.91 between kinds after the 500-step recipe).
    An LLM that can hardly tell " red" from " blue" cannot name the colour its vision block
    shows, and stage 1 freezes it. Random vectors in 256 dimensions stay nearly orthogonal."""
    weight = model.model.embed_tokens.weight
    with torch.no_grad():
        weight.normal_(0, EMBEDDING_STD)
    weight.requires_grad_(False)


def build(sizes: Sizes, tokenizer) -> QwenVLForConditionalGeneration:
    """The decoder (its vision tower a placeholder) with frozen random token embeddings."""
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
        hidden_size=sizes.hidden,
        intermediate_size=sizes.intermediate,
        num_hidden_layers=sizes.layers,
        num_attention_heads=sizes.heads,
        num_key_value_heads=sizes.kv_heads,
        max_position_embeddings=4096,
        rope_theta=1e6,
    )
    # the vision tower is a placeholder here: only the text decoder is trained and saved
    vision = VisionConfig(hidden_size=32, depth=1, num_heads=1, intermediate_size=32, out_hidden_size=sizes.hidden)
    config = QwenVLConfig(
        vision=vision,
        text=text,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        torch_dtype="float32",
        **ids,
    )
    torch.manual_seed(SEED)
    model = small_normal_init_(QwenVLForConditionalGeneration(config))
    freeze_embeddings(model)
    return model


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """The learning rate's multiplier at `step`: linear warm-up over `warmup` steps times a cosine over all."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def main(argv: list[str] | None = None, sizes: Sizes = Sizes()) -> int:
    args = parse_args(argv)
    tokenizer = build_tokenizer(tokenizer_corpus(), vocab_size=VOCAB_SIZE)
    if args.steps == 0:
        build(sizes, tokenizer).eval().save_llm(args.out)
        save_processor(args.out, tokenizer)
        print(f"wrote {args.out}: the untrained model (0 steps)")
        return 0
    chats = render_chats(tokenizer, world_items(SEED + 1, args.chats), SEED)
    windows = token_windows(tokenizer, world_text(SEED, args.lines) + chats, sizes.seq_len, SEED)
    pads = torch.tensor(tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>"]))
    positions = torch.arange(sizes.seq_len).expand(sizes.batch_size, -1)
    model = build(sizes, tokenizer).train()
    params = [p for n, p in model.named_parameters() if not n.startswith("visual.") and p.requires_grad]
    warmup = max(1, args.steps // 20)
    loop = Loop(params, args.steps, LR, warmup, factor=lambda s: lr_factor(s, warmup, args.steps))
    gen = torch.Generator().manual_seed(SEED)
    start, losses = time.time(), []

    def step_loss(step: int) -> torch.Tensor:
        batch = windows[torch.randint(len(windows), (sizes.batch_size,), generator=gen)]
        labels = batch.masked_fill(torch.isin(batch, pads), IGNORE)  # pads stand for pictures: not predicted
        return model(batch, labels=labels, position_ids=positions).loss  # plain 1-D ids: no media here

    def report(step: int, loss: torch.Tensor) -> None:
        losses.append(loss.item())
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step + 1}/{args.steps} loss {loss.item():.4f}", flush=True)

    loop.run(step_loss, report)
    model.eval().save_llm(args.out)
    save_processor(args.out, tokenizer)
    elapsed = time.time() - start
    shares = answer_accuracy(model, tokenizer, SEED + 2)
    print(
        f"wrote {args.out}: {sum(p.numel() for p in params) / 1e6:.2f} M parameters, "
        f"{len(windows)} windows of {sizes.seq_len} tokens, final loss {sum(losses[-20:]) / min(20, len(losses)):.3f}, "
        f"{elapsed:.0f} s; answers read from the vision block: "
        + ", ".join(f"{group} {share:.0%}" for group, share in shares.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
