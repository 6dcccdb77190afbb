"""Stage 3 of the bundled model (bundled_model/video_time.py): the labels it lays out for clips and the run it makes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from bundled_model.clip_events import changed_tokens, event_tokens, scene_from_record, shown_frames
from bundled_model.synthetic import main as synthetic
from bundled_model.time_code import token_seconds
from bundled_model.video_time import clip_batch, clip_labels, data_source
from bundled_model.video_time import main as video_time
from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.processing import QwenVLProcessor
from qwen_vl.training.config import DataSource
from qwen_vl.training.data import ConversationData
from qwen_vl.weights import load_state_dict

REPO = Path(__file__).resolve().parents[2]
TOWER = {"hidden_size": 32, "depth": 2, "num_heads": 2, "intermediate_size": 64, "fullatt_block_indexes": [1]}


@pytest.fixture(scope="module")
def world(tmp_path_factory, world_llm):  # noqa: F811
    """(tiny VL model directory, its processor, a set of 6 clips and 4 captions)."""
    root = tmp_path_factory.mktemp("stage3")
    model = QwenVLForConditionalGeneration.from_llm(world_llm, vision_config=TOWER, dtype=torch.float32)
    model.save_pretrained(root / "model")
    processor = QwenVLProcessor.from_pretrained(world_llm)
    processor.save_pretrained(root / "model")
    for task, n in (("video", 6), ("caption", 4)):
        assert (
            synthetic(["--out", str(root / "data"), "--task", task, "--n", str(n), "--max-size", "128", "--quiet"]) == 0
        )
    return root / "model", processor, root / "data"


def encoded(world, task: str) -> list[tuple]:
    _, processor, data_dir = world
    data = ConversationData([DataSource(str(data_dir / f"{task}.jsonl"))], processor, 4096)
    records = [json.loads(line) for line in (data_dir / f"{task}.jsonl").read_text().splitlines()]
    return [(data.encode((0, i)), record) for i, record in enumerate(records)]


def test_a_clips_labels_name_its_video_tokens_changes_seconds_and_the_event_its_answer_looks_up(world):
    processor = world[1]
    merge, factor = processor.image_settings.merge_size, processor.image_settings.factor
    looked_up = 0
    for sample, record in encoded(world, "video"):
        labels = clip_labels(sample, record, processor)
        video = sample.input_ids == processor.video_token_id
        assert torch.equal(labels.probed, video)
        scene, (_, h, w) = scene_from_record(record), sample.video_grid_thw[0].tolist()
        changed = changed_tokens(scene, shown_frames(scene, processor), h // merge, w // merge, factor)
        assert torch.equal(labels.changed, changed.flatten()) and len(labels.changed) == int(video.sum())
        assert torch.equal(labels.seconds, token_seconds(sample, merge))
        if record["question_type"] == "direction":
            assert labels.lookup is None
            continue
        position, targets = labels.lookup
        looked_up += 1
        # the position predicts the answer's number: the next token is the second's first digit
        assert processor.tokenizer.decode(sample.input_ids[position + 1]) == record["answer"].split()[1][0]
        event = event_tokens(scene, shown_frames(scene, processor), changed)
        assert torch.equal(targets[video], event.flatten()) and not targets[~video].any()
    assert looked_up >= 3


def test_pictures_have_no_probe_labels_and_a_batch_lays_each_samples_labels_on_its_own_row(world):
    processor = world[1]
    picture, picture_record = encoded(world, "caption")[0]
    clips = [pair for pair in encoded(world, "video") if pair[1]["question_type"] != "direction"][:2]
    pairs = [(s, clip_labels(s, r, processor)) for s, r in [clips[0], (picture, picture_record), clips[1]]]
    assert not pairs[1][1].probed.any() and pairs[1][1].lookup is None
    model = QwenVLForConditionalGeneration.from_pretrained(world[0])
    batch = clip_batch(pairs, model.position_ids, 0)
    width = batch.batch.input_ids.shape[1]
    assert torch.equal(batch.probed, batch.batch.input_ids == processor.video_token_id)
    assert torch.equal(batch.changed, torch.cat([pairs[0][1].changed, pairs[2][1].changed]))
    assert [row for row, _ in batch.lookup_rows] == [0, 2]
    assert batch.lookup_targets.shape == (2, width)
    for (_, position), targets, (_, labels) in zip(batch.lookup_rows, batch.lookup_targets, pairs[::2], strict=True):
        assert position == labels.lookup[0]
        assert (
            torch.equal(targets[: len(labels.lookup[1])], labels.lookup[1])
            and not targets[len(labels.lookup[1]) :].any()
        )


def test_token_seconds_give_each_video_token_the_second_its_absolute_time_id_says(world):
    processor = world[1]
    model = QwenVLForConditionalGeneration.from_pretrained(world[0])
    per_second, video = model.config.vision.tokens_per_second, processor.video_token_id
    for sample, _ in encoded(world, "video"):
        seconds = token_seconds(sample, processor.image_settings.merge_size)
        positions, _ = model.position_ids(
            sample.input_ids[None], None, None, sample.video_grid_thw, sample.second_per_grid_ts
        )
        temporal = positions[0, 0, sample.input_ids == video]
        assert len(seconds) == len(temporal) and seconds[0] == 0 and seconds[-1] >= 2  # clips last 3-10 s
        # the M-RoPE temporal id is the token's time in ticks of 1/per_second s, cut down to a tick
        ticks = (temporal - temporal[0]).float() / per_second
        assert ((seconds - ticks).abs() <= 0.5 + 1 / per_second).all()


def test_a_weight_follows_the_last_colon_of_a_data_item():
    assert data_source("a/b.jsonl") == DataSource("a/b.jsonl", 1.0)
    assert data_source("a/b.jsonl:0.25") == DataSource("a/b.jsonl", 0.25)
    assert data_source("c:/b.jsonl") == DataSource("c:/b.jsonl", 1.0)


def test_a_run_trains_merger_and_llm_and_leaves_the_tower_as_it_was(world, tmp_path, capsys):
    model_dir, _, data_dir = world
    out = tmp_path / "stage3"
    data = ["--data", str(data_dir / "video.jsonl"), f"{data_dir / 'caption.jsonl'}:0.5"]
    assert video_time(["--model", str(model_dir), "--out", str(out), *data, "--steps", "3"]) == 0
    assert "step 3/3: answers" in capsys.readouterr().out
    before, after = load_state_dict(model_dir), load_state_dict(out)
    assert before.keys() == after.keys()  # the probes are not written
    for name, tensor in before.items():
        moved = not torch.equal(tensor, after[name])
        if name.startswith("visual.") and not name.startswith("visual.merger."):
            assert not moved, name
        elif name.startswith(("visual.merger.", "model.layers.0.self_attn.q_proj")):
            assert moved, name
    QwenVLForConditionalGeneration.from_pretrained(out)


def test_a_missing_model_is_one_line_and_exit_2(tmp_path, capsys):
    assert video_time(["--model", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--data", "x.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no model there" in err


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
def test_two_processes_split_each_step_and_process_0_alone_logs_and_writes(world, tmp_path):
    model_dir, _, data_dir = world
    out = tmp_path / "stage3"
    launch = [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "bundled_model.video_time", "--model", str(model_dir), "--out", str(out), "--data", str(data_dir / "video.jsonl"),
        "--steps", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    run = subprocess.run(launch, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-30000:]
    assert run.stdout.count("step 2/2: answers") == 1 and run.stdout.count(f"wrote {out}") == 1
    before, after = load_state_dict(model_dir), load_state_dict(out)
    assert not torch.equal(before["visual.merger.mlp.0.weight"], after["visual.merger.mlp.0.weight"])
    assert all(torch.equal(t, after[n]) for n, t in before.items() if n.startswith("visual.blocks."))


def test_a_batch_that_does_not_split_over_the_processes_is_one_line(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("accelerate.Accelerator.num_processes", 3)
    model_dir, _, data_dir = world
    args = ["--model", str(model_dir), "--out", str(tmp_path / "o"), "--data", str(data_dir / "video.jsonl")]
    assert video_time(args) == 2
    assert capsys.readouterr().err == "error: the batch of 8 does not split over 3 processes\n"
