"""Training data: assistant-only labels, deterministic weighted order, bad samples skipped and
counted, and configs that fail with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from qwen_vl.processing import QwenVLProcessor
from qwen_vl.training.config import ConfigError, DataSource, load_config
from qwen_vl.training.data import IGNORE, ConversationData, assistant_labels
from tests.training.helpers import (
    COLOURS,
    base_config,
    caption_messages,
    caption_set,
    model_dir,
    subprocess_env,
    text_messages,
    write_config,
    write_jsonl,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    return QwenVLProcessor.from_pretrained(model_dir(tmp_path_factory.mktemp("m") / "tiny"))


def test_labels_cover_assistant_replies_and_their_end_token_only(processor):
    tok = processor.tokenizer
    conversation = [
        {"role": "user", "content": "How many shapes are there?"},
        {"role": "assistant", "content": "There are three shapes."},
        {"role": "user", "content": "What does the text say?"},
        {"role": "assistant", "content": "hello world"},
    ]
    ids = processor(conversation, add_generation_prompt=False, padding_side="right").input_ids[0].tolist()
    labels = assistant_labels(ids, tok)
    kept = [(i, t) for i, t in enumerate(labels) if t != IGNORE]
    # by hand: each reply's tokens plus <|im_end|>, each right after "<|im_start|>assistant\n"
    header = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    want = []
    for reply in ("There are three shapes.", "hello world"):
        reply_ids = tok(reply, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
        starts = [i for i in range(len(ids)) if ids[i : i + len(header)] == header]
        start = next(
            s + len(header) for s in starts if ids[s + len(header) : s + len(header) + len(reply_ids)] == reply_ids
        )
        want += [(start + k, t) for k, t in enumerate(reply_ids)]
    assert kept == want
    assert tok.decode([t for _, t in kept]) == "There are three shapes.<|im_end|>hello world<|im_end|>"


def test_epoch_order_is_a_function_of_seed_and_epoch(tmp_path, processor):
    a = write_jsonl(tmp_path / "a.jsonl", [{"messages": text_messages(f"q{i}", "a")} for i in range(6)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"messages": text_messages(f"r{i}", "a")} for i in range(4)])
    sources = [DataSource(str(a), 1.5), DataSource(str(b), 0.5)]
    data = ConversationData(sources, processor, 64)
    again = ConversationData(sources, processor, 64)
    order = data.epoch_order(seed=3, epoch=0)
    assert order == again.epoch_order(seed=3, epoch=0)
    assert order != data.epoch_order(seed=3, epoch=1) and order != data.epoch_order(seed=4, epoch=0)
    assert data.epoch_length() == len(order) == 9 + 2  # round(1.5 * 6) + round(0.5 * 4)
    from_a = sorted(line for f, line in order if f == 0)
    assert len(from_a) == 9 and set(range(6)) <= set(from_a)  # one whole copy plus 3 more
    assert len({line for f, line in order if f == 1}) == 2
    # the stream continues into the next epoch
    assert data.refs_at(3, 10, 2) == [order[10], data.epoch_order(3, 1)[0]]


def test_bad_samples_are_skipped_and_counted(tmp_path, processor):
    caption_set(tmp_path)
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png at all")
    records = [
        {"messages": caption_messages("images/red.png", "a red circle")},
        {"messages": caption_messages("images/missing.png", "a red circle")},
        {"messages": caption_messages("images/broken.png", "a red circle")},
        "{not json",
        {"text": "no messages key"},
        {"messages": [{"content": "no role"}]},
        {"messages": text_messages("How many shapes are there?" * 30, "many")},
        {"messages": [{"role": "user", "content": "a question with no answer"}]},
        {"messages": text_messages("fine", "There are three shapes.")},
    ]
    data = ConversationData([DataSource(str(write_jsonl(tmp_path / "d.jsonl", records)))], processor, max_seq_len=120)
    encoded = [data.encode((0, i)) for i in range(len(records))]
    assert [e is not None for e in encoded] == [True, False, False, False, False, False, False, False, True]
    assert dict(data.skipped) == {
        "missing_media": 1,
        "bad_media": 1,
        "bad_json": 2,
        "bad_messages": 1,
        "too_long": 1,
        "no_labels": 1,
    }


def test_training_run_reports_skips_and_finishes(tmp_path):
    caption_set(tmp_path)
    records = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    records += [{"messages": caption_messages("images/missing.png", "x")}, "{oops"]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    config = write_config(tmp_path / "c.yaml", **base_config(tmp_path, data, max_steps=3, batch_size=2))
    result = subprocess.run(
        [sys.executable, "-m", "qwen_vl.training.train", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["skipped"] == {"missing_media": 1, "bad_json": 1}
    assert "skipped 1 sample(s): missing_media" in result.stdout
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_steps": "ten"}, "max_steps must be an integer"),
        ({"lr": {"llm": "fast"}}, "lr.llm must be a number"),
        ({"colour": 1}, "unknown key 'colour'"),
        ({"stage": 4}, "stage must be 1, 2 or 3"),
        ({"init": {"model": "/nonexistent/model"}}, "model directory not found: /nonexistent/model"),
        ({"data": [{"path": "/nonexistent.jsonl"}]}, "data file /nonexistent.jsonl: file not found"),
        ({"train": {"vision": False, "merger": False, "llm": False}}, "nothing is trained"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be no, bf16 or fp16"),
    ],
)
def test_bad_config_gives_one_clear_line(tmp_path, change, message):
    data = caption_set(tmp_path)
    config = base_config(tmp_path, data)
    config.update(change)
    path = write_config(tmp_path / "c.yaml", **config)
    result = subprocess.run(
        [sys.executable, "-m", "qwen_vl.training.train", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=subprocess_env(),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


def test_overrides_and_yaml_errors(tmp_path):
    data = caption_set(tmp_path)
    path = write_config(tmp_path / "c.yaml", **base_config(tmp_path, data))
    cfg = load_config(path, ["max_steps=10", "lr.llm=2e-5", "packing=false", "lora.r=4", "mixed_precision=no"])
    assert (cfg.max_steps, cfg.lr["llm"], cfg.packing, cfg.lora.r) == (10, 2e-5, False, 4)
    assert cfg.mixed_precision == "no"  # YAML reads a bare `no` as false
    assert cfg.lr["vision"] == 1e-3  # siblings survive a dotted override
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["max_steps"])
    (tmp_path / "bad.yaml").write_text("max_steps: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML \(line"):
        load_config(tmp_path / "bad.yaml")


def test_shipped_configs_parse():
    for stage in (1, 2, 3):
        cfg = load_config(REPO / "training" / "configs" / f"stage{stage}.yaml")
        assert cfg.stage == stage
    assert load_config(REPO / "training/configs/stage1.yaml").trainable() == {
        "vision": False,
        "merger": True,
        "llm": False,
    }
    assert load_config(REPO / "training/configs/stage3.yaml").trainable() == {
        "vision": False,
        "merger": True,
        "llm": True,
    }


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    files = sorted((REPO / "training" / "configs" / "accelerate").glob("*.yaml"))
    assert len(files) >= 4
    kinds = set()
    for path in files:
        assert isinstance(yaml.safe_load(path.read_text()), dict)
        config = load_config_from_file(str(path))
        kinds.add(str(config.distributed_type))
    assert {"DistributedType.FSDP", "DistributedType.DEEPSPEED", "DistributedType.MULTI_GPU"} <= kinds


def test_caption_set_has_one_image_per_caption(tmp_path):
    data = caption_set(tmp_path)
    lines = data.read_text().splitlines()
    assert len(lines) == len(COLOURS)
    for line in lines:
        image = json.loads(line)["messages"][0]["content"][0]["image"]
        assert (tmp_path / image).is_file()
        assert Image.open(tmp_path / image).size == (56, 56)
