"""Grounding: boxes and points in model answers, their coordinate frames, and drawing them.

Qwen2.5-VL answers locations as plain JSON, usually in a ```json fence:
    [{"bbox_2d": [x1, y1, x2, y2], "label": "red car"}]   [{"point_2d": [x, y], "label": "cup"}]
in absolute pixels of the image as resized for the model (the processor's resized width and
height). Qwen2-VL writes `<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`
with coordinates normalised to 0-1000. A `Frame` holds both cases as one linear map: original pixel
= model coordinate * original size / model size, where the model size is the resized image
(Qwen2.5-VL) or 1000 x 1000 (Qwen2-VL).

Boxes are (x1, y1, x2, y2) with x1 <= x2, y1 <= y2, x to the right, y down, origin top-left.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:  # processing imports torch: only frame_for needs it, so scorers stay light
    from qwen_vl.processing.image import ImageSettings

NORMALISED_SCALE = 1000  # Qwen2-VL's coordinate range
ABSOLUTE_MODEL_TYPES = ("qwen2_5_vl",)
NORMALISED_MODEL_TYPES = ("qwen2_vl",)


# ---- shapes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    """An axis-aligned box, corners (x1, y1) top-left and (x2, y2) bottom-right."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str = ""

    @property
    def corners(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    @classmethod
    def from_xywh(cls, xywh: Sequence[float], label: str = "") -> Box:
        """A box from COCO's [x, y, width, height]."""
        x, y, w, h = (float(v) for v in xywh)
        return cls(x, y, x + w, y + h, label)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = ""

    @property
    def coords(self) -> list[float]:
        return [self.x, self.y]


@dataclass(frozen=True)
class Grounding:
    """What one answer locates."""

    boxes: list[Box]
    points: list[Point]

    def __bool__(self) -> bool:
        return bool(self.boxes or self.points)


Shape = Box | Point


# ---- coordinate frames ------------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    """How the coordinates a model writes for one image relate to that image's original pixels.

    width/height: the original image; model_width/model_height: the extent of the model's
    coordinates (the resized image for Qwen2.5-VL, 1000 x 1000 for Qwen2-VL)."""

    width: int
    height: int
    model_width: int
    model_height: int

    @property
    def normalised(self) -> bool:
        return (self.model_width, self.model_height) == (NORMALISED_SCALE, NORMALISED_SCALE)


def frame_for(
    model_type: str,
    width: int,
    height: int,
    settings: ImageSettings | None = None,
    **overrides,
) -> Frame:
    """The frame of a `width` x `height` image for a model of `model_type` (config.json), given the
    processor's image settings and the image's own options (min_pixels, max_pixels,
    resized_height, resized_width), as the processor resizes it."""
    if model_type in NORMALISED_MODEL_TYPES:
        return Frame(width, height, NORMALISED_SCALE, NORMALISED_SCALE)
    if model_type not in ABSOLUTE_MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r}: no known grounding coordinates")
    from qwen_vl.processing.image import ImageSettings, target_size

    resized_height, resized_width = target_size(height, width, settings or ImageSettings(), **overrides)
    return Frame(width, height, resized_width, resized_height)


def _scaled(shape: Shape, sx: float, sy: float) -> Shape:
    if isinstance(shape, Box):
        return replace(shape, x1=shape.x1 * sx, y1=shape.y1 * sy, x2=shape.x2 * sx, y2=shape.y2 * sy)
    return replace(shape, x=shape.x * sx, y=shape.y * sy)


def to_original(shape: Shape, frame: Frame) -> Shape:
    """Model coordinates -> original image pixels (floats; not clipped)."""
    return _scaled(shape, frame.width / frame.model_width, frame.height / frame.model_height)


def to_model(shape: Shape, frame: Frame) -> Shape:
    """Original image pixels -> the whole-number coordinates the model writes."""
    scaled = _scaled(shape, frame.model_width / frame.width, frame.model_height / frame.height)
    return rounded(scaled)


def rounded(shape: Shape) -> Shape:
    if isinstance(shape, Box):
        return replace(shape, x1=round(shape.x1), y1=round(shape.y1), x2=round(shape.x2), y2=round(shape.y2))
    return replace(shape, x=round(shape.x), y=round(shape.y))


def clip(shape: Shape, width: float, height: float) -> Shape:
    """The shape kept inside a width x height image."""

    def cx(v: float) -> float:
        return min(max(v, 0.0), float(width))

    def cy(v: float) -> float:
        return min(max(v, 0.0), float(height))

    if isinstance(shape, Box):
        return replace(shape, x1=cx(shape.x1), y1=cy(shape.y1), x2=cx(shape.x2), y2=cy(shape.y2))
    return replace(shape, x=cx(shape.x), y=cy(shape.y))


def grounding_to_original(found: Grounding, frame: Frame) -> Grounding:
    """Every shape of an answer in original pixels, clipped to the image."""

    def convert(shape):
        return clip(to_original(shape, frame), frame.width, frame.height)

    return Grounding([convert(b) for b in found.boxes], [convert(p) for p in found.points])


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when both are empty)."""
    inter = Box(max(a.x1, b.x1), max(a.y1, b.y1), min(a.x2, b.x2), min(a.y2, b.y2)).area
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


# ---- prompts and answers ----------------------------------------------------------------------
def grounding_prompt(query: str | None = None, points: bool = False) -> str:
    """The usual Qwen2.5-VL instruction; no query asks for every object in the image."""
    thing = query.strip() if query and query.strip() else "object"
    if points:
        return f"Point to every {thing} in the image and output the point coordinates in JSON format."
    return f"Locate every {thing} in the image and output the bbox coordinates in JSON format."


def format_answer(boxes: Iterable[Box] = (), points: Iterable[Point] = (), model_type: str = "qwen2_5_vl") -> str:
    """Shapes in MODEL coordinates written as the model answers them: a ```json fence
    (Qwen2.5-VL) or the special-token form (Qwen2-VL)."""
    boxes, points = [rounded(b) for b in boxes], [rounded(p) for p in points]
    if model_type in NORMALISED_MODEL_TYPES:
        parts = [
            f"<|object_ref_start|>{b.label}<|object_ref_end|><|box_start|>({b.x1},{b.y1}),({b.x2},{b.y2})<|box_end|>"
            for b in boxes
        ]
        return "".join(parts)
    items = [{"bbox_2d": b.corners, **({"label": b.label} if b.label else {})} for b in boxes]
    items += [{"point_2d": p.coords, **({"label": p.label} if p.label else {})} for p in points]
    lines = ",\n".join("\t" + json.dumps(item, ensure_ascii=False) for item in items)
    return f"```json\n[\n{lines}\n]\n```"


# ---- parsing ----------------------------------------------------------------------------------
FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.DOTALL)
NUMBER = r"-?\d+(?:\.\d+)?"
# Qwen2-VL: the label and box tokens; with special tokens skipped in decoding only "(x1,y1),(x2,y2)" stays.
QWEN2_REF_BOX = re.compile(
    r"(?:<\|object_ref_start\|>(?P<label>.*?)<\|object_ref_end\|>\s*)?<\|box_start\|>(?P<coords>.*?)<\|box_end\|>",
    re.DOTALL,
)
PAIR_BOX = re.compile(rf"\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)\s*,\s*\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)")
BOX_KEYS = ("bbox_2d", "bbox", "box_2d", "box")
POINT_KEYS = ("point_2d", "point")
LABEL_KEYS = ("label", "name", "object")
# Broken JSON: a key and its coordinate list, and a label, read object by object.
FRAGMENT_SHAPE = re.compile(r"""["']?(?P<key>bbox_2d|point_2d|bbox|point)["']?\s*:\s*\[(?P<values>[^\[\]]*)\]""")
FRAGMENT_LABEL = re.compile(r"""["']?label["']?\s*:\s*["'](?P<label>[^"'\n]*)["']""")


