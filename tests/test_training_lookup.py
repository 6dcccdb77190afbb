"""The lookup loss in the training stages: synthetic-world VQA records carry the tokens their
question's shape lies under (read off the record's scene), packed batches keep them at the
right rows and positions, and the run reports the head's attention on them."""

from __future__ import annotations

import json

import pytest
import torch
from test_pretrain_reading import world_llm  # noqa: F401
from test_training_helpers import base_config, one_thread  # noqa: F401

from training.config import ConfigError, config_from_dict
from training.metrics import read_metrics
from training.synthetic import main as synthetic
from training.synthetic_world import vqa_type
from training.train import Trainer

VISION = {"hidden_size": 32, "depth": 2, "num_heads": 2, "intermediate_size": 48, "fullatt_block_indexes": [1]}


@pytest.fixture(scope="module")
def vqa_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    assert (
        synthetic(["--out", str(out), "--task", "vqa", "--n", "24", "--seed", "3", "--max-size", "200", "--quiet"]) == 0
    )
    return out / "vqa.jsonl"


def lookup_config(tmp_path, llm, data, **overrides) -> dict:
    init = {"llm": str(llm), "vision": VISION}
    return base_config(tmp_path, data, stage=1, init=init, lookup_weight=1.0, lookup_layer=0, **overrides)


def test_vqa_records_carry_the_asked_shapes_tokens(tmp_path, world_llm, vqa_set):  # noqa: F811
    trainer = Trainer(config_from_dict(lookup_config(tmp_path, world_llm, vqa_set, max_seq_len=512)))
    processor, data = trainer.processor, trainer.data
    records = [json.loads(line) for line in vqa_set.read_text().splitlines()]
    seen = set()
    for index, record in enumerate(records):
        sample = data.encode((0, index))
        qtype, scene = record["question_type"], record["scene"]
        if qtype == "count":
            assert sample.lookup is None
            continue
        position, mask = sample.lookup[0]  # then one more per further answer token
        said = sample.input_ids[[p + 1 for p, _ in sample.lookup]]
        assert processor.tokenizer.decode(said).strip() == record["answer"]
        assert all(torch.equal(m, mask) for _, m in sample.lookup)
        question = record["messages"][0]["content"][1]["text"]
        assert vqa_type(question) == qtype
        colour, kind = question.rstrip("?").split()[-2:]
        asked = [s for s in scene["shapes"] if s["kind"] == kind and (qtype != "exists" or s["colour"] == colour)]
        image = (sample.input_ids == processor.image_token_id).nonzero()[:, 0]
        if not asked:  # "Is there a ...?" with none: the head rests on <|vision_start|>
            assert qtype == "exists" and mask.nonzero()[:, 0].tolist() == [int(image[0]) - 1]
            seen.add("none")
            continue
        seen.add(qtype)
        # every marked token covers part of the asked shape's box, in the scene's pixels
        _, grid_h, grid_w = (int(n) // 2 for n in sample.image_grid_thw[0])
        marked = mask[image].nonzero()[:, 0]
        assert len(marked) and mask.sum() == len(marked)
        x0, y0, x1, y1 = asked[0]["bbox"]
        cell_w, cell_h = scene["width"] / grid_w, scene["height"] / grid_h
        for token in marked.tolist():
            row, col = divmod(token, grid_w)
            assert col * cell_w < x1 and (col + 1) * cell_w > x0 and row * cell_h < y1 and (row + 1) * cell_h > y0
    assert seen == {"colour", "where", "exists", "none"}


def test_a_run_with_the_lookup_loss_reports_the_heads_attention(tmp_path, world_llm, vqa_set, capsys):  # noqa: F811
    cfg = config_from_dict(lookup_config(tmp_path, world_llm, vqa_set, max_steps=2, batch_size=6, max_seq_len=512))
    summary = Trainer(cfg).fit()
    assert 0 < summary["lookup_mass_last_100_steps"] <= 1
    masses = [row["lookup_mass"] for row in read_metrics(tmp_path / "run" / "metrics.csv")]
    assert len(masses) == 2 and all(0 < m <= 1 for m in masses)
    assert "lookup head's attention on the asked shapes, last 100 steps: " in capsys.readouterr().out


def test_a_lookup_layer_outside_the_llm_is_a_config_error(tmp_path, world_llm, vqa_set):  # noqa: F811
    with pytest.raises(ConfigError, match=r"^lookup_layer 1: the LLM has layers 0-0$"):
        Trainer(config_from_dict(lookup_config(tmp_path, world_llm, vqa_set) | {"lookup_layer": 1}))


def test_packed_and_padded_batches_keep_each_target_at_its_row_and_position(tmp_path, world_llm, vqa_set):  # noqa: F811
    from training.packing import packed_batch, padded_batch

    trainer = Trainer(config_from_dict(lookup_config(tmp_path, world_llm, vqa_set, max_seq_len=512)))
    samples = [s for s in map(trainer.data.encode, [(0, i) for i in range(24)]) if s.lookup][:3]
    position_ids = trainer.unwrapped.position_ids
    for batch in (packed_batch(samples, 2048, position_ids, 0), padded_batch(samples, position_ids, 0)):
        rows, targets = batch.lookup_rows, batch.lookup_targets
        assert len(rows) == len(targets) == sum(len(s.lookup) for s in samples)
        assert "lookup_rows" not in batch.model_inputs()
        firsts = [sum(len(s.lookup) for s in samples[:i]) for i in range(len(samples))]
        rows, targets = [rows[i] for i in firsts], targets[firsts]
        for sample, (row, position), target in zip(samples, rows, targets, strict=True):
            own_position, own_mask = sample.lookup[0]
            start = position - own_position  # where the sample begins in its row
            assert torch.equal(batch.input_ids[row, start : start + len(sample)], sample.input_ids)
            assert torch.equal(target.nonzero()[:, 0], own_mask.nonzero()[:, 0] + start)
    assert packed_batch(samples, 2048, position_ids, 0).input_ids.shape[0] == 1  # all three in one row
