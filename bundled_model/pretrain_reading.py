"""Stage 0b for the bundled model: the text LLM learns to read a picture laid out as a grid of words.

A VL model's first hard step is finding the one to three shape tokens among a hundred background
tokens of the vision block, and telling what each holds. Taught through a fresh vision tower,
that step is slow: after stages 1-4 the installed model named a shape's kind no better than
chance, though a linear probe reads it off the tower's tokens. Here it is taught without a
tower: each merged-token slot of a freshly drawn scene holds the sum of the LLM's own
embeddings of what lies under it (" red" + " circle" + " left" on a shape, small noise on the
background), at the positions and M-RoPE ids the real image would have, and the LLM learns the
world's caption and VQA answers from such grids at text-only cost. The token embeddings stay
as stage 0 drew them (learned, the words of a kind collapse onto one another and cannot be
told apart in a grid). `pretrain_vision --word-heads` then trains the tower to put the same
words on its tokens, so that stage 1 starts from an LLM that already reads them.

`--turns 4` asks four questions about each training grid (a grid costs about a hundred tokens, an
answer a few), and `--lookup-weight 1` tells one head where the asked shape lies
(bundled_model/lookup.py): without it the lookup by kind did not form, with it the LLM answers colour
questions on fresh grids as well as it captions them (docs/bundled_model.md). `--compare-weight 1`
asks the lookup layer's output at the answer for the asked colour and the found shape's colour and
third (bundled_model/compare_probe.py): "Is there" then no longer waits on a comparison found from the
answers alone, and every question type forms by step 1,000 instead of 1,900-2,500 or never.

`--kind-copy-layer L` tells head 0 of an earlier layer to look, from the same position, at the
question's own kind word, which the lookup's query needs. Without it the lookup at layer -2 formed
from the stage-0 LLMs of AVX-512 machines and not from the one a CPU without AVX-512 draws (its
floats differ in their last bits); with it, it formed there by step 400 (docs/bundled_model.md).

`--clip-share` mixes in video questions on clips laid out the same way, one grid per temporal
token at the clip's absolute-time ids. Off by default: in 2,000 steps the LLM did not learn to
read an event's second off those ids (docs/bundled_model.md). `--time-weight` asks a probe on one
layer's output for each video token's second (bundled_model/time_code.py), and with `--lookup-weight`
a clip's "When does ...?" looks up where its event first shows: in clip-only probes the time code
formed within a few hundred steps and whole clip answers reached 77% by step 1,500 (not yet in the
recipe, docs/bundled_model.md). With clips, `--compare-weight` also asks for a "When does ...?"
answer's second at its number; in a half-clip phase after the pictures the event lookup did not form
and neither did the answers.

`--length-groups K` splits each step's grids into K micro-batches of similar length, so that rows
pad less (about 8% faster at K = 2), with the step's mean loss unchanged; `--noise-seed` gives the
grids' noise a generator of its own, so that the held-out line does not change the run.

`--exists-drill SHARE` turns that share of the VQA turns into "Is there a {colour} {kind}?" about a
kind the picture holds, half of them in a colour no shape of that kind has. The world's own "no"
questions mostly name an absent kind, which finding the kind alone answers; in the runs where "Is
there" did not form, the LLM said yes whenever the kind was there. Off by default: at 0.25 it did
not make "Is there" form either, while the lookup at the last layer (`--lookup-layer -1`) did in the
draw where it had failed (docs/bundled_model.md). `--exists-lookup both` tells the lookup head, for "Is
there a {colour} {kind}?", the slots holding both words, or the vision block's start when none does,
so that where it looks is the answer and the colour comparison is taught, not left to form. On the
lookup head itself it broke the colour questions (one head cannot put the vision block's start both
above one matching word and below it); `--exists-head H` gives that target to head H of the same
layer instead, head 0 keeping the kind's slots for every question; in its one run the two lookups
slowed every question and the exists head stayed near 55% (docs/bundled_model.md).

`--min-answers SHARE` checks the last held-out line: when the whole answers of any group are below SHARE,
the run writes its LLM and exits 3 with one line. Whether the lookup forms is still partly chance (on a
CPU without AVX-512 the build's stage 0b did not form it in two seeds), and the build script stops there
instead of training and installing a poor model (docs/bundled_model.md).

    python -m bundled_model.pretrain_reading --llm runs/bundled/llm --out runs/bundled/llm_read
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from bundled_model.compare_probe import PROBED, CompareProbe, batch_compare_targets
from bundled_model.lookup import LOOKUP_TYPES, EventSample, LookupLoss, batch_targets
from bundled_model.pretrain_vision import SHAPE_WORDS, shape_labels, shape_word_ids, token_boxes
from bundled_model.synthetic import TRAIN_FPS
from bundled_model.synthetic_world import (
    CAPTION_PROMPT,
    COLOURS,
    QUESTION_TEMPLATES,
    REGIONS,
    VQA_TYPES,
    VideoScene,
    caption,
    sample_image_scene,
    sample_image_size,
    sample_video_question,
    sample_video_scene,
    sample_vqa,
)
from bundled_model.time_code import TimeCode, token_seconds
from qwen_vl.errors import OneLineParser, QwenVLError
from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.processing import QwenVLProcessor
from qwen_vl.processing.chat import expand_placeholders
from qwen_vl.processing.image import target_size
from qwen_vl.processing.video import frame_size
from qwen_vl.processing.video_sampling import FrameRange, sample_frame_count, sample_indices, sampled_fps
from qwen_vl.training.data import IGNORE, Sample, assistant_labels
from qwen_vl.training.loss import answer_loss
from qwen_vl.training.packing import padded_batch
from qwen_vl.training.schedule import cosine_schedule

MIN_SIDE = 64  # px: the smallest scene side, as in the synthetic world's defaults
MAX_SEED = 2**63 - 1_000_003  # seeds are offset (held-out draws) and must stay a torch seed (int64)

# the tower WordGrid replaces: the smallest there is (the published default would draw ~670 M weights
# only to drop them); its patch, merge and time settings are the defaults, which the grids' ids follow
STAND_IN_TOWER = {"hidden_size": 16, "depth": 1, "num_heads": 1, "intermediate_size": 16, "fullatt_block_indexes": [0]}


class WordGrid(nn.Module):
    """Stands in for the vision tower: its "pixels" are the word ids under each merged token
    ([T, 3]: colour, kind, region; -1 for none), its output the sum of their embeddings plus noise."""

    def __init__(self, embeddings: nn.Embedding, noise: float, generator: torch.Generator | None = None):
        super().__init__()
        self.embeddings = embeddings
        self.noise = noise
        self.generator = generator  # where the noise is drawn from (None: torch's global generator)

    def forward(self, words: torch.Tensor, grid_thw=None, backend=None) -> torch.Tensor:
        table = self.embeddings.weight
        out = torch.randn(words.shape[0], table.shape[1], generator=self.generator) * self.noise
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


def grid_sample(
    processor, media: str, turns: list[tuple[str, str]], words: torch.Tensor, grid_thw: list[int], **extra
) -> Sample:
    """A chat of (prompt, answer) turns about one picture or clip, shown in the first turn, whose
    vision input is `words` ([T, 3], one row per merged token); grid_thw in patches, as the
    processor would give it."""
    chat = []
    for turn, (prompt, answer) in enumerate(turns):
        media_part = [{"type": media}] if turn == 0 else []
        chat += [
            {"role": "user", "content": [*media_part, {"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
    text = processor.apply_chat_template(chat, add_generation_prompt=False)
    tokens = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    pad_id = processor.image_token_id if media == "image" else processor.video_token_id
    tokens = expand_placeholders(tokens, {media: pad_id}, [(media, words.shape[0])])
    grid = torch.tensor([grid_thw])
    vision = (
        {"pixel_values": words, "image_grid_thw": grid}
        if media == "image"
        else {"pixel_values_videos": words, "video_grid_thw": grid, **extra}
    )
    return Sample(
        input_ids=torch.tensor(tokens),
        labels=torch.tensor(assistant_labels(tokens, processor.tokenizer)),
        **vision,
    )


def exists_drill(rng: np.random.Generator, scene) -> tuple[str, str]:
    """ "Is there a {colour} {kind}?" about a shape of the scene: half the time that shape (yes), else
    its kind in a colour no shape of that kind has (no). Finding the kind alone answers the world's
    other "no" questions (an absent kind); these need the found shape's colour compared with the
    asked one, the step of stage 0b that forms in some runs and not in others."""
    present = {(s.colour, s.kind) for s in scene.shapes}
    shape = scene.shapes[int(rng.integers(len(scene.shapes)))]
    colour, kind = shape.colour, shape.kind
    if rng.random() < 0.5:
        others = [c for c in COLOURS if (c, kind) not in present]
        colour = others[int(rng.integers(len(others)))]
    answer = "yes" if (colour, kind) in present else "no"
    return QUESTION_TEMPLATES["exists"].format(colour=colour, kind=kind), answer


def scene_sample(
    rng: np.random.Generator,
    processor,
    ids: dict,
    max_size: int,
    caption_share: float,
    qtype: str | None = None,
    turns: int = 1,
    exists_share: float = 0.0,
    compare_share: float = 0.0,
) -> Sample:
    """A chat of `turns` fresh caption or VQA turns (of type `qtype`, or any; `exists_share` of the
    VQA turns an exists_drill) about one scene drawn from `rng`; its pixel_values are the word ids
    under each merged token ([T, 3], WordGrid's input), its grid in patches. `compare_share` of the
    scenes hold one shape and ask only exists_drill turns: the colour comparison with no lookup."""
    compare = compare_share > 0 and rng.random() < compare_share  # no draw at 0: the old runs keep their bytes
    scene = sample_image_scene(rng, *sample_image_size(rng, MIN_SIDE, max_size), count=1 if compare else None)

    def ask() -> tuple[str, str]:
        if compare:
            return exists_drill(rng, scene)
        if rng.random() < caption_share:
            return CAPTION_PROMPT, caption(scene)
        if exists_share and rng.random() < exists_share:  # no draw at 0: the old runs keep their bytes
            return exists_drill(rng, scene)
        return sample_vqa(rng, scene, qtype)[1:]

    asked = [ask() for _ in range(turns)]
    settings = processor.image_settings
    height, width = target_size(scene.height, scene.width, settings)
    gh, gw = height // settings.factor, width // settings.factor
    words = slot_words(scene.to_dict(), scene.height, scene.width, gh, gw, settings.factor, ids)
    merge = settings.merge_size
    return grid_sample(processor, "image", asked, words, [1, merge * gh, merge * gw])


def frame_shapes(scene: VideoScene, frame: int) -> dict:
    """The shapes shown in one frame of a clip, each with the third of the frame its centre lies in."""
    shapes = []
    for index, shape in enumerate(scene.shapes):
        visible, colour, bbox = scene.shape_state(index, frame)
        if visible:
            third = min(int(3 * (bbox[0] + bbox[2]) / 2 / scene.width), 2)
            shapes.append({"kind": shape.kind, "colour": colour, "bbox": bbox, "region": REGIONS[third]})
    return {"shapes": shapes}


WHEN_TYPES = ("appear", "disappear", "change", "start")  # the clip questions answered with a second


def event_slots(scene: VideoScene, shown: list[int], gh: int, gw: int, factor: int) -> torch.Tensor | None:
    """bool [len(shown) * gh * gw]: the slots of the event's shape in the first temporal token
    whose frame (`shown`: one per token) is at or after the event (for a disappearance, the last
    token that still shows it); None where the sampled frames do not show that."""
    first = next((k for k, frame in enumerate(shown) if frame >= scene.event.second * scene.fps), None)
    k = None if first is None else first - (scene.event.type == "disappear")
    if k is None or k < 0:
        return None
    visible, colour, bbox = scene.shape_state(scene.event.shape, shown[k])
    if not visible:
        return None
    shape = {"kind": scene.shapes[scene.event.shape].kind, "colour": colour, "bbox": bbox}
    owners = shape_labels({"shapes": [shape]}, token_boxes(scene.height, scene.width, gh, gw, factor))[3]
    slots = torch.zeros(len(shown), gh * gw, dtype=torch.bool)
    slots[k] = torch.tensor(owners) > 0
    return slots.flatten()


def clip_sample(rng: np.random.Generator, processor, ids: dict) -> EventSample:
    """One fresh question about a clip drawn from `rng`, sampled as the processor samples a video
    file (2 fps, frame pairs per temporal token, the frame size its pixel budget gives): each
    temporal token's slots hold the words of the first frame of its pair, at the clip's
    absolute-time M-RoPE ids, the only place an answer's seconds can be read from. A "when"
    question also marks where its event first shows (the lookup loss's target)."""
    scene = sample_video_scene(rng, TRAIN_FPS)
    qtype, prompt, answer = sample_video_question(rng, scene)
    image, video = processor.image_settings, processor.video_settings
    count = sample_frame_count(scene.frame_count, scene.fps, video.fps, None, video.min_frames, video.max_frames)
    everything = FrameRange(0, scene.frame_count - 1)
    frames = sample_indices(everything, count)
    height, width = frame_size(count, scene.height, scene.width, image, video)
    gh, gw = height // image.factor, width // image.factor
    tp = image.temporal_patch_size
    shown = frames[::tp]
    words = torch.cat(
        [slot_words(frame_shapes(scene, f), scene.height, scene.width, gh, gw, image.factor, ids) for f in shown]
    )
    merge = image.merge_size
    seconds = tp / sampled_fps(count, everything, scene.fps)
    sample = grid_sample(
        processor,
        "video",
        [(prompt, answer)],
        words,
        [count // tp, merge * gh, merge * gw],
        second_per_grid_ts=torch.tensor([seconds]),
    )
    slots = event_slots(scene, shown, gh, gw, image.factor) if qtype in WHEN_TYPES else None
    marked = None
    if slots is not None:
        marked = torch.zeros(len(sample), dtype=torch.bool)
        marked[sample.input_ids == processor.video_token_id] = slots
    second = scene.event.second if qtype in WHEN_TYPES else None
    return EventSample(**vars(sample), event_slots=marked, second=second)


def length_groups(samples: list[Sample], count: int) -> list[list[Sample]]:
    """`samples` in `count` micro-batches of similar lengths (shortest first, as even in number as
    they divide), so that their rows pad less than one batch padded to the longest sample. Inside a
    micro-batch the samples keep their order (one group is the batch as drawn)."""
    order = sorted(range(len(samples)), key=lambda i: len(samples[i]))
    return [[samples[i] for i in sorted(part)] for part in np.array_split(order, count) if len(part)]


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


def lookup_heads(layers: nn.ModuleList, args) -> list[tuple[str, LookupLoss, dict]]:
    """The lookup losses of the decoder `layers`: (what the held-out line calls its mass, loss,
    batch_targets options). Head 0 of --lookup-layer looks up the asked kind (for "Is there", with
    --exists-lookup both and no --exists-head, both words) and a clip's event; an --exists-head looks
    up both words for "Is there" alone; an --event-head takes the clips' events from head 0; head 0
    of a --kind-copy-layer looks at the question's kind word, which the lookup's query needs."""
    layer = layers[args.lookup_layer]
    both, shape = args.exists_lookup == "both", "lookup head's attention on the asked shape"
    types = tuple(t for t in LOOKUP_TYPES if t != "when" or not args.event_head)
    heads = [(shape, LookupLoss(layer), {"match_exists": both and not args.exists_head, "types": types})]
    if both and args.exists_head:
        exists = {"match_exists": True, "types": ("exists",)}
        heads.append(("exists head's attention on its targets", LookupLoss(layer, args.exists_head), exists))
    if args.event_head:
        heads.append(("event head's attention on the event", LookupLoss(layer, args.event_head), {"types": ("when",)}))
    if args.kind_copy_layer is not None:
        copy = LookupLoss(layers[args.kind_copy_layer])  # pictures' questions only: a clip's has no kind word target
        heads.append(("copy head's attention on the kind word", copy, {"kind_word": True}))
    return heads


def parse_args(argv):
    p = OneLineParser(prog="python -m bundled_model.pretrain_reading", description=__doc__.splitlines()[0])
    p.add_argument("--llm", required=True, help="the stage-0 LLM directory (bundled_model/pretrain_llm.py)")
    p.add_argument("--out", required=True, help="LLM directory to write")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--length-groups",
        type=int,
        default=1,
        metavar="K",
        help="split each step's grids into K micro-batches of similar length (less padding, the same mean loss)",
    )
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the training forward (weights stay fp32)")
    p.add_argument(
        "--caption-share", type=float, default=0.5, help="share of captions among picture turns (the rest: VQA)"
    )
    p.add_argument(
        "--clip-share", type=float, default=0.0, help="share of video-question turns among all turns (0: pictures only)"
    )
    p.add_argument(
        "--exists-drill",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of VQA turns that are extra 'Is there' questions whose 'no' asks a kind of the picture in another colour",
    )
    p.add_argument(
        "--compare-drill",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of training pictures that hold one shape and ask only 'Is there a {colour} {kind}?' of its "
        "kind, half the time in another colour: the colour comparison, with no lookup to find first",
    )
    p.add_argument(
        "--turns", type=int, default=1, help="question turns per training picture (one grid, several answers to learn)"
    )
    p.add_argument(
        "--lookup-weight",
        type=float,
        default=0.0,
        help="weight of the lookup loss (bundled_model/lookup.py): one head attends to the asked shape's tokens",
    )
    p.add_argument(
        "--lookup-layer",
        type=int,
        default=-2,
        help="the decoder layer whose head 0 the lookup loss trains (negative: from the last; -2 leaves one layer after it)",
    )
    p.add_argument(
        "--kind-copy-layer",
        type=int,
        default=None,
        metavar="L",
        help="with --lookup-weight: head 0 of decoder layer L (before --lookup-layer) is told to attend from the "
        "answer position to the question's kind word, the half of the lookup's query that otherwise forms by chance",
    )
    p.add_argument(
        "--exists-lookup",
        choices=("kind", "both"),
        default="kind",
        help="where the lookup head looks for 'Is there a {colour} {kind}?': the kind's slots, or the slots "
        "holding both words (the vision block's start when none does: the head's look is the answer)",
    )
    p.add_argument(
        "--exists-head",
        type=int,
        default=0,
        help="with --exists-lookup both: the head of the lookup layer told where 'Is there' looks (0: the lookup "
        "head itself; another: that head, while head 0 keeps the kind's slots for every question)",
    )
    p.add_argument(
        "--event-head",
        type=int,
        default=0,
        help="the head of the lookup layer told where a clip's event first shows (0: the lookup head itself, "
        "which also finds the pictures' shapes; another: that head alone)",
    )
    p.add_argument(
        "--compare-weight",
        type=float,
        default=0.0,
        help="weight of the comparison probe (bundled_model/compare_probe.py): the lookup layer's output at the answer "
        "names the asked colour and the colour and third of the shape of the asked kind (a clip's: its event's second)",
    )
    p.add_argument(
        "--time-weight",
        type=float,
        default=0.0,
        help="weight of the time-code loss (bundled_model/time_code.py): each video token's second, probed after --time-layer",
    )
    p.add_argument(
        "--time-layer", type=int, default=0, help="the decoder layer whose output the time code is read from"
    )
    p.add_argument("--noise", type=float, default=0.05, help="per-dimension std of the noise on every grid slot")
    p.add_argument("--max-size", type=int, default=448, help=f"largest image side of the drawn scenes (>= {MIN_SIDE})")
    p.add_argument(
        "--eval-every",
        type=int,
        default=100,
        metavar="N",
        help="print the held-out line every N steps and at the end (about a second each; without --noise-seed its "
        "grids' noise comes from the training generator, so N changes the run's later draws)",
    )
    p.add_argument(
        "--noise-seed",
        type=int,
        default=None,
        metavar="S",
        help="draw the grids' noise from a generator of its own seeded S (the held-out line's from another), so "
        "that --eval-every does not change the run (default: torch's global generator, as the recipe's)",
    )
    p.add_argument(
        "--min-answers",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="fail (exit 3, after writing --out) when the last held-out line's whole answers of any group (captions, "
        "each VQA type, clips) are below SHARE: the lookup did not form, and stages built on it would be poor",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.kind_copy_layer is not None and not args.lookup_weight:
        p.error("--kind-copy-layer trains a head for the lookup: give --lookup-weight too")
    if args.event_head and args.event_head == args.exists_head:
        p.error("--event-head and --exists-head name one head: give each its own")
    if min(args.steps, args.batch_size, args.turns, args.eval_every, args.length_groups) < 1:
        p.error("--steps, --batch-size, --turns, --eval-every and --length-groups are >= 1")
    for name in ("seed", "noise_seed"):  # torch and numpy seeds; the held-out line's noise uses S + 1
        value = getattr(args, name)
        if value is not None and not 0 <= value < MAX_SEED:
            p.error(f"--{name.replace('_', '-')} is in [0, {MAX_SEED}), got {value}")
    if args.max_size < MIN_SIDE or args.noise < 0:
        p.error(f"--max-size is >= {MIN_SIDE} and --noise >= 0")
    for name in ("lookup_weight", "time_weight", "compare_weight"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} is >= 0, got {getattr(args, name)}")
    for name in ("caption_share", "clip_share", "exists_drill", "compare_drill", "min_answers"):
        if not 0 <= getattr(args, name) <= 1:
            p.error(f"--{name.replace('_', '-')}: a share is in [0, 1], got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
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
    for name in ("lookup", "time"):
        layer = getattr(args, f"{name}_layer")
        weighted = getattr(args, f"{name}_weight") or (name == "lookup" and args.compare_weight)
        if weighted and not -layers <= layer < layers:
            print(f"error: --{name}-layer {layer}: the LLM has layers 0-{layers - 1}", file=sys.stderr)
            return 2
    copy, lookup = args.kind_copy_layer, args.lookup_layer % layers
    if copy is not None and not (-layers <= copy < layers and copy % layers < lookup):
        print(
            f"error: --kind-copy-layer {copy}: the copy head's layer comes before the lookup's ({lookup})",
            file=sys.stderr,
        )
        return 2
    head_count = model.config.text.num_attention_heads
    for name in ("exists_head", "event_head"):
        if not 0 <= getattr(args, name) < head_count:
            flag = "--" + name.replace("_", "-")
            print(f"error: {flag} {getattr(args, name)}: the LLM has heads 0-{head_count - 1}", file=sys.stderr)
            return 2
    torch.manual_seed(args.seed)
    train_noise = None if args.noise_seed is None else torch.Generator().manual_seed(args.noise_seed)
    model.visual = WordGrid(model.model.embed_tokens, args.noise, train_noise)
    model.model.embed_tokens.weight.requires_grad_(False)  # stage 0's fixed random embeddings stay
    model.train()
    params = [p for name, p in model.named_parameters() if not name.startswith("visual.") and p.requires_grad]
    timecode = None
    if args.time_weight:
        timecode = TimeCode(model.model.layers[args.time_layer], model.config.text.hidden_size)
        params += list(timecode.parameters())
    compare = None
    if args.compare_weight:
        with torch.random.fork_rng():  # its heads' draws leave the run's own draws as they were
            compare = CompareProbe(model.model.layers[args.lookup_layer], model.config.text.hidden_size)
        params += list(compare.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    schedule = cosine_schedule(optimizer, max(1, args.steps // 20), args.steps)
    rng, pad_id = np.random.default_rng(args.seed), processor.tokenizer.pad_token_id or 0

    def draw_samples(
        rng, n, clip_share, caption_share=args.caption_share, qtype=None, turns=1, exists=0.0, compare=0.0
    ):
        return [
            clip_sample(rng, processor, ids)
            if rng.random() < clip_share
            else scene_sample(rng, processor, ids, args.max_size, caption_share, qtype, turns, exists, compare)
            for _ in range(n)
        ]

    def draw(*args, **kwargs):
        return padded_batch(draw_samples(*args, **kwargs), model.position_ids, pad_id)

    heldout_rng = np.random.default_rng(args.seed + 1_000_003)
    heldout = {"captions": [draw(heldout_rng, 20, 0.0, 1.0) for _ in range(2)]}
    heldout |= {qtype: [draw(heldout_rng, 20, 0.0, 0.0, qtype)] for qtype in VQA_TYPES}
    if args.clip_share > 0:
        heldout["clips"] = [draw(heldout_rng, 20, 1.0) for _ in range(3)]
    lookups = lookup_heads(model.model.layers, args) if args.lookup_weight else []
    masses = [[] for _ in lookups]
    image_id, timed, compared = processor.image_token_id, [], []
    merge = processor.image_settings.merge_size
    started = time.time()
    for step in range(args.steps):
        samples = draw_samples(
            rng,
            args.batch_size,
            args.clip_share,
            turns=args.turns,
            exists=args.exists_drill,
            compare=args.compare_drill,
        )
        groups = [(g, padded_batch(g, model.position_ids, pad_id)) for g in length_groups(samples, args.length_groups)]
        looked_up = [  # per group, per lookup head: (rows, targets)
            [
                batch_targets(group, processor.tokenizer, image_id, batch.input_ids.shape[1], **which)
                for _, _, which in lookups
            ]
            for group, batch in groups
        ]
        # each micro-batch's losses are weighted by its share of the step, so the split does not change the
        # step's mean (and one group is the whole batch exactly: its shares are 1.0)
        probed = [
            batch_compare_targets(group, processor.tokenizer, image_id) if compare else None for group, _ in groups
        ]
        compare_rows = sum(len(p[0]) for p in probed if p is not None)
        label_tokens = sum(batch.label_tokens for _, batch in groups)
        lookup_rows = [sum(len(heads[i][0]) for heads in looked_up) for i in range(len(lookups))]
        videos = [batch.input_ids == processor.video_token_id for _, batch in groups]
        video_tokens = int(sum(video.sum() for video in videos))
        step_loss = 0.0
        for (group, batch), heads, video, probe_targets in zip(groups, looked_up, videos, probed, strict=True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = answer_loss(model, batch.model_inputs(), batch.labels) / label_tokens
                for i, ((_, lookup, _), (rows, targets)) in enumerate(zip(lookups, heads, strict=True)):
                    if rows:
                        looked, mass = lookup.loss(rows, targets)
                        loss = loss + args.lookup_weight * (len(rows) / lookup_rows[i]) * looked
                        masses[i].append(mass)
                if timecode is not None and video.any():
                    seconds = torch.cat([token_seconds(s, merge) for s in group])
                    coded, right = timecode.loss(video, seconds)
                    loss = loss + args.time_weight * (int(video.sum()) / video_tokens) * coded
                    timed.append(right)
                if probe_targets is not None and probe_targets[0]:
                    probe_rows, targets = probe_targets
                    probe_loss, rights = compare.loss(probe_rows, targets)
                    loss = loss + args.compare_weight * (len(probe_rows) / compare_rows) * probe_loss
                    compared.append(rights)
            loss.backward()
            step_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            model.eval()
            if (
                train_noise is not None
            ):  # the held-out line draws the same noise every time, apart from qwen_vl.training's
                model.visual.generator = torch.Generator().manual_seed(args.noise_seed + 1)
            read = {group: reading_accuracy(model, batches, ids) for group, batches in heldout.items()}
            model.visual.generator = train_noise
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
                columns = np.array(compared).T  # per head, its share right in each micro-batch (nan: no target)
                shares += "; probe: " + ", ".join(
                    f"{name} {np.nanmean(c):.0%}" for name, c in zip(PROBED, columns, strict=True) if (c == c).any()
                )
                compared.clear()
            if timed:
                shares += f"; time code {sum(timed) / len(timed):.0%} of video tokens"
                timed.clear()
            print(f"step {step + 1}/{args.steps} loss {step_loss:.4f}; read {shares}", flush=True)
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
