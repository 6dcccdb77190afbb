"""The synthetic world's grounding task and its evaluation-only renderer: answers in the bundled
model's coordinates checked against pixels, against training's grounding collator and by hand;
the alt renderer's sizes, looks and boxes; the CLI's --renderer option."""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundled_model import synthetic_render_alt as alt
from bundled_model.synthetic import (
    TASK_CODES,
    WorldOptions,
    build_sample,
    ground_answer,
    main,
    model_image_settings,
    sample_rng,
    write_dataset,
)
from bundled_model.synthetic_world import (
    BACKGROUNDS,
    COLOURS,
    MIN_CONTRAST,
    Background,
    ImageScene,
    Shape,
    caption,
    colours_on,
)
from qwen_vl.grounding import parse_answer
from qwen_vl.training.config import load_config

REPO = Path(__file__).resolve().parents[2]
SMALL = WorldOptions(min_size=64, max_size=320)
ALT = WorldOptions(renderer="alt")
ONE = re.compile(r"Locate the (\w+) (\w+) in the image and output its bbox coordinates in JSON format\.")
EVERY = "Locate every shape in the image and output their bbox coordinates in JSON format."


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def image_of(record: dict, root: Path) -> np.ndarray:
    return np.asarray(Image.open(root / record["messages"][0]["content"][0]["image"]).convert("RGB"))


def scaled(box, frame) -> list[int]:
    """Reference rule: original pixels -> the model's whole pixels."""
    sx, sy = frame["model_width"] / frame["width"], frame["model_height"] / frame["height"]
    return [round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)]


def check_ground_record(record: dict) -> None:
    """What every ground line holds, whichever renderer drew it."""
    scene, objects, frame = record["scene"], record["objects"], record["frame"]
    prompt = record["messages"][0]["content"][1]["text"]
    assert record["messages"][1]["content"][0]["text"] == record["answer"]
    assert record["answer"].startswith("```json\n[\n\t{") and record["answer"].endswith("}\n]\n```")
    labels = [f"{s['colour']} {s['kind']}" for s in scene["shapes"]]
    if record["question_type"] == "one":
        asked = ONE.fullmatch(prompt)
        assert asked and len(objects) == 1 and objects[0]["label"] == f"{asked[1]} {asked[2]}"
        assert labels.count(objects[0]["label"]) == 1  # only a shape its name picks out is asked for
    else:
        assert record["question_type"] == "every" and prompt == EVERY
        assert sorted(o["label"] for o in objects) == sorted(labels)
        assert [o["bbox"][0] for o in objects] == sorted(o["bbox"][0] for o in objects)  # left to right
    assert (frame["width"], frame["height"]) == (scene["width"], scene["height"])
    found = parse_answer(record["answer"]).boxes
    assert [b.label for b in found] == [o["label"] for o in objects]
    for box, obj in zip(found, objects, strict=True):
        assert box.corners == obj["bbox_2d"] == scaled(obj["bbox"], frame)
        assert all(isinstance(v, int) for v in obj["bbox_2d"] + obj["bbox"])


# ----------------------------------------------------------------------------- the ground task


def test_existing_tasks_keep_their_seeds():
    """New tasks and the alt renderer add seed streams; the old tasks' streams are as they were."""
    assert [TASK_CODES[t] for t in ("caption", "vqa", "ocr", "video", "text", "ground")] == [1, 2, 3, 4, 5, 6]
    expected = np.random.default_rng(np.random.SeedSequence([7, 2, 11])).integers(0, 2**62, 4)
    assert (sample_rng(7, "vqa", 11).integers(0, 2**62, 4) == expected).all()
    assert not (sample_rng(7, "vqa", 11, "alt").integers(0, 2**62, 4) == expected).all()


def test_bundled_model_frame_is_the_processor_resize():
    config = json.loads((REPO / "qwen_vl/assets/model/preprocessor_config.json").read_text())
    settings = model_image_settings()
    assert (settings.min_pixels, settings.max_pixels) == (config["min_pixels"], config["max_pixels"]) == (50176, 100352)