def parse_answer(text: str) -> Grounding:
    """Boxes and points in an answer, in the MODEL's coordinates, in the order written.

    Reads JSON (fenced or bare, a list or a single object, prose around it), JSON broken by a cut
    or a stray quote (the complete shapes are kept), and Qwen2-VL's box tokens. No shape -> empty."""
    qwen2 = _parse_qwen2(text)
    if qwen2:
        return qwen2
    parsed = next((found for found in map(_shapes_from_json, _json_candidates(text)) if found), Grounding([], []))
    # a missing comma or a cut ends valid JSON early: the object-by-object reading then finds more
    pieced = _parse_fragments(text)
    return pieced if _count(pieced) > _count(parsed) else parsed


def _count(found: Grounding) -> int:
    return len(found.boxes) + len(found.points)


def _parse_qwen2(text: str) -> Grounding:
    boxes = []
    for match in QWEN2_REF_BOX.finditer(text):
        for pair in PAIR_BOX.finditer(match.group("coords")):
            boxes.append(_box([float(v) for v in pair.groups()], (match.group("label") or "").strip()))
    if not boxes and "{" not in text and "[" not in text:
        boxes = [_box([float(v) for v in pair.groups()]) for pair in PAIR_BOX.finditer(text)]
    return Grounding([b for b in boxes if b is not None], [])


def _json_candidates(text: str) -> Iterable[object]:
    """Parsed JSON values: each fenced block, then the first value starting at each '[' or '{'."""
    decoder = json.JSONDecoder()
    for block in FENCE.findall(text):
        try:
            yield json.loads(block)
        except json.JSONDecodeError:
            pass
    for start, char in enumerate(text):
        if char in "[{":
            try:
                yield decoder.raw_decode(text, start)[0]
            except json.JSONDecodeError:
                continue


