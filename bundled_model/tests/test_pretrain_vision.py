"""Vision pre-training: token labels from scenes, and a tower that stage 1 starts from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bundled_model import pretrain_vision as pv
from bundled_model.synthetic import WorldOptions, write_dataset
from bundled_model.synthetic_render import font, render_image_scene
from qwen_vl.modeling.vision import VisionEncoder
from qwen_vl.processing import ImageSettings
from qwen_vl.training.config import ConfigError, config_from_dict
from qwen_vl.training.train import build_model
from tests.training.helpers import base_config, write_config


def test_token_boxes_tile_the_original_image():
    boxes = pv.token_boxes(height=100, width=300, grid_h=2, grid_w=3, unit=28)
    assert len(boxes) == 6
    assert boxes[0] == (0.0, 0.0, 100.0, 50.0) and boxes[5] == (200.0, 50.0, 300.0, 100.0)  # raster order


def test_shape_labels_mark_tokens_under_a_shape_and_tiny_shapes_too():
    boxes = pv.token_boxes(height=56, width=168, grid_h=2, grid_w=6, unit=28)  # 28 px tokens, no scaling
    scene = {
        "shapes": [
            {"kind": "circle", "colour": "red", "bbox": [0, 0, 56, 56], "region": "left"},  # centres of 0, 1, 6, 7
            {"kind": "star", "colour": "blue", "bbox": [120, 30, 128, 38], "region": "right"},  # its own centre's token
        ]
    }
    colours, kinds, regions, owners = pv.shape_labels(scene, boxes)
    red, blue = pv.COLOUR_CLASSES.index("red"), pv.COLOUR_CLASSES.index("blue")
    circle, star = pv.KIND_CLASSES.index("circle"), pv.KIND_CLASSES.index("star")
    assert colours == [red, red, 0, 0, 0, 0, red, red, 0, 0, blue, 0]
    assert kinds == [circle, circle, 0, 0, 0, 0, circle, circle, 0, 0, star, 0]
    left, right, no = pv.REGION_CLASSES.index("left"), pv.REGION_CLASSES.index("right"), pv.IGNORE
    assert regions == [left, left, no, no, no, no, left, left, no, no, right, no]  # asked of shape tokens only
    assert owners == [1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 2, 0]


def test_shape_labels_follow_the_drawn_pixels_not_the_bbox():
    boxes = pv.token_boxes(height=140, width=140, grid_h=5, grid_w=5, unit=28)
    scene = {"shapes": [{"kind": "circle", "colour": "green", "bbox": [0, 0, 140, 140]}]}
    colours, kinds, _, _ = pv.shape_labels(scene, boxes)
    green, circle = pv.COLOUR_CLASSES.index("green"), pv.KIND_CLASSES.index("circle")
    corners = {0, 4, 20, 24}  # inside the bbox, outside the circle
    assert colours == [0 if k in corners else green for k in range(25)]
    assert kinds == [0 if k in corners else circle for k in range(25)]


def test_word_labels_follow_the_glyph_advances():
    size, origin = 40, [10, 20]
    text = "apple kite"
    left, top, right, bottom = font(size).getbbox(text)
    scene = {
        "words": ["apple", "kite"],
        "font_size": size,
        "origin": origin,
        "text_bbox": [origin[0] + left, origin[1] + top, origin[0] + right, origin[1] + bottom],
    }
    row_y = (scene["text_bbox"][1] + scene["text_bbox"][3]) / 2
    edges = [origin[0] + font(size).getlength(text[:k]) for k in range(len(text) + 1)]
    centres = [(edges[k] + edges[k + 1]) / 2 for k in (0, 4, 5, 6, 9)]  # a, e, the space, k, e
    boxes = [(x - 1, row_y - 1, x + 1, row_y + 1) for x in centres] + [(0, 0, 2, 2)]  # last: above the text
    labels, owners = pv.word_labels(scene, boxes)
    assert [pv.WORD_CLASSES[i] for i in labels] == ["apple", "apple", "none", "kite", "kite", "none"]
    assert owners == [1, 1, 0, 2, 2, 0]


def test_a_word_too_small_for_any_token_centre_labels_the_token_holding_its_centre():
    size, origin = 10, [100, 100]
    left, top, right, bottom = font(size).getbbox("kite")
    scene = {
        "words": ["kite"],
        "font_size": size,
        "origin": origin,
        "text_bbox": [origin[0] + left, origin[1] + top, origin[0] + right, origin[1] + bottom],
    }
    boxes = pv.token_boxes(height=224, width=224, grid_h=4, grid_w=4, unit=56)  # centres far from the word
    labels, owners = pv.word_labels(scene, boxes)
    assert labels == [0] * 5 + [pv.WORD_CLASSES.index("kite")] + [0] * 10 and owners == [0] * 5 + [1] + [0] * 10


@pytest.fixture
def world(tmp_path):
    for task in ("caption", "ocr"):
        write_dataset(tmp_path / "world", task, 6, 0, pv_options())
    return tmp_path / "world"


def pv_options():
    return WorldOptions(min_size=64, max_size=160)


def test_encode_gives_one_label_row_per_merged_token(world):
    records = pv.read_records([str(world / "caption.jsonl"), str(world / "ocr.jsonl")])
    settings = ImageSettings(min_pixels=3136, max_pixels=12544)
    for record, base in records:
        pixels, grid, labels, targets, count = pv.encode(record, base, settings)
        assert pixels.shape == (grid[1] * grid[2], 1176) and labels.shape == (pixels.shape[0] // 4, 5)
        assert torch.equal(labels[:, 4] > 0, (labels[:, 1] > 0) | (labels[:, 2] > 0))  # shape or word tokens
        scene = record["scene"]
        pairs, places = len(pv.PAIRS), len(pv.PLACES)
        if "shapes" in scene:
            assert (labels[:, 0] > 0).any() and (labels[:, 2] == 0).all()  # some token sees each scene's shapes
            on_shapes = labels[:, 3][labels[:, 1] > 0]
            regions = {pv.REGION_CLASSES[r] for r in on_shapes.tolist()}
            assert (
                regions == {s["region"] for s in scene["shapes"]}
                and (labels[:, 3][labels[:, 1] == 0] == pv.IGNORE).all()
            )
            shown = {pv.PAIRS[i] for i in (targets[:pairs] == 1).nonzero().flatten().tolist()}
            assert shown == {(s["colour"], s["kind"]) for s in scene["shapes"]} and count == len(scene["shapes"])
            assert (
                int(targets[pairs : pairs + places].sum()) == count and (targets[pairs + places :] == pv.IGNORE).all()
            )
        else:
            assert (labels[:, [0, 1, 3]] == pv.IGNORE).all() and (labels[:, 2] > 0).any()
            words = [pv.WORDS[i] for i in (targets[pairs + places :] == 1).nonzero().flatten().tolist()]
            assert sorted(words) == sorted(set(scene["words"])) and count == pv.IGNORE
            assert (targets[: pairs + places] == pv.IGNORE).all()


def test_pooled_kind_reads_the_mean_token_of_each_shape_of_each_image():
    heads = pv.Heads(len(pv.KIND_CLASSES), word_rows={})  # plain linear token heads
    with torch.no_grad():  # the kind head reads the features as kind scores
        heads.tokens[1].weight.copy_(torch.eye(len(pv.KIND_CLASSES)))
        heads.tokens[1].bias.zero_()
    kind = {name: pv.KIND_CLASSES.index(name) for name in ("circle", "square", "triangle", "star")}
    one_hot = torch.eye(len(pv.KIND_CLASSES))
    rows = [  # (feature, kind label, shape id); image A has 3 tokens, image B 3
        (3 * one_hot[kind["circle"]], kind["circle"], 1),
        (one_hot[kind["square"]], kind["circle"], 1),  # this token alone is wrong; the shape's mean is right
        (one_hot[0], 0, 0),  # background: in no shape
        (one_hot[kind["star"]], kind["star"], 1),  # image B's shape 1 is not image A's shape 1
        (one_hot[kind["triangle"]], kind["square"], 2),
        (one_hot[kind["triangle"]], kind["square"], 2),
    ]
    features = torch.stack([f for f, _, _ in rows])
    labels = torch.zeros(len(rows), 5, dtype=torch.long)
    labels[:, 1] = torch.tensor([k for _, k, _ in rows])
    labels[:, 4] = torch.tensor([s for _, _, s in rows])
    loss, stats = heads.pooled(features, [3, 3], labels)
    assert stats == [[2, 3], [0, 0]] and loss > 0  # A1 circle and B1 star right, B2 wrong; no words
    assert heads.pooled(features, [3, 3], labels.index_fill(1, torch.tensor([4]), 0))[1] == [[0, 0], [0, 0]]


def test_pooled_word_reads_the_mean_token_of_each_word():
    width = len(pv.WORD_CLASSES)
    heads = pv.Heads(width, word_rows={})
    with torch.no_grad():  # the word head reads the features as word scores
        heads.tokens[2].weight.copy_(torch.eye(width))
        heads.tokens[2].bias.zero_()
    apple, kite = pv.WORD_CLASSES.index("apple"), pv.WORD_CLASSES.index("kite")
    one_hot = torch.eye(width)
    features = torch.stack([3 * one_hot[apple], one_hot[kite], one_hot[kite], one_hot[0]])
    labels = torch.zeros(4, 5, dtype=torch.long)
    labels[:, 1] = pv.IGNORE  # a text scene asks no kind
    labels[:, 2] = torch.tensor([apple, apple, kite, 0])
    labels[:, 4] = torch.tensor([1, 1, 2, 0])
    loss, stats = heads.pooled(features, [4], labels)
    assert stats == [[0, 0], [2, 2]] and loss > 0  # the first word's mean is apple though one token says kite


def test_the_grid_loss_pulls_each_token_to_the_stage0b_slot_of_what_lies_under_it():
    torch.manual_seed(0)
    rows = {name: torch.randn(len(classes) - 1, 6) for name, classes in pv.SHAPE_WORDS.items()}
    heads = pv.Heads(6, word_rows=rows)
    red, circle, left = (
        pv.SHAPE_WORDS[n].index(w) for n, w in (("colour", "red"), ("kind", "circle"), ("region", "left"))
    )
    labels = torch.tensor(
        [
            [red, circle, 0, left, 1],  # a scene's shape token
            [red, circle, 0, pv.IGNORE, 1],  # a drill's: no region asked
            [0, 0, 0, pv.IGNORE, 0],  # background
            [pv.IGNORE, pv.IGNORE, 5, pv.IGNORE, 1],  # an OCR word: not in the grid
        ]
    )
    grid = pv.grid_targets(labels[:3], rows)
    pair = rows["colour"][red - 1] + rows["kind"][circle - 1]
    assert torch.allclose(grid[0], pair + rows["region"][left - 1]) and torch.allclose(grid[1], pair)
    assert torch.equal(grid[2], torch.zeros(6))
    on_grid = torch.cat([grid, torch.randn(1, 6)])  # whatever the OCR token holds
    assert heads.grid_loss(on_grid, labels) == 0
    off = on_grid.clone()
    off[2] += 1.0  # a noisy background token
    assert torch.isclose(heads.grid_loss(off, labels), 6 / grid.pow(2).sum())


def test_shape_drills_label_their_one_shape_and_leave_places_unasked():
    rng = np.random.default_rng(3)
    settings = ImageSettings(min_pixels=3136, max_pixels=12544)
    pairs = len(pv.PAIRS)
    for _ in range(20):
        scene = pv.drill_scene(np.random.default_rng(rng.integers(1 << 30)))
        (shape,) = scene.shapes
        assert pv.DRILL_SIDES[0] <= scene.width == scene.height <= pv.DRILL_SIDES[1]
        assert shape.bbox[2] <= scene.width and shape.bbox[3] <= scene.height and shape.region is None
        pixels, grid, labels, targets, count = pv.encode_image(render_image_scene(scene), scene.to_dict(), settings)
        kinds = set(labels[:, 1].tolist()) - {0}
        assert kinds == {pv.KIND_CLASSES.index(shape.kind)} and count == 1
        assert (labels[:, 3] == pv.IGNORE).all()  # no region on a drill
        assert targets[pv.PAIRS.index((shape.colour, shape.kind))] == 1 and int(targets[:pairs].sum()) == 1
        assert (targets[pairs:] == pv.IGNORE).all()  # a drill has no region and no words


def test_drills_put_about_half_of_their_shapes_under_42_px():
    scenes = [pv.drill_scene(np.random.default_rng(seed)) for seed in range(400)]
    small, canvas = np.array([s.shapes[0].bbox[2] - s.shapes[0].bbox[0] for s in scenes]), [s.width for s in scenes]
    assert small.min() >= pv.SMALL_DRILL_PX and (small <= np.array(canvas)).all()
    assert 0.45 < (small < 42).mean() < 0.7 and (small >= 70).any()  # large shapes stay in the mix


def test_drills_keep_their_own_size_under_a_processor_that_upscales_small_pictures():
    small, upscaling = (
        ImageSettings(min_pixels=3136, max_pixels=100352),
        ImageSettings(min_pixels=50176, max_pixels=100352),
    )
    drawn = [pv.encode_drill(np.random.default_rng(seed), upscaling) for seed in range(6)]
    alone = [pv.encode_drill(np.random.default_rng(seed), small) for seed in range(6)]
    assert [d[1] for d in drawn] == [a[1] for a in alone]  # the same grids
    assert all(grid[1] * grid[2] * 196 < 50176 for _, grid, *_ in drawn)  # below the processor's minimum


def test_pretrained_tower_is_written_and_stage1_starts_from_it(tmp_path, world, world_llm, capsys):
    llm = world_llm
    vision = {"hidden_size": 32, "depth": 2, "num_heads": 2, "intermediate_size": 48, "fullatt_block_indexes": [1]}
    weights = tmp_path / "vision.safetensors"
    init = {"llm": str(llm), "vision": vision, "vision_weights": str(weights)}
    data = world / "caption.jsonl"
    settings = base_config(tmp_path, data, stage=1, init=init, max_steps=1)
    config = write_config(tmp_path / "c.yaml", **settings)

    args = ["--config", str(config), "--data", str(data), str(world / "ocr.jsonl"), "--steps", "30"]
    assert pv.main([*args, "--heldout", str(data)], batch_size=4, drills=2) == 0
    out = capsys.readouterr().out
    assert "held-out token accuracy colour" in out and "kind per shape" in out and "word per word" in out
    tower = load_file(weights)
    assert tower and all(k.startswith("visual.") for k in tower)

    model, _ = build_model(config_from_dict(settings))
    fresh = pv.small_normal_init_(VisionEncoder(model.config.vision)).state_dict()
    for name, tensor in tower.items():
        assert torch.equal(model.state_dict()[name], tensor), name  # stage 1 starts from the written tower
    assert not torch.equal(tower["visual.patch_embed.proj.weight"], fresh["patch_embed.proj.weight"])


def test_missing_vision_weights_is_one_clear_error(tmp_path, world):
    cfg = config_from_dict(
        base_config(
            tmp_path,
            world / "caption.jsonl",
            stage=1,
            init={"llm": str(tmp_path), "vision": {}, "vision_weights": str(tmp_path / "none.safetensors")},
        )
    )
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')
    with pytest.raises(ConfigError, match="init.vision_weights: file not found"):
        build_model(cfg)


def test_llm_option_stands_in_for_the_configs_llm(tmp_path, world, world_llm, capsys):
    """The build runs this step beside stage 0b, from stage 0's LLM, before the config's init.llm exists."""
    llm = world_llm
    weights = tmp_path / "v.safetensors"
    vision = {"hidden_size": 32, "depth": 1, "num_heads": 2, "intermediate_size": 48, "fullatt_block_indexes": [0]}
    init = {"llm": str(tmp_path / "not_yet"), "vision": vision, "vision_weights": str(weights)}
    config = write_config(tmp_path / "c.yaml", **base_config(tmp_path, world / "caption.jsonl", stage=1, init=init))
    args = ["--config", str(config), "--data", str(world / "caption.jsonl"), "--steps", "1"]
    assert pv.main(args, batch_size=2, drills=0) == 2 and "not_yet" in capsys.readouterr().err
    assert not weights.exists()
    assert pv.main([*args, "--llm", str(llm)], batch_size=2, drills=0) == 0
    width = json.loads((llm / "config.json").read_text())["hidden_size"]
    assert load_file(weights)["visual.merger.mlp.2.weight"].shape[0] == width


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', "no synthetic image samples"),
        ("not json\n", "line 1 is not JSON"),
        (None, "No such file"),
    ],
)
def test_bad_data_is_one_clear_line(tmp_path, world_llm, capsys, content, message):
    data = tmp_path / "d.jsonl"
    if content is not None:
        data.write_text(content)
    llm = world_llm
    init = {"llm": str(llm), "vision": {}, "vision_weights": str(tmp_path / "v.safetensors")}
    config = write_config(tmp_path / "c.yaml", **base_config(tmp_path, tmp_path / "x.jsonl", stage=1, init=init))
    assert pv.main(["--config", str(config), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "v.safetensors").exists()
