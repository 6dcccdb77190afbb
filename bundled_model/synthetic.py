"""Synthetic visual world: seeded, reproducible JSON Lines datasets of shapes, text and clips.

    python -m bundled_model.synthetic --out data/train --task all --n 2000 --seed 0
    python -m bundled_model.synthetic --out data/heldout --task video --n 200 --seed 1001 --fps-set 7,23
    python -m bundled_model.synthetic --out data/heldout-alt --task ground --n 200 --seed 1003 --renderer alt

Each line is one sample in the training message format, with media paths relative to the
JSONL file, the answer, and the `scene` it was drawn from (see bundled_model/README.md):

    {"id": "caption-0-000000", "messages": [{"role": "user", "content": [{"type": "image",
     "image": "images/caption/000000.png"}, {"type": "text", "text": "Describe this image."}]},
     {"role": "assistant", "content": [{"type": "text", "text": "a red circle on the left"}]}],
     "task": "caption", "answer": "a red circle on the left", "scene": {...}}

Sample i of (seed, task) depends only on (seed, task, i, options): the same seed gives
byte-identical files, however many samples or workers. `--renderer alt` draws caption, VQA and
ground pictures with synthetic_render_alt.py instead (held-out looks, for evaluation only).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bundled_model.synthetic_render import (
    drawn_bbox,
    render_image_scene,
    render_text_scene,
    save_png,
    text_bbox,
    write_video,
)
from bundled_model.synthetic_render_alt import render_alt_scene, sample_alt_scene, save_jpeg
from bundled_model.synthetic_words import WORDS
from bundled_model.synthetic_world import (
    BACKGROUNDS,
    CAPTION_PROMPT,
    COLOURS,
    DIRECTION_ANSWERS,
    KINDS,
    MAX_ASPECT,
    MIN_IMAGE_PX,
    NUMBER_WORDS,
    OCR_PROMPT,
    QUESTION_TEMPLATES,
    REGION_PHRASES,
    REGIONS,
    ImageScene,
    Shape,
    TextScene,
    caption,
    colours_on,
    sample_background,
    sample_ground,
    sample_image_scene,
    sample_image_size,
    sample_video_question,
    sample_video_scene,
    sample_vqa,
    sample_words,
    seconds_answer,
    shape_label,
    shape_phrase,
)
from qwen_vl.errors import OneLineParser
from qwen_vl.fileio import atomic_path

TASKS = ("caption", "vqa", "ocr", "video", "text")  # what --task all writes
EXTRA_TASKS = ("ground",)  # written only when asked for
TASK_CODES = {task: code for code, task in enumerate((*TASKS, *EXTRA_TASKS), start=1)}  # part of every sample's seed
MEDIA_DIRS = {
    "caption": "images/caption",
    "vqa": "images/vqa",
    "ocr": "images/ocr",
    "video": "videos",
    "ground": "images/ground",
}
RENDERERS = ("train", "alt")
RENDERER_CODES = {"alt": 1}  # part of an alt sample's seed (train samples keep their seeds)
ALT_TASKS = ("caption", "vqa", "ground")  # tasks the alt renderer draws
TRAIN_FPS = (4, 5, 6, 8, 10, 12, 15, 16, 20, 24, 25, 30)  # 7 and 23 stay unseen for held-out sets
FPS_LIMITS = (2, 60)
MAX_IMAGE_PX = 4096
OCR_WIDTH_SHARE = (0.35, 0.9)  # the text line spans this share of the image width
OCR_MAX_HEIGHT_SHARE = 0.6  # ... and at most this share of its height
OCR_MIN_FONT, OCR_MAX_FONT = 10, 160  # px; below 10 the bundled font stops being legible
OCR_MARGIN = 2  # px between the inked text and the image border


@dataclass(frozen=True)
class WorldOptions:
    min_size: int = 64  # image sides, px
    max_size: int = 1024
    fps_set: tuple[int, ...] = TRAIN_FPS
    video_size: tuple[int, int] = (112, 224)  # frame sides, px (even)
    duration: tuple[int, int] = (3, 10)  # clip length, whole seconds
    renderer: str = "train"  # "alt": synthetic_render_alt.py's pictures and sizes (caption, vqa, ground)
    light_backgrounds: bool = False  # caption, vqa and ground pictures may get a light background too


def sample_rng(seed: int, task: str, index: int, renderer: str = "train") -> np.random.Generator:
    """Independent stream per sample: sample i never depends on n or on other samples."""
    entropy = [seed, TASK_CODES[task], index] + ([RENDERER_CODES[renderer]] if renderer != "train" else [])
    return np.random.default_rng(np.random.SeedSequence(entropy))


# ----------------------------------------------------------------------------- samples


def sample_text_scene(rng: np.random.Generator, min_size: int, max_size: int) -> TextScene:
    """1-3 words on one line, spanning 35-90 % of the image width (less if the image is flat);
    an image too small for OCR_MIN_FONT px text is widened, within max_size."""
    words = sample_words(rng, WORDS, 1, 3)
    text = " ".join(words)
    background = sample_background(rng)
    colour = str(rng.choice(colours_on(background.colour)))
    width, height = sample_image_size(rng, min_size, max_size)
    left, top, right, bottom = text_bbox(text, 100)  # ink scales with the font size
    share = rng.uniform(*OCR_WIDTH_SHARE)
    size = int(min(share * width / (right - left), OCR_MAX_HEIGHT_SHARE * height / (bottom - top)) * 100)
    size = min(max(size, OCR_MIN_FONT), OCR_MAX_FONT)
    while True:  # fit the ink with OCR_MARGIN to spare, growing the image first, then shrinking the font
        left, top, right, bottom = text_bbox(text, size)
        width = max(width, right - left + 2 * OCR_MARGIN, math.ceil(height / MAX_ASPECT))
        height = max(height, bottom - top + 2 * OCR_MARGIN, math.ceil(width / MAX_ASPECT))
        if (width <= max_size and height <= max_size) or size <= 1:
            break
        width, height, size = min(width, max_size), min(height, max_size), size - 1
    x = int(rng.integers(OCR_MARGIN - left, width - OCR_MARGIN - right + 1))
    y = int(rng.integers(OCR_MARGIN - top, height - OCR_MARGIN - bottom + 1))
    return TextScene(width, height, background, words, colour, size, [x, y], text_bbox(text, size, (x, y)))


def chat(media: dict, prompt: str, answer: str) -> list[dict]:
    return [
        {"role": "user", "content": [media, {"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


@functools.lru_cache(maxsize=1)
def model_image_settings():
    """The bundled model's image settings (qwen_vl/assets/model/preprocessor_config.json): the
    grounding answers are in pixels of the picture as its processor resizes it."""
    from qwen_vl.loading import BUNDLED_MODEL_DIR
    from qwen_vl.processing.image import ImageSettings
    from qwen_vl.processing.processor import PREPROCESSOR_CONFIG, image_settings_from_config

    config = json.loads((BUNDLED_MODEL_DIR / PREPROCESSOR_CONFIG).read_text(encoding="utf-8"))
    return ImageSettings(**image_settings_from_config(config))


def ground_answer(rng: np.random.Generator, scene: ImageScene, boxes: list[list[int]]) -> tuple[str, str, dict]:
    """(prompt, answer, the line's grounding fields) for a picture of `scene` whose shapes are
    drawn in `boxes` (original pixels, end exclusive). The answer is Qwen2.5-VL's: a ```json fence
    of {"bbox_2d", "label"} in whole pixels of the picture resized by the bundled model's
    processor, written as the trainer writes a `boxes` item (training/data.py, place_boxes)."""
    from qwen_vl.grounding import Box, clip, format_answer, frame_for, to_model

    qtype, prompt, asked = sample_ground(rng, scene)
    frame = frame_for("qwen2_5_vl", scene.width, scene.height, model_image_settings())
    objects = []
    for index in asked:
        label = shape_label(scene.shapes[index])
        model = clip(to_model(Box(*boxes[index], label), frame), frame.model_width, frame.model_height)
        objects.append({"label": label, "bbox": list(boxes[index]), "bbox_2d": [int(v) for v in model.corners]})
    answer = format_answer([Box(*o["bbox_2d"], o["label"]) for o in objects])
    return prompt, answer, {"question_type": qtype, "objects": objects, "frame": asdict(frame)}


def build_sample(task: str, seed: int, index: int, options: WorldOptions, media_dir: str | os.PathLike) -> dict:
    """Draw sample `index`, write its media file into media_dir, return its JSON record."""
    rng = sample_rng(seed, task, index, options.renderer)
    name = f"{index:06d}"
    record: dict = {"id": f"{task}-{seed}-{name}"}
    if options.renderer == "alt":
        if task not in ALT_TASKS:
            raise ValueError(f"the alt renderer draws {', '.join(ALT_TASKS)} pictures, not {task}")
        record["id"] = f"{task}-alt-{seed}-{name}"
        scene, style = sample_alt_scene(rng)
        save_jpeg(render_alt_scene(scene, style), Path(media_dir, name + ".jpg"), style.jpeg_quality)
        media = {"type": "image", "image": f"{MEDIA_DIRS[task]}/{name}.jpg"}
        prompt, answer = _image_question(task, rng, scene, [s.bbox for s in scene.shapes], record)
        record.update(renderer="alt", style=asdict(style))
    elif task in ("caption", "vqa", "ground"):
        size = sample_image_size(rng, options.min_size, options.max_size)
        scene = sample_image_scene(rng, *size, light=options.light_backgrounds)
        save_png(render_image_scene(scene), Path(media_dir, name + ".png"))
        media = {"type": "image", "image": f"{MEDIA_DIRS[task]}/{name}.png"}
        boxes = [drawn_bbox(s, scene.width, scene.height) for s in scene.shapes] if task == "ground" else []
        prompt, answer = _image_question(task, rng, scene, boxes, record)
    elif task == "ocr":
        scene = sample_text_scene(rng, options.min_size, options.max_size)
        save_png(render_text_scene(scene), Path(media_dir, name + ".png"))
        media = {"type": "image", "image": f"{MEDIA_DIRS[task]}/{name}.png"}
        prompt, answer = OCR_PROMPT, scene.text
    elif task == "video":
        scene = sample_video_scene(rng, options.fps_set, options.video_size, options.duration)
        write_video(scene, Path(media_dir, name + ".mp4"))
        media = {"type": "video", "video": f"{MEDIA_DIRS[task]}/{name}.mp4"}
        qtype, prompt, answer = sample_video_question(rng, scene)
        record.update(question_type=qtype, event_second=scene.event.second, fps=scene.fps, duration=scene.duration)
    else:
        raise ValueError(f"task {task!r} has no media samples")
    head = {"id": record.pop("id"), "messages": chat(media, prompt, answer), "task": task, "answer": answer}
    return head | record | {"scene": scene.to_dict()}


def _image_question(task: str, rng, scene: ImageScene, boxes: list[list[int]], record: dict) -> tuple[str, str]:
    """(prompt, answer) of a caption, VQA or ground sample; its extra fields go into `record`."""
    if task == "caption":
        return CAPTION_PROMPT, caption(scene)
    if task == "vqa":
        qtype, prompt, answer = sample_vqa(rng, scene)
        record["question_type"] = qtype
        return prompt, answer
    prompt, answer, fields = ground_answer(rng, scene, boxes)
    record.update(fields)
    return prompt, answer


# ----------------------------------------------------------------------------- text corpus


def world_items(seed: int, n: int) -> list[tuple[str, str, str, str]]:
    """n (kind, prompt, answer, content) items of the world's language for text-only
    pre-training (stage 0): captions, every question type, OCR prompts and runs of list words
    (kind "words", no prompt). `content` says in words what the picture shows (the scene's
    caption, the OCR text; empty for video and words)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, TASK_CODES["text"]]))
    items = []
    for _ in range(n):
        kind = str(rng.choice(("caption", "vqa", "video", "ocr", "words")))
        if kind in ("caption", "vqa"):
            scene = sample_image_scene(rng, *sample_image_size(rng, 96, 512))
            if kind == "caption":
                items.append((kind, CAPTION_PROMPT, caption(scene), caption(scene)))
            else:
                items.append((kind, *sample_vqa(rng, scene)[1:], caption(scene)))
        elif kind == "video":
            items.append((kind, *sample_video_question(rng, sample_video_scene(rng, TRAIN_FPS))[1:], ""))
        elif kind == "ocr":
            words = " ".join(sample_words(rng, WORDS, 1, 3))
            items.append((kind, OCR_PROMPT, words, words))
        else:
            items.append((kind, "", " ".join(sample_words(rng, WORDS, 3, 8)), ""))
    return items


