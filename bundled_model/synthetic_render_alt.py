"""A second way to draw the synthetic world, for evaluation only (nothing in training uses it).

It draws the same scene dataclasses the world samples (synthetic_world.py), so captions, VQA and
grounding answers come from the same grammar, but none of synthetic_render.py's code or looks:

- larger pictures, 256-1024 px per side, aspect ratio up to 3:1 either way;
- plain light backgrounds and two-colour linear gradients, in colours the training palette lacks;
- stars with other inner radii (0.30-0.40 or 0.52-0.62 of the outer, training: 0.45) and
  triangles of other proportions (height 0.6-0.85 or 1.15-1.5 times the base, training: 1.0);
- shapes rasterised here (even-odd polygon test, circle equation), each pixel's coverage taken
  from 4 x 4 sub-pixel samples (anti-aliased edges);
- JPEG at a random quality in 60-95.

A shape's `bbox` in the scene this module returns is the box its outline is drawn to: circles and
squares fill their box, a triangle's apex touches the top side and its base the bottom one, a
star's points touch all four sides. The picture is a pure function of (scene, style).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from bundled_model.synthetic_world import COLOURS, MIN_CONTRAST, ImageScene, Shape, sample_image_scene

SIDES = (256, 1024)  # px, each side
MAX_ASPECT = 3.0
SUPERSAMPLE = 4  # sub-pixel samples per side of a pixel
JPEG_QUALITY = (60, 95)
STAR_INNER = ((0.30, 0.40), (0.52, 0.62))  # inner / outer radius: thinner or fatter than training's 0.45
TRIANGLE_HEIGHT = ((0.60, 0.85), (1.15, 1.50))  # height / base: flatter or taller than training's 1.0
# A five-pointed star with one point up spans 2 cos 18° across and 1 + sin 54° from top to bottom.
STAR_WIDTH, STAR_HEIGHT = 2 * math.cos(math.radians(18)), 1 + math.sin(math.radians(54))

LIGHT = {  # plain backgrounds, and gradient ends
    "cream": (244, 238, 222),
    "ice": (226, 236, 246),
    "mint": (228, 244, 230),
    "blush": (247, 230, 234),
    "lavender": (234, 228, 246),
    "paper": (240, 240, 236),
}
MID = {  # further gradient ends
    "stone": (160, 150, 135),
    "steel": (110, 125, 150),
    "moss": (95, 120, 85),
    "plum": (110, 80, 110),
    "sand": (200, 180, 140),
}


@dataclass
class AltBackground:
    kind: str  # "plain" | "gradient"
    start: list[int]  # RGB; a gradient runs from start to end along `angle`
    end: list[int]  # RGB; equal to start when plain
    angle: float = 0.0  # degrees, image axes (0: left to right, 90: top to bottom)


@dataclass
class AltStyle:
    """What the picture needs beyond the scene."""

    star_inner: float  # inner / outer radius of stars
    jpeg_quality: int


# ----------------------------------------------------------------------------- sampling


def sample_alt_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): both sides in SIDES, the aspect ratio at most MAX_ASPECT, log-uniform."""
    low, high = SIDES
    height = int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
    ratio_low, ratio_high = max(low / height, 1 / MAX_ASPECT), min(high / height, MAX_ASPECT)
    width = int(round(height * math.exp(rng.uniform(math.log(ratio_low), math.log(ratio_high)))))
    return min(max(width, low), high), height


def _distance_to_segment(point, start, end) -> float:
    """RGB distance from `point` to the nearest colour of the gradient start..end."""
    p, a, b = (np.asarray(v, float) for v in (point, start, end))
    span = b - a
    t = 0.0 if not span.any() else float(np.clip(np.dot(p - a, span) / np.dot(span, span), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * span)))


def sample_alt_background(rng: np.random.Generator, shape_colours: list[str], fallback) -> AltBackground:
    """A plain light colour or a gradient, every colour of which is at least MIN_CONTRAST from each
    shape colour; `fallback` (an RGB the shapes are known to stand out on) when none is."""

    def clear(start, end) -> bool:
        return all(_distance_to_segment(COLOURS[c], start, end) >= MIN_CONTRAST for c in shape_colours)

    plain = [rgb for rgb in LIGHT.values() if clear(rgb, rgb)]
    ends = [*LIGHT.values(), *MID.values()]
    gradients = [(a, b) for a in ends for b in ends if a != b and clear(a, b)]
    want_gradient = rng.random() < 0.5
    angle = round(float(rng.uniform(0, 360)), 1)
    if gradients and (want_gradient or not plain):
        start, end = gradients[int(rng.integers(len(gradients)))]
        return AltBackground("gradient", list(start), list(end), angle)
    rgb = plain[int(rng.integers(len(plain)))] if plain else tuple(fallback)
    return AltBackground("plain", list(rgb), list(rgb))


def _from_ranges(rng: np.random.Generator, ranges) -> float:
    low, high = ranges[int(rng.integers(len(ranges)))]
    return float(rng.uniform(low, high))


