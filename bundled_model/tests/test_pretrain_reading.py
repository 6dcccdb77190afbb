"""Stage 0b: the LLM reads pictures laid out as grids of its own word embeddings, and the
vision tower's word heads score tokens against those same embeddings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bundled_model import pretrain_reading as pr
from bundled_model import pretrain_vision as pv
from bundled_model.pretrain_llm import main as pretrain_llm
from bundled_model.tests.helpers import TINY
from qwen_vl.processing import QwenVLProcessor
from qwen_vl.training.data import IGNORE


def test_word_grid_slots_hold_the_sum_of_their_words_embeddings(monkeypatch):
    monkeypatch.setattr(pr, "NOISE", 0.0)
    table = torch.nn.Embedding(10, 4)
    grid = pr.WordGrid(table)
    words = torch.tensor([[1, 2, 3], [-1, -1, -1], [4, -1, 5]])
    out = grid(words)
    weight = table.weight
    assert torch.allclose(out[0], weight[1] + weight[2] + weight[3]) and torch.equal(out[1], torch.zeros(4))
    assert torch.allclose(out[2], weight[4] + weight[5])


def test_a_scene_sample_puts_one_word_row_on_each_image_token_and_labels_only_the_answer(world_llm):
    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids = pv.shape_word_ids(processor.tokenizer)
    assert all(len(v) == len(pv.SHAPE_WORDS[k]) for k, v in ids.items())
    rng = np.random.default_rng(0)
    for share in (0.0, 1.0):
        sample = pr.scene_sample(rng, processor, ids, share)
        tokens, labels, words, (_, gh, gw) = (
            sample.input_ids,
            sample.labels,
            sample.pixel_values,
            sample.image_grid_thw[0],
        )
        assert int((tokens == processor.image_token_id).sum()) == len(words) == gh * gw // 4
        assert ((words[:, 0] >= 0) == (words[:, 1] >= 0)).all() and (words[:, 0] >= 0).any()  # shapes seen
        answer = processor.tokenizer.decode(tokens[labels != IGNORE]).replace("<|im_end|>", "").strip()
        prompt = processor.tokenizer.decode(tokens[: int((labels == IGNORE).sum())])
        assert ("Describe this image." in prompt) == (share == 1.0) and answer


def test_a_scene_sample_of_several_turns_shows_its_picture_once_and_labels_every_answer(world_llm):
    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids, tokenizer = pv.shape_word_ids(processor.tokenizer), processor.tokenizer
    one = pr.scene_sample(np.random.default_rng(4), processor, ids, 0.0, "count")
    three = pr.scene_sample(np.random.default_rng(4), processor, ids, 0.0, "count", turns=3)
    assert torch.equal(one.pixel_values, three.pixel_values)  # the same scene, drawn the same way
    text = tokenizer.decode(three.input_ids)
    assert text.count("<|vision_start|>") == 1 and text.count("How many shapes are there?") == 3
    # the labelled runs are the three answers (each with its <|im_end|>), all the count the grid shows
    shapes = len({int(kind) for kind in three.pixel_values[:, 1] if kind >= 0})
    answer = tokenizer.decode(one.input_ids[one.labels != IGNORE])
    assert tokenizer.decode(three.input_ids[three.labels != IGNORE]) == answer * 3
    assert answer == f"{('one', 'two', 'three')[shapes - 1]}<|im_end|>"


def test_stage0b_learns_the_reading_and_keeps_the_embeddings_as_stage0_drew_them(world_llm, tmp_path, capsys):
    out = tmp_path / "read"
    assert pr.main(["--llm", str(world_llm), "--out", str(out), "--steps", "2"], batch_size=2) == 0
    out_text = capsys.readouterr().out
    assert "read captions: tokens" in out_text
    assert "; VQA answers: colour " in out_text
    before, after = load_file(world_llm / "model.safetensors"), load_file(out / "model.safetensors")
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    assert (
        QwenVLProcessor.from_pretrained(out).image_token_id == QwenVLProcessor.from_pretrained(world_llm).image_token_id
    )


def test_stage0b_with_the_lookup_loss_reports_its_heads_attention(world_llm, tmp_path, capsys):
    base = ["--out", str(tmp_path / "read"), "--steps", "2", "--turns", "3", "--lookup-weight", "1"]
    one_layer = tmp_path / "llm"
    assert pretrain_llm(["--out", str(one_layer), "--steps", "0"], replace(TINY, layers=1)) == 0
    capsys.readouterr()
    assert pr.main(["--llm", str(one_layer), *base], batch_size=4) == 2  # it reads the layer before the last
    assert capsys.readouterr().err.strip() == "error: --llm has 1 layer: the lookup reads the one before the last"
    assert pr.main(["--llm", str(world_llm), *base], batch_size=4) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("step 2/2 ") and "; lookup head's attention on the asked shape " in line


def test_stage0b_prints_its_held_out_line_every_n_steps_and_at_the_end(world_llm, tmp_path, capsys):
    args = ["--llm", str(world_llm), "--out", str(tmp_path / "read"), "--steps", "5"]
    assert pr.main(args, batch_size=1, eval_every=2) == 0
    lines = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert lines == ["2/5", "4/5", "5/5"]


def test_word_heads_score_a_token_by_the_llms_embedding_of_each_word(world_llm):
    rows = pv.llm_word_rows(str(world_llm))
    assert {k: len(v) for k, v in rows.items()} == {"colour": 8, "kind": 4, "region": 3}
    heads = pv.Heads(rows["kind"].shape[1], word_rows=rows)
    for k, row in enumerate(rows["kind"]):
        assert int(heads.tokens[1](row[None]).argmax()) == k + 1  # the embedding of " square" scores "square"
    assert isinstance(heads.tokens[2], torch.nn.Linear)  # the OCR word head stays a plain one


@pytest.mark.parametrize(
    "args",
    [
        ["--steps", "0"],
        ["--turns", "0"],
        ["--lookup-weight", "-1"],
        ["--compare-weight", "-1"],
        ["--min-answers", "1.5"],
        ["--kind-copy-layer", "0"],  # a head for the lookup, without --lookup-weight
    ],
)
def test_bad_stage0b_arguments_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pr.parse_args(["--llm", "a", "--out", "b", *args])
    assert exit_info.value.code == 2 and "error: --" in capsys.readouterr().err


def test_an_unwritable_output_is_one_clear_line(world_llm, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "read"  # below a regular file
    assert pr.main(["--llm", str(world_llm), "--out", str(out), "--steps", "1"], batch_size=1) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {out}") and err.count("\n") == 1


def test_a_missing_llm_is_one_clear_line(tmp_path, capsys):
    assert pr.main(["--llm", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --llm ") and "config.json not found" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_lookup_targets_mark_the_asked_kinds_tokens_at_the_answer_position(world_llm):
    from bundled_model.lookup import lookup_targets
    from bundled_model.synthetic_world import vqa_type

    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids, tokenizer = pv.shape_word_ids(processor.tokenizer), processor.tokenizer
    image = processor.image_token_id
    rng, asked = np.random.default_rng(1), set()
    for _ in range(12):
        sample = pr.scene_sample(rng, processor, ids, 0.3, turns=3)
        targets = lookup_targets(sample, tokenizer, image)
        slots = (sample.input_ids == image).nonzero()[:, 0]
        for position, mask in targets:
            assert sample.labels[position] == IGNORE and sample.labels[position + 1] != IGNORE  # predicts an answer
            before = tokenizer.decode(sample.input_ids[:position]).split("<|im_start|>user\n")[-1]
            question = before.split("<|vision_end|>")[-1].split("<|im_end|>")[0]
            asked.add(vqa_type(question))
            kind = tokenizer.encode(" " + question.rstrip("?").split()[-1])[0]
            assert torch.equal(mask.nonzero()[:, 0], slots[sample.pixel_values[:, 1] == kind]) and mask.any()
        answers = int(((sample.labels != IGNORE) & (torch.roll(sample.labels, 1) == IGNORE)).sum())
        assert len(targets) <= answers == 3
    assert asked == {"colour", "where", "exists"}  # never captions or counts


def test_kind_word_targets_mark_the_questions_own_kind_word_at_the_answer_position(world_llm):
    from bundled_model.lookup import lookup_targets

    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids, tokenizer = pv.shape_word_ids(processor.tokenizer), processor.tokenizer
    image = processor.image_token_id
    rng, absent = np.random.default_rng(2), 0
    for _ in range(12):
        sample = pr.scene_sample(rng, processor, ids, 0.3, turns=3)
        copied = lookup_targets(sample, tokenizer, image, kind_word=True)
        looked_up = [position for position, _ in lookup_targets(sample, tokenizer, image)]
        for position, mask in copied:
            (word,) = mask.nonzero()[:, 0].tolist()
            question = tokenizer.decode(sample.input_ids[:position]).split("user\n")[-1].split("<|im_end|>")[0]
            kind = question.rstrip("?").split()[-1]
            assert sample.input_ids[word] == tokenizer.encode(" " + kind)[0]
            assert tokenizer.decode(sample.input_ids[word:position]).startswith(f" {kind}?<|im_end|>")  # its own
        # the same turns as the shape lookup, and also "Is there ...?" of a kind the picture lacks
        assert set(looked_up) <= {position for position, _ in copied}
        absent += len(copied) - len(looked_up)
    assert absent


def test_a_kind_copy_head_is_trained_before_the_lookup_layer_and_reported(world_llm, tmp_path, capsys):
    base = ["--llm", str(world_llm), "--out", str(tmp_path / "read"), "--steps", "2"]
    base += ["--turns", "3", "--lookup-weight", "1"]
    assert pr.main([*base, "--kind-copy-layer", "2"], batch_size=4) == 2  # the lookup's: 2 of 4 layers
    message = "error: --kind-copy-layer 2: the copy head's layer comes before the lookup's (2)"
    assert capsys.readouterr().err.strip() == message
    assert pr.main([*base, "--kind-copy-layer", "1"], batch_size=4) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "; lookup head's attention on the asked shape " in line
    assert "; copy head's attention on the kind word " in line


def test_the_lookup_loss_reads_the_attention_the_model_itself_uses(world_llm):
    import qwen_vl.modeling.text as text
    from bundled_model.lookup import LookupLoss, batch_targets, lookup_targets
    from qwen_vl.modeling.model import QwenVLForConditionalGeneration
    from qwen_vl.training.packing import padded_batch

    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids = pv.shape_word_ids(processor.tokenizer)
    model = QwenVLForConditionalGeneration.from_llm(world_llm)
    model.visual = pr.WordGrid(model.model.embed_tokens)
    rng, samples = np.random.default_rng(2), []
    while len(samples) < 3:
        sample = pr.scene_sample(rng, processor, ids, 0.0, "colour")
        samples += [sample] if lookup_targets(sample, processor.tokenizer, processor.image_token_id) else []
    batch = padded_batch(samples, model.position_ids, 0)
    rows, targets = batch_targets(samples, processor.tokenizer, processor.image_token_id, batch.input_ids.shape[1])
    assert len(rows) == 3 and targets.any(1).all()  # one colour question each, its shape in the grid
    seen = []

    def spy(q, k, v, mask, backend):  # the layer's real attention, computed the plain way
        k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        seen.append(scores.masked_fill(~mask, float("-inf")).softmax(-1)[:, 0].detach())  # head 0: [B, L, L]
        return real(q, k, v, mask, backend)

    real, text.decoder_attention = text.decoder_attention, spy
    try:
        probe = LookupLoss(model.model.layers[0])
        model(**batch.model_inputs())
        loss, mass = probe.loss(rows, targets)
    finally:
        text.decoder_attention = real
    expected = torch.stack([(seen[0][r, p] * targets[i]).sum() for i, (r, p) in enumerate(rows)])
    assert mass == pytest.approx(float(expected.mean()), rel=1e-4)
    assert loss.item() == pytest.approx(float(-torch.log(expected + 1e-6).mean()), rel=1e-4)
    loss.backward()  # it trains the layer's query and key projections
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_compare_targets_name_the_asked_colour_and_the_asked_kinds_colour_and_third_in_the_picture(world_llm):
    from bundled_model.compare_probe import COLOUR_NAMES, compare_targets
    from bundled_model.synthetic_world import REGIONS, vqa_type

    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids, tokenizer = pv.shape_word_ids(processor.tokenizer), processor.tokenizer
    colour_of = {ids["colour"][1 + i]: name for i, name in enumerate(COLOUR_NAMES)}
    kind_of = {ids["kind"][1 + i]: name for i, name in enumerate(pv.KIND_CLASSES[1:])}
    region_of = {ids["region"][1 + i]: name for i, name in enumerate(REGIONS)}
    rng, seen = np.random.default_rng(2), set()
    for _ in range(16):
        sample = pr.scene_sample(rng, processor, ids, 0.0, turns=4)
        shown = {kind_of[k]: (colour_of[c], region_of[r]) for c, k, r in sample.pixel_values.tolist() if k >= 0}
        for position, asked, colour, region in compare_targets(sample, tokenizer, processor.image_token_id):
            assert sample.labels[position] == IGNORE and sample.labels[position + 1] != IGNORE  # predicts an answer
            before = tokenizer.decode(sample.input_ids[: position + 1]).split("<|im_start|>user\n")[-1]
            question = before.split("<|vision_end|>")[-1].split("<|im_end|>")[0]
            qtype, words = vqa_type(question), question.rstrip("?").split()
            assert qtype in ("colour", "exists", "where")
            assert asked == (COLOUR_NAMES.index(words[-2]) if qtype == "exists" else IGNORE)
            if words[-1] in shown:
                want = shown[words[-1]]
                assert (colour, region) == (1 + COLOUR_NAMES.index(want[0]), 1 + REGIONS.index(want[1]))
            else:
                assert (colour, region) == (0, 0)
            seen.add((qtype, colour > 0))
    # colour and where questions ask a kind that is shown; exists questions either
    assert seen == {("colour", True), ("where", True), ("exists", True), ("exists", False)}


def test_the_compare_probe_is_trained_and_reported_and_leaves_the_runs_draws(world_llm, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pr, "LR", 0.0)
    monkeypatch.setattr(pr, "CAPTION_SHARE", 0.0)
    base = ["--llm", str(world_llm), "--steps", "2", "--turns", "4", "--lookup-weight", "1"]
    assert pr.main([*base, "--out", str(tmp_path / "plain")], batch_size=4) == 0
    plain = capsys.readouterr().out.splitlines()[0]
    assert pr.main([*base, "--out", str(tmp_path / "probed"), "--compare-weight", "1"], batch_size=4) == 0
    probed = capsys.readouterr().out.splitlines()[0]
    assert "; probe: asked colour " in probed and ", found colour " in probed and ", found region " in probed
    assert "probe" not in plain
    # at rate 0 nothing learns: the same grids, drawn from the same generators, read the same
    assert probed.split("; probe:")[0].split("; read ")[1] == plain.split("; read ")[1]


def test_the_compare_probe_runs_without_the_lookup_loss_and_weighs_its_own_rows(
    world_llm, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(pr, "LR", 0.0)
    monkeypatch.setattr(pr, "CAPTION_SHARE", 0.0)
    base = ["--llm", str(world_llm), "--steps", "1", "--turns", "4"]
    assert pr.main([*base, "--out", str(tmp_path / "plain")], batch_size=4) == 0
    plain = float(capsys.readouterr().out.split(" loss ")[1].split(";")[0])
    assert pr.main([*base, "--out", str(tmp_path / "probed"), "--compare-weight", "1"], batch_size=4) == 0
    probed = float(capsys.readouterr().out.split(" loss ")[1].split(";")[0])
    # the step's loss is the answers' plus the probe's heads (three at most, each a cross-entropy
    # over at most 9 classes from fresh heads: about ln 8 + ln 9 + ln 4 at most)
    assert plain < probed < plain + 3 * 2.5


def test_a_stage0b_whose_answers_did_not_form_fails_with_one_line_and_keeps_its_llm(world_llm, tmp_path, capsys):
    out = tmp_path / "read"
    base = ["--llm", str(world_llm), "--out", str(out), "--steps", "1"]
    assert pr.main([*base, "--min-answers", "0"], batch_size=1) == 0  # no check
    capsys.readouterr()
    assert pr.main([*base, "--min-answers", "1"], batch_size=1) == 3  # one step of a random LLM answers nothing whole
    err = capsys.readouterr().err
    assert err.startswith("error: stage 0b did not form: held-out whole answers captions 0%, ") and err.count("\n") == 1
    assert "under --min-answers 100%" in err and (out / "model.safetensors").is_file()