def _shapes_from_json(value: object) -> Grounding:
    boxes, points = [], []
    for item in _objects(value):
        label = next((str(item[k]) for k in LABEL_KEYS if isinstance(item.get(k), (str, int, float))), "")
        box_key = next((k for k in BOX_KEYS if k in item), None)
        point_key = next((k for k in POINT_KEYS if k in item), None)
        if box_key is not None:
            box = _box(_numbers(item[box_key]), label)
            boxes += [box] if box else []
        elif point_key is not None:
            point = _point(_numbers(item[point_key]), label)
            points += [point] if point else []
    return Grounding(boxes, points)


def _objects(value: object) -> Iterable[dict]:
    """Every dict in a JSON value, depth first (lists of shapes, {"objects": [...]} wrappers)."""
    if isinstance(value, dict):
        yield value
        for inner in value.values():
            if isinstance(inner, (dict, list)):
                yield from _objects(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _objects(inner)


def _numbers(value: object) -> list[float] | None:
    """A coordinate list flattened ([[x1, y1], [x2, y2]] too); None when not all numbers."""
    flat = []
    stack = [value]
    while stack:
        item = stack.pop(0)
        if isinstance(item, list):
            stack = list(item) + stack
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            flat.append(float(item))
        elif isinstance(item, str) and re.fullmatch(NUMBER, item.strip()):
            flat.append(float(item))
        else:
            return None
    return flat


def _box(values: list[float] | None, label: str = "") -> Box | None:
    if not values or len(values) != 4:
        return None
    x1, y1, x2, y2 = values
    return Box(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2), label)


def _point(values: list[float] | None, label: str = "") -> Point | None:
    if not values or len(values) != 2:
        return None
    return Point(values[0], values[1], label)


def _parse_fragments(text: str) -> Grounding:
    """Shapes read object by object from text that is not valid JSON; a cut-off last object
    without its full coordinate list is dropped."""
    boxes, points = [], []
    for chunk in re.split(r"(?=\{)", text):
        shape = FRAGMENT_SHAPE.search(chunk)
        if shape is None:
            continue
        label_match = FRAGMENT_LABEL.search(chunk)
        label = label_match.group("label") if label_match else ""
        values = [v for v in re.split(r"[\s,]+", shape.group("values").strip()) if v]
        numbers = [float(v) for v in values] if all(re.fullmatch(NUMBER, v) for v in values) else None
        if shape.group("key").startswith("point"):
            point = _point(numbers, label)
            points += [point] if point else []
        else:
            box = _box(numbers, label)
            boxes += [box] if box else []
    return Grounding(boxes, points)


# ---- drawing ----------------------------------------------------------------------------------
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 200, 200),
    (240, 50, 230),
    (128, 128, 0),
    (0, 0, 128),
    (170, 110, 40),
)


def colour_for(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def draw(image: Image.Image, boxes: Sequence[Box] = (), points: Sequence[Point] = ()) -> Image.Image:
    """A copy of `image` (RGB) with boxes and points in ITS pixel coordinates drawn on it, each
    label in its own colour (shapes sharing a label share the colour)."""
    canvas = image.convert("RGB")
    pen = ImageDraw.Draw(canvas)
    side = max(1, min(canvas.size))
    line = max(2, side // 150)
    font = _font(max(10, side // 30))
    colours: dict[str, tuple[int, int, int]] = {}

    def colour(label: str, index: int) -> tuple[int, int, int]:
        key = label or f"#{index}"
        return colours.setdefault(key, colour_for(len(colours)))

    for index, box in enumerate(boxes):
        ink = colour(box.label, index)
        pen.rectangle(box.corners, outline=ink, width=line)
        if box.label:
            _caption(pen, (box.x1, box.y1), box.label, ink, font)
    radius = max(3, side // 80)
    for index, point in enumerate(points):
        ink = colour(point.label, len(boxes) + index)
        x, y = point.coords
        pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=ink, outline=(255, 255, 255))
        if point.label:
            _caption(pen, (x + radius, y - radius), point.label, ink, font)
    return canvas


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1 has one bitmap size only
        return ImageFont.load_default()


def _caption(pen: ImageDraw.ImageDraw, corner: tuple[float, float], text: str, ink, font) -> None:
    """The label on a filled strip above the corner (below it at the top edge)."""
    left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
    w, h = right - left + 4, bottom - top + 4
    x, y = corner
    y = y - h if y - h >= 0 else y
    pen.rectangle([x, y, x + w, y + h], fill=ink)
    pen.text((x + 2 - left, y + 2 - top), text, fill=(255, 255, 255), font=font)


__all__ = [
    "Box",
    "Point",
    "Grounding",
    "Frame",
    "frame_for",
    "to_original",
    "to_model",
    "clip",
    "grounding_to_original",
    "iou",
    "grounding_prompt",
    "format_answer",
    "parse_answer",
    "draw",
]
