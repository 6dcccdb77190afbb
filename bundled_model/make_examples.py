"""Write the app's example media into qwen_vl/assets/examples/ (run once; the files are committed).

The scenes follow the synthetic world the bundled model is trained on (bundled_model/synthetic_world.py):
plain backgrounds, saturated shape colours, each shape alone in its third of the image, and a clip
with one event at a whole second. The colours, shape drawing and the H.264 writer are the
training ones, so the examples look like the training data.

    python -m bundled_model.make_examples [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

from bundled_model.synthetic_render import draw_shape, write_video
from bundled_model.synthetic_world import BACKGROUNDS, COLOURS, Background, Shape, VideoEvent, VideoScene
from qwen_vl.fileio import atomic_path, atomic_write_text

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "qwen_vl" / "assets" / "examples"

# (file, background, [(kind, colour, bbox)], question, answer): bboxes are end-exclusive, one per
# third; the answers are the ones the world's grammar gives (synthetic_world.caption, sample_vqa).
IMAGES = [
    (
        "shapes.png",
        "beige",
        [("circle", "red", [16, 40, 96, 120]), ("square", "blue", [232, 44, 304, 116])],
        "Describe this image.",
        "a red circle on the left and a blue square on the right",
    ),
    (
        "three_shapes.png",
        "sky",
        [
            ("triangle", "yellow", [20, 50, 92, 122]),
            ("star", "green", [126, 40, 206, 120]),
            ("square", "purple", [238, 58, 298, 118]),
        ],
        "How many shapes are there?",
        "three",
    ),
    ("colour.png", "light grey", [("star", "orange", [110, 20, 210, 120])], "What colour is the star?", "orange"),
]
VIDEO = ("green_star.mp4", "When does the green star appear?", "At 2 seconds.")
# Offered to show boxes drawn on the page; the demo model has not learned grounding, so no answer is claimed.
GROUNDING = ("shapes.png", "Locate the red circle in the image and output the bbox coordinates in JSON format.")
IMAGE_SIZE = (320, 160)  # width, height


def shapes_image(background: str, shapes) -> Image.Image:
    image = Image.new("RGB", IMAGE_SIZE, BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    for kind, colour, bbox in shapes:
        draw_shape(draw, kind, bbox, COLOURS[colour])
    return image


def star_clip() -> VideoScene:
    """4 s at 10 fps on a plain sky background: a red circle throughout, a green star from second 2."""
    return VideoScene(
        width=224,
        height=160,
        fps=10,
        duration=4,
        background=Background("sky", "plain", 0),
        shapes=[Shape("star", "green", [130, 50, 190, 110]), Shape("circle", "red", [24, 60, 64, 100])],
        event=VideoEvent("appear", 2, shape=0),
    )


def write_examples(out: Path = EXAMPLES_DIR) -> list[dict]:
    """Write every example and examples.json ([{file, question, answer}]; answer null where the
    demo model's answer is not claimed); returns that list."""
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for name, background, shapes, question, answer in IMAGES:
        with atomic_path(out / name) as tmp:
            shapes_image(background, shapes).save(tmp, format="PNG", optimize=True)
        listing.append({"file": name, "question": question, "answer": answer})
    name, question, answer = VIDEO
    with atomic_path(out / name) as tmp:
        write_video(star_clip(), tmp)  # the writer names the container format itself
    listing.append({"file": name, "question": question, "answer": answer})
    name, question = GROUNDING
    listing.append({"file": name, "question": question, "answer": None, "kind": "grounding"})
    atomic_write_text(out / "examples.json", json.dumps(listing, indent=2) + "\n")
    for path in out.iterdir():  # temp files are created private; examples are public
        path.chmod(0o644)
    return listing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR, help="output folder")
    args = parser.parse_args(argv)
    for item in write_examples(args.out):
        print(f"{args.out / item['file']}\t{item['question']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