def test_ground_answer_worked_example():
    """300 x 200 is resized to 308 x 196 (28-multiples, 60,368 px within [50,176, 100,352]):
    x scales by 308/300, y by 196/200."""
    shapes = [Shape("circle", "blue", [200, 100, 260, 160], "right"), Shape("square", "red", [30, 20, 90, 80], "left")]
    scene = ImageScene(300, 200, Background("grey", "plain", 0), shapes)
    answers = {}
    for seed in range(20):
        prompt, answer, fields = ground_answer(np.random.default_rng(seed), scene, [s.bbox for s in shapes])
        answers[prompt] = (answer, fields)
    assert fields["frame"] == {"width": 300, "height": 200, "model_width": 308, "model_height": 196}
    every, fields = answers[EVERY]
    assert every == (
        "```json\n[\n"
        '\t{"bbox_2d": [31, 20, 92, 78], "label": "red square"},\n'  # 30.8, 19.6, 92.4, 78.4
        '\t{"bbox_2d": [205, 98, 267, 157], "label": "blue circle"}\n'  # 205.33, 98, 266.93, 156.8
        "]\n```"
    )
    assert fields["question_type"] == "every" and [o["bbox"] for o in fields["objects"]] == [
        shapes[1].bbox,
        shapes[0].bbox,
    ]
    one, _ = answers["Locate the blue circle in the image and output its bbox coordinates in JSON format."]
    assert one == '```json\n[\n\t{"bbox_2d": [205, 98, 267, 157], "label": "blue circle"}\n]\n```'
    assert len(answers) == 3  # every, and each shape alone


def test_ground_lines_match_the_pixels(tmp_path):
    write_dataset(tmp_path, "ground", 16, 3, SMALL)
    records = read_records(tmp_path / "ground.jsonl")
    assert {r["question_type"] for r in records} == {"one", "every"}
    assert {len(r["scene"]["shapes"]) for r in records if r["question_type"] == "every"} >= {2, 3}
    for record in records:
        check_ground_record(record)
        assert record["id"].startswith("ground-3-") and record["messages"][0]["content"][0]["image"].endswith(".png")
        image = image_of(record, tmp_path)
        by_label = {f"{s['colour']} {s['kind']}": s for s in record["scene"]["shapes"]}
        for obj in record["objects"]:
            shape = by_label[obj["label"]]
            x0, y0, x1, y1 = shape["bbox"]
            rows, columns = np.nonzero((image[y0:y1, x0:x1] == COLOURS[shape["colour"]]).all(-1))
            # the box of the pixels painted in the shape's colour: for a star, smaller than its scene bbox
            assert obj["bbox"] == [x0 + columns.min(), y0 + rows.min(), x0 + columns.max() + 1, y0 + rows.max() + 1]
            if shape["kind"] != "star":
                assert obj["bbox"] == shape["bbox"]


def test_ground_answers_are_what_the_training_collator_writes(tmp_path):
    """A `boxes` item in original pixels, encoded by training's grounding collator with the bundled
    model's settings, becomes exactly the line's answer text."""
    from qwen_vl.training.data import place_boxes

    write_dataset(tmp_path, "ground", 6, 4, SMALL)
    for record in read_records(tmp_path / "ground.jsonl"):
        boxes = [{"bbox_2d": o["bbox"], "label": o["label"]} for o in record["objects"]]
        messages = [record["messages"][0], {"role": "assistant", "content": [{"type": "boxes", "boxes": boxes}]}]
        placed = place_boxes(messages, tmp_path, model_image_settings(), "qwen2_5_vl")
        assert placed[1]["content"][0] == {"type": "text", "text": record["answer"]}


# ----------------------------------------------------------------------------- the alt renderer


