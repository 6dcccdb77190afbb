"""RefCOCO / RefCOCO+ / RefCOCOg and the generic grounding set: loading, the IoU >= 0.5 metric,
and a run end to end whose answers are written by hand."""

from __future__ import annotations

import json

import pytest

from qwen_vl.eval.datasets import DataError, ParquetImage
from qwen_vl.eval.metrics import grounding_hit
from qwen_vl.eval.report import sample_values
from qwen_vl.eval.runner import main
from qwen_vl.eval.tasks import TASKS, conversation, load_samples
from qwen_vl.grounding import Box, Frame, format_answer, frame_for, to_model
from tests.eval.layouts import build_grounding, build_parquet_refcoco, build_refcoco, png_bytes


def test_refer_toolkit_layout(tmp_path):
    samples = load_samples(TASKS["refcoco"], build_refcoco(tmp_path))
    assert [s.id for s in samples] == ["1:10", "1:11", "2:20"]  # the train ref is left out
    assert [s.category for s in samples] == ["val", "val", "testA"]
    first = samples[0]
    assert first.question == "Outline the position of red box and output all the coordinates in JSON format."
    assert first.meta["box"] == [5.0, 6.0, 25.0, 16.5]  # [x, y, w, h] -> corners
    assert (first.meta["width"], first.meta["height"]) == (64, 48)
    assert first.answers == ["[5, 6, 25, 16.5]"]
    assert open(first.image, "rb").read() == png_bytes(1, (64, 48))
    chat = conversation(first, TASKS["refcoco"].prompt)
    assert chat[0]["content"][-1]["text"] == first.question


def test_refcocog_umd_file_and_refs_path(tmp_path):
    base = build_refcoco(tmp_path, refs_name="refs(umd).p", folder="refcocog")
    assert len(load_samples(TASKS["refcocog"], tmp_path)) == 3
    assert len(load_samples(TASKS["refcocog"], base / "refs(umd).p")) == 3


def test_parquet_mirror_explodes_expressions(tmp_path):
    samples = load_samples(TASKS["refcoco+"], build_parquet_refcoco(tmp_path))
    assert sorted(s.id for s in samples) == ["testA0:0", "val0:0", "val0:1", "val1:0"]
    by_id = {s.id: s for s in samples}
    assert by_id["val0:1"].question.startswith("Outline the position of box in red ")
    assert by_id["val1:0"].meta["box"] == [3.0, 3.0, 33.0, 23.0]
    assert by_id["testA0:0"].category == "testA"
    assert isinstance(by_id["val1:0"].image, ParquetImage) and by_id["val1:0"].image.load() == png_bytes(1, (64, 48))


def test_generic_jsonl(tmp_path):
    samples = load_samples(TASKS["grounding"], build_grounding(tmp_path))
    assert [s.id for s in samples] == ["g1", "2"]
    assert samples[0].meta["box"] == [10.0, 8.0, 30.0, 24.0] and samples[1].meta["box"] == [30.0, 20.0, 40.0, 30.0]
    assert samples[1].category == "dots"


def test_bad_grounding_data(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"image": "a.png", "query": "q"}\n')
    with pytest.raises(DataError, match="needs 'image', 'query' and 'bbox'"):
        load_samples(TASKS["grounding"], tmp_path)
    with pytest.raises(DataError, match=r"refs\(unc\)\.p"):
        load_samples(TASKS["refcoco"], tmp_path)
    (tmp_path / "refs(unc).p").write_bytes(b"\x80\x02cos\nsystem\nq\x00.")  # a pickle that calls a function
    (tmp_path / "instances.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(DataError, match="not a readable refs pickle"):
        load_samples(TASKS["refcoco"], tmp_path)


# ---- the metric -----------------------------------------------------------------------------------
FRAME = Frame(width=640, height=480, model_width=320, model_height=240)  # the model saw it at half size


@pytest.mark.parametrize(
    ("answer", "hit"),
    [
        ('[{"bbox_2d": [50, 50, 100, 100], "label": "x"}]', 1.0),  # exactly the reference
        ('```json\n[{"bbox_2d": [50, 50, 100, 100]}]\n```', 1.0),
        ('[{"bbox_2d": [50, 50, 100, 100]}, {"bbox_2d": [0, 0, 1, 1]}]', 1.0),  # later boxes do not count
        # original [150, 100, 250, 200]: IoU = 5000 / 15000 = 1/3, wrong
        ('{"bbox_2d": [75, 50, 125, 100]}', 0.0),
        ('[{"bbox_2d": [0, 0, 1, 1]}, {"bbox_2d": [50, 50, 100, 100]}]', 0.0),  # only the first box counts
        ("I can't find it.", 0.0),
    ],
)
def test_grounding_hit_worked_examples(answer, hit):
    reference = [100, 100, 200, 200]  # original pixels
    assert grounding_hit(answer, reference, FRAME) == float(hit)


def test_iou_threshold_is_inclusive():
    # reference 0..120 x 0..100; prediction shifted right by 40 -> IoU = 80*100 / (160*100) = 0.5
    frame = Frame(1000, 1000, 1000, 1000)
    assert grounding_hit('{"bbox_2d": [40, 0, 160, 100]}', [0, 0, 120, 100], frame) == 1.0
    assert grounding_hit('{"bbox_2d": [41, 0, 161, 100]}', [0, 0, 120, 100], frame) == 0.0


def test_qwen2_vl_answers_are_scored_in_0_1000(tmp_path):
    frame = frame_for("qwen2_vl", 640, 480)
    answer = "<|object_ref_start|>x<|object_ref_end|><|box_start|>(156,208),(312,416)<|box_end|>"
    assert grounding_hit(answer, [100, 100, 200, 200], frame) == 1.0


def test_frame_is_read_from_the_record(tmp_path):
    sample = load_samples(TASKS["grounding"], build_grounding(tmp_path))[0]
    record = {"prediction": '{"bbox_2d": [10, 8, 30, 24]}', "error": None}
    assert sample_values(("grounding_accuracy",), sample, record) == {"grounding_accuracy": 0.0}  # no frame
    record["frame"] = {"width": 64, "height": 48, "model_width": 64, "model_height": 48}
    assert sample_values(("grounding_accuracy",), sample, record) == {"grounding_accuracy": 1.0}
    assert "frame" not in sample.meta  # the sample itself is left alone


# ---- end to end ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.tiny import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("model"))


def test_run_scores_hand_written_answers(tmp_path, model_dir, monkeypatch, capsys):
    """The model finds the red square (in its own coordinates) and misses the blue dot."""

    def fake_generate(model, processor, conversations, sampling=None):
        frame = frame_for(model.config.model_type, 64, 48, processor.image_settings)
        answers = []
        for conv in conversations:
            question = conv[-1]["content"][-1]["text"]
            found = Box(10, 8, 30, 24, "red square") if "red square" in question else Box(0, 0, 5, 5, "dot")
            answers.append(format_answer([to_model(found, frame)]))
        return answers

    monkeypatch.setattr("qwen_vl.generation.generate_text", fake_generate)
    data, out = build_grounding(tmp_path / "data"), tmp_path / "out"
    argv = ["--task", "grounding", "--data", str(data), "--model", str(model_dir), "--output", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"] == {"grounding_accuracy": 50.0}
    assert result["categories"]["dots"]["grounding_accuracy"] == 0.0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert records[0]["frame"]["width"] == 64 and records[0]["scores"] == {"grounding_accuracy": 1.0}
    capsys.readouterr()
    # scored again from the records alone (a resumed run answers nothing)
    assert main([*argv, "--no-progress", "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["metrics"] == {"grounding_accuracy": 50.0}
