"""Grounding: reading boxes and points out of answers, coordinate frames, IoU, drawing."""

from __future__ import annotations

import pytest
from PIL import Image

from qwen_vl.grounding import (
    Box,
    Frame,
    Grounding,
    Point,
    clip,
    draw,
    format_answer,
    frame_for,
    grounding_prompt,
    grounding_to_original,
    iou,
    parse_answer,
    to_model,
    to_original,
)
from qwen_vl.processing.image import ImageSettings, image_to_patches

FENCED = '```json\n[\n\t{"bbox_2d": [135, 114, 1016, 672], "label": "house"},\n\t{"bbox_2d": [12, 40, 88, 96], "label": "tree"}\n]\n```'

# (answer, boxes as (x1, y1, x2, y2, label), points as (x, y, label))
ANSWERS = [
    (FENCED, [(135, 114, 1016, 672, "house"), (12, 40, 88, 96, "tree")], []),
    ('[{"bbox_2d": [10, 20, 30, 40], "label": "red car"}]', [(10, 20, 30, 40, "red car")], []),
    ('{"bbox_2d": [10, 20, 30, 40], "label": "cat"}', [(10, 20, 30, 40, "cat")], []),
    (
        'The red circle is here: {"bbox_2d": [5, 6, 50, 60], "label": "red circle"}. It is on the left.',
        [(5, 6, 50, 60, "red circle")],
        [],
    ),
    (
        'Sure!\n```json\n[{"point_2d": [120, 80], "label": "cup"}, {"point_2d": [300, 90], "label": "cup"}]\n```\nTwo cups.',
        [],
        [(120, 80, "cup"), (300, 90, "cup")],
    ),
    # corners given the wrong way round are put in order
    ('[{"bbox_2d": [30, 40, 10, 20], "label": "x"}]', [(10, 20, 30, 40, "x")], []),
    # float and string numbers, corner pairs
    ('[{"bbox_2d": [[10.5, 20], [30, "40"]], "label": "pair"}]', [(10.5, 20, 30, 40, "pair")], []),
    # a wrapper object
    ('{"objects": [{"bbox_2d": [1, 2, 3, 4], "label": "a"}]}', [(1, 2, 3, 4, "a")], []),
    # broken: cut by max_new_tokens inside the second object (the complete one is kept)
    ('```json\n[\n\t{"bbox_2d": [1, 2, 3, 4], "label": "a"},\n\t{"bbox_2d": [5, 6', [(1, 2, 3, 4, "a")], []),
    # broken: missing comma between objects
    (
        '[{"bbox_2d": [1, 2, 3, 4], "label": "a"} {"bbox_2d": [5, 6, 7, 8], "label": "b"}]',
        [(1, 2, 3, 4, "a"), (5, 6, 7, 8, "b")],
        [],
    ),
    # broken: Python-style quotes, trailing comma
    ("[{'bbox_2d': [1, 2, 3, 4], 'label': 'dog'},]", [(1, 2, 3, 4, "dog")], []),
    # broken: unclosed fence
    ('```json\n[{"point_2d": [7, 8], "label": "eye"}]', [], [(7, 8, "eye")]),
    # Qwen2-VL special tokens, two boxes for one reference
    (
        "<|object_ref_start|>the dog<|object_ref_end|><|box_start|>(100,200),(300,400)<|box_end|>"
        "<|object_ref_start|>ball<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|>",
        [(100, 200, 300, 400, "the dog"), (1, 2, 3, 4, "ball")],
        [],
    ),
    # Qwen2-VL with the special tokens skipped in decoding
    ("the dog(100,200),(300,400)", [(100, 200, 300, 400, "")], []),
    # nothing readable
    ("I cannot find a red car in this image.", [], []),
    ("[1, 2, 3]", [], []),
    ('[{"bbox_2d": [1, 2, 3], "label": "three numbers"}]', [], []),
    ("", [], []),
]