def world_text(seed: int, n: int) -> list[str]:
    """n plain lines: captions alone, 'question answer' for the rest, list words as they are."""
    return [a if kind in ("caption", "words") else f"{p} {a}" for kind, p, a, _ in world_items(seed, n)]


def tokenizer_corpus() -> list[str]:
    """Every word and phrase the world can say, once (for build_tokenizer's training texts)."""
    texts = [CAPTION_PROMPT, OCR_PROMPT, *DIRECTION_ANSWERS.values(), *REGION_PHRASES.values(), *NUMBER_WORDS]
    texts += ["yes", "no", *COLOURS, *BACKGROUNDS, *(seconds_answer(s) for s in range(1, 10))]
    for colour in COLOURS:
        for kind in KINDS:
            texts += [template.format(colour=colour, kind=kind) for template in QUESTION_TEMPLATES.values()]
            texts += [shape_phrase(Shape(kind, colour, [0, 0, 1, 1], region)) for region in REGIONS]
    three = [
        Shape(kind, colour, [0, 0, 1, 1], region)
        for kind, colour, region in zip(KINDS[:3], list(COLOURS)[:3], REGIONS, strict=True)
    ]
    texts.append(caption(ImageScene(3, 1, None, three)))  # the list grammar: "a ..., a ... and a ..."
    texts += [" ".join(WORDS[i : i + 8]) for i in range(0, len(WORDS), 8)]
    return list(dict.fromkeys(texts))


