"""The synthetic world as data: palettes, scene sampling and the fixed grammar of captions,
questions and answers. Nothing here draws pixels (see synthetic_render.py); a scene is plain
data that is stored in every JSON line, so answers can be re-derived from it.

Conventions
- bbox = [x0, y0, x1, y1] in pixels, end exclusive: the shape covers columns x0..x1-1.
- Image scenes: each shape lies wholly inside one vertical third of the image (its region:
  left, middle, right) and no two shapes share a region, so position words never depend on
  the other shapes. Shape kinds are distinct within a scene ("the circle" names one shape).
- Video time: frame i is shown at i / fps seconds; an event at second k takes effect from
  frame k * fps on (fps is a whole number).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

KINDS = ("circle", "square", "triangle", "star")

# Shape colours: saturated and far apart, so a colour name is never in doubt.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 25),
    "green": (40, 170, 60),
    "blue": (35, 75, 225),
    "yellow": (250, 220, 30),
    "purple": (140, 50, 180),
    "orange": (240, 130, 20),
    "black": (15, 15, 15),
    "white": (250, 250, 250),
}

# Background base colours: muted, each at least MIN_CONTRAST from the shape colours it hosts.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "light grey": (185, 185, 185),
    "dark grey": (75, 75, 75),
    "beige": (215, 200, 165),
    "sky": (150, 190, 225),
    "sage": (150, 175, 140),
    "slate": (90, 105, 125),
    "pink": (235, 180, 190),
    "teal": (60, 140, 140),
}
# Light, near-white backgrounds, as on a page or a slide. Drawn only when asked (`light=True`, the
# synthetic CLI's --light-backgrounds): on the muted backgrounds alone a model learns "light = a white
# shape" and names a plain light background as a white square. Shape colours keep MIN_CONTRAST, so
# white and yellow shapes are not drawn on them.
LIGHT_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "snow": (236, 236, 236),
    "ivory": (248, 244, 226),
    "pale blue": (222, 232, 244),
    "pale green": (226, 240, 224),
}
BACKGROUND_RGB = {**BACKGROUNDS, **LIGHT_BACKGROUNDS}
TEXTURES = ("plain", "noise", "stripes", "checker", "gradient")
TEXTURE_AMPLITUDE = 14  # a textured pixel differs from its base colour by at most this per channel
MIN_CONTRAST = 100.0  # RGB distance between a base colour and any shape colour drawn on it

REGIONS = ("left", "middle", "right")
REGION_PHRASES = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
NUMBER_WORDS = ("zero", "one", "two", "three")
DIRECTIONS = ("left", "right", "up", "down")
STEPS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # image axes: y grows down
DIRECTION_ANSWERS = {"left": "To the left.", "right": "To the right.", "up": "Up.", "down": "Down."}
VIDEO_EVENTS = ("appear", "disappear", "colour", "move")

CAPTION_PROMPT = "Describe this image."
OCR_PROMPT = "What does the text say?"
QUESTION_TEMPLATES = {
    "colour": "What colour is the {kind}?",
    "count": "How many shapes are there?",
    "exists": "Is there a {colour} {kind}?",
    "where": "Where is the {kind}?",
    "appear": "When does the {colour} {kind} appear?",
    "disappear": "When does the {colour} {kind} disappear?",
    "change": "When does the {kind} change colour?",
    "direction": "Which way does the {kind} move?",
    "start": "When does the {kind} start moving?",
}
VQA_TYPES = ("colour", "count", "exists", "where")
# Grounding, in Qwen2.5-VL's words: one named shape, or every shape of the picture.
GROUND_PROMPTS = {
    "one": "Locate the {colour} {kind} in the image and output its bbox coordinates in JSON format.",
    "every": "Locate every shape in the image and output their bbox coordinates in JSON format.",
}
GROUND_TYPES = tuple(GROUND_PROMPTS)

MIN_SHAPE_PX = 8
MIN_IMAGE_PX = 32  # below this a third of the image cannot hold an 8 px shape
MAX_ASPECT = 4.0


def colour_distance(a, b) -> float:
    return math.dist(a, b)


def colours_on(background: str) -> list[str]:
    """Shape colours that stay distinguishable on this background base colour."""
    base = BACKGROUND_RGB[background]
    return [name for name, rgb in COLOURS.items() if colour_distance(rgb, base) >= MIN_CONTRAST]


@dataclass
class Background:
    colour: str  # a BACKGROUNDS or LIGHT_BACKGROUNDS name
    texture: str  # a TEXTURES name
    texture_seed: int  # drives the texture pattern; rendering is a pure function of the scene

    @property
    def rgb(self) -> tuple[int, int, int]:
        return BACKGROUND_RGB[self.colour]


@dataclass
class Shape:
    kind: str
    colour: str
    bbox: list[int]  # [x0, y0, x1, y1], end exclusive; in videos: the position at time 0
    region: str | None = None  # images only: left / middle / right

    @property
    def centre(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.bbox
        return (x0 + x1) // 2, (y0 + y1) // 2


@dataclass
class ImageScene:
    width: int
    height: int
    background: Background
    shapes: list[Shape]  # ordered left to right

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TextScene:
    width: int
    height: int
    background: Background
    words: list[str]
    colour: str
    font_size: int
    origin: list[int]  # [x, y] passed to ImageDraw.text (left/ascender anchor)
    text_bbox: list[int]  # [x0, y0, x1, y1] of the inked text, end exclusive

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VideoEvent:
    type: str  # appear | disappear | colour | move
    second: int  # whole second at which the event takes effect
    shape: int = 0  # index into VideoScene.shapes
    new_colour: str | None = None  # colour events
    direction: str | None = None  # move events: left | right | up | down
    distance: int = 0  # move events: pixels travelled
    move_seconds: int = 0  # move events: the move lasts this long, then the shape rests


@dataclass
class VideoScene:
    width: int
    height: int
    fps: int
    duration: int  # seconds; the clip holds duration * fps frames
    background: Background
    shapes: list[Shape]  # shapes[event.shape] is the one the event happens to
    event: VideoEvent = field(default_factory=lambda: VideoEvent("appear", 1))

    @property
    def frame_count(self) -> int:
        return self.duration * self.fps

    def to_dict(self) -> dict:
        return asdict(self)

    def shape_state(self, index: int, frame: int) -> tuple[bool, str, list[int]]:
        """(visible, colour, bbox) of shapes[index] in frame `frame`."""
        shape, event = self.shapes[index], self.event
        if index != event.shape:
            return True, shape.colour, list(shape.bbox)
        after = frame >= event.second * self.fps
        if event.type == "appear":
            return after, shape.colour, list(shape.bbox)
        if event.type == "disappear":
            return not after, shape.colour, list(shape.bbox)
        if event.type == "colour":
            return True, event.new_colour if after else shape.colour, list(shape.bbox)
        progress = min(max(frame - event.second * self.fps, 0) / (event.move_seconds * self.fps), 1.0)
        step = round(event.distance * progress)
        dx, dy = (step * d for d in STEPS[event.direction])
        x0, y0, x1, y1 = shape.bbox
        return True, shape.colour, [x0 + dx, y0 + dy, x1 + dx, y1 + dy]


# ----------------------------------------------------------------------------- sampling


def log_uniform_int(rng: np.random.Generator, low: int, high: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def sample_image_size(rng: np.random.Generator, min_size: int, max_size: int) -> tuple[int, int]:
    """(width, height): both sides in [min_size, max_size], aspect ratio at most 4:1,
    sides log-uniform so that small and large images are equally common."""
    height = log_uniform_int(rng, min_size, max_size)
    low = max(min_size / height, 1 / MAX_ASPECT)
    high = min(max_size / height, MAX_ASPECT)
    width = int(round(height * math.exp(rng.uniform(math.log(low), math.log(high)))))
    width = min(max(width, min_size, math.ceil(height / MAX_ASPECT)), max_size, int(height * MAX_ASPECT))
    return width, height


def sample_background(rng: np.random.Generator, light: bool = False) -> Background:
    """light: the light backgrounds are drawn too (the muted ones alone otherwise, with the same draws)."""
    colour = str(rng.choice(list(BACKGROUND_RGB if light else BACKGROUNDS)))
    texture = str(rng.choice(list(TEXTURES)))
    return Background(colour, texture, int(rng.integers(0, 2**31)))


def sample_image_scene(rng: np.random.Generator, width: int, height: int, light: bool = False) -> ImageScene:
    """1-3 shapes (their count drawn) of distinct kinds, each alone in its own third of the image;
    light: on any background, light ones included."""
    count = int(rng.integers(1, 4))
    background = sample_background(rng, light)
    palette = colours_on(background.colour)
    kinds = [KINDS[i] for i in rng.choice(len(KINDS), count, replace=False)]
    regions = sorted(int(r) for r in rng.choice(len(REGIONS), count, replace=False))
    shapes = []
    for kind, region in zip(kinds, regions, strict=True):
        left = math.ceil(region * width / 3)
        right = math.floor((region + 1) * width / 3)  # exclusive
        largest = min(right - left, height)
        size = int(rng.integers(max(MIN_SHAPE_PX, int(0.3 * largest)), largest + 1))
        x0 = int(rng.integers(left, right - size + 1))
        y0 = int(rng.integers(0, height - size + 1))
        colour = str(rng.choice(palette))
        shapes.append(Shape(kind, colour, [x0, y0, x0 + size, y0 + size], REGIONS[region]))
    return ImageScene(width, height, background, shapes)


def sample_words(rng: np.random.Generator, words, low: int = 1, high: int = 3) -> list[str]:
    count = int(rng.integers(low, high + 1))
    return [str(words[i]) for i in rng.choice(len(words), count, replace=False)]


def _boxes_apart(a, b, gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def sample_video_scene(
    rng: np.random.Generator,
    fps_set: tuple[int, ...],
    size_range: tuple[int, int] = (112, 224),
    duration_range: tuple[int, int] = (3, 10),
) -> VideoScene:
    """A clip with one event at a whole second k in [1, duration - 1]: the states before and
    after the event each last at least one second (two frames at the 2 fps model sampling)."""
    width = 2 * int(rng.integers(size_range[0] // 2, size_range[1] // 2 + 1))  # even: yuv420p
    height = 2 * int(rng.integers(size_range[0] // 2, size_range[1] // 2 + 1))
    fps = int(rng.choice(list(fps_set)))
    duration = int(rng.integers(duration_range[0], duration_range[1] + 1))
    second = int(rng.integers(1, duration))
    event_type = str(rng.choice(VIDEO_EVENTS))
    background = sample_background(rng)
    palette = colours_on(background.colour)
    kinds = [KINDS[i] for i in rng.choice(len(KINDS), 3, replace=False)]
    size = int(rng.integers(24, min(width, height) // 4 + 1))
    colour = str(rng.choice(palette))
    event = VideoEvent(event_type, second)
    if event_type == "colour":
        event.new_colour = str(rng.choice([c for c in palette if c != colour]))
    if event_type == "move":
        event.direction = str(rng.choice(DIRECTIONS))
        extent = width if event.direction in ("left", "right") else height
        event.distance = int(rng.integers(int(0.3 * extent), int(0.5 * extent) + 1))
        event.move_seconds = min(2, duration - second)
    # Start position: the whole path (start to end box) stays inside the frame.
    span_x = event.distance if event.direction in ("left", "right") else 0
    span_y = event.distance if event.direction in ("up", "down") else 0
    x0 = int(rng.integers(0, width - size - span_x + 1))
    y0 = int(rng.integers(0, height - size - span_y + 1))
    if event.direction == "left":
        x0 += span_x
    if event.direction == "up":
        y0 += span_y
    main = Shape(kinds[0], colour, [x0, y0, x0 + size, y0 + size])
    dx, dy = STEPS[event.direction] if event.direction else (0, 0)
    end_x, end_y = x0 + dx * event.distance, y0 + dy * event.distance
    path = [min(x0, end_x), min(y0, end_y), max(x0, end_x) + size, max(y0, end_y) + size]
    # Distractors: static, other kinds, colours the event never shows, clear of the path.
    event_colours = {colour, event.new_colour}
    distractor_palette = [c for c in palette if c not in event_colours]
    shapes, taken = [main], [path]
    for kind in kinds[1 : 1 + int(rng.integers(0, 3))]:
        other = int(rng.integers(16, min(width, height) // 4 + 1))
        for _ in range(20):
            ox, oy = int(rng.integers(0, width - other + 1)), int(rng.integers(0, height - other + 1))
            box = [ox, oy, ox + other, oy + other]
            if all(_boxes_apart(box, t, 4) for t in taken):
                shapes.append(Shape(kind, str(rng.choice(distractor_palette)), box))
                taken.append(box)
                break
    return VideoScene(width, height, fps, duration, background, shapes, event)


# ----------------------------------------------------------------------------- grammar


def shape_phrase(shape: Shape) -> str:
    return f"a {shape.colour} {shape.kind} {REGION_PHRASES[shape.region]}"


def caption(scene: ImageScene) -> str:
    """'a red circle on the left', '... on the left and a blue square on the right',
    'a, b and c' for three; shapes in left-to-right order."""
    phrases = [shape_phrase(s) for s in sorted(scene.shapes, key=lambda s: REGIONS.index(s.region))]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def sample_vqa(rng: np.random.Generator, scene: ImageScene, qtype: str | None = None) -> tuple[str, str, str]:
    """(question type, question, answer) about the scene."""
    qtype = qtype or str(rng.choice(VQA_TYPES))
    shape = scene.shapes[int(rng.integers(len(scene.shapes)))]
    if qtype == "colour":
        return qtype, QUESTION_TEMPLATES["colour"].format(kind=shape.kind), shape.colour
    if qtype == "count":
        return qtype, QUESTION_TEMPLATES["count"], NUMBER_WORDS[len(scene.shapes)]
    if qtype == "where":
        return qtype, QUESTION_TEMPLATES["where"].format(kind=shape.kind), REGION_PHRASES[shape.region]
    if qtype != "exists":
        raise ValueError(f"unknown VQA question type {qtype!r}")
    present = {(s.colour, s.kind) for s in scene.shapes}
    if rng.random() < 0.5:
        colour, kind = shape.colour, shape.kind
    else:
        absent = [(c, k) for c in COLOURS for k in KINDS if (c, k) not in present]
        # Half the "no" questions are near misses: a colour or a kind that is in the picture.
        near = [(c, k) for c, k in absent if any(c == pc or k == pk for pc, pk in present)]
        pool = near if rng.random() < 0.5 else absent
        colour, kind = pool[int(rng.integers(len(pool)))]
    answer = "yes" if (colour, kind) in present else "no"
    return qtype, QUESTION_TEMPLATES["exists"].format(colour=colour, kind=kind), answer


def vqa_type(question: str) -> str:
    """The VQA type whose template asks `question` (ValueError for any other question)."""
    for qtype in VQA_TYPES:
        pattern = re.escape(QUESTION_TEMPLATES[qtype]).replace(r"\{kind\}", r"\w+").replace(r"\{colour\}", r"\w+")
        if re.fullmatch(pattern, question):
            return qtype
    raise ValueError(f"not a VQA question of the synthetic world: {question!r}")


def seconds_answer(second: int) -> str:
    return f"At {second} second." if second == 1 else f"At {second} seconds."


def sample_video_question(rng: np.random.Generator, scene: VideoScene) -> tuple[str, str, str]:
    """(question type, question, answer) about the clip's event."""
    event = scene.event
    shape = scene.shapes[event.shape]
    when = seconds_answer(event.second)
    if event.type in ("appear", "disappear"):
        return event.type, QUESTION_TEMPLATES[event.type].format(colour=shape.colour, kind=shape.kind), when
    if event.type == "colour":
        return "change", QUESTION_TEMPLATES["change"].format(kind=shape.kind), when
    if rng.random() < 0.5:
        return "direction", QUESTION_TEMPLATES["direction"].format(kind=shape.kind), DIRECTION_ANSWERS[event.direction]
    return "start", QUESTION_TEMPLATES["start"].format(kind=shape.kind), when


