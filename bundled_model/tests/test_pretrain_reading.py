"""Stage 0b: the LLM reads pictures laid out as grids of its own word embeddings, and the
vision tower's word heads score tokens against those same embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bundled_model import pretrain_reading as pr
from bundled_model import pretrain_vision as pv
from bundled_model.pretrain_llm import main as pretrain_llm
from bundled_model.synthetic import TRAIN_FPS
from bundled_model.synthetic_render import write_video
from bundled_model.synthetic_world import sample_video_scene
from qwen_vl.processing import QwenVLProcessor
from qwen_vl.processing.video_sampling import FrameRange, sample_indices
from qwen_vl.training.data import IGNORE, Sample


def test_word_grid_slots_hold_the_sum_of_their_words_embeddings():
    table = torch.nn.Embedding(10, 4)
    grid = pr.WordGrid(table, noise=0.0)
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
        sample = pr.scene_sample(rng, processor, ids, 448, share)
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
    one = pr.scene_sample(np.random.default_rng(4), processor, ids, 448, 0.0, "count")
    three = pr.scene_sample(np.random.default_rng(4), processor, ids, 448, 0.0, "count", turns=3)
    assert torch.equal(one.pixel_values, three.pixel_values)  # the same scene, drawn the same way
    text = tokenizer.decode(three.input_ids)
    assert text.count("<|vision_start|>") == 1 and text.count("How many shapes are there?") == 3
    # the labelled runs are the three answers (each with its <|im_end|>), all the count the grid shows
    shapes = len({int(kind) for kind in three.pixel_values[:, 1] if kind >= 0})
    answer = tokenizer.decode(one.input_ids[one.labels != IGNORE])
    assert tokenizer.decode(three.input_ids[three.labels != IGNORE]) == answer * 3
    assert answer == f"{('one', 'two', 'three')[shapes - 1]}<|im_end|>"


def test_the_exists_drill_asks_half_yes_and_its_no_questions_name_a_kind_of_the_picture():
    rng = np.random.default_rng(3)
    yes = 0
    for _ in range(400):
        scene = pr.sample_image_scene(rng, 300, 200)
        question, answer = pr.exists_drill(rng, scene)
        colour, kind = question.removeprefix("Is there a ").removesuffix("?").split()
        present = {(s.colour, s.kind) for s in scene.shapes}
        assert answer == ("yes" if (colour, kind) in present else "no")
        assert any(s.kind == kind for s in scene.shapes)  # the kind is always there: only its colour decides
        yes += answer == "yes"
    assert 160 < yes < 240


def test_the_exists_share_turns_a_scene_samples_questions_into_exists_drills(world_llm):
    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids, tokenizer = pv.shape_word_ids(processor.tokenizer), processor.tokenizer
    drilled = pr.scene_sample(np.random.default_rng(5), processor, ids, 448, 0.0, turns=6, exists_share=1.0)
    plain = pr.scene_sample(np.random.default_rng(5), processor, ids, 448, 0.0, turns=6)
    assert tokenizer.decode(drilled.input_ids).count("Is there a") == 6
    assert tokenizer.decode(plain.input_ids).count("Is there a") < 6
    assert torch.equal(drilled.pixel_values, plain.pixel_values)  # the same scene


def test_the_compare_drill_shows_one_shape_and_asks_only_its_kind_in_its_own_or_another_colour(world_llm):
    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids, tokenizer = pv.shape_word_ids(processor.tokenizer), processor.tokenizer
    answers = []
    for seed in range(40):
        sample = pr.scene_sample(np.random.default_rng(seed), processor, ids, 448, 0.5, turns=3, compare_share=1.0)
        shown = {tuple(row[:2]) for row in sample.pixel_values.tolist() if row[0] >= 0}
        assert len(shown) == 1  # one shape: its colour and kind word ids
        (colour_id, kind_id), text = shown.pop(), tokenizer.decode(sample.input_ids)
        assert text.count("Is there a") == 3 and "Describe" not in text
        for turn in text.split("Is there a")[1:]:
            colour, kind = turn.split("?")[0].split()
            assert ids["kind"][pv.SHAPE_WORDS["kind"].index(kind)] == kind_id
            answer = "yes" if ids["colour"][pv.SHAPE_WORDS["colour"].index(colour)] == colour_id else "no"
            assert turn.split("assistant\n")[1].startswith(answer)
            answers.append(answer)
    assert 40 < answers.count("yes") < 80


def test_a_clip_sample_is_the_grid_the_processor_gives_the_rendered_clip_with_its_event_in_time(world_llm, tmp_path):
    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids = pv.shape_word_ids(processor.tokenizer)
    seen = set()
    for seed in range(40):
        scene = sample_video_scene(np.random.default_rng(seed), TRAIN_FPS)
        if scene.event.type not in ("appear", "disappear") or scene.event.type in seen:
            continue
        seen.add(scene.event.type)
        sample = pr.clip_sample(np.random.default_rng(seed), processor, ids)
        write_video(scene, tmp_path / "clip.mp4")
        answer = processor.tokenizer.decode(sample.input_ids[sample.labels != IGNORE]).replace("<|im_end|>", "")
        prompt = processor.tokenizer.decode(sample.input_ids[: int((sample.labels == IGNORE).sum())])
        question = prompt.split("<|vision_end|>")[1].split("<|im_end|>")[0]
        chat = [
            {"role": "user", "content": [{"type": "video", "video": "clip.mp4"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer.strip()}]},
        ]
        real = processor(chat, add_generation_prompt=False, base_dir=tmp_path)
        assert torch.equal(sample.input_ids, real.input_ids[0])  # same template, same number of video tokens
        assert torch.equal(sample.video_grid_thw, real.video_grid_thw)
        assert torch.allclose(sample.second_per_grid_ts, torch.as_tensor(real.second_per_grid_ts, dtype=torch.float))
        # the event's shape is in a temporal token's slots exactly when its first frame shows it
        t, h, w = sample.video_grid_thw[0].tolist()
        kinds = sample.pixel_values_videos[:, 1].view(t, h * w // 4)
        kind = ids["kind"][pv.KIND_CLASSES.index(scene.shapes[0].kind)]
        shown = [(kinds[k] == kind).any().item() for k in range(t)]
        frames = sample_indices(FrameRange(0, scene.frame_count - 1), 2 * t)[::2]
        after = [f >= scene.event.second * scene.fps for f in frames]
        assert shown == (after if scene.event.type == "appear" else [not a for a in after])
    assert seen == {"appear", "disappear"}


def test_stage0b_learns_the_reading_and_keeps_the_embeddings_as_stage0_drew_them(world_llm, tmp_path, capsys):
    out = tmp_path / "read"
    assert (
        pr.main(
            ["--llm", str(world_llm), "--out", str(out), "--steps", "2", "--batch-size", "2", "--clip-share", "0.5"]
        )
        == 0
    )
    out_text = capsys.readouterr().out
    assert "read captions: tokens" in out_text and "; clips: tokens" in out_text
    assert "; VQA answers: colour " in out_text
    before, after = load_file(world_llm / "model.safetensors"), load_file(out / "model.safetensors")
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    assert (
        QwenVLProcessor.from_pretrained(out).image_token_id == QwenVLProcessor.from_pretrained(world_llm).image_token_id
    )


def test_stage0b_with_the_lookup_loss_reports_its_heads_attention(world_llm, tmp_path, capsys):
    base = ["--llm", str(world_llm), "--out", str(tmp_path / "read"), "--steps", "2", "--batch-size", "4"]
    base += ["--turns", "3", "--lookup-weight", "1", "--caption-share", "0"]
    assert pr.main(base) == 2  # the default layer, second from the end, is not there in a 1-layer LLM
    assert capsys.readouterr().err.strip() == "error: --lookup-layer -2: the LLM has layers 0-0"
    assert pr.main([*base, "--lookup-layer", "0"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("step 2/2 ") and "; lookup head's attention on the asked shape " in line


def test_stage0b_prints_its_held_out_line_every_n_steps_and_at_the_end(world_llm, tmp_path, capsys):
    args = ["--llm", str(world_llm), "--out", str(tmp_path / "read"), "--steps", "5", "--batch-size", "1"]
    assert pr.main([*args, "--eval-every", "2"]) == 0
    lines = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert lines == ["2/5", "4/5", "5/5"]


def test_the_held_out_line_does_not_change_what_stage0b_learns(world_llm, tmp_path):
    base = ["--llm", str(world_llm), "--steps", "3", "--batch-size", "2", "--turns", "2", "--noise-seed", "5"]
    for every in ("1", "3"):
        assert pr.main([*base, "--out", str(tmp_path / every), "--eval-every", every]) == 0
    often, once = (load_file(tmp_path / every / "model.safetensors") for every in ("1", "3"))
    assert all(torch.equal(often[key], once[key]) for key in often)


def test_length_groups_split_a_step_into_micro_batches_of_similar_length():
    samples = [Sample(input_ids=torch.zeros(n, dtype=torch.long), labels=torch.zeros(n)) for n in (5, 2, 9, 7, 3)]
    groups = pr.length_groups(samples, 2)
    assert [[len(s) for s in group] for group in groups] == [[5, 2, 3], [9, 7]]  # the drawn order inside each
    assert [len(s) for s in pr.length_groups(samples, 1)[0]] == [5, 2, 9, 7, 3]
    assert [len(group) for group in pr.length_groups(samples, 9)] == [1] * 5  # never an empty micro-batch


def test_a_step_split_into_length_groups_has_the_loss_of_the_whole_batch(world_llm, tmp_path, capsys):
    base = ["--llm", str(world_llm), "--steps", "1", "--batch-size", "6", "--turns", "2", "--noise", "0"]
    base += ["--lookup-weight", "1", "--lookup-layer", "0", "--clip-share", "0.3", "--time-weight", "1"]
    losses = []
    for groups in ("1", "3"):
        assert pr.main([*base, "--out", str(tmp_path / groups), "--length-groups", groups]) == 0
        losses.append(float(capsys.readouterr().out.split(" loss ")[1].split(";")[0]))
    assert losses[0] == pytest.approx(losses[1], abs=2e-4) and losses[0] > 0


def test_stage0b_in_bf16_autocast_trains_fp32_weights_from_bf16_sums(world_llm, tmp_path):
    base = ["--llm", str(world_llm), "--steps", "1", "--batch-size", "2", "--turns", "2"]
    base += ["--lookup-weight", "1", "--lookup-layer", "0"]
    assert pr.main([*base, "--out", str(tmp_path / "fp32")]) == 0
    assert pr.main([*base, "--out", str(tmp_path / "bf16"), "--bf16"]) == 0
    fp32, bf16 = (load_file(tmp_path / run / "model.safetensors") for run in ("fp32", "bf16"))
    start = load_file(world_llm / "model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight"
    assert bf16[key].dtype == torch.float32
    assert not torch.equal(bf16[key], start[key])  # it learned
    assert not torch.equal(bf16[key], fp32[key])  # from other (bf16) sums than the fp32 run


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
        ["--caption-share", "1.5"],
        ["--clip-share", "-0.1"],
        ["--steps", "0"],
        ["--max-size", "32"],
        ["--noise", "-0.1"],
        ["--turns", "0"],
        ["--compare-drill", "1.5"],
        ["--compare-weight", "-1"],
        ["--eval-every", "0"],
        ["--length-groups", "0"],
        ["--noise-seed", str(2**70)],
        ["--seed", "-1"],
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
    assert pr.main(["--llm", str(world_llm), "--out", str(out), "--steps", "1", "--batch-size", "1"]) == 1
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
        sample = pr.scene_sample(rng, processor, ids, 448, 0.3, turns=3)
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
    image, types = processor.image_token_id, ("colour", "where", "exists")
    rng, absent = np.random.default_rng(2), 0
    for _ in range(12):
        sample = pr.scene_sample(rng, processor, ids, 448, 0.3, turns=3)
        copied = lookup_targets(sample, tokenizer, image, types=types, kind_word=True)
        looked_up = [position for position, _ in lookup_targets(sample, tokenizer, image, types=types)]
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
    clip = pr.clip_sample(np.random.default_rng(0), processor, ids)
    assert lookup_targets(clip, tokenizer, processor.video_token_id, kind_word=True) == []


def test_a_kind_copy_head_is_trained_before_the_lookup_layer_and_reported(tmp_path, capsys):
    llm = tmp_path / "llm"
    tiny = ["--lines", "40", "--chats", "40", "--hidden", "32", "--layers", "2", "--intermediate", "64"]
    tiny += ["--heads", "2", "--kv-heads", "1", "--batch-size", "2", "--seq-len", "32", "--steps", "1"]
    assert pretrain_llm(["--out", str(llm), *tiny]) == 0
    capsys.readouterr()
    base = ["--llm", str(llm), "--out", str(tmp_path / "read"), "--steps", "2", "--batch-size", "4"]
    base += ["--turns", "3", "--lookup-weight", "1", "--caption-share", "0", "--lookup-layer", "1"]
    assert pr.main([*base, "--kind-copy-layer", "1"]) == 2
    message = "error: --kind-copy-layer 1: the copy head's layer comes before the lookup's (1)"
    assert capsys.readouterr().err.strip() == message
    assert pr.main([*base, "--kind-copy-layer", "0"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "; lookup head's attention on the asked shape " in line
    assert "; copy head's attention on the kind word " in line


def test_exists_lookup_both_targets_the_slots_holding_colour_and_kind_or_the_vision_start(world_llm):
    from bundled_model.lookup import lookup_targets

    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids, tokenizer = pv.shape_word_ids(processor.tokenizer), processor.tokenizer
    image, vision_start = processor.image_token_id, tokenizer.convert_tokens_to_ids("<|vision_start|>")
    rng, answers, others = np.random.default_rng(3), [], 0
    for qtype in ("exists", None) * 6:
        sample = pr.scene_sample(rng, processor, ids, 448, 0.0, qtype, turns=3, exists_share=0.5)
        by_kind = dict(lookup_targets(sample, tokenizer, image))
        both = lookup_targets(sample, tokenizer, image, match_exists=True)
        exists_only = lookup_targets(sample, tokenizer, image, match_exists=True, types=("exists",))
        slots = (sample.input_ids == image).nonzero()[:, 0]
        exists_turns = []
        for position, mask in both:
            question = tokenizer.decode(sample.input_ids[:position]).split("user\n")[-1].split("<|im_end|>")[0]
            question = question.split("<|vision_end|>")[-1]
            answer = tokenizer.decode(sample.input_ids[position + 1 : position + 3]).strip()
            if not question.startswith("Is there"):
                assert torch.equal(mask, by_kind[position])  # other questions look up the kind, as before
                others += 1
                continue
            exists_turns.append((position, mask))
            *_, colour, kind = question.rstrip("?").split()
            holds = (sample.pixel_values[:, 0] == ids["colour"][pv.COLOUR_CLASSES.index(colour)]) & (
                sample.pixel_values[:, 1] == ids["kind"][pv.KIND_CLASSES.index(kind)]
            )
            if holds.any():
                assert torch.equal(mask.nonzero()[:, 0], slots[holds]) and answer.startswith("yes")
            else:  # "no", also where the kind is there in another colour
                assert mask.nonzero()[:, 0].tolist() == [int(slots[0]) - 1] and answer.startswith("no")
                assert sample.input_ids[slots[0] - 1] == vision_start
            answers.append((answer[:2] == "no", position in by_kind))
        # types=("exists",): the same targets, for the "Is there" turns alone
        assert [p for p, _ in exists_only] == [p for p, _ in exists_turns]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(exists_only, exists_turns, strict=True))
    assert {(True, True), (True, False), (False, True)} <= set(answers) and others  # both kinds of "no", and yes


def test_an_exists_head_of_its_own_is_trained_and_reported_beside_the_lookup_head(world_llm, tmp_path, capsys):
    base = ["--llm", str(world_llm), "--out", str(tmp_path / "read"), "--steps", "2", "--batch-size", "4"]
    base += ["--turns", "4", "--lookup-weight", "1", "--lookup-layer", "0", "--exists-lookup", "both"]
    assert pr.main([*base, "--exists-head", "2"]) == 2
    assert capsys.readouterr().err.strip() == "error: --exists-head 2: the LLM has heads 0-1"
    assert pr.main([*base, "--exists-head", "1"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("step 2/2 ") and "; lookup head's attention on the asked shape " in line
    assert "; exists head's attention on its targets " in line


def test_an_event_head_takes_the_clips_events_from_the_lookup_head(world_llm, tmp_path, capsys):
    base = ["--llm", str(world_llm), "--out", str(tmp_path / "read"), "--steps", "2", "--batch-size", "6"]
    base += ["--lookup-weight", "1", "--lookup-layer", "0", "--clip-share", "0.5", "--eval-every", "2"]
    assert pr.main([*base, "--event-head", "2"]) == 2
    assert capsys.readouterr().err.strip() == "error: --event-head 2: the LLM has heads 0-1"
    with pytest.raises(SystemExit):
        pr.parse_args([*base, "--event-head", "1", "--exists-head", "1"])
    assert "give each its own" in capsys.readouterr().err
    assert pr.main([*base, "--event-head", "1"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "; lookup head's attention on the asked shape " in line and "; event head's attention on the event " in line


def test_the_lookup_loss_reads_the_attention_the_model_itself_uses(world_llm):
    import qwen_vl.modeling.text as text
    from bundled_model.lookup import LookupLoss, batch_targets, lookup_targets
    from qwen_vl.modeling.model import QwenVLForConditionalGeneration
    from qwen_vl.training.packing import padded_batch

    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids = pv.shape_word_ids(processor.tokenizer)
    model = QwenVLForConditionalGeneration.from_llm(world_llm)
    model.visual = pr.WordGrid(model.model.embed_tokens, 0.0)
    rng, samples = np.random.default_rng(2), []
    while len(samples) < 3:
        sample = pr.scene_sample(rng, processor, ids, 448, 0.0, "colour")
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


def test_token_seconds_give_each_video_token_the_second_its_absolute_time_id_says(world_llm):
    from bundled_model.time_code import token_seconds
    from qwen_vl.modeling.model import QwenVLForConditionalGeneration

    processor = QwenVLProcessor.from_pretrained(world_llm)
    model = QwenVLForConditionalGeneration.from_llm(world_llm)
    ids, video = pv.shape_word_ids(processor.tokenizer), processor.video_token_id
    per_second = model.config.vision.tokens_per_second
    for seed in range(6):
        sample = pr.clip_sample(np.random.default_rng(seed), processor, ids)
        seconds = token_seconds(sample, processor.image_settings.merge_size)
        positions, _ = model.position_ids(
            sample.input_ids[None], None, None, sample.video_grid_thw, sample.second_per_grid_ts
        )
        temporal = positions[0, 0, sample.input_ids == video]
        assert len(seconds) == len(temporal) and seconds[0] == 0 and seconds[-1] >= 2  # clips last 3-10 s
        # the M-RoPE temporal id is the token's time in ticks of 1/per_second s, cut down to a tick
        ticks = (temporal - temporal[0]).float() / per_second
        assert ((seconds - ticks).abs() <= 0.5 + 1 / per_second).all()


def test_stage0b_with_the_time_code_reports_how_well_it_is_read(world_llm, tmp_path, capsys):
    base = ["--llm", str(world_llm), "--out", str(tmp_path / "read"), "--steps", "2", "--batch-size", "4"]
    base += ["--clip-share", "1", "--time-weight", "1"]
    assert pr.main([*base, "--time-layer", "1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --time-layer 1: the LLM has layers 0-0"
    assert pr.main(base) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("step 2/2 ") and "; time code " in line and " of video tokens" in line


def test_a_when_question_about_a_clip_looks_up_its_event_where_it_first_shows_and_probes_its_second(world_llm):
    from bundled_model.compare_probe import compare_targets
    from bundled_model.lookup import lookup_targets
    from bundled_model.time_code import MAX_SECOND, token_seconds

    processor = QwenVLProcessor.from_pretrained(world_llm)
    ids, tokenizer, video = pv.shape_word_ids(processor.tokenizer), processor.tokenizer, processor.video_token_id
    asked = set()
    for seed in range(30):
        scene = sample_video_scene(np.random.default_rng(seed), TRAIN_FPS)
        sample = pr.clip_sample(np.random.default_rng(seed), processor, ids)
        targets = lookup_targets(sample, tokenizer, processor.image_token_id)
        probed = compare_targets(sample, tokenizer, processor.image_token_id)
        answer = tokenizer.decode(sample.input_ids[sample.labels != IGNORE])
        if not answer.startswith("At "):
            assert targets == probed == []  # "Which way does it move?" has no second to read
            continue
        ((position, mask),) = targets
        # the comparison probe asks the answer's second where the lookup looks, and nothing of pictures
        assert probed == [(position, IGNORE, IGNORE, IGNORE, min(scene.event.second, MAX_SECOND))]
        assert lookup_targets(sample, tokenizer, processor.image_token_id, types=("colour", "where", "exists")) == []
        asked.add(scene.event.type)
        assert tokenizer.decode(sample.input_ids[position + 1]) == answer.split()[1][0]  # it predicts the number
        assert (sample.input_ids[mask] == video).all()
        # the marked slots hold the event's kind, all in one temporal token: the one at the event's
        # second, or for a disappearance the one before it
        kind = ids["kind"][pv.KIND_CLASSES.index(scene.shapes[scene.event.shape].kind)]
        slots = mask[sample.input_ids == video]
        assert (sample.pixel_values_videos[slots, 1] == kind).all()
        seconds = token_seconds(sample, processor.image_settings.merge_size)[slots].unique()
        expected = scene.event.second - (scene.event.type == "disappear")
        assert len(seconds) == 1 and abs(int(seconds[0]) - expected) <= 1
    assert asked >= {"appear", "disappear", "colour"}


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
        sample = pr.scene_sample(rng, processor, ids, 448, 0.0, turns=4)
        shown = {kind_of[k]: (colour_of[c], region_of[r]) for c, k, r in sample.pixel_values.tolist() if k >= 0}
        for position, asked, colour, region, second in compare_targets(sample, tokenizer, processor.image_token_id):
            assert second == IGNORE  # pictures have no event
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


def test_the_compare_probe_is_trained_and_reported_and_leaves_the_runs_draws(world_llm, tmp_path, capsys):
    base = ["--llm", str(world_llm), "--steps", "2", "--batch-size", "4", "--turns", "4", "--caption-share", "0"]
    base += ["--lookup-weight", "1", "--lookup-layer", "0", "--lr", "0"]
    assert pr.main([*base, "--out", str(tmp_path / "plain")]) == 0
    plain = capsys.readouterr().out.splitlines()[0]
    assert pr.main([*base, "--out", str(tmp_path / "probed"), "--compare-weight", "1"]) == 0
    probed = capsys.readouterr().out.splitlines()[0]
    assert "; probe: asked colour " in probed and ", found colour " in probed and ", found region " in probed
    assert "probe" not in plain and "event second" not in probed  # no clips, no seconds
    # at rate 0 nothing learns: the same grids, drawn from the same generators, read the same
    assert probed.split("; probe:")[0].split("; read ")[1] == plain.split("; read ")[1]


def test_the_compare_probe_runs_without_the_lookup_loss_and_weighs_its_own_rows(world_llm, tmp_path, capsys):
    base = ["--llm", str(world_llm), "--steps", "1", "--batch-size", "4", "--turns", "4", "--caption-share", "0"]
    base += ["--lookup-layer", "0", "--lr", "0", "--eval-every", "1"]
    assert pr.main([*base, "--out", str(tmp_path / "plain")]) == 0
    plain = float(capsys.readouterr().out.split(" loss ")[1].split(";")[0])
    assert pr.main([*base, "--out", str(tmp_path / "probed"), "--compare-weight", "1"]) == 0
    probed = float(capsys.readouterr().out.split(" loss ")[1].split(";")[0])
    # one micro-batch: the step's loss is the answers' plus the probe's heads (three at most, each a
    # cross-entropy over at most 9 classes from fresh heads: about ln 8 + ln 9 + ln 4 at most)
    assert plain < probed < plain + 3 * 2.5


def test_the_compare_probe_asks_clips_for_their_events_second(world_llm, tmp_path, capsys):
    args = ["--llm", str(world_llm), "--out", str(tmp_path / "out"), "--steps", "2", "--batch-size", "4"]
    args += ["--clip-share", "1", "--lookup-weight", "1", "--lookup-layer", "0", "--compare-weight", "1"]
    assert pr.main(args) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "; probe: event second " in line and "found colour" not in line  # clips only: no picture questions


def test_a_stage0b_whose_answers_did_not_form_fails_with_one_line_and_keeps_its_llm(world_llm, tmp_path, capsys):
    out = tmp_path / "read"
    base = ["--llm", str(world_llm), "--out", str(out), "--steps", "1", "--batch-size", "1"]
    assert pr.main([*base, "--min-answers", "0"]) == 0  # no check
    capsys.readouterr()
    assert pr.main([*base, "--min-answers", "1"]) == 3  # one step of a random LLM answers nothing whole
    err = capsys.readouterr().err
    assert err.startswith("error: stage 0b did not form: held-out whole answers captions 0%, ") and err.count("\n") == 1
    assert "under --min-answers 100%" in err and (out / "model.safetensors").is_file()