def test_alt_sizes_and_shape_boxes():
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(300):
        scene, style = alt.sample_alt_scene(rng)
        width, height = scene.width, scene.height
        assert 256 <= width <= 1024 and 256 <= height <= 1024 and max(width / height, height / width) <= 3.01
        ratios.append(width / height)
        assert not 0.40 <= style.star_inner <= 0.52 and 0.30 <= style.star_inner <= 0.62
        assert 60 <= style.jpeg_quality <= 95
        for shape in scene.shapes:
            x0, y0, x1, y1 = shape.bbox
            third = ("left", "middle", "right").index(shape.region)
            assert third * width / 3 <= x0 < x1 <= (third + 1) * width / 3 and 0 <= y0 < y1 <= height
            aspect = (y1 - y0) / (x1 - x0)
            if shape.kind == "triangle":  # training's triangles are as high as wide
                assert not 0.9 < aspect < 1.1
            elif shape.kind == "star":  # a star's points span 1.809 high and 1.902 wide
                assert abs(aspect - 0.951) < 0.03
            else:
                assert aspect == 1.0
    assert min(ratios) < 0.5 and max(ratios) > 2.0  # odd aspect ratios do occur


def test_alt_backgrounds_keep_the_contrast_rule():
    """As in the world: every background colour is at least MIN_CONTRAST from each shape colour."""
    rng = np.random.default_rng(1)
    kinds = set()
    for _ in range(300):
        world = str(rng.choice(list(BACKGROUNDS)))  # the world's background picks the shape colours
        colours = [str(c) for c in rng.choice(colours_on(world), int(rng.integers(1, 4)))]
        background = alt.sample_alt_background(rng, colours, BACKGROUNDS[world])
        kinds.add(background.kind)
        pixels = alt.background_array(background, 40, 30).reshape(-1, 3)
        for colour in colours:
            assert np.linalg.norm(pixels - np.asarray(COLOURS[colour]), axis=1).min() >= MIN_CONTRAST - 1
    assert kinds == {"plain", "gradient"}


@pytest.mark.parametrize("kind", ["circle", "square", "triangle", "star"])
@pytest.mark.parametrize("side", [9, 25, 40, 161])
@pytest.mark.parametrize("proportion", [0.6, 0.85, 1.15, 1.5])  # triangles' height / base
def test_alt_shapes_touch_all_four_sides_of_their_box(kind, side, proportion):
    """The box a shape is drawn to is the box of its drawn pixels: the thinnest star points and the
    sharpest triangle apex still reach into the edge pixels."""
    x0, y0, x1, y1 = alt.alt_bbox(Shape(kind, "red", [3, 5, 3 + side, 5 + side]), proportion)
    assert 3 <= x0 < x1 <= 3 + side and 5 <= y0 < y1 <= 5 + side
    width, height = x1 - x0, y1 - y0
    share = alt.coverage(kind, width, height, 0.30)
    assert share.shape == (height, width) and 0.0 <= share.min() and share.max() <= 1.0
    assert share[0].any() and share[-1].any() and share[:, 0].any() and share[:, -1].any()
    area = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}.get(kind)
    if area is not None:  # anti-aliased coverage adds up to the shape's area
        assert abs(share.mean() - area) < 0.03


def test_alt_star_has_its_inner_radius():
    """The even-odd test on the star's outline: the centre is in, the notch between two points out."""
    thin, fat = alt.coverage("star", 200, 190, 0.32), alt.coverage("star", 200, 190, 0.6)
    assert thin.mean() < fat.mean() and thin[105, 100] == fat[105, 100] == 1.0  # the centre: 190 / 1.809 down
    # 0.45 of the outer radius from the centre towards the notch between the top and upper-left points
    assert thin[66, 72] == 0.0 and fat[66, 72] == 1.0


