"""Draw the quick start's media (training/examples/media/): two small PNGs and a 2-second mp4.
They are committed; run this only to change them: python training/examples/make_quickstart_media.py"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

MEDIA = Path(__file__).resolve().parent / "media"
BACKGROUND = (235, 235, 235)
RED, BLUE, GREEN, YELLOW = (220, 30, 30), (30, 60, 220), (30, 170, 60), (240, 200, 20)


def shapes_png() -> None:
    """A red circle at [10, 20, 50, 60] and a blue square at [70, 20, 110, 60] on 120 x 80."""
    image = Image.new("RGB", (120, 80), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.ellipse([10, 20, 50, 60], fill=RED)
    draw.rectangle([70, 20, 110, 60], fill=BLUE)
    image.save(MEDIA / "shapes.png", optimize=True)


def three_shapes_png() -> None:
    """A green triangle, a red circle and a blue square on 112 x 112."""
    image = Image.new("RGB", (112, 112), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.polygon([(28, 10), (48, 46), (8, 46)], fill=GREEN)
    draw.ellipse([64, 10, 100, 46], fill=RED)
    draw.rectangle([36, 64, 76, 104], fill=BLUE)
    image.save(MEDIA / "three_shapes.png", optimize=True)


def square_appears_mp4(fps: int = 4, frames: int = 8, appear: int = 4) -> None:
    """64 x 64, 2 s: a yellow square appears in the middle at 1 s."""
    with av.open(str(MEDIA / "square_appears.mp4"), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast", "threads": "1"}
        for index in range(frames):
            pixels = np.full((64, 64, 3), BACKGROUND, dtype=np.uint8)
            if index >= appear:
                pixels[20:44, 20:44] = YELLOW
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


if __name__ == "__main__":
    MEDIA.mkdir(exist_ok=True)
    shapes_png()
    three_shapes_png()
    square_appears_mp4()
