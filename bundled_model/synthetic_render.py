"""Pixels for the synthetic world: backgrounds, filled shapes and text with Pillow, clips as
H.264 .mp4 with PyAV. Every function is a pure function of its scene (textures draw from the
scene's own texture seed), so the same scene gives the same bytes."""

from __future__ import annotations

import functools
import math
import os

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bundled_model.synthetic_world import (
    COLOURS,
    TEXTURE_AMPLITUDE,
    Background,
    ImageScene,
    Shape,
    TextScene,
    VideoScene,
)

STAR_INNER_RATIO = 0.45  # inner / outer radius: a little fatter than the regular 0.38, reads at 8 px
PNG_COMPRESS_LEVEL = 1  # fast; the images are flat colour and compress well anyway
VIDEO_CRF = "18"  # near-lossless: colours survive yuv420p + H.264 well within the test tolerance


def background_pixels(background: Background, width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3]: the base colour, modulated by at most TEXTURE_AMPLITUDE."""
    rng = np.random.default_rng(background.texture_seed)
    amp = TEXTURE_AMPLITUDE
    texture = background.texture
    if texture == "plain":
        offset = np.zeros((height, width), np.int16)
    elif texture == "noise":  # blocky luminance noise
        block = int(rng.integers(2, 9))
        coarse = rng.integers(-amp, amp + 1, size=(height // block + 1, width // block + 1), dtype=np.int16)
        offset = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:height, :width]
    elif texture in ("stripes", "checker"):
        period = int(rng.integers(4, 33))
        ys, xs = np.mgrid[0:height, 0:width]
        if texture == "checker":
            bands = (ys // period + xs // period) % 2
        else:  # vertical, horizontal or diagonal stripes
            bands = ((xs, ys, xs + ys)[int(rng.integers(3))] // period) % 2
        offset = np.where(bands == 1, amp, -amp).astype(np.int16)
    elif texture == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = xs / max(width - 1, 1) * math.cos(angle) + ys / max(height - 1, 1) * math.sin(angle)
        span = float(ramp.max() - ramp.min()) or 1.0
        offset = np.round((ramp - ramp.min()) / span * 2 * amp - amp).astype(np.int16)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    base = np.asarray(background.rgb, np.int16)
    return np.clip(base + offset[..., None], 0, 255).astype(np.uint8)


def star_points(cx: float, cy: float, outer: float) -> list[tuple[float, float]]:
    """Five-pointed star, one point straight up."""
    points = []
    for i in range(10):
        radius = outer if i % 2 == 0 else outer * STAR_INNER_RATIO
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, bbox, rgb) -> None:
    """Filled shape inside bbox (end exclusive); the bbox centre pixel is always inside it."""
    x0, y0, x1, y1 = bbox
    right, bottom = x1 - 1, y1 - 1  # PIL boxes are inclusive
    cx, cy = (x0 + right) / 2, (y0 + bottom) / 2
    if kind == "circle":
        draw.ellipse([x0, y0, right, bottom], fill=rgb)
    elif kind == "square":
        draw.rectangle([x0, y0, right, bottom], fill=rgb)
    elif kind == "triangle":
        draw.polygon([(cx, y0), (right, bottom), (x0, bottom)], fill=rgb)
    elif kind == "star":
        draw.polygon(star_points(cx, cy, (right - x0) / 2), fill=rgb)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")


def drawn_bbox(shape: Shape, width: int, height: int) -> list[int]:
    """[x0, y0, x1, y1] (end exclusive) of the pixels draw_shape paints for `shape` in a width x
    height picture. Circles, squares and triangles fill their scene bbox to its four sides; a
    star touches only its top, so its drawn box is narrower and ends higher."""
    mask = Image.new("L", (width, height), 0)
    draw_shape(ImageDraw.Draw(mask), shape.kind, shape.bbox, 255)
    rows, columns = np.nonzero(np.asarray(mask))
    return [int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1]


def draw_shapes(image: Image.Image, shapes: list[Shape]) -> Image.Image:
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        draw_shape(draw, shape.kind, shape.bbox, COLOURS[shape.colour])
    return image


def render_image_scene(scene: ImageScene) -> Image.Image:
    image = Image.fromarray(background_pixels(scene.background, scene.width, scene.height))
    return draw_shapes(image, scene.shapes)


@functools.lru_cache(maxsize=256)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font (Pillow >= 10.1 with FreeType)."""
    return ImageFont.load_default(size=size)


def text_bbox(text: str, size: int, origin=(0, 0)) -> list[int]:
    """Inked box [x0, y0, x1, y1] (end exclusive) of `text` drawn at `origin`."""
    left, top, right, bottom = font(size).getbbox(text)
    return [origin[0] + left, origin[1] + top, origin[0] + right, origin[1] + bottom]


def render_text_scene(scene: TextScene) -> Image.Image:
    image = Image.fromarray(background_pixels(scene.background, scene.width, scene.height))
    ImageDraw.Draw(image).text(tuple(scene.origin), scene.text, font=font(scene.font_size), fill=COLOURS[scene.colour])
    return image


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    image.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def video_frames(scene: VideoScene):
    """Yield uint8 [H, W, 3] frames; frames whose shape states repeat reuse one array."""
    background = Image.fromarray(background_pixels(scene.background, scene.width, scene.height))
    last_state, last_frame = None, None
    for index in range(scene.frame_count):
        states = [scene.shape_state(i, index) for i in range(len(scene.shapes))]
        key = repr(states)
        if key != last_state:
            image = background.copy()
            draw = ImageDraw.Draw(image)
            for shape, (visible, colour, bbox) in zip(scene.shapes, states, strict=True):
                if visible:
                    draw_shape(draw, shape.kind, bbox, COLOURS[colour])
            last_state, last_frame = key, np.asarray(image)
        yield last_frame


def write_video(scene: VideoScene, path: str | os.PathLike) -> None:
    """H.264 (yuv420p) in .mp4, frame i at pts i with time base 1/fps."""
    with av.open(os.fspath(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=scene.fps)
        stream.width, stream.height = scene.width, scene.height
        stream.pix_fmt = "yuv420p"
        # One encoder thread: byte-identical output, and parallelism comes from worker processes.
        stream.options = {"crf": VIDEO_CRF, "preset": "ultrafast", "threads": "1"}
        for index, pixels in enumerate(video_frames(scene)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
