"""The synthetic-ground task: its loader, the boxes-matched metric by worked examples, and scoring a
predictions file end to end."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from qwen_vl.eval.datasets import DataError
from qwen_vl.eval.metrics import boxes_matched
from qwen_vl.eval.report import sample_values
from qwen_vl.eval.runner import _frame, main
from qwen_vl.eval.scoring import METRICS, _matched_percent, failed_value
from qwen_vl.eval.tasks import TASKS, load_samples
from qwen_vl.grounding import Box, Frame, format_answer
from qwen_vl.processing.image import ImageSettings

FRAME = Frame(width=640, height=480, model_width=320, model_height=240)  # the model saw it at half size
STAR = {"label": "red star", "bbox": [100, 100, 200, 200]}  # original pixels
CIRCLE = {"label": "blue circle", "bbox": [300, 100, 400, 200]}
SQUARE = {"label": "green square", "bbox": [500, 300, 600, 400]}
TRUTH = [STAR, CIRCLE, SQUARE]


def answer(*boxes: tuple) -> str:
    """An answer in the model's (half-size) coordinates: (x1, y1, x2, y2, label) each."""
    return format_answer([Box(*box) for box in boxes])


RIGHT = [(50, 50, 100, 100, "red star"), (150, 50, 200, 100, "blue circle"), (250, 150, 300, 200, "green square")]


@pytest.mark.parametrize(
    ("prediction", "matched"),
    [
        (answer(*RIGHT), 3),
        (answer(*reversed(RIGHT)), 3),  # the order written does not matter
        (answer(RIGHT[0], RIGHT[1]), 2),  # a missed box costs itself
        # the square half a box off to the right: IoU = 50*100 / (150*100) = 1/3 in original pixels
        (answer(RIGHT[0], RIGHT[1], (275, 150, 325, 200, "green square")), 2),
        # the square's place, the wrong label
        (answer(RIGHT[0], RIGHT[1], (250, 150, 300, 200, "green circle")), 2),
        # labels are compared without case and extra spaces
        (answer((50, 50, 100, 100, "Red  Star"), RIGHT[1], RIGHT[2]), 3),
        # one extra box, however good the others: nothing matches
        (answer(*RIGHT, (0, 0, 10, 10, "red star")), 0),
        # the star twice: one-to-one, the copy matches nothing (and the square is missed)
        (answer(RIGHT[0], RIGHT[0], RIGHT[1]), 2),
        ('[{"bbox_2d": [50, 50, 100, 100], "label": "red star"}]', 1),  # bare JSON, no fence
        ("There are three shapes.", 0),
    ],
)
def test_boxes_matched_worked_examples(prediction, matched):
    assert boxes_matched(prediction, TRUTH, FRAME) == (matched, 3)


def test_boxes_matched_threshold_is_inclusive():
    # reference 0..120 x 0..100; prediction shifted right by 40 -> IoU = 80*100 / (160*100) = 0.5
    frame, truth = Frame(1000, 1000, 1000, 1000), [{"label": "red star", "bbox": [0, 0, 120, 100]}]
    assert boxes_matched(answer((40, 0, 160, 100, "red star")), truth, frame) == (1, 1)
    assert boxes_matched(answer((41, 0, 161, 100, "red star")), truth, frame) == (0, 1)


def test_greedy_matching_takes_the_best_pair_first():
    """Two references of one label (not in the synthetic world, where labels are unique): pairs are
    taken in falling IoU, not reference by reference."""
    frame = Frame(1000, 1000, 1000, 1000)
    truth = [{"label": "dot", "bbox": [0, 0, 100, 100]}, {"label": "dot", "bbox": [40, 0, 140, 100]}]
    # the first prediction: IoU 70/130 = 0.54 with the first reference, 90/110 = 0.82 with the second;
    # the second prediction: 52/100 = 0.52 with the first, 12/140 with the second. Giving the first
    # reference its best prediction would leave the second unmatched.
    found = boxes_matched(answer((30, 0, 130, 100, "dot"), (0, 0, 52, 100, "dot")), truth, frame)
    assert found == (2, 2)


def test_boxes_matched_over_a_set():
    """All matched boxes over all true boxes: (3 + 2 + 0) / (3 + 3 + 2) = 62.5 %; failed samples
    count their boxes as missed; samples it does not apply to (None) are left out."""
    assert _matched_percent([[3, 3], [2, 3], [0, 2], None]) == 62.5
    assert _matched_percent([None]) == 0.0


