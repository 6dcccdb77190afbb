"""The page shows an answer's boxes and points drawn on the picture they are about."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from qwen_vl.grounding import frame_for
from qwen_vl.webapp.chat import GenerationSettings, Turn, display, stream_answer
from qwen_vl.webapp.engine import Engine
from qwen_vl.webapp.ui import load_examples
from tests.app.support import EXAMPLES
from tests.tiny import save_tiny_model_dir

IMAGE = str(EXAMPLES / "shapes.png")  # 320 x 160, the red circle on the left
LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine.load(str(save_tiny_model_dir(tmp_path_factory.mktemp("ground_model"))))


def answering(engine, monkeypatch, text: str):
    monkeypatch.setattr(engine, "stream", lambda messages, sampling: iter([text[:5], text[5:]]))


def finish(engine, turns, settings=None) -> Turn:
    for _ in stream_answer(engine, turns, settings or GenerationSettings(), LIMIT):
        pass
    return turns[-1]


def test_boxes_are_drawn_on_the_picture_beside_the_answer(engine, monkeypatch):
    frame = frame_for("qwen2_5_vl", 320, 160, engine.processor.image_settings)
    # the left half of the image, in the model's coordinates
    half = [0, 0, frame.model_width // 2, frame.model_height]
    answering(engine, monkeypatch, f'```json\n[{{"bbox_2d": {half}, "label": "red circle"}}]\n```')
    turn = finish(engine, [Turn("Locate the red circle.", [IMAGE])])
    assert turn.error is None and turn.picture is not None
    drawn, original = Image.open(turn.picture).convert("RGB"), Image.open(IMAGE).convert("RGB")
    assert drawn.size == original.size
    assert drawn.getpixel((0, 80)) != original.getpixel((0, 80))  # the box's left edge
    assert drawn.getpixel((300, 150)) == original.getpixel((300, 150))  # outside the box
    shown = display([turn])
    assert shown[-2] == {"role": "assistant", "content": turn.answer}
    assert shown[-1] == {"role": "assistant", "content": {"path": turn.picture}}


def test_points_use_the_latest_image_of_the_session(engine, monkeypatch, tmp_path):
    other = tmp_path / "plain.png"
    Image.new("RGB", (200, 100), "white").save(other)
    answering(engine, monkeypatch, "first answer")
    first = Turn("What is this?", [IMAGE])
    finish(engine, [first])
    assert first.picture is None  # no boxes, no picture
    assert len(display([first])) == 3
    frame = frame_for("qwen2_5_vl", 200, 100, engine.processor.image_settings)
    answering(engine, monkeypatch, f'[{{"point_2d": [{frame.model_width // 2}, {frame.model_height // 2}]}}]')
    second = Turn("Point to it.", [str(other)])
    finish(engine, [first, second])
    assert Image.open(second.picture).getpixel((100, 50)) != (255, 255, 255)
    follow_up = Turn("And again?")
    finish(engine, [first, second, follow_up])
    assert Image.open(follow_up.picture).size == (200, 100)  # the latest image is the second turn's


def test_unparsable_boxes_leave_only_text(engine, monkeypatch):
    answering(engine, monkeypatch, '[{"bbox_2d": [1, 2], "label": "broken"}]')
    turn = finish(engine, [Turn("Locate it.", [IMAGE])])
    assert turn.error is None and turn.picture is None


def test_grounding_example_is_offered_without_a_claimed_answer():
    listing = json.loads((EXAMPLES / "examples.json").read_text())
    grounding = [e for e in listing if e.get("kind") == "grounding"]
    assert len(grounding) == 1 and grounding[0]["answer"] is None
    assert (EXAMPLES / grounding[0]["file"]).is_file()
    offered = load_examples(EXAMPLES)
    assert {"text": grounding[0]["question"], "files": [str(EXAMPLES / grounding[0]["file"])]} in offered
