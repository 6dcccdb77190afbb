"""`qwen-vl ground` in-process on the bundled model, with the model's answer written by hand."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image
from typer.testing import CliRunner

from qwen_vl import cli
from qwen_vl.grounding import frame_for
from qwen_vl.loading import BUNDLED_MODEL_DIR
from qwen_vl.processing.image import ImageSettings

EXAMPLES = BUNDLED_MODEL_DIR.parent / "examples"
SHAPES = str(EXAMPLES / "shapes.png")  # 320 x 160; the bundled budget resizes it to 308 x 168

pytestmark = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="bundled model missing")


@pytest.fixture(scope="module")
def bundled():
    model_and_processor = cli.load(None, "cpu", None)
    return model_and_processor


@pytest.fixture
def answer_with(monkeypatch, bundled):
    """Make the model "answer" `text`; returns the prompts it was asked."""
    asked = []

    def use(text: str):
        def fake_generate(model, processor, conversations, sampling=None):
            asked.extend(conversations)
            return [text for _ in conversations]

        monkeypatch.setattr(cli, "load", lambda *args: bundled)
        monkeypatch.setattr("qwen_vl.generation.generate_text", fake_generate)
        return asked

    return use


def run(*args):
    return CliRunner().invoke(cli.app, ["ground", *map(str, args)])


def test_model_frame_of_the_example():
    frame = frame_for("qwen2_5_vl", 320, 160, ImageSettings(min_pixels=50176, max_pixels=100352))
    assert (frame.model_width, frame.model_height) == (308, 168)


def test_json_output_in_original_pixels_and_drawing(answer_with, tmp_path):
    asked = answer_with(
        'Here it is:\n```json\n[\n\t{"bbox_2d": [0, 21, 154, 168], "label": "red circle"},\n'
        '\t{"point_2d": [231, 84], "label": "blue square"}\n]\n```'
    )
    out = tmp_path / "drawn.png"
    result = run(SHAPES, "red circle", "--json", "--draw", out)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["image"] == SHAPES and (record["width"], record["height"]) == (320, 160)
    # x: 320 / 308 per model pixel, y: 160 / 168
    assert record["boxes"] == [{"label": "red circle", "bbox_2d": [0, 20, 160, 160]}]
    assert record["points"] == [{"label": "blue square", "point_2d": [240, 80]}]
    assert record["answer"].startswith("Here it is:")
    prompt = asked[0][0]["content"][-1]["text"]
    assert prompt == "Locate every red circle in the image and output the bbox coordinates in JSON format."
    drawn = Image.open(out)
    assert drawn.size == (320, 160)
    assert drawn.getpixel((80, 20)) != Image.open(SHAPES).convert("RGB").getpixel((80, 20))  # the box's top edge
    assert [p.name for p in tmp_path.iterdir()] == ["drawn.png"]  # no temporary file left


def test_text_output_and_no_query(answer_with):
    asked = answer_with('[{"bbox_2d": [154, 0, 308, 168], "label": "blue square"}]')
    result = run(SHAPES)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["box    (160, 0) - (320, 160)  blue square"]
    assert "every object" in asked[0][0]["content"][-1]["text"]


def test_answer_without_boxes_is_not_an_error(answer_with):
    answer_with("I do not see a giraffe.")
    result = run(SHAPES, "giraffe", "--json")
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert record["boxes"] == [] and record["points"] == [] and record["answer"] == "I do not see a giraffe."
    text = run(SHAPES, "giraffe")
    assert text.exit_code == 0 and "I do not see a giraffe." in text.stdout


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        (str(EXAMPLES / "green_star.mp4"), "is a video"),
        ("no/such/picture.png", "file not found"),
    ],
)
def test_bad_inputs_are_one_line_and_exit_2(answer_with, target, fragment):
    answer_with("unused")
    result = run(target, "star")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert os.path.basename(target) in lines[0]


def test_corrupt_image_and_unknown_drawing_type(answer_with, tmp_path):
    answer_with("unused")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    result = run(broken, "star")
    assert result.exit_code == 2 and "broken.png" in result.stderr and len(result.stderr.splitlines()) == 1
    result = run(SHAPES, "--draw", tmp_path / "out.xyz")
    assert result.exit_code == 2 and "out.xyz" in result.stderr