# ---- the data set -----------------------------------------------------------------------------------
def ground_line(sample_id: str, qtype: str, objects: list[dict]) -> dict:
    model = [[v // 2 for v in o["bbox"]] for o in objects]
    text = format_answer([Box(*m, o["label"]) for m, o in zip(model, objects, strict=True)])
    if qtype == "one":
        prompt = f"Locate the {objects[0]['label']} in the image and output its bbox coordinates in JSON format."
    else:
        prompt = "Locate every shape in the image and output their bbox coordinates in JSON format."
    return {
        "id": sample_id,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "image": "images/ground/a.png"}, {"type": "text", "text": prompt}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": text}]},
        ],
        "task": "ground",
        "answer": text,
        "question_type": qtype,
        "objects": [{**o, "bbox_2d": m} for o, m in zip(objects, model, strict=True)],
        "frame": {"width": 640, "height": 480, "model_width": 320, "model_height": 240},
        "scene": {},
    }


def build_ground(root):
    (root / "images/ground").mkdir(parents=True)
    Image.new("RGB", (640, 480), (200, 200, 200)).save(root / "images/ground/a.png")
    lines = [
        ground_line("one-star", "one", [STAR]),
        ground_line("one-circle", "one", [CIRCLE]),
        ground_line("every-3", "every", TRUTH),
        ground_line("every-2", "every", [STAR, SQUARE]),
    ]
    (root / "ground.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def test_loader_gives_boxes_sizes_and_the_answers_frame(tmp_path):
    samples = load_samples(TASKS["synthetic-ground"], build_ground(tmp_path))
    assert [s.category for s in samples] == ["one", "one", "every", "every"]
    one, every = samples[0], samples[2]
    assert one.meta["box"] == [100.0, 100.0, 200.0, 200.0] and "boxes" not in one.meta
    assert every.meta["boxes"] == [{"label": o["label"], "bbox": [float(v) for v in o["bbox"]]} for o in TRUTH]
    assert (every.meta["width"], every.meta["height"]) == (640, 480) and every.meta["frame"]["model_width"] == 320
    assert one.messages[0]["content"][0]["image"] == str(tmp_path / "images/ground/a.png")
    assert [s.id for s in load_samples(TASKS["synthetic-ground"], tmp_path / "ground.jsonl")] == [s.id for s in samples]
    # a run records the running model's frame for both kinds of prompt
    backend = type("Backend", (), {"model_type": "qwen2_5_vl", "image_settings": ImageSettings()})
    assert _frame(every, None, backend) == {"width": 640, "height": 480, "model_width": 644, "model_height": 476}
    assert _frame(one, None, backend)["model_height"] == 476 and _frame(one, "unreadable", backend) is None


def test_failed_and_frameless_samples(tmp_path):
    every = load_samples(TASKS["synthetic-ground"], build_ground(tmp_path))[2]
    assert failed_value(METRICS["boxes_matched"], every) == [0, 3]
    record = {"prediction": answer(*RIGHT), "error": None}
    assert sample_values(("grounding_accuracy", "boxes_matched"), every, record) == {
        "grounding_accuracy": None,
        "boxes_matched": [3, 3],
    }
    # a record's own frame wins over the data's: here the model saw the picture at full size
    record["frame"] = {"width": 640, "height": 480, "model_width": 640, "model_height": 480}
    assert sample_values(("boxes_matched",), every, record) == {"boxes_matched": [0, 3]}


def test_bad_ground_lines(tmp_path):
    build_ground(tmp_path)
    line = json.loads((tmp_path / "ground.jsonl").read_text().splitlines()[2])
    for broken in ({"question_type": "some"}, {"frame": {"width": 640}}, {"question_type": "one"}):
        (tmp_path / "ground.jsonl").write_text(json.dumps(line | broken) + "\n")
        with pytest.raises(DataError, match="ground line"):
            load_samples(TASKS["synthetic-ground"], tmp_path)


def test_scoring_a_predictions_file(tmp_path, capsys):
    """No frames in the file: the boxes are read in the frame the set's answers use. The star is
    found, the circle missed; every-3 finds two of three, every-2 draws an extra box."""
    data, out = build_ground(tmp_path / "data"), tmp_path / "out"
    predictions = {
        "one-star": answer(RIGHT[0]),
        "one-circle": answer((0, 0, 20, 20, "blue circle")),
        "every-3": answer(RIGHT[0], RIGHT[1]),
        "every-2": answer(RIGHT[0], RIGHT[2], (0, 0, 5, 5, "red star")),
    }
    file = tmp_path / "answers.jsonl"
    file.write_text("".join(json.dumps({"id": k, "prediction": v}) + "\n" for k, v in predictions.items()))
    argv = ["--task", "synthetic-ground", "--data", str(data), "--predictions", str(file), "--output", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"] == {"grounding_accuracy": 50.0, "boxes_matched": 40.0}  # 1/2; (2 + 0) / (3 + 2)
    assert result["categories"]["every"]["grounding_accuracy"] is None
    assert result["categories"]["one"]["boxes_matched"] is None
    assert "| synthetic-ground | 4 | 0 | 50.00 | 40.00 |" in capsys.readouterr().out
