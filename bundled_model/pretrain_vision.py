"""Vision pre-training for the bundled model: the fresh ViT learns to see the synthetic world
before it meets the LLM, the part CLIP pre-training plays for the published models.

A vision tower built from a stage-1 config's `init.vision` learns three kinds of targets through
linear heads on the merger's output, all read off the scene the synthetic world records beside
each image:
- per merged token: the colour and the kind of the shape under it, the word of the text under
  it ("none" where there is none), and on a scene's shape tokens the third of the image (left,
  middle, right) that the shape is in; the colour, kind and region heads score a token against
  the LLM's own embeddings of those words (WordHead), and the tokens are also pulled towards the
  grid of those embeddings stage 0b taught the LLM to read (`grid_loss`);
- per shape and per word, from the mean of its tokens: its kind, or which
  word it is. The LLM reads a shape or a word by attending to its tokens, that is, by a mean of
  them, and most single tokens of a shape see too little of its outline to tell its kind;
- per image, from the mean of its merged tokens: which (colour, kind) pairs and which (kind,
  region) pairs it shows, how many shapes, and which words. A mean is what an LLM's attention
  reads before it has learned where to look, so these make the first answers depend on the
  image.
Each step also draws fresh shape drills (`drill_scene`): one big shape on a small canvas, where
a shape's kind can be learned from its outline; at scene scale most shapes span a patch or two
and the kind stays near chance. The heads are dropped; the tower's
weights (`visual.*`) are written to the config's `init.vision_weights`, where stage 1 picks
them up. Without this step a from-scratch tower answers every image with the same vector: its
features are mostly the background's colour, and the language loss alone does not pull them
apart.

    python -m bundled_model.pretrain_vision --config bundled_model/configs/stage1.yaml \\
        --data data/bundled/train/caption.jsonl data/bundled/train/ocr.jsonl --steps 1800
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw

from bundled_model.synthetic_render import draw_shape, font, render_image_scene
from bundled_model.synthetic_words import WORDS
from bundled_model.synthetic_world import (
    COLOURS,
    KINDS,
    REGIONS,
    ImageScene,
    Shape,
    colours_on,
    sample_background,
)
from qwen_vl.config import vision_config_from
from qwen_vl.errors import OneLineParser, QwenVLError
from qwen_vl.modeling.init import small_normal_init_
from qwen_vl.modeling.vision import VisionEncoder
from qwen_vl.processing import ImageSettings, QwenVLProcessor, image_to_patches, load_image
from qwen_vl.training.config import load_config
from qwen_vl.training.data import IGNORE

from .loop import Loop

COLOUR_CLASSES = ("none", *COLOURS)
KIND_CLASSES = ("none", *KINDS)
WORD_CLASSES = ("none", *WORDS)
REGION_CLASSES = ("none", *REGIONS)
TOKEN_HEADS = ("colour", "kind", "word", "region")
# the token heads whose classes are single words (stage 0b lays them out in its grid)
SHAPE_WORDS = {"colour": COLOUR_CLASSES, "kind": KIND_CLASSES, "region": REGION_CLASSES}
REPORTED = (*TOKEN_HEADS, "kind per shape", "word per word")  # the last two: heads on the mean token of each
DRILL_SIDES = (56, 140)  # canvas side, px: at most 10x10 patches, so a drill costs little
SMALL_DRILL_PX = 14  # the smallest shape side of a drill: one patch
DRILL_MIN_PIXELS = 56 * 56  # drills are encoded at their own size, whatever the processor's min_pixels
STEPS = 1800
LR = 1e-3
BATCH_SIZE = 16  # scenes from --data per step
DRILLS = 32  # shape drills (one shape on a small canvas) per step
SEED = 0


def token_boxes(height: int, width: int, grid_h: int, grid_w: int, unit: int):
    """[x0, y0, x1, y1] of each merged token in original-image pixels, raster order."""
    sy, sx = height / (grid_h * unit), width / (grid_w * unit)
    return [
        (j * unit * sx, i * unit * sy, (j + 1) * unit * sx, (i + 1) * unit * sy)
        for i in range(grid_h)
        for j in range(grid_w)
    ]


def shape_labels(scene: dict, boxes) -> tuple[list[int], list[int], list[int], list[int]]:
    """Colour, kind and region class of the shape drawn under each token's centre (its pixels,
    not its bbox: a circle's corners are background), and which shape that is (1 + its index;
    0: none); a shape too small to hold a centre labels the token that holds its own centre.
    Region is asked only of a scene's shape tokens: with relative positions only, a background
    token cannot know where in the image it lies."""
    width = max(int(box[2]) for box in boxes) + 1
    height = max(int(box[3]) for box in boxes) + 1
    owner = Image.new("L", (width, height), 0)  # pixel -> 1 + index of the shape drawn there
    draw = ImageDraw.Draw(owner)
    for index, shape in enumerate(scene["shapes"]):  # later shapes cover earlier ones, as rendered
        draw_shape(draw, shape["kind"], shape["bbox"], index + 1)
    colours, kinds, regions = [0] * len(boxes), [0] * len(boxes), [IGNORE] * len(boxes)
    owners = [0] * len(boxes)

    def mark(k: int, index: int) -> None:
        shape = scene["shapes"][index]
        owners[k] = index + 1
        colours[k] = COLOUR_CLASSES.index(shape["colour"])
        kinds[k] = KIND_CLASSES.index(shape["kind"])
        if shape.get("region"):  # drills have none
            regions[k] = REGION_CLASSES.index(shape["region"])

    held = set()
    for k, (a, b, c, d) in enumerate(boxes):
        index = owner.getpixel((min(int((a + c) / 2), width - 1), min(int((b + d) / 2), height - 1)))
        if index:
            mark(k, index - 1)
            held.add(index - 1)
    for index, shape in enumerate(scene["shapes"]):
        if index not in held:
            x0, y0, x1, y1 = shape["bbox"]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            for k, (a, b, c, d) in enumerate(boxes):
                if a <= cx < c and b <= cy < d:
                    mark(k, index)
    return colours, kinds, regions, owners


def advance_edges(scene: dict) -> list[float]:
    """The x (image pixels) where each character's advance of a text scene's line starts, then where
    the line's ends: the spans that name a token's word."""
    face, x0 = font(scene["font_size"]), scene["origin"][0]
    text = " ".join(scene["words"])
    return [x0 + face.getlength(text[:i]) for i in range(len(text) + 1)]


def word_labels(scene: dict, boxes) -> tuple[list[int], list[int]]:
    """The word whose advance span holds each token's centre, for centres inside the inked
    text's rows, and which word of the line that is (1 + its index; 0: none); a word too small
    to hold a centre labels the free token that holds its own centre."""
    edges = advance_edges(scene)
    _, top, _, bottom = scene["text_bbox"]
    centres = [((a + c) / 2, (b + d) / 2) for a, b, c, d in boxes]
    labels, owners = [0] * len(boxes), [0] * len(boxes)
    start = 0  # the word's first character in the line
    for index, word in enumerate(scene["words"]):
        left, right = edges[start], edges[start + len(word)]
        start += len(word) + 1
        hits = [t for t, (x, y) in enumerate(centres) if left <= x < right and top <= y < bottom]
        if not hits:
            x, y = (left + right) / 2, (top + bottom) / 2
            hits = [t for t, (a, b, c, d) in enumerate(boxes) if a <= x < c and b <= y < d and not labels[t]]
        for t in hits:
            labels[t], owners[t] = WORD_CLASSES.index(word), index + 1
    return labels, owners


PAIRS = [(c, k) for c in COLOURS for k in KINDS]
PLACES = [(k, r) for k in KINDS for r in REGIONS]
IMAGE_TARGETS = len(PAIRS) + len(PLACES) + len(WORDS)  # multi-label; then one count class


def image_targets(scene: dict) -> tuple[torch.Tensor, int]:
    """(float [IMAGE_TARGETS], 1 = present, IGNORE = not applicable; shape count or IGNORE)."""
    target = torch.full((IMAGE_TARGETS,), float(IGNORE))
    words = slice(len(PAIRS) + len(PLACES), IMAGE_TARGETS)
    if "shapes" in scene:
        placed = all(shape.get("region") for shape in scene["shapes"])  # drills have no regions
        target[: words.start if placed else len(PAIRS)] = 0.0
        for shape in scene["shapes"]:
            target[PAIRS.index((shape["colour"], shape["kind"]))] = 1.0
            if placed:
                target[len(PAIRS) + PLACES.index((shape["kind"], shape["region"]))] = 1.0
        return target, len(scene["shapes"])
    target[words] = 0.0
    for word in scene["words"]:
        target[words.start + WORDS.index(word)] = 1.0
    return target, IGNORE


def encode(record: dict, base: Path, settings: ImageSettings):
    """(pixel_values [N, 1176], grid (1, gh, gw), token labels long [N / 4, 5] (TOKEN_HEADS' classes,
    then the shape or word under the token: 1 + its index, 0 none),
    image targets float [IMAGE_TARGETS], shape count) for one image sample."""
    media = record["messages"][0]["content"][0]
    return encode_image(load_image(media["image"], base), record["scene"], settings)


def drill_scene(rng: np.random.Generator) -> ImageScene:
    """A shape drill: one shape filling most of a small canvas of the world's backgrounds, so
    that its outline crosses several patches. A from-scratch ViT learns a shape's kind slowly
    from whole scenes, where most shapes span a patch or two (at 600 steps it is still near
    chance). On drill-sized canvases a probe reaches 97% in 3,000 steps of 32 (docs/bundled_model.md).
    The shape's side is log-uniform from SMALL_DRILL_PX to the canvas's, so about half of the drills
    hold a shape under 42 px, the sizes on which the captions name most wrong kinds."""
    side = int(rng.integers(DRILL_SIDES[0], DRILL_SIDES[1] + 1))
    background = sample_background(rng)
    size = int(np.exp(rng.uniform(np.log(SMALL_DRILL_PX), np.log(side + 1))))
    x0, y0 = (int(v) for v in rng.integers(0, side - size + 1, 2))
    kind, colour = str(rng.choice(KINDS)), str(rng.choice(colours_on(background.colour)))
    return ImageScene(side, side, background, [Shape(kind, colour, [x0, y0, x0 + size, y0 + size])])


def encode_drill(rng: np.random.Generator, settings: ImageSettings):
    """encode()'s tuple for a fresh shape drill, at its own size: a processor that upscales small
    pictures (min_pixels) would turn a drill into many times the tokens it needs."""
    settings = replace(settings, min_pixels=min(settings.min_pixels, DRILL_MIN_PIXELS))
    scene = drill_scene(rng)
    return encode_image(render_image_scene(scene), scene.to_dict(), settings)


def encode_image(image, scene: dict, settings: ImageSettings):
    """encode()'s tuple for a PIL image and the scene it shows."""
    pixels, grid = image_to_patches(image, settings)
    merge = settings.merge_size
    boxes = token_boxes(image.height, image.width, grid[1] // merge, grid[2] // merge, settings.factor)
    if "shapes" in scene:
        colours, kinds, regions, owners = shape_labels(scene, boxes)
        words = [0] * len(boxes)
    else:  # text scene: its colour is the ink's, not a shape's, so the shape heads skip it
        colours = kinds = regions = [IGNORE] * len(boxes)
        words, owners = word_labels(scene, boxes)
    labels = torch.tensor([colours, kinds, words, regions, owners]).T
    return pixels, grid, labels, *image_targets(scene)


class WordHead(nn.Module):
    """A token head whose classes are the LLM's own input embeddings of their words (fixed), plus
    a learned "none" row: the tower learns to point a red token at the LLM's " red", which is
    what the LLM has learned to read inside the vision block (bundled_model/pretrain_reading.py)."""

    def __init__(self, rows: torch.Tensor):  # [classes - 1, width]: the words' embedding rows
        super().__init__()
        self.register_buffer("rows", rows / rows.norm(dim=-1, keepdim=True))
        self.none = nn.Parameter(torch.zeros(rows.shape[1]))
        self.bias = nn.Parameter(torch.zeros(rows.shape[0] + 1))
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [T, width] -> [T, classes]
        return self.scale * (features @ torch.cat([self.none[None], self.rows]).T) + self.bias


def grid_targets(labels: torch.Tensor, word_rows: dict[str, torch.Tensor]) -> torch.Tensor:
    """labels [T, 5] -> [T, width]: what stage 0b puts in each slot (bundled_model/pretrain_reading.py),
    the sum of the LLM's embeddings of the colour, kind and region words of the shape under a token,
    zero elsewhere."""
    out = labels.new_zeros((labels.shape[0], next(iter(word_rows.values())).shape[1]), dtype=torch.float)
    for name in SHAPE_WORDS:
        column = TOKEN_HEADS.index(name)
        on = labels[:, column] > 0
        out[on] += word_rows[name][labels[on, column] - 1]
    return out


def named_hits(logits: torch.Tensor, target: torch.Tensor) -> list[int]:
    """[right, counted] over the tokens whose target names something (class > 0)."""
    named = target > 0
    return [int((logits.argmax(-1)[named] == target[named]).sum()), int(named.sum())]


class Heads(nn.Module):
    """The heads on the tower's tokens: per token (TOKEN_HEADS: the colour, kind and region heads are
    WordHeads of the LLM's embeddings of their words), per image (the pairs and words it shows, its
    shape count), the grid loss and the pooled loss."""

    def __init__(self, width: int, word_rows: dict[str, torch.Tensor]):
        """word_rows: per token head named there, the LLM's embeddings of its class words."""
        super().__init__()
        self.word_rows = word_rows
        classes = (COLOUR_CLASSES, KIND_CLASSES, WORD_CLASSES, REGION_CLASSES)  # TOKEN_HEADS' order
        self.tokens = nn.ModuleList(
            WordHead(word_rows[name]) if name in word_rows else nn.Linear(width, len(c))
            for name, c in zip(TOKEN_HEADS, classes, strict=True)
        )
        self.image = nn.Linear(width, IMAGE_TARGETS)
        self.count = nn.Linear(width, 4)

    def loss_and_hits(self, features: torch.Tensor, sizes: list[int], labels: torch.Tensor, targets, counts):
        """features [T, width] (images' tokens one after another, `sizes` each), labels [T, 5],
        targets [I, IMAGE_TARGETS], counts [I] -> (loss, per REPORTED entry [hits, counted]: the
        token heads on the tokens they name something on (a shape, a word or a region), then
        the kind head on each shape's mean token and the word head on each word's)."""
        loss, stats = features.new_zeros(()), []
        loss = loss + self.grid_loss(features, labels)
        pooled_loss, pooled_stats = self.pooled(features, sizes, labels)
        loss = loss + pooled_loss
        for head, target in zip(self.tokens, labels[:, :4].T, strict=True):
            logits = head(features)
            if (target != IGNORE).any():
                loss = loss + F.cross_entropy(logits, target, ignore_index=IGNORE)
            stats.append(named_hits(logits, target))
        pooled = torch.stack([part.mean(0) for part in features.split(sizes)])  # [I, width]
        known = targets != IGNORE
        loss = loss + F.binary_cross_entropy_with_logits(self.image(pooled)[known], targets[known])
        if (counts != IGNORE).any():
            loss = loss + F.cross_entropy(self.count(pooled), counts, ignore_index=IGNORE)
        return loss, [*stats, *pooled_stats]

    def grid_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Squared distance of the tokens to the grid stage 0b taught the LLM to read, relative
        to the grid's own size: the word heads only point a token at " circle"; this also gives it
        the length and the quiet background the LLM's lookups were learned on. OCR tokens are
        left out (stage 0b has no text)."""
        keep = labels[:, 2] <= 0
        target = grid_targets(labels[keep], self.word_rows)
        return (features[keep] - target).pow(2).sum() / target.pow(2).sum().clamp(min=1.0)

    def pooled(self, features: torch.Tensor, sizes: list[int], labels: torch.Tensor):
        """(summed cross-entropy, [[hits, shapes], [hits, words]]) of the kind head on the mean
        token of each shape and of the word head on the mean token of each word. Without this
        loss most tokens of a shape stay blind to its outline (at 1,500 steps: kind 43.5% per
        token; with it 72.2%)."""
        image = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        on = labels[:, 4] > 0
        loss, stats = features.new_zeros(()), [[0, 0], [0, 0]]
        if not on.any():
            return loss, stats
        per_image = int(labels[:, 4].max()) + 1
        groups, member = (image[on] * per_image + labels[on, 4]).unique(return_inverse=True)
        sums = features.new_zeros(len(groups), features.shape[1]).index_add_(0, member, features[on])
        means = sums / torch.bincount(member, minlength=len(groups))[:, None]
        for k, column in enumerate((1, 2)):  # the kind of a shape, the word of a word
            truth = torch.zeros(len(groups), dtype=torch.long).scatter_(0, member, labels[on, column].clamp(min=0))
            named = truth > 0  # a shape's group has no word, a word's group no kind
            if named.any():
                logits = self.tokens[column](means[named])
                loss = loss + F.cross_entropy(logits, truth[named])
                stats[k] = [int((logits.argmax(-1) == truth[named]).sum()), int(named.sum())]
        return loss, stats


def read_records(paths: list[str]) -> list[tuple[dict, Path]]:
    """(record, folder) of the synthetic image samples in the files: those with a scene and an
    image first in their first turn (anything else carries no labels and is passed over)."""
    records = []
    for path in map(Path, paths):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}: line {number} is not JSON") from None
            try:
                first = record["messages"][0]["content"][0]
                usable = isinstance(record["scene"], dict) and first.get("type") == "image"
            except (KeyError, IndexError, TypeError, AttributeError):
                usable = False
            if usable:
                records.append((record, path.parent))
    return records


def batch_of(records, indices, settings, drills: int = 0, rng: np.random.Generator | None = None):
    """(pixel_values, grid_thw [I, 3], tokens per image, token labels, image targets, counts) of
    the records at `indices` and `drills` fresh shape drills drawn from `rng`."""
    samples = [encode(records[i][0], records[i][1], settings) for i in indices]
    samples += [encode_drill(rng, settings) for _ in range(drills)]
    rows, grids, labels, targets, counts = zip(*samples, strict=True)
    sizes = [len(x) for x in labels]
    return torch.cat(rows), torch.tensor(grids), sizes, torch.cat(labels), torch.stack(targets), torch.tensor(counts)


def shape_word_ids(tokenizer) -> dict[str, list[int]]:
    """Per shape label: the token of each class word as a caption says it (" red"), with -1 for
    "none" first. Each must be one token, so that one embedding stands for it."""
    ids = {}
    for name, classes in SHAPE_WORDS.items():
        encoded = [tokenizer.encode(" " + word) for word in classes[1:]]
        if any(len(e) != 1 for e in encoded):
            raise ValueError(f"a {name} word is not one token in this tokenizer")
        ids[name] = [-1] + [e[0] for e in encoded]
    return ids


def llm_word_rows(llm_dir: str) -> dict[str, torch.Tensor]:
    """Per shape head: the LLM's input embeddings of its class words, one row per class after "none"."""
    from qwen_vl.weights import load_state_dict

    tokenizer = QwenVLProcessor.from_pretrained(llm_dir, light_tokenizer=True).tokenizer
    table = load_state_dict(Path(llm_dir), dtype=torch.float32)["model.embed_tokens.weight"]
    return {name: table[ids[1:]] for name, ids in shape_word_ids(tokenizer).items()}


def evaluate(tower, heads, records, settings, batch_size: int) -> list[float]:
    """Per REPORTED entry: accuracy on the tokens a head names something on (a shape, a word, a region),
    then of the kind head on each shape's mean token and the word head on each word's."""
    totals = [[0, 0] for _ in REPORTED]
    with torch.no_grad():
        for start in range(0, len(records), batch_size):
            pixels, grids, *labels = batch_of(records, range(start, min(start + batch_size, len(records))), settings)
            _, stats = heads.loss_and_hits(tower(pixels, grids), *labels)
            for total, (hits, count) in zip(totals, stats, strict=True):
                total[0] += hits
                total[1] += count
    return [hits / max(count, 1) for hits, count in totals]


def parse_args(argv):
    p = OneLineParser(prog="python -m bundled_model.pretrain_vision", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="the stage-1 config: init.llm, init.vision, init.vision_weights")
    p.add_argument(
        "--llm",
        help="the LLM whose word embeddings, width and image settings the tower is fitted to (default: the"
        " config's init.llm). Stage 0b keeps stage 0's embeddings, so stage 0's LLM serves and this step"
        " can run beside stage 0b",
    )
    p.add_argument("--data", nargs="+", required=True, help="synthetic JSONL files with scenes (caption, vqa, ocr)")
    p.add_argument("--heldout", nargs="*", default=[], help="JSONL files scored at the end (accuracy per head)")
    p.add_argument("--steps", type=int, default=STEPS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None, batch_size: int = BATCH_SIZE, drills: int = DRILLS) -> int:
    """batch_size: scenes from --data per step; drills: shape drills per step (the tests pass fewer)."""
    from safetensors.torch import save_file

    from qwen_vl.fileio import atomic_path

    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
        target = cfg.init.get("vision_weights")
        llm_dir = args.llm or cfg.init.get("llm")
        if not llm_dir or not target:
            raise QwenVLError(f"{args.config}: needs init.llm (or --llm) and init.vision_weights")
        llm_config = json.loads(Path(llm_dir, "config.json").read_text())
        settings = QwenVLProcessor.from_pretrained(llm_dir, **cfg.image).image_settings
        records = read_records(args.data)
        heldout = read_records(args.heldout)
        word_rows = llm_word_rows(llm_dir)
    except (OSError, ValueError, QwenVLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not records:
        print("error: no synthetic image samples (messages with an image and a scene) in --data", file=sys.stderr)
        return 2

    torch.manual_seed(SEED)
    vision = vision_config_from(cfg.init.get("vision"))
    vision.out_hidden_size = llm_config["hidden_size"]
    tower = small_normal_init_(VisionEncoder(vision)).train()
    heads = Heads(vision.out_hidden_size, word_rows)
    params = [*tower.parameters(), *heads.parameters()]
    loop = Loop(params, args.steps, LR, max(1, args.steps // 20), betas=(0.9, 0.999))
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(SEED)).tolist()
    drill_rng = np.random.default_rng(SEED)
    started = time.time()

    def step_loss(step: int) -> torch.Tensor:
        picks = [order[(step * batch_size + k) % len(order)] for k in range(batch_size)]
        pixels, grids, *labels = batch_of(records, picks, settings, drills, drill_rng)
        return heads.loss_and_hits(tower(pixels, grids), *labels)[0]

    def report(step: int, loss: torch.Tensor) -> None:
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step + 1}/{args.steps} loss {loss.item():.4f}", flush=True)

    loop.run(step_loss, report)
    tower.eval()
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        save_file({f"visual.{k}": v.contiguous() for k, v in tower.state_dict().items()}, str(tmp))
    summary = f"wrote {target}: {args.steps} steps, {time.time() - started:.0f} s"
    if heldout:
        accuracy = evaluate(tower, heads, heldout, settings, batch_size)
        summary += "; held-out token accuracy " + ", ".join(
            f"{name} {acc:.1%}" for name, acc in zip(REPORTED, accuracy, strict=True)
        )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