def test_alt_lines_follow_the_grammar_and_pixels(tmp_path):
    for task in ("caption", "vqa", "ground"):
        write_dataset(tmp_path, task, 4, 9, ALT)
    for task in ("caption", "vqa", "ground"):
        for record in read_records(tmp_path / f"{task}.jsonl"):
            scene = record["scene"]
            assert record["id"].startswith(f"{task}-alt-9-") and record["renderer"] == "alt"
            assert record["messages"][0]["content"][0]["image"].endswith(".jpg")
            image = image_of(record, tmp_path)
            assert image.shape == (scene["height"], scene["width"], 3)
            assert scene["background"]["kind"] in ("plain", "gradient")
            shapes = [Shape(**s) for s in scene["shapes"]]
            if task == "caption":
                assert record["answer"] == caption(ImageScene(scene["width"], scene["height"], None, shapes))
            if task == "ground":
                check_ground_record(record)
                assert [o["bbox"] for o in record["objects"]] == sorted(
                    [s.bbox for s in shapes if f"{s.colour} {s.kind}" in {o["label"] for o in record["objects"]}]
                )
            for shape in shapes:  # the box centre is in every shape; JPEG moves colours a little
                x0, y0, x1, y1 = shape.bbox
                centre = image[(y0 + y1) // 2, (x0 + x1) // 2].astype(float)
                assert math.dist(centre, COLOURS[shape.colour]) < 40, (record["id"], shape)
            # the picture is a function of the line: drawn again from scene and style, it matches
            redrawn = alt.render_alt_scene(
                ImageScene(scene["width"], scene["height"], alt.AltBackground(**scene["background"]), shapes),
                alt.AltStyle(**record["style"]),
            )
            assert np.abs(np.asarray(redrawn, float) - image).mean() < 3


def test_alt_is_reproducible_and_differs_from_train(tmp_path):
    first = build_sample("ground", 5, 2, ALT, tmp_path)
    (tmp_path / "again").mkdir()
    assert build_sample("ground", 5, 2, ALT, tmp_path / "again") == first
    assert (tmp_path / "000002.jpg").read_bytes() == (tmp_path / "again/000002.jpg").read_bytes()
    assert build_sample("ground", 5, 2, WorldOptions(), tmp_path)["scene"] != first["scene"]
    with pytest.raises(ValueError, match="not ocr"):
        build_sample("ocr", 5, 2, ALT, tmp_path)


def test_alt_renderer_is_separate_and_for_evaluation_only():
    """It shares no drawing code with the training renderer, and only the dataset writer imports it."""
    source = (REPO / "bundled_model/synthetic_render_alt.py").read_text()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom) and node.module}
    assert "bundled_model.synthetic_render" not in imported and "PIL.ImageDraw" not in source
    users = [
        path.relative_to(REPO).as_posix()
        for folder in ("bundled_model", "training", "qwen_vl", "eval")
        for path in (REPO / folder).rglob("*.py")
        if "synthetic_render_alt" in path.read_text() and "tests" not in path.parts
    ]
    assert users == ["bundled_model/synthetic.py"]
    # the build draws alt pictures only into held-out folders, which no stage trains on
    drawn = [line for line in (REPO / "bundled_model/build.sh").read_text().splitlines() if "--renderer" in line]
    assert drawn and all("--out data/bundled/heldout" in line and "--renderer alt" in line for line in drawn)
    trained = [
        source.path for config in (REPO / "bundled_model/configs").glob("*.yaml") for source in load_config(config).data
    ]
    assert trained and not any("heldout" in path for path in trained)


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_ground_and_alt_sets(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "g"), "--task", "ground", "--n", "2", "--seed", "3", "--quiet"]) == 0
    assert main(["--out", str(tmp_path / "a"), "--task", "vqa", "--n", "2", "--renderer", "alt", "--quiet"]) == 0
    assert [r["task"] for r in read_records(tmp_path / "g/ground.jsonl")] == ["ground", "ground"]
    assert sorted(p.name for p in (tmp_path / "a/images/vqa").iterdir()) == ["000000.jpg", "000001.jpg"]
    capsys.readouterr()


def test_all_still_writes_the_five_first_tasks(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--task", "all", "--n", "1", "--max-size", "96", "--fps-set", "4", "--quiet"]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == [
        "caption.jsonl",
        "ocr.jsonl",
        "text.jsonl",
        "video.jsonl",
        "vqa.jsonl",
    ]
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "ocr", "--renderer", "alt"], "argument --renderer: alt draws caption, vqa, ground pictures only"),
        (["--task", "all", "--renderer", "alt"], "only, not all"),
        (["--task", "video", "--renderer", "alt"], "only, not video"),
        (["--task", "ground", "--renderer", "alt", "--max-size", "300"], "argument --max-size: the alt renderer"),
        (["--task", "ground", "--renderer", "paint"], "argument --renderer: invalid choice"),
    ],
)
def test_cli_refuses_alt_for_other_tasks(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "data"), "--n", "2", *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "data").exists()