@pytest.mark.parametrize(("answer", "boxes", "points"), ANSWERS)
def test_parse_answer_forms(answer, boxes, points):
    found = parse_answer(answer)
    assert [(*b.corners, b.label) for b in found.boxes] == [tuple(map(_num, b[:4])) + (b[4],) for b in boxes]
    assert [(*p.coords, p.label) for p in found.points] == [(float(p[0]), float(p[1]), p[2]) for p in points]
    assert bool(found) == bool(boxes or points)


def _num(value):
    return float(value)


def test_format_answer_parses_back_for_both_families():
    boxes = [Box(10, 20, 30, 40, "red car"), Box(1, 2, 3, 4, "tyre")]
    points = [Point(5, 6, "cup")]
    fenced = format_answer(boxes, points, "qwen2_5_vl")
    assert fenced.startswith("```json\n[") and '"bbox_2d": [10, 20, 30, 40]' in fenced
    assert parse_answer(fenced) == Grounding(boxes, points)
    tokens = format_answer(boxes, model_type="qwen2_vl")
    assert tokens.startswith("<|object_ref_start|>red car<|object_ref_end|><|box_start|>(10,20),(30,40)<|box_end|>")
    assert parse_answer(tokens).boxes == boxes


# ---- coordinate frames ----------------------------------------------------------------------------
SIZES = [  # (width, height, max_pixels or None)
    (640, 480, None),  # about its own size
    (30, 20, None),  # tiny: upscaled to the pixel floor
    (57, 1000, None),  # tall and thin
    (5000, 100, None),  # very wide: aspect ratio 50
    (4000, 3000, 256 * 28 * 28),  # large: downscaled to the budget
    (333, 777, 100352),  # the bundled model's budget
]


@pytest.mark.parametrize(("width", "height", "max_pixels"), SIZES)
def test_frame_is_the_processor_resize(width, height, max_pixels):
    settings = ImageSettings()
    frame = frame_for("qwen2_5_vl", width, height, settings, max_pixels=max_pixels)
    overrides = {"max_pixels": max_pixels} if max_pixels else {}
    _, (_, grid_h, grid_w) = image_to_patches(Image.new("RGB", (width, height)), settings, **overrides)
    assert (frame.model_width, frame.model_height) == (grid_w * 14, grid_h * 14)
    assert (frame.width, frame.height) == (width, height)