def alt_bbox(shape: Shape, triangle_height: float) -> list[int]:
    """The box the shape is drawn to, inside its square scene bbox (so inside the same third)."""
    x0, y0, x1, y1 = shape.bbox
    side = x1 - x0
    if shape.kind == "star":
        height = max(1, round(side * STAR_HEIGHT / STAR_WIDTH))
        top = y0 + (side - height) // 2
        return [x0, top, x1, top + height]
    if shape.kind == "triangle" and triangle_height < 1:
        height = max(1, round(side * triangle_height))
        top = y0 + (side - height) // 2
        return [x0, top, x1, top + height]
    if shape.kind == "triangle":
        width = max(1, round(side / triangle_height))
        left = x0 + (side - width) // 2
        return [left, y0, left + width, y1]
    return [x0, y0, x1, y1]


def sample_alt_scene(rng: np.random.Generator) -> tuple[ImageScene, AltStyle]:
    """A scene from the world's sampler at this renderer's sizes, with this renderer's background
    and shape boxes, and the style it is drawn in."""
    width, height = sample_alt_size(rng)
    world = sample_image_scene(rng, width, height)
    background = sample_alt_background(rng, [s.colour for s in world.shapes], world.background.rgb)
    star_inner = round(_from_ranges(rng, STAR_INNER), 3)
    triangle_height = _from_ranges(rng, TRIANGLE_HEIGHT)
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    shapes = [replace(shape, bbox=alt_bbox(shape, triangle_height)) for shape in world.shapes]
    return ImageScene(width, height, background, shapes), AltStyle(star_inner, quality)


# ----------------------------------------------------------------------------- drawing


def background_array(background: AltBackground, width: int, height: int) -> np.ndarray:
    """float32 [height, width, 3]: the plain colour, or the gradient evaluated at pixel centres."""
    start = np.asarray(background.start, np.float32)
    if background.kind == "plain":
        return np.broadcast_to(start, (height, width, 3)).copy()
    end = np.asarray(background.end, np.float32)
    ux, uy = math.cos(math.radians(background.angle)), math.sin(math.radians(background.angle))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    along = xs * ux + ys * uy
    corners = [x * ux + y * uy for x in (0, width) for y in (0, height)]
    t = (along - min(corners)) / (max(corners) - min(corners))
    return start + t[..., None] * (end - start)


def inside_polygon(xs: np.ndarray, ys: np.ndarray, vertices: list[tuple[float, float]]) -> np.ndarray:
    """bool: which points lie inside the polygon, by the even-odd rule (a ray to the left crosses
    the outline an odd number of times)."""
    inside = np.zeros(xs.shape, bool)
    for (xa, ya), (xb, yb) in zip(vertices, vertices[1:] + vertices[:1], strict=True):
        if ya == yb:
            continue
        spans = (ya > ys) != (yb > ys)
        crossing = xa + (ys - ya) * (xb - xa) / (yb - ya)
        inside ^= spans & (xs < crossing)
    return inside


def star_outline(width: float, height: float, inner: float) -> list[tuple[float, float]]:
    """Ten corners of a five-pointed star (one point up) stretched to touch all sides of a
    width x height box with its top-left corner at the origin."""
    corners = []
    for i in range(10):
        radius = 1.0 if i % 2 == 0 else inner
        angle = math.radians(-90 + 36 * i)
        x, y = radius * math.cos(angle), radius * math.sin(angle)
        corners.append(((x + STAR_WIDTH / 2) / STAR_WIDTH * width, (y + 1) / STAR_HEIGHT * height))
    return corners


def coverage(kind: str, width: int, height: int, star_inner: float) -> np.ndarray:
    """float [height, width] in [0, 1]: the share of each pixel of the shape's box the shape covers,
    from SUPERSAMPLE x SUPERSAMPLE samples at sub-pixel centres."""
    s = SUPERSAMPLE
    ys, xs = (np.mgrid[0 : height * s, 0 : width * s] + 0.5) / s
    if kind == "square":
        inside = np.ones(xs.shape, bool)
    elif kind == "circle":
        inside = ((xs - width / 2) / (width / 2)) ** 2 + ((ys - height / 2) / (height / 2)) ** 2 <= 1.0
    elif kind == "triangle":
        inside = inside_polygon(xs, ys, [(width / 2, 0.0), (float(width), float(height)), (0.0, float(height))])
    elif kind == "star":
        inside = inside_polygon(xs, ys, star_outline(width, height, star_inner))
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return inside.reshape(height, s, width, s).mean(axis=(1, 3))


def render_alt_scene(scene: ImageScene, style: AltStyle) -> Image.Image:
    """The scene as an RGB picture (before JPEG): each shape blended over the background by coverage."""
    canvas = background_array(scene.background, scene.width, scene.height)
    for shape in scene.shapes:
        x0, y0, x1, y1 = shape.bbox
        share = coverage(shape.kind, x1 - x0, y1 - y0, style.star_inner)[..., None]
        patch = canvas[y0:y1, x0:x1]
        canvas[y0:y1, x0:x1] = patch + share * (np.asarray(COLOURS[shape.colour], np.float32) - patch)
    return Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8))


def save_jpeg(image: Image.Image, path: str | os.PathLike, quality: int) -> None:
    image.save(path, format="JPEG", quality=quality)