# ----------------------------------------------------------------------------- writing


def _build_line(job: tuple) -> str:
    task, seed, index, options, media_dir = job
    return json.dumps(build_sample(task, seed, index, options, media_dir), ensure_ascii=False)


def _progress(iterable, total: int, description: str, quiet: bool):
    if quiet:
        return iterable
    from rich.console import Console
    from rich.progress import track

    return track(iterable, total=total, description=description, console=Console(stderr=True))


def write_dataset(
    out_dir: str | os.PathLike,
    task: str,
    n: int,
    seed: int,
    options: WorldOptions = WorldOptions(),
    workers: int = 1,
    quiet: bool = True,
) -> Path:
    """Write out_dir/<task>.jsonl and its media; returns the JSONL path.

    Media go to a staging folder first; only when every sample is written is the media folder
    swapped in (two renames) and the JSONL replaced atomically, so an interrupted run leaves
    the previous dataset as it was."""
    out_dir = Path(out_dir)
    jsonl = out_dir / f"{task}.jsonl"
    if task == "text":
        with atomic_path(jsonl) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for line in _progress(world_text(seed, n), n, "text", quiet):
                f.write(json.dumps({"text": line, "task": "text"}, ensure_ascii=False) + "\n")
        return jsonl
    media_dir = out_dir / MEDIA_DIRS[task]
    media_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{media_dir.name}.staging-", dir=media_dir.parent))
    try:
        jobs = ((task, seed, index, options, staging) for index in range(n))
        with atomic_path(jsonl) as tmp, open(tmp, "w", encoding="utf-8") as f:
            if workers > 1:
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    for line in _progress(pool.imap(_build_line, jobs, chunksize=8), n, task, quiet):
                        f.write(line + "\n")
            else:
                for line in _progress(map(_build_line, jobs), n, task, quiet):
                    f.write(line + "\n")
            f.flush()
            retired = None
            if media_dir.exists():
                retired = Path(tempfile.mkdtemp(prefix=f".{media_dir.name}.old-", dir=media_dir.parent))
                os.replace(media_dir, retired / media_dir.name)
            os.replace(staging, media_dir)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return jsonl


