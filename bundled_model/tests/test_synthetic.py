"""The synthetic world: reproducible bytes, answers re-derived from scenes and checked against
pixels (images) and decoded frames (videos), the text corpus, and the CLI."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundled_model import synthetic
from bundled_model.synthetic import (
    WorldOptions,
    build_sample,
    main,
    tokenizer_corpus,
    world_items,
    world_text,
    write_dataset,
)
from bundled_model.synthetic_render import write_video
from bundled_model.synthetic_words import WORDS
from bundled_model.synthetic_world import (
    BACKGROUNDS,
    COLOURS,
    KINDS,
    LIGHT_BACKGROUNDS,
    MIN_CONTRAST,
    QUESTION_TEMPLATES,
    TEXTURE_AMPLITUDE,
    VQA_TYPES,
    Background,
    Shape,
    VideoEvent,
    VideoScene,
    sample_image_scene,
    sample_image_size,
    sample_video_scene,
    vqa_type,
)
from qwen_vl.processing import read_video

REPO = Path(__file__).resolve().parents[2]
NUMBERS = {1: "one", 2: "two", 3: "three"}
SMALL = WorldOptions(min_size=64, max_size=320)  # small images keep the tests fast


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def pixels(record: dict, root: Path) -> np.ndarray:
    return np.asarray(Image.open(root / record["messages"][0]["content"][0]["image"]).convert("RGB"))


def near(image: np.ndarray, rgb, tolerance: float) -> np.ndarray:
    """bool [H, W]: pixels within `tolerance` (RGB distance) of rgb."""
    return np.linalg.norm(image.astype(np.float32) - np.asarray(rgb, np.float32), axis=-1) <= tolerance


def region_of(bbox, width) -> str:
    """Reference rule: the region is the third of the width that holds the bbox centre."""
    centre = (bbox[0] + bbox[2]) / 2
    return ("left", "middle", "right")[min(int(3 * centre / width), 2)]


PHRASE = {"left": "on the left", "middle": "in the middle", "right": "on the right"}


def expected_caption(scene: dict) -> str:
    shapes = sorted(scene["shapes"], key=lambda s: s["bbox"][0] + s["bbox"][2])
    parts = [f"a {s['colour']} {s['kind']} {PHRASE[region_of(s['bbox'], scene['width'])]}" for s in shapes]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ----------------------------------------------------------------------------- reproducibility


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    def run(folder, seed, n, workers=1):
        for task, count in (("caption", n), ("vqa", n), ("ocr", n), ("video", 2), ("text", n)):
            write_dataset(tmp_path / folder, task, count, seed, SMALL, workers=workers)
        return tree_digest(tmp_path / folder)

    first, again, parallel, other = run("a", 7, 6), run("b", 7, 6), run("c", 7, 6, workers=2), run("d", 8, 6)
    assert len(first) == 5 + 3 * 6 + 2  # 5 JSONL files + 18 PNG + 2 MP4
    assert first == again == parallel
    assert all(first[name] != other[name] for name in first)
    # Sample i does not depend on how many samples are drawn.
    write_dataset(tmp_path / "e", "caption", 3, 7, SMALL)
    assert (tmp_path / "e/caption.jsonl").read_text().splitlines() == (
        tmp_path / "a/caption.jsonl"
    ).read_text().splitlines()[:3]


def test_light_backgrounds_only_when_asked_and_drawn_as_sampled(tmp_path):
    """Without the option no scene gets a light background; with it some do, their shapes keep
    MIN_CONTRAST from it, and the picture's background is that colour (within the texture's amplitude)."""
    plain = [sample_image_scene(np.random.default_rng(i), 200, 100).background.colour for i in range(200)]
    assert set(plain) <= set(BACKGROUNDS)
    write_dataset(tmp_path, "caption", 40, 3, replace(SMALL, light_backgrounds=True))
    records = read_records(tmp_path / "caption.jsonl")
    light = [r for r in records if r["scene"]["background"]["colour"] in LIGHT_BACKGROUNDS]
    assert 0 < len(light) < len(records)
    for record in light:
        rgb = LIGHT_BACKGROUNDS[record["scene"]["background"]["colour"]]
        assert all(math.dist(COLOURS[s["colour"]], rgb) >= MIN_CONTRAST for s in record["scene"]["shapes"])
        image = pixels(record, tmp_path)
        shape_free = np.ones(image.shape[:2], bool)
        for shape in record["scene"]["shapes"]:
            x0, y0, x1, y1 = shape["bbox"]
            shape_free[y0:y1, x0:x1] = False
        assert near(image, rgb, TEXTURE_AMPLITUDE * math.sqrt(3) + 1)[shape_free].mean() > 0.99


def test_world_text_is_seeded_and_covered_by_the_tokenizer_corpus():
    lines = world_text(3, 400)
    assert lines == world_text(3, 400) and lines != world_text(4, 400) and len(lines) == 400
    vocabulary = {word for text in tokenizer_corpus() for word in re.findall(r"[a-z0-9]+", text.lower())}
    used = {word for text in lines for word in re.findall(r"[a-z0-9]+", text.lower())}
    assert used <= vocabulary
    assert set(WORDS) <= vocabulary
    assert any(line.startswith("When does the") for line in lines) and any(line.startswith("a ") for line in lines)


def test_world_items_say_what_the_picture_shows():
    items = world_items(5, 300)
    assert items == world_items(5, 300) and {kind for kind, *_ in items} == {"caption", "vqa", "video", "ocr", "words"}
    for kind, prompt, answer, content in items:
        if kind == "caption":
            assert (prompt, content) == ("Describe this image.", answer)
        elif kind == "ocr":
            assert (prompt, content) == ("What does the text say?", answer)
        elif kind == "vqa" and prompt.startswith("What colour is the "):
            shape = prompt.removeprefix("What colour is the ").rstrip("?")
            assert f"{answer} {shape}" in content  # the caption names the asked shape in its colour
        elif kind in ("video", "words"):
            assert content == ""
    # the same drawing as the plain lines: a caption line is the answer, a question line "q a"
    assert world_text(5, 300) == [a if k in ("caption", "words") else f"{p} {a}" for k, p, a, _ in items]


def test_stage0_chats_tell_the_picture_in_the_vision_block_and_train(tmp_path):
    from bundled_model.pretrain_llm import MAX_PADS, render_chats
    from bundled_model.pretrain_llm import main as pretrain
    from bundled_model.tests.helpers import TINY
    from qwen_vl.modeling.model import QwenVLForConditionalGeneration
    from qwen_vl.processing import QwenVLProcessor, build_tokenizer

    tokenizer = build_tokenizer(tokenizer_corpus(), vocab_size=1024)
    items = world_items(2, 80)
    texts = render_chats(tokenizer, items, seed=0)
    media = [item for item in items if item[0] != "words"]
    assert len(texts) == len(media) > 0 and texts == render_chats(tokenizer, items, seed=0)
    for (kind, prompt, answer, content), text in zip(media, texts, strict=True):
        assert text.startswith("<|im_start|>system\n") and text.endswith(f"<|im_start|>assistant\n{answer}<|im_end|>\n")
        inside = text[text.index("<|vision_start|>") + 16 : text.index("<|vision_end|>")]
        if kind == "video":
            assert inside == "<|video_pad|>" * (len(inside) // 13) and 1 <= len(inside) // 13 <= MAX_PADS
        else:
            assert inside == content and f"<|vision_end|>{prompt}<|im_end|>" in text

    out = tmp_path / "llm"
    assert pretrain(["--out", str(out), "--steps", "3", "--lines", "50", "--chats", "50"], TINY) == 0
    vl = QwenVLForConditionalGeneration.from_llm(out, vision_config={"hidden_size": 32, "depth": 1, "num_heads": 1})
    assert vl.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert vl.config.text.rope_theta == 1e6
    # the processor every later stage inherits upscales small pictures to MIN_PIXELS
    settings = QwenVLProcessor.from_pretrained(out).image_settings
    assert (settings.min_pixels, settings.max_pixels) == (50176, 100352)


def test_stage0_frozen_embeddings_stay_as_drawn_while_the_rest_learns(tmp_path):
    import torch
    from safetensors.torch import load_file

    from bundled_model.pretrain_llm import main as pretrain
    from bundled_model.tests.helpers import TINY

    def weights(steps: int) -> dict:
        out = tmp_path / f"llm{steps}"
        assert pretrain(["--out", str(out), "--steps", str(steps), "--lines", "40", "--chats", "40"], TINY) == 0
        return load_file(out / "model.safetensors")

    embed, mlp = "model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"
    untrained, short, long = weights(0), weights(1), weights(4)
    assert torch.equal(short[embed], long[embed]) and not torch.equal(short[mlp], long[mlp])
    assert torch.equal(untrained[embed], long[embed])  # what the vision step reads is there before training
    assert 0.09 < float(long[embed].std()) < 0.11  # the EMBEDDING_STD draw, not the 0.02 init


def test_stage0_answer_accuracy_scores_the_answer_tokens_only():
    import torch

    from bundled_model.pretrain_llm import answer_accuracy
    from qwen_vl.processing import build_tokenizer

    tokenizer = build_tokenizer(tokenizer_corpus(), vocab_size=1024)
    answer_start = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]

    class Teller:
        """Predicts each next token, right everywhere or only outside the answers."""

        def __init__(self, answers_right: bool):
            self.answers_right = answers_right

        def __call__(self, ids, position_ids):
            seq = ids[0].tolist()
            nxt = seq[1:] + [0]
            start = max(i for i in range(len(seq)) if seq[i : i + len(answer_start)] == answer_start)
            if not self.answers_right:  # wrong from the last header on (answer and its <|im_end|>)
                nxt[start + len(answer_start) - 1 :] = [0] * (len(seq) - start - len(answer_start) + 1)
            return type("Out", (), {"logits": torch.nn.functional.one_hot(torch.tensor([nxt]), len(tokenizer)).float()})

    right, wrong = (
        answer_accuracy(Teller(True), tokenizer, seed=3, n=60),
        answer_accuracy(Teller(False), tokenizer, seed=3, n=60),
    )
    assert set(right) == set(wrong) == {"caption", "ocr", *VQA_TYPES}  # each VQA type on its own
    assert set(right.values()) == {1.0} and set(wrong.values()) == {0.0}


# ----------------------------------------------------------------------------- images


def test_captions_match_scene_and_pixels(tmp_path):
    write_dataset(tmp_path, "caption", 40, 0, SMALL)
    records = read_records(tmp_path / "caption.jsonl")
    counts = {len(r["scene"]["shapes"]) for r in records}
    assert counts == {1, 2, 3}
    for record in records:
        scene = record["scene"]
        assert record["messages"][1]["content"][0]["text"] == record["answer"] == expected_caption(scene)
        image = pixels(record, tmp_path)
        assert image.shape == (scene["height"], scene["width"], 3)
        background = BACKGROUNDS[scene["background"]["colour"]]
        palette_mask = np.zeros(image.shape[:2], bool)
        inside = np.zeros(image.shape[:2], bool)
        for shape in scene["shapes"]:
            x0, y0, x1, y1 = shape["bbox"]
            rgb = COLOURS[shape["colour"]]
            assert math.dist(rgb, background) >= MIN_CONTRAST
            # Filled shapes: the bbox centre pixel has the shape's colour, exactly.
            assert tuple(image[(y0 + y1) // 2, (x0 + x1) // 2]) == rgb
            assert (image[y0:y1, x0:x1] == rgb).all(-1).mean() > 0.25  # a star fills ~1/3 of its box
            inside[y0:y1, x0:x1] = True
            palette_mask |= (image == rgb).all(-1)
        # No shape colour outside the shapes: the picture holds exactly len(shapes) shapes.
        assert not (palette_mask & ~inside).any()
        # Background pixels stay within the texture amplitude of the base colour.
        assert np.abs(image[~inside].astype(int) - background).max() <= TEXTURE_AMPLITUDE


def derive_vqa_answer(question: str, scene: dict) -> str:
    shapes = {s["kind"]: s for s in scene["shapes"]}
    if question == "How many shapes are there?":
        return NUMBERS[len(scene["shapes"])]
    if match := re.fullmatch(r"What colour is the (\w+)\?", question):
        return shapes[match[1]]["colour"]
    if match := re.fullmatch(r"Where is the (\w+)\?", question):
        return PHRASE[region_of(shapes[match[1]]["bbox"], scene["width"])]
    match = re.fullmatch(r"Is there a (\w+) (\w+)\?", question)
    return "yes" if any(s["colour"] == match[1] and s["kind"] == match[2] for s in scene["shapes"]) else "no"


def test_vqa_answers_rederived_from_scene(tmp_path):
    write_dataset(tmp_path, "vqa", 60, 1, SMALL)
    records = read_records(tmp_path / "vqa.jsonl")
    assert {r["question_type"] for r in records} == {"colour", "count", "exists", "where"}
    exists = [r["answer"] for r in records if r["question_type"] == "exists"]
    assert "yes" in exists and "no" in exists
    for record in records:
        question = record["messages"][0]["content"][1]["text"]
        assert record["answer"] == derive_vqa_answer(question, record["scene"])
        shape = record["scene"]["shapes"][0]
        x0, y0, x1, y1 = shape["bbox"]
        assert tuple(pixels(record, tmp_path)[(y0 + y1) // 2, (x0 + x1) // 2]) == COLOURS[shape["colour"]]


def test_ocr_text_answer_and_ink(tmp_path):
    write_dataset(tmp_path, "ocr", 30, 2, SMALL)
    records = read_records(tmp_path / "ocr.jsonl")
    assert {len(r["scene"]["words"]) for r in records} == {1, 2, 3}
    for record in records:
        scene = record["scene"]
        assert record["answer"] == " ".join(scene["words"]) and set(scene["words"]) <= set(WORDS)
        assert record["messages"][0]["content"][1]["text"] == "What does the text say?"
        image = pixels(record, tmp_path)
        x0, y0, x1, y1 = scene["text_bbox"]
        assert 0 <= x0 < x1 <= scene["width"] and 0 <= y0 < y1 <= scene["height"]
        ink = near(image, COLOURS[scene["colour"]], 40)
        outside = ink.copy()
        outside[y0:y1, x0:x1] = False
        assert ink[y0:y1, x0:x1].sum() > 0 and not outside.any()


def test_scene_samplers_keep_their_rules():
    rng = np.random.default_rng(0)
    for _ in range(300):
        width, height = sample_image_size(rng, 64, 1024)
        assert 64 <= width <= 1024 and 64 <= height <= 1024 and max(width / height, height / width) <= 4.0
        scene = sample_image_scene(rng, width, height)
        kinds = [s.kind for s in scene.shapes]
        assert len(set(kinds)) == len(kinds) and set(kinds) <= set(KINDS)
        for shape in scene.shapes:
            x0, y0, x1, y1 = shape.bbox
            third = ("left", "middle", "right").index(shape.region)
            assert third * width / 3 <= x0 < x1 <= (third + 1) * width / 3 and 0 <= y0 < y1 <= height
            assert x1 - x0 >= 8
    for _ in range(300):
        scene = sample_video_scene(rng, (4, 7, 30))
        event = scene.event
        assert 3 <= scene.duration <= 10 and 1 <= event.second <= scene.duration - 1
        assert scene.width % 2 == 0 and scene.height % 2 == 0 and 112 <= min(scene.width, scene.height)
        event_colours = {scene.shapes[0].colour, event.new_colour}
        positions = [scene.shape_state(0, f)[2] for f in (0, scene.frame_count - 1)]
        for x0, y0, x1, y1 in positions:
            assert 0 <= x0 and x1 <= scene.width and 0 <= y0 and y1 <= scene.height
        for other in scene.shapes[1:]:
            assert other.colour not in event_colours and other.kind != scene.shapes[0].kind


# ----------------------------------------------------------------------------- video


def video_scene(event: VideoEvent, fps: int, colour="red") -> VideoScene:
    background = Background("grey", "plain", 0)
    shapes = [Shape("star", colour, [40, 50, 80, 90]), Shape("square", "yellow", [130, 20, 160, 50])]
    return VideoScene(176, 128, fps, 6, background, shapes, event)


EVENTS = {
    "appear": VideoEvent("appear", 3),
    "disappear": VideoEvent("disappear", 2),
    "colour": VideoEvent("colour", 4, new_colour="blue"),
    "move": VideoEvent("move", 1, direction="right", distance=60, move_seconds=2),
}


@pytest.mark.parametrize(("name", "fps"), [("appear", 7), ("disappear", 30), ("colour", 23), ("move", 4)])
def test_decoded_video_shows_event_at_recorded_second(tmp_path, name, fps):
    scene = video_scene(EVENTS[name], fps)
    path = tmp_path / "clip.mp4"
    write_video(scene, path)
    video = read_video(str(path))  # the model's 2 fps sampling
    assert video.video_fps == fps and video.total_frames == scene.duration * fps
    frames, second = video.frames.numpy(), scene.event.second
    times = [index / fps for index in video.indices]
    assert sum(t < second for t in times) >= 2 and sum(t >= second for t in times) >= 2
    red, blue = COLOURS["red"], COLOURS["blue"]
    area = 40 * 40
    for frame, t in zip(frames, times, strict=True):
        red_pixels, blue_pixels = near(frame, red, 50).sum(), near(frame, blue, 50).sum()
        if name == "appear":
            assert (red_pixels > area // 4) == (t >= second), (t, red_pixels)
        elif name == "disappear":
            assert (red_pixels > area // 4) == (t < second), (t, red_pixels)
        elif name == "colour":
            assert (red_pixels > area // 4, blue_pixels > area // 4) == ((t < second), (t >= second)), t
        else:  # constant speed from second 1 to 3, 60 px to the right, then at rest
            shift = round(60 * min(max(t - second, 0) / 2, 1))
            assert near(frame[70:71, 60 + shift : 61 + shift], red, 50).all(), (t, shift)
            if shift >= 20:
                assert not near(frame[70:71, 60:61], red, 50).any()
        assert near(frame[35:36, 145:146], COLOURS["yellow"], 50).all()  # the distractor stays


def expected_state(scene: dict, index: int, time: float) -> tuple[bool, str, list[int]]:
    """Reference rule from the recorded scene: (visible, colour, bbox) of shape `index` at `time` s."""
    shape, event = scene["shapes"][index], scene["event"]
    if index != event["shape"]:
        return True, shape["colour"], shape["bbox"]
    after = time >= event["second"]
    if event["type"] in ("appear", "disappear"):
        return after == (event["type"] == "appear"), shape["colour"], shape["bbox"]
    if event["type"] == "colour":
        return True, event["new_colour"] if after else shape["colour"], shape["bbox"]
    step = round(event["distance"] * min(max(time - event["second"], 0) / event["move_seconds"], 1))
    dx, dy = {"left": (-step, 0), "right": (step, 0), "up": (0, -step), "down": (0, step)}[event["direction"]]
    x0, y0, x1, y1 = shape["bbox"]
    return True, shape["colour"], [x0 + dx, y0 + dy, x1 + dx, y1 + dy]


def test_video_dataset_records_event_and_fps(tmp_path):
    options = WorldOptions(fps_set=(7, 23))  # held-out rates
    write_dataset(tmp_path, "video", 6, 5, options)
    records = read_records(tmp_path / "video.jsonl")
    assert len({r["scene"]["event"]["type"] for r in records}) >= 3
    for record in records:
        scene, event = record["scene"], record["scene"]["event"]
        assert record["fps"] == scene["fps"] in (7, 23) and record["event_second"] == event["second"]
        video = read_video(str(tmp_path / record["messages"][0]["content"][0]["video"]))
        assert video.total_frames == scene["duration"] * scene["fps"]
        # Every shape, in every frame the model samples, is where the scene says, in its colour.
        for frame, index in zip(video.frames.numpy(), video.indices, strict=True):
            for number in range(len(scene["shapes"])):
                visible, colour, (x0, y0, x1, y1) = expected_state(scene, number, index / scene["fps"])
                centre = frame[(y0 + y1) // 2, (x0 + x1) // 2].astype(float)
                assert (math.dist(centre, COLOURS[colour]) < 40) == visible, (record["id"], index, number)
        question, answer = record["messages"][0]["content"][1]["text"], record["answer"]
        when = f"At {event['second']} second{'s' if event['second'] != 1 else ''}."
        shape = scene["shapes"][event["shape"]]
        expected = {
            "appear": (f"When does the {shape['colour']} {shape['kind']} appear?", when),
            "disappear": (f"When does the {shape['colour']} {shape['kind']} disappear?", when),
            "colour": (f"When does the {shape['kind']} change colour?", when),
        }
        if event["type"] == "move":
            way = {"left": "To the left.", "right": "To the right.", "up": "Up.", "down": "Down."}
            assert (question, answer) in {
                (f"Which way does the {shape['kind']} move?", way[event["direction"]]),
                (f"When does the {shape['kind']} start moving?", when),
            }
        else:
            assert (question, answer) == expected[event["type"]]


# ----------------------------------------------------------------------------- writing and CLI


def test_interrupted_run_keeps_previous_dataset(tmp_path, monkeypatch):
    write_dataset(tmp_path, "caption", 3, 0, SMALL)
    before = tree_digest(tmp_path)
    real = synthetic.build_sample

    def failing(task, seed, index, *args):
        if index == 2:
            raise KeyboardInterrupt
        return real(task, seed, index, *args)

    monkeypatch.setattr(synthetic, "build_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path, "caption", 3, 1, SMALL)
    assert tree_digest(tmp_path) == before
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["caption"]  # no staging left behind


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "data"
    command = [
        sys.executable,
        "-m",
        "bundled_model.synthetic",
        "--out",
        str(out),
        "--task",
        "all",
        "--n",
        "2",
        "--seed",
        "3",
    ]
    result = subprocess.run([*command, "--max-size", "200", "--fps-set", "7"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for task in ("caption", "vqa", "ocr", "video", "text"):
        assert len(read_records(out / f"{task}.jsonl")) == 2
    assert {r["fps"] for r in read_records(out / "video.jsonl")} == {7}
    record = read_records(out / "caption.jsonl")[0]
    assert max(record["scene"]["width"], record["scene"]["height"]) <= 200
    assert record == build_sample("caption", 3, 0, WorldOptions(max_size=200), tmp_path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "caption", "--n", "0"], "argument --n: 0 is below the minimum 1"),
        (["--task", "pictures", "--n", "2"], "argument --task: invalid choice"),
        (
            ["--task", "video", "--n", "2", "--fps-set", "4,x"],
            "argument --fps-set: '4,x' is not a comma-separated list",
        ),
        (
            ["--task", "video", "--n", "2", "--fps-set", "4,90"],
            "argument --fps-set: frame rate 90 is outside 2..60 fps",
        ),
        (
            ["--task", "ocr", "--n", "2", "--max-size", "40"],
            "argument --max-size: 40 is below the smallest image side 64",
        ),
        (["--task", "ocr", "--n", "2", "--seed", "-1"], "argument --seed: -1 is below the minimum 0"),
        (["--task", "ocr", "--n", "2", "--max-size", "8"], "argument --max-size: 8 is below the minimum 32"),
        (["--task", "ocr", "--n", "many"], "argument --n: 'many' is not a whole number"),
        (["--n", "2"], "the following arguments are required: --task"),
        (["--task", "video", "--n", "2", "--light-backgrounds"], "argument --light-backgrounds: for caption, vqa"),
        (
            ["--task", "caption", "--n", "2", "--light-backgrounds", "--renderer", "alt"],
            "argument --light-backgrounds: for caption, vqa",
        ),
    ],
)
def test_cli_bad_arguments_one_line_exit_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "data"), *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "data").exists()


def test_cli_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(target), "--task", "text", "--n", "2"])
    assert exit_info.value.code == 2 and "exists and is not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_vqa_type_names_the_template_a_question_was_asked_by():
    for qtype in VQA_TYPES:
        assert vqa_type(QUESTION_TEMPLATES[qtype].format(colour="green", kind="star")) == qtype
    with pytest.raises(ValueError, match="not a VQA question"):
        vqa_type(QUESTION_TEMPLATES["appear"].format(colour="green", kind="star"))