def shape_label(shape: Shape) -> str:
    """The name a grounding answer gives a shape: 'red star'."""
    return f"{shape.colour} {shape.kind}"


def reading_order(shapes: list[Shape]) -> list[int]:
    """Indices of `shapes` left to right, then top to bottom (by bbox corner)."""
    return sorted(range(len(shapes)), key=lambda i: (shapes[i].bbox[0], shapes[i].bbox[1]))


def sample_ground(rng: np.random.Generator, scene: ImageScene) -> tuple[str, str, list[int]]:
    """(prompt type, prompt, indices of the shapes the answer lists, in answer order). "one" asks
    for a shape whose colour and kind no other shape of the scene shares; "every" for all shapes
    in reading order."""
    qtype = str(rng.choice(GROUND_TYPES))
    labels = [shape_label(s) for s in scene.shapes]
    named = [i for i, label in enumerate(labels) if labels.count(label) == 1]
    if qtype == "every" or not named:  # kinds are distinct in a scene, so `named` is never empty
        return "every", GROUND_PROMPTS["every"], reading_order(scene.shapes)
    index = named[int(rng.integers(len(named)))]
    shape = scene.shapes[index]
    return qtype, GROUND_PROMPTS["one"].format(colour=shape.colour, kind=shape.kind), [index]
