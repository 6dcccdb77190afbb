"""Stage 0b for the bundled model: the text LLM learns to read a picture laid out as a grid of words.

A VL model's first hard step is finding the one to three shape tokens among a hundred background
tokens of the vision block, and telling what each holds. Taught through a fresh vision tower,
that step is slow: a VL model trained that way names a shape's kind no better than chance,
though a linear probe reads it off the tower's tokens. Here it is taught without a
tower: each merged-token slot of a freshly drawn scene holds the sum of the LLM's own
embeddings of what lies under it (" red" + " circle" + " left" on a shape, small noise on the
background), at the positions and M-RoPE ids the real image would have, and the LLM learns the
world's caption and VQA answers from such grids at text-only cost. The token embeddings stay
as stage 0 drew them (learned, the words of a kind collapse onto one another and cannot be
told apart in a grid). `pretrain_vision` then trains the tower to put the same words on its
tokens, so that stage 1 starts from an LLM that already reads them.

`--turns 4` asks four questions about each training grid (a grid costs about a hundred tokens, an
answer a few), and `--lookup-weight 1` tells head 0 of the layer before the last where the asked
shape lies (bundled_model/lookup.py): without it the lookup by kind does not form, with it the LLM
answers colour questions on fresh grids as well as it captions them (docs/bundled_model.md).
`--compare-weight 1` asks that layer's output at the answer for the asked colour and the found
shape's colour and third (bundled_model/compare_probe.py): "Is there" then does not wait on a
comparison found from the answers alone, and every question type forms by step 1,000.

`--kind-copy-layer L` tells head 0 of an earlier layer to look, from the same position, at the
question's own kind word, which the lookup's query needs: without it, whether the lookup forms
depends on the last bits of the stage-0 LLM's floats, which differ between CPUs
(docs/bundled_model.md).

`--min-answers SHARE` checks the last held-out line: when the whole answers of any group are below
SHARE, the run writes its LLM and exits 3 with one line. Whether the lookup forms is still partly
chance, and the build script stops there instead of training and installing a poor model.

    python -m bundled_model.pretrain_reading --llm runs/bundled/llm --out runs/bundled/llm_read --steps 1200 \\
        --turns 4 --lookup-weight 1 --kind-copy-layer 1 --compare-weight 1 --min-answers 0.8
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from bundled_model.compare_probe import PROBED, CompareProbe, batch_compare_targets
from bundled_model.lookup import LookupLoss, batch_targets
from bundled_model.pretrain_vision import SHAPE_WORDS, shape_labels, shape_word_ids, token_boxes
from bundled_model.synthetic_world import (
    CAPTION_PROMPT,
    VQA_TYPES,
    caption,
    sample_image_scene,
    sample_image_size,
    sample_vqa,
)
from qwen_vl.errors import OneLineParser, QwenVLError
from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.processing import QwenVLProcessor
from qwen_vl.processing.chat import expand_placeholders
from qwen_vl.processing.image import target_size
from qwen_vl.training.data import IGNORE, Sample, assistant_labels
from qwen_vl.training.loss import answer_loss
from qwen_vl.training.packing import padded_batch

from .loop import Loop

MIN_SIDE, MAX_SIDE = 64, 448  # px: the drawn scenes' sides, as the stages' training sets draw them
LR = 1e-3
BATCH_SIZE = 16  # grids per step
EVAL_EVERY = 100  # steps between held-out lines (and one at the end)
CAPTION_SHARE = 0.5  # share of captions among the training turns (the rest: VQA)
NOISE = 0.05  # per-dimension std of the noise on every grid slot
LOOKUP_LAYER = -2  # the decoder layer whose head 0 the lookup loss trains and whose output the probe reads
SEED = 0
HELDOUT_SEED = SEED + 1_000_003

# the tower WordGrid replaces: the smallest there is (the published default would draw ~670 M weights
# only to drop them); its patch, merge and time settings are the defaults, which the grids' ids follow
STAND_IN_TOWER = {"hidden_size": 16, "depth": 1, "num_heads": 1, "intermediate_size": 16, "fullatt_block_indexes": [0]}


class WordGrid(nn.Module):
    """Stands in for the vision tower: its "pixels" are the word ids under each merged token
    ([T, 3]: colour, kind, region; -1 for none), its output the sum of their embeddings plus noise."""

    def __init__(self, embeddings: nn.Embedding):
        super().__init__()
        self.embeddings = embeddings

    def forward(self, words: torch.Tensor, grid_thw=None, backend=None) -> torch.Tensor:
        table = self.embeddings.weight
        out = torch.randn(words.shape[0], table.shape[1]) * NOISE  # torch's global generator
        for column in words.T:
            out = out + torch.where((column >= 0)[:, None], table[column.clamp(min=0)], 0.0)
        return out


def slot_words(scene: dict, height: int, width: int, grid_h: int, grid_w: int, factor: int, ids: dict) -> torch.Tensor:
    """The word ids under each merged token of one picture (or video frame) -> long [grid_h * grid_w, 3]:
    colour, kind and region of the shape under its centre, -1 where there is none."""
    labels = shape_labels(scene, token_boxes(height, width, grid_h, grid_w, factor))[:3]
    return torch.tensor(
        [
            [ids[name][c] if c != IGNORE else -1 for c in column]
            for name, column in zip(SHAPE_WORDS, labels, strict=True)
        ]
    ).T


def grid_sample(processor, turns: list[tuple[str, str]], words: torch.Tensor, grid_thw: list[int]) -> Sample:
    """A chat of (prompt, answer) turns about one picture, shown in the first turn, whose vision
    input is `words` ([T, 3], one row per merged token); grid_thw in patches, as the processor
    would give it."""
    chat = []
    for turn, (prompt, answer) in enumerate(turns):
        media_part = [{"type": "image"}] if turn == 0 else []
        chat += [
            {"role": "user", "content": [*media_part, {"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
    # the template itself: the picture is a grid of word ids, not media with a source to check
    text = processor.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
    tokens = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    tokens = expand_placeholders(tokens, {"image": processor.image_token_id}, [("image", words.shape[0])])
    return Sample(
        input_ids=torch.tensor(tokens),
        labels=torch.tensor(assistant_labels(tokens, processor.tokenizer)),
        pixel_values=words,
        image_grid_thw=torch.tensor([grid_thw]),
    )


def scene_sample(
    rng: np.random.Generator, processor, ids: dict, caption_share: float, qtype: str | None = None, turns: int = 1
) -> Sample:
    """A chat of `turns` fresh caption or VQA turns (of type `qtype`, or any) about one scene drawn
    from `rng`; its pixel_values are the word ids under each merged token ([T, 3], WordGrid's
    input), its grid in patches."""
    scene = sample_image_scene(rng, *sample_image_size(rng, MIN_SIDE, MAX_SIDE))

    def ask() -> tuple[str, str]:
        if rng.random() < caption_share:
            return CAPTION_PROMPT, caption(scene)
        return sample_vqa(rng, scene, qtype)[1:]

    asked = [ask() for _ in range(turns)]
    settings = processor.image_settings
    height, width = target_size(scene.height, scene.width, settings)
    gh, gw = height // settings.factor, width // settings.factor
    words = slot_words(scene.to_dict(), scene.height, scene.width, gh, gw, settings.factor, ids)
    merge = settings.merge_size
    return grid_sample(processor, asked, words, [1, merge * gh, merge * gw])


def draw_samples(
    rng: np.random.Generator, processor, ids: dict, n: int, caption_share: float, qtype=None, turns: int = 1
) -> list[Sample]:
    """`n` scene samples drawn from `rng`, each after one uniform draw of its own (part of the seeded
    stream the build's model is trained on)."""
    samples = []
    for _ in range(n):
        rng.random()
        samples.append(scene_sample(rng, processor, ids, caption_share, qtype, turns))
    return samples


def reading_accuracy(model, batches, ids: dict) -> dict[str, float]:
    """Teacher-forced on fresh grids: the share of answer tokens, of colour and kind words among
    them, and of whole answers that the LLM predicts right (a share with nothing to count is left out)."""
    counts = {"tokens": [0, 0], "colour": [0, 0], "kind": [0, 0], "answers": [0, 0]}
    ids = {name: torch.tensor(ids[name][1:]) for name in ("colour", "kind")}
    with torch.no_grad():
        for batch in batches:
            logits = model(**batch.model_inputs()).logits
            guess, truth = logits[:, :-1].argmax(-1), batch.labels[:, 1:]
            asked = truth != IGNORE
            right = (guess == truth) & asked
            counts["tokens"] = [counts["tokens"][0] + int(right.sum()), counts["tokens"][1] + int(asked.sum())]
            for name, table in ids.items():
                said = torch.isin(truth, table)
                counts[name] = [counts[name][0] + int((right & said).sum()), counts[name][1] + int(said.sum())]
            whole = (right | ~asked).all(1)
            counts["answers"] = [counts["answers"][0] + int(whole.sum()), counts["answers"][1] + len(whole)]
    return {name: hits / total for name, (hits, total) in counts.items() if total}


def lookup_heads(layers: nn.ModuleList, kind_copy_layer: int | None) -> list[tuple[str, LookupLoss, dict]]:
    """The lookup losses of the decoder `layers`: (what the held-out line calls its mass, loss,
    batch_targets options). Head 0 of LOOKUP_LAYER looks up the asked kind; head 0 of a
    --kind-copy-layer looks at the question's kind word, which the lookup's query needs."""
    heads = [("lookup head's attention on the asked shape", LookupLoss(layers[LOOKUP_LAYER]), {})]
    if kind_copy_layer is not None:
        copy = LookupLoss(layers[kind_copy_layer])
        heads.append(("copy head's attention on the kind word", copy, {"kind_word": True}))
    return heads


def parse_args(argv):
    p = OneLineParser(prog="python -m bundled_model.pretrain_reading", description=__doc__.splitlines()[0])
    p.add_argument("--llm", required=True, help="the stage-0 LLM directory (bundled_model/pretrain_llm.py)")
    p.add_argument("--out", required=True, help="LLM directory to write")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument(
        "--turns", type=int, default=1, help="question turns per training picture (one grid, several answers to learn)"
    )
    p.add_argument(
        "--lookup-weight",
        type=float,
        default=0.0,
        help="weight of the lookup loss (bundled_model/lookup.py): head 0 of the layer before the last attends "
        "to the asked shape's tokens",
    )
    p.add_argument(
        "--kind-copy-layer",
        type=int,
        default=None,
        metavar="L",
        help="with --lookup-weight: head 0 of decoder layer L (before the lookup's) is told to attend from the "
        "answer position to the question's kind word, the half of the lookup's query that otherwise forms by chance",
    )
    p.add_argument(
        "--compare-weight",
        type=float,
        default=0.0,
        help="weight of the comparison probe (bundled_model/compare_probe.py): the lookup layer's output at the "
        "answer names the asked colour and the colour and third of the shape of the asked kind",
    )
    p.add_argument(
        "--min-answers",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="fail (exit 3, after writing --out) when the last held-out line's whole answers of any group (captions, "
        "each VQA type) are below SHARE: the lookup did not form, and stages built on it would be poor",
    )
    args = p.parse_args(argv)
    if args.kind_copy_layer is not None and not args.lookup_weight:
        p.error("--kind-copy-layer trains a head for the lookup: give --lookup-weight too")
    if min(args.steps, args.turns) < 1:
        p.error("--steps and --turns are >= 1")
    for name in ("lookup_weight", "compare_weight"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} is >= 0, got {getattr(args, name)}")
    if not 0 <= args.min_answers <= 1:
        p.error(f"--min-answers: a share is in [0, 1], got {args.min_answers}")
    return args


def main(argv: list[str] | None = None, batch_size: int = BATCH_SIZE, eval_every: int = EVAL_EVERY) -> int:
    """batch_size: grids per step; eval_every: steps between held-out lines (the tests pass smaller ones)."""
    args = parse_args(argv)
    if not Path(args.llm, "config.json").is_file():
        print(f"error: --llm {args.llm}: no LLM there (config.json not found)", file=sys.stderr)
        return 2
    try:
        processor = QwenVLProcessor.from_pretrained(args.llm)
        model = QwenVLForConditionalGeneration.from_llm(args.llm, vision_config=STAND_IN_TOWER)
        ids = shape_word_ids(processor.tokenizer)
    except (OSError, ValueError, QwenVLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    layers = len(model.model.layers)
    lookup = LOOKUP_LAYER % layers
    if (args.lookup_weight or args.compare_weight) and layers < -LOOKUP_LAYER:
        print(f"error: --llm has {layers} layer: the lookup reads the one before the last", file=sys.stderr)
        return 2
    copy = args.kind_copy_layer
    if copy is not None and not (-layers <= copy < layers and copy % layers < lookup):
        print(
            f"error: --kind-copy-layer {copy}: the copy head's layer comes before the lookup's ({lookup})",
            file=sys.stderr,
        )
        return 2
    torch.manual_seed(SEED)
    model.visual = WordGrid(model.model.embed_tokens)
    model.model.embed_tokens.weight.requires_grad_(False)  # stage 0's fixed random embeddings stay
    model.train()
    params = [p for name, p in model.named_parameters() if not name.startswith("visual.") and p.requires_grad]
    compare = None
    if args.compare_weight:
        with torch.random.fork_rng():  # its heads' draws leave the run's own draws as they were
            compare = CompareProbe(model.model.layers[LOOKUP_LAYER], model.config.text.hidden_size)
        params += list(compare.parameters())
    loop = Loop(params, args.steps, LR, max(1, args.steps // 20))
    rng, pad_id = np.random.default_rng(SEED), processor.tokenizer.pad_token_id or 0

    def draw(rng, n, caption_share, qtype=None):
        return padded_batch(draw_samples(rng, processor, ids, n, caption_share, qtype), model.position_ids, pad_id)

    heldout_rng = np.random.default_rng(HELDOUT_SEED)
    heldout = {"captions": [draw(heldout_rng, 20, 1.0) for _ in range(2)]}
    heldout |= {qtype: [draw(heldout_rng, 20, 0.0, qtype)] for qtype in VQA_TYPES}
    lookups = lookup_heads(model.model.layers, copy) if args.lookup_weight else []
    masses = [[] for _ in lookups]
    image_id, compared, read = processor.image_token_id, [], {}
    started = time.time()

    def step_loss(step: int) -> torch.Tensor:
        samples = draw_samples(rng, processor, ids, batch_size, CAPTION_SHARE, turns=args.turns)
        batch = padded_batch(samples, model.position_ids, pad_id)
        width = batch.input_ids.shape[1]
        loss = answer_loss(model, batch.model_inputs(), batch.labels) / batch.label_tokens
        for (_, lookup, which), mass in zip(lookups, masses, strict=True):
            rows, targets = batch_targets(samples, processor.tokenizer, image_id, width, **which)
            if rows:
                looked, looked_mass = lookup.loss(rows, targets)
                loss = loss + args.lookup_weight * looked
                mass.append(looked_mass)
        if compare is not None:
            probe_rows, targets = batch_compare_targets(samples, processor.tokenizer, image_id)
            if probe_rows:
                probe_loss, rights = compare.loss(probe_rows, targets)
                loss = loss + args.compare_weight * probe_loss
                compared.append(rights)
        return loss

    def report(step: int, loss: torch.Tensor) -> None:
        if (step + 1) % eval_every and step < args.steps - 1:
            return
        model.eval()
        read.update({group: reading_accuracy(model, batches, ids) for group, batches in heldout.items()})
        model.train()
        shares = "; ".join(
            f"{group}: " + ", ".join(f"{name} {share:.1%}" for name, share in scores.items())
            for group, scores in read.items()
            if group not in VQA_TYPES
        )
        shares += "; VQA answers: " + ", ".join(f"{qtype} {read[qtype]['answers']:.0%}" for qtype in VQA_TYPES)
        for (name, _, _), mass in zip(lookups, masses, strict=True):
            if mass:
                shares += f"; {name} {sum(mass) / len(mass):.0%}"
                mass.clear()
        if compared:
            columns = np.array(compared).T  # per head, its share right in each step (nan: no target)
            shares += "; probe: " + ", ".join(
                f"{name} {np.nanmean(c):.0%}" for name, c in zip(PROBED, columns, strict=True) if (c == c).any()
            )
            compared.clear()
        print(f"step {step + 1}/{args.steps} loss {loss.item():.4f}; read {shares}", flush=True)

    loop.run(step_loss, report)
    try:
        model.eval().save_llm(args.out)
        processor.save_pretrained(args.out)
    except OSError as err:
        print(f"error: cannot write {args.out}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {args.steps} steps, {time.time() - started:.0f} s")
    short = {group: scores["answers"] for group, scores in read.items() if scores["answers"] < args.min_answers}
    if short:
        named = ", ".join(f"{group} {share:.0%}" for group, share in short.items())
        print(
            f"error: stage 0b did not form: held-out whole answers {named}, under --min-answers "
            f"{args.min_answers:.0%} (the LLM in {args.out} is kept to inspect; stages built on it would be poor)",
            file=sys.stderr,
        )
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