# ----------------------------------------------------------------------------- CLI


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {low}")
        return value

    return parse


def _fps_set(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole frame rates") from None
    bad = [r for r in rates if not FPS_LIMITS[0] <= r <= FPS_LIMITS[1]]
    if bad:
        raise argparse.ArgumentTypeError(f"frame rate {bad[0]} is outside {FPS_LIMITS[0]}..{FPS_LIMITS[1]} fps")
    return tuple(dict.fromkeys(rates))


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m bundled_model.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder: <task>.jsonl + images/ + videos/")
    parser.add_argument(
        "--task", required=True, choices=(*TASKS, *EXTRA_TASKS, "all"), help=f"'all' writes {', '.join(TASKS)}"
    )
    parser.add_argument("--n", required=True, type=_int_at_least(1), help="samples (text: lines) per task")
    parser.add_argument("--seed", default=0, type=_int_at_least(0), help="held-out sets: a seed never used in training")
    parser.add_argument(
        "--fps-set", default=TRAIN_FPS, type=_fps_set, help="video frame rates, e.g. 4,6,8 (held out: 7,23)"
    )
    parser.add_argument(
        "--max-size", default=None, type=_int_at_least(MIN_IMAGE_PX), help="largest image side, px (default 1024)"
    )
    parser.add_argument(
        "--renderer",
        default="train",
        choices=RENDERERS,
        help="alt: the evaluation-only renderer (caption, vqa, ground; its own sizes, 256-1024 px)",
    )
    parser.add_argument(
        "--light-backgrounds",
        action="store_true",
        help="caption, vqa and ground pictures may also get a light, near-white background",
    )
    parser.add_argument(
        "--workers", default=1, type=_int_at_least(1), help="processes (output is the same for any count)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.renderer == "alt" and args.task not in ALT_TASKS:
        parser.error(f"argument --renderer: alt draws {', '.join(ALT_TASKS)} pictures only, not {args.task}")
    if args.light_backgrounds and (args.renderer == "alt" or args.task not in ALT_TASKS):
        parser.error("argument --light-backgrounds: for caption, vqa and ground pictures of the training renderer")
    if args.renderer == "alt" and args.max_size is not None:
        parser.error("argument --max-size: the alt renderer draws its own sizes (256-1024 px per side)")
    args.max_size = WorldOptions.max_size if args.max_size is None else args.max_size
    if args.max_size < WorldOptions.min_size:
        parser.error(f"argument --max-size: {args.max_size} is below the smallest image side {WorldOptions.min_size}")
    if args.max_size > MAX_IMAGE_PX:
        parser.error(f"argument --max-size: {args.max_size} is above the maximum {MAX_IMAGE_PX}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"argument --out: {args.out} exists and is not a folder")
    options = WorldOptions(
        max_size=args.max_size, fps_set=args.fps_set, renderer=args.renderer, light_backgrounds=args.light_backgrounds
    )
    tasks = TASKS if args.task == "all" else (args.task,)
    for task in tasks:
        start = time.perf_counter()
        try:
            path = write_dataset(args.out, task, args.n, args.seed, options, args.workers, args.quiet)
        except OSError as exc:
            print(f"error: cannot write {task} data to {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        seconds = time.perf_counter() - start
        print(f"wrote {path} ({args.n} samples, {seconds:.1f} s, {args.n / seconds:.0f}/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