@pytest.mark.parametrize(("width", "height", "max_pixels"), SIZES)
def test_model_to_original_to_model_is_exact(width, height, max_pixels):
    frame = frame_for("qwen2_5_vl", width, height, max_pixels=max_pixels)
    mw, mh = frame.model_width, frame.model_height
    for corners in [(0, 0, mw, mh), (1, 2, mw // 3, mh // 2), (mw // 2, mh // 4, mw - 1, mh - 3)]:
        box = Box(*corners, label="x")
        assert to_model(to_original(box, frame), frame) == box
    point = Point(mw // 5, mh - 1)
    assert to_model(to_original(point, frame), frame) == point


@pytest.mark.parametrize(("width", "height", "max_pixels"), SIZES)
def test_original_to_model_to_original_within_one_model_unit(width, height, max_pixels):
    """A model unit covers width/model_width original pixels: the round trip is off by at most
    half of one; where the model sees the image at least at its own size that is exact."""
    frame = frame_for("qwen2_5_vl", width, height, max_pixels=max_pixels)
    box = Box(width // 7, height // 5, width - width // 3, height - 1)
    back = to_original(to_model(box, frame), frame)
    step_x, step_y = width / frame.model_width, height / frame.model_height
    for got, want, step in zip(back.corners, box.corners, (step_x, step_y) * 2, strict=True):
        assert abs(got - want) <= step / 2 + 1e-9
        if step <= 1:
            assert round(got) == want


def test_upscaled_small_image_round_trips_every_pixel():
    frame = frame_for("qwen2_5_vl", 30, 20)
    assert frame.model_width > 30 and frame.model_height > 20
    for x in range(31):
        for y in range(21):
            back = to_original(to_model(Point(x, y), frame), frame)
            assert (round(back.x), round(back.y)) == (x, y)


def test_qwen2_vl_frame_is_0_to_1000():
    frame = frame_for("qwen2_vl", 640, 480)
    assert frame == Frame(640, 480, 1000, 1000) and frame.normalised
    assert to_original(Box(0, 0, 1000, 1000), frame).corners == [0, 0, 640, 480]
    assert to_original(Box(500, 250, 750, 500), frame).corners == [320, 120, 480, 240]
    assert to_model(Box(320, 120, 480, 240), frame).corners == [500, 250, 750, 500]
    found = parse_answer("<|object_ref_start|>cat<|object_ref_end|><|box_start|>(500,250),(750,500)<|box_end|>")
    assert grounding_to_original(found, frame).boxes == [Box(320, 120, 480, 240, "cat")]


def test_unknown_model_type_is_an_error():
    with pytest.raises(ValueError, match="llava"):
        frame_for("llava", 10, 10)


def test_qwen2_5_answer_to_original_pixels_and_clipped():
    frame = frame_for("qwen2_5_vl", 1000, 500, max_pixels=100352)  # resized 448 x 224
    assert (frame.model_width, frame.model_height) == (448, 224)
    found = parse_answer('[{"bbox_2d": [0, 0, 224, 112], "label": "a"}, {"bbox_2d": [400, 200, 460, 240]}]')
    a, b = grounding_to_original(found, frame).boxes
    assert a.corners == pytest.approx([0, 0, 500, 250])
    assert b.corners == pytest.approx([400 / 0.448, 200 / 0.448, 1000, 500])  # past the edge: clipped


def test_clip_point_and_box():
    assert clip(Point(-5, 900), 100, 50) == Point(0, 50)
    assert clip(Box(-1, -2, 120, 30, "z"), 100, 50) == Box(0, 0, 100, 30, "z")


# ---- IoU -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),  # half overlap: 50 / (100 + 100 - 50)
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges
        ((0, 0, 10, 10), (2, 2, 8, 8), 36 / 100),  # one inside the other
        ((0, 0, 4, 4), (2, 2, 6, 6), 4 / 28),
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # empty boxes
    ],
)
def test_iou_worked_examples(a, b, expected):
    assert iou(Box(*a), Box(*b)) == pytest.approx(expected)
    assert iou(Box(*b), Box(*a)) == pytest.approx(expected)


def test_box_from_coco_xywh():
    assert Box.from_xywh([10, 20, 30, 40]).corners == [10, 20, 40, 60]


# ---- prompts and drawing -----------------------------------------------------------------------------
def test_prompts():
    assert (
        grounding_prompt("red car")
        == "Locate every red car in the image and output the bbox coordinates in JSON format."
    )
    assert "every object" in grounding_prompt(None)
    assert "point coordinates" in grounding_prompt("cup", points=True)


def test_draw_marks_boxes_and_points_in_distinct_colours():
    image = Image.new("RGB", (200, 100), "white")
    drawn = draw(image, [Box(10, 40, 60, 90, "a"), Box(100, 40, 150, 90, "b")], [Point(180, 50, "c")])
    assert drawn.size == image.size and image.getpixel((10, 60)) == (255, 255, 255)  # the input is untouched
    left, right, dot = drawn.getpixel((10, 60)), drawn.getpixel((100, 60)), drawn.getpixel((180, 50))
    assert len({left, right, dot}) == 3 and (255, 255, 255) not in {left, right, dot}
    same = draw(image, [Box(10, 40, 60, 90, "a"), Box(100, 40, 150, 90, "a")])
    assert same.getpixel((10, 60)) == same.getpixel((100, 60))  # one label, one colour
