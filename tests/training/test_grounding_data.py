"""Training samples with boxes: written in each sample's own model coordinates, as the model answers."""

from __future__ import annotations

import pytest
from PIL import Image

from qwen_vl.grounding import Box, Point, parse_answer
from qwen_vl.processing import QwenVLProcessor
from qwen_vl.processing.image import ImageSettings
from qwen_vl.training.config import DataSource
from qwen_vl.training.data import ConversationData, place_boxes
from tests.training.helpers import model_dir, write_jsonl


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    return QwenVLProcessor.from_pretrained(model_dir(tmp_path_factory.mktemp("m") / "tiny"))


def boxes_sample(image: str, boxes, points=(), **image_options) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image, **image_options},
                {"type": "text", "text": "Locate every red car in the image and output the bbox coordinates in JSON format."},
            ],
        },
        {"role": "assistant", "content": [{"type": "boxes", "boxes": list(boxes), "points": list(points)}]},
    ]  # fmt: skip


@pytest.fixture
def picture(tmp_path):
    Image.new("RGB", (300, 200), "white").save(tmp_path / "street.png")
    Image.new("RGB", (40, 30), "white").save(tmp_path / "tiny.png")
    return tmp_path


def answer_of(messages) -> str:
    return messages[-1]["content"][0]["text"]


# (image, options, box in original pixels, box in the model's resized pixels)
REWRITES = [
    # 300x200 -> 308x196 (default budget): x * 308/300, y * 196/200
    ("street.png", {}, [30, 20, 150, 100], [31, 20, 154, 98]),
    # a budget of 16 merge units -> 112x84: x * 112/300, y * 84/200
    ("street.png", {"max_pixels": 28 * 28 * 16}, [30, 20, 150, 100], [11, 8, 56, 42]),
    # 40x30 is upscaled to the pixel floor -> 84x56
    ("tiny.png", {}, [4, 3, 20, 15], [8, 6, 42, 28]),
]


@pytest.mark.parametrize(("image", "options", "original", "model"), REWRITES)
def test_boxes_are_rewritten_in_the_samples_own_coordinates(picture, image, options, original, model):
    messages = boxes_sample(image, [{"bbox_2d": original, "label": "red car"}], **options)
    out = place_boxes(messages, picture, ImageSettings(), "qwen2_5_vl")
    text = answer_of(out)
    corners = ", ".join(map(str, model))
    assert text == f'```json\n[\n\t{{"bbox_2d": [{corners}], "label": "red car"}}\n]\n```'
    assert parse_answer(text).boxes == [Box(*model, "red car")]
    assert isinstance(out[0]["content"][0]["image"], Image.Image)  # read once, handed on
    assert messages[-1]["content"][0]["type"] == "boxes"  # the record itself is not changed


def test_points_clipping_and_qwen2_vl_form(picture):
    messages = boxes_sample(
        "street.png",
        [{"bbox_2d": [0, 0, 320, 200], "label": "all"}],  # past the right edge: clipped
        [{"point_2d": [150, 100], "label": "centre"}],
    )
    found = parse_answer(answer_of(place_boxes(messages, picture, ImageSettings(), "qwen2_5_vl")))
    assert found.boxes == [Box(0, 0, 308, 196, "all")] and found.points == [Point(154, 98, "centre")]
    qwen2 = answer_of(place_boxes(messages, picture, ImageSettings(), "qwen2_vl"))
    assert qwen2 == "<|object_ref_start|>all<|object_ref_end|><|box_start|>(0,0),(1000,1000)<|box_end|>"


def test_conversations_without_boxes_are_untouched(picture):
    messages = [{"role": "user", "content": [{"type": "image", "image": "street.png"}]}]
    assert place_boxes(messages, picture, ImageSettings(), "qwen2_5_vl") is messages


def test_encoded_sample_learns_the_rewritten_answer(picture, processor):
    records = [
        {"messages": boxes_sample("street.png", [{"bbox_2d": [30, 20, 150, 100], "label": "red car"}])},
        {"messages": boxes_sample("street.png", [{"bbox_2d": [30, 20, 150, 100]}], max_pixels=28 * 28 * 16)},
        {"messages": boxes_sample("street.png", [{"bbox_2d": [1, 2, 3], "label": "three numbers"}])},
        {"messages": boxes_sample("gone.png", [{"bbox_2d": [1, 2, 3, 4]}])},
        {"messages": [{"role": "assistant", "content": [{"type": "boxes", "boxes": [{"bbox_2d": [1, 2, 3, 4]}]}]}]},
    ]
    data = ConversationData([DataSource(str(write_jsonl(picture / "boxes.jsonl", records)))], processor, 4096)
    first, second, *bad = [data.encode((0, i)) for i in range(len(records))]
    tok = processor.tokenizer
    learned = tok.decode(first.labels[first.labels >= 0].tolist())
    assert '"bbox_2d": [31, 20, 154, 98]' in learned and '"label": "red car"' in learned
    assert '"bbox_2d": [11, 8, 56, 42]' in tok.decode(second.labels[second.labels >= 0].tolist())
    assert bad == [None, None, None]
    assert dict(data.skipped) == {"bad_messages": 2, "missing_media": 1}
