"""Small sets in every supported layout: they load with the right fields and run end to end on a
tiny model."""

import json

import pytest

from qwen_vl.eval.datasets import DataError, ParquetImage
from qwen_vl.eval.runner import main
from qwen_vl.eval.tasks import TASKS, conversation, load_samples
from tests.eval.layouts import (  # noqa: F401
    LAYOUTS,
    MMBENCH_HEADER,
    _image_struct,
    build_chartqa,
    build_docvqa,
    build_infovqa,
    build_jsonl,
    build_mmbench,
    build_ocrbench,
    build_parquet_chartqa,
    build_parquet_mmbench,
    build_parquet_ocrbench,
    build_parquet_textvqa,
    build_parquet_vqav2,
    build_synthetic,
    build_textvqa,
    build_vqav2,
    png_bytes,
    save_png,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.tiny import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("model"))


def _image_bytes(sample) -> bytes:
    image = sample.image.load() if isinstance(sample.image, ParquetImage) else sample.image
    return image if isinstance(image, bytes) else open(image, "rb").read()


# ---- loading ---------------------------------------------------------------------------------------------


def test_vqav2_fields(tmp_path):
    samples = load_samples(TASKS["vqav2"], build_vqav2(tmp_path))
    assert [s.id for s in samples] == ["400", "401", "402"]
    assert samples[1].answers == ["two"] * 10 and samples[1].category == "number"
    assert samples[2].image.endswith("val2014/COCO_val2014_000000000042.jpg")
    assert _image_bytes(samples[2]) == png_bytes(2)


def test_textvqa_docvqa_infovqa_fields(tmp_path):
    text = load_samples(TASKS["textvqa"], build_textvqa(tmp_path / "t", missing=(1,)))
    assert [s.id for s in text] == ["7000", "7001", "7002"] and text[0].answers == ["sign"] * 10
    assert _image_bytes(text[2]) == png_bytes(2)
    assert text[1].image.endswith("train_images/img001.jpg")  # kept, so the run records it as failed
    doc = load_samples(TASKS["docvqa"], build_docvqa(tmp_path / "d"))
    assert (
        doc[0].id == "50" and doc[0].answers == ["1 May 1990", "May 1, 1990"] and _image_bytes(doc[1]) == png_bytes(1)
    )
    info = load_samples(TASKS["infovqa"], build_infovqa(tmp_path / "i"))
    assert info[2].id == "62" and info[2].answers == ["25%"] and _image_bytes(info[2]) == png_bytes(2)


def test_chartqa_and_ocrbench_fields(tmp_path):
    chart = load_samples(TASKS["chartqa"], build_chartqa(tmp_path / "c"))
    assert [s.id for s in chart] == ["test_augmented:0", "test_augmented:1", "test_human:0", "test_human:1"]
    assert chart[3].answers == ["11"] and chart[3].category == "human" and _image_bytes(chart[3]) == png_bytes(1)
    ocr = load_samples(TASKS["ocrbench"], build_ocrbench(tmp_path / "o"))
    assert [s.meta["dataset_name"] for s in ocr] == ["IIIT5K", "HME100k", "docVQA"]
    assert (
        ocr[2].answers == ["Report"] and ocr[2].category == "Doc-oriented VQA" and _image_bytes(ocr[2]) == png_bytes(2)
    )


def test_mmbench_fields(tmp_path):
    samples = load_samples(TASKS["mmbench"], build_mmbench(tmp_path))
    assert [s.id for s in samples] == ["11", "12", "13"]
    assert samples[0].question == "What colour is the square?\nA. red\nB. green\nC. blue"
    assert samples[1].question == "Look closely.\nWhich shape is shown?\nA. circle\nB. square\nC. star\nD. triangle"
    assert samples[2].meta["options"] == {"A": "yes", "B": "no"} and samples[2].answers == ["A"]
    assert samples[2].image == png_bytes(0)  # image given by the index of row 11
    chat = conversation(samples[0], TASKS["mmbench"].prompt)
    assert chat[0]["content"][1]["text"].endswith(
        "C. blue\nAnswer with the option's letter from the given choices directly."
    )


def test_parquet_mirrors(tmp_path):
    text = load_samples(TASKS["textvqa"], build_parquet_textvqa(tmp_path / "t"))
    assert [s.id for s in text] == ["1", "2", "3"] and text[2].answers == ["z"] * 10
    assert [_image_bytes(s) for s in text] == [png_bytes(i) for i in range(3)]  # across two row groups
    vqa = load_samples(TASKS["vqav2"], build_parquet_vqav2(tmp_path / "v"))
    assert vqa[1].answers == ["two"] * 10 and vqa[1].category == "number"
    chart = load_samples(TASKS["chartqa"], build_parquet_chartqa(tmp_path / "c"))
    assert (
        chart[1].id == "test-00000-of-00001:1"
        and chart[1].answers == ["3.5"]
        and _image_bytes(chart[1]) == png_bytes(1)
    )
    ocr = load_samples(TASKS["ocrbench"], build_parquet_ocrbench(tmp_path / "o"))
    assert ocr[1].meta["dataset_name"] == "HME100k" and ocr[1].category.startswith("Handwritten")
    mmb = load_samples(TASKS["mmbench"], build_parquet_mmbench(tmp_path / "m"))
    assert mmb[1].question == "A hint.\nShape?\nA. circle\nB. square\nC. star" and mmb[1].answers == ["C"]


def test_jsonl_and_synthetic(tmp_path):
    generic = load_samples(TASKS["jsonl"], build_jsonl(tmp_path / "j"))
    assert [s.id for s in generic] == ["a", "2"] and generic[1].answers == ["red"] and generic[1].category == "colour"
    synthetic = load_samples(TASKS["synthetic-vqa"], build_synthetic(tmp_path / "s"))
    assert len(synthetic) == 3 and synthetic[0].answers == ["two"]
    chat = conversation(synthetic[1], "ignored")
    assert [m["role"] for m in chat] == ["user"]  # the assistant turn is the answer, not the prompt
    assert open(chat[0]["content"][0]["image"], "rb").read() == png_bytes(1)
    with pytest.raises(DataError, match="no lines with task 'ocr'"):
        load_samples(TASKS["synthetic-ocr"], tmp_path / "s" / "vqa.jsonl")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "nowhere", "no such file or directory"),
        (lambda p: (p / "TextVQA.json").write_text("{not json") and p, "not a readable JSON file"),
        (lambda p: (p / "TextVQA.json").write_text('{"data": [{"question": "q"}]}') and p, "not in the textvqa layout"),
        (lambda p: (p / "TextVQA.json").write_text("[1, 2]") and p, "not a TextVQA file"),
    ],
)
def test_bad_data_is_one_clear_line(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        load_samples(TASKS["textvqa"], make(tmp_path))


# ---- end to end on a tiny model ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_runs_end_to_end(layout, tmp_path, model_dir, capsys):
    build, task, count = LAYOUTS[layout]
    data = build(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["--task", task, "--data", str(data), "--model", str(model_dir), "--output", str(out)]
    assert main([*argv, "--batch-size", "2", "--max-new-tokens", "3", "--no-progress"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert result["num_samples"] == count and result["num_failed"] == 0 and len(lines) == count
    assert set(result["metrics"]) == set(TASKS[task].metrics)
    assert "| " + task + " | " + str(count) + " | 0 |" in (out / "metrics.md").read_text()
    assert "| " + task in capsys.readouterr().out


def write_mp4(path, seconds=3, fps=4, size=64, appear_at=1):
    """A clip whose frames turn green from second `appear_at` on (H.264, PyAV)."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(seconds * fps):
            colour = (0, 200, 0) if index >= appear_at * fps else (200, 0, 0)
            frame = np.full((size, size, 3), colour, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_sets_run_end_to_end(tmp_path, model_dir):
    """Synthetic video lines (event_second) and a generic JSONL video line, on a real mp4."""
    root = tmp_path / "video"
    write_mp4(root / "videos" / "000000.mp4")
    line = {
        "messages": [
            {"role": "user", "content": [{"type": "video", "video": "videos/000000.mp4"}, {"type": "text", "text": "When does the green square appear?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "At 1 seconds."}]},
        ],
        "task": "video", "answer": "At 1 seconds.", "event_second": 1, "fps": 4,
    }  # fmt: skip
    (root / "video.jsonl").write_text(json.dumps(line) + "\n")
    samples = load_samples(TASKS["synthetic-video"], root)
    assert samples[0].meta == {"event_second": 1, "fps": 4}
    out = tmp_path / "out"
    argv = ["--task", "synthetic-video", "--data", str(root), "--model", str(model_dir), "--output", str(out)]
    assert main([*argv, "--max-new-tokens", "3", "--no-progress"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["num_samples"] == 1 and result["num_failed"] == 0
    assert result["metrics"]["event_second_accuracy"] in (0.0, 100.0)

    (root / "generic.jsonl").write_text(
        json.dumps({"video": "videos/000000.mp4", "question": "Colour?", "answer": "green"}) + "\n"
    )
    (root / "video.jsonl").unlink()
    argv = ["--task", "jsonl", "--data", str(root), "--model", str(model_dir), "--output", str(tmp_path / "out2")]
    assert main([*argv, "--max-new-tokens", "3", "--no-progress", "--metric", "exact_match,cer"]) == 0
    result = json.loads((tmp_path / "out2" / "metrics.json").read_text())
    assert result["num_failed"] == 0 and set(result["metrics"]) == {"exact_match", "cer"}


def test_sets_from_the_synthetic_generator(tmp_path, model_dir):
    """The JSONL and media that bundled_model/synthetic.py writes load and run as synthetic-* tasks."""
    import subprocess
    import sys

    pytest.importorskip("bundled_model.synthetic")
    root = tmp_path / "syn"
    for kind in ("vqa", "video"):
        done = subprocess.run(
            [sys.executable, "-m", "bundled_model.synthetic", "--out", str(root), "--task", kind, "--n", "3", "--seed", "5"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    video = load_samples(TASKS["synthetic-video"], root)
    assert len(video) == 3 and all("event_second" in s.meta for s in video)
    for kind in ("vqa", "video"):
        out = tmp_path / f"out-{kind}"
        argv = ["--task", f"synthetic-{kind}", "--data", str(root), "--model", str(model_dir), "--output", str(out)]
        assert main([*argv, "--max-new-tokens", "3", "--no-progress"]) == 0
        result = json.loads((out / "metrics.json").read_text())
        assert result["num_samples"] == 3 and result["num_failed"] == 0


def test_ocrbench_ids_that_repeat_across_sub_datasets(tmp_path):
    """The published OCRBench.json repeats ids across its sub-datasets: rows are told apart by
    their index, the published id is kept."""
    root = build_ocrbench(tmp_path / "o")
    items = json.loads((root / "OCRBench.json").read_text())
    for item in items:
        item["id"] = 211
    (root / "OCRBench.json").write_text(json.dumps(items))
    samples = load_samples(TASKS["ocrbench"], root)
    assert [s.id for s in samples] == ["0", "1", "2"] and [s.meta["source_id"] for s in samples] == [211] * 3

    import pyarrow as pa
    import pyarrow.parquet as pq

    mirror = tmp_path / "p"
    mirror.mkdir()
    table = pa.table(
        {
            "id": [5, 5],
            "dataset": ["IIIT5K", "svt"],
            "question": ["q", "q"],
            "question_type": ["Regular Text Recognition"] * 2,
            "answer": [["A"], ["B"]],
            "image": [_image_struct(0), _image_struct(1)],
        }
    )
    pq.write_table(table, mirror / "test-00000-of-00001.parquet")
    rows = load_samples(TASKS["ocrbench"], mirror)
    assert [s.id for s in rows] == ["0", "1"] and rows[1].meta == {"dataset_name": "svt", "source_id": "5"}


def test_mmmu_fields_and_scores(tmp_path):
    from tests.eval.layouts import build_mmmu

    data = build_mmmu(tmp_path / "m")
    samples = load_samples(TASKS["mmmu"], data)  # the validation files only
    assert [s.id for s in samples] == ["validation_Art_1", "validation_Math_1", "validation_Math_2"]
    art = samples[0]
    assert art.category == "Art" and art.answers == ["B"] and art.meta["options"]["B"] == "green"
    assert _image_bytes(art) == png_bytes(0) and art.more_images[0].load() == png_bytes(1)
    chat = conversation(art, TASKS["mmmu"].prompt)[0]["content"]
    assert [c["type"] for c in chat] == ["image", "image", "text"]
    assert chat[2]["text"].endswith("C. blue\n\nAnswer with the option's letter from the given choices directly.")
    assert samples[2].answers == ["square", "rhombus"] and samples[2].image is None
    given = tmp_path / "p.jsonl"
    rows = [("validation_Art_1", "The answer is (B)."), ("validation_Math_1", "x = 12.50")]
    rows.append(("validation_Math_2", "It is a circle."))
    given.write_text("".join(json.dumps({"id": i, "prediction": p}) + "\n" for i, p in rows))
    out = tmp_path / "out"
    assert main(["--task", "mmmu", "--data", str(data), "--predictions", str(given), "--output", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["mmmu_accuracy"] == pytest.approx(200 / 3)
    assert (
        result["categories"]["Art"]["mmmu_accuracy"] == 100.0 and result["categories"]["Math"]["mmmu_accuracy"] == 50.0
    )


def test_mathvista_fields_and_scores(tmp_path):
    from tests.eval.layouts import build_mathvista

    data = build_mathvista(tmp_path / "v")
    samples = load_samples(TASKS["mathvista"], data)
    assert [s.id for s in samples] == ["1", "2"] and samples[0].question.startswith("Hint: ")
    assert samples[0].meta["choices"] == ["3", "4", "5"] and samples[1].meta["choices"] == []
    assert samples[1].category == "statistics" and _image_bytes(samples[1]) == png_bytes(1)
    given = tmp_path / "p.jsonl"
    rows = [("1", "The length is 4, so the answer is (B)."), ("2", "I count 11 bars.")]
    given.write_text("".join(json.dumps({"id": i, "prediction": p}) + "\n" for i, p in rows))
    out = tmp_path / "out"
    assert main(["--task", "mathvista", "--data", str(data), "--predictions", str(given), "--output", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"] == {"mathvista_accuracy": 50.0}


def build_videomme(root):
    """lmms-lab/Video-MME schema: videomme/test-*.parquet, videos in data/<videoID>.mp4."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "videomme").mkdir(parents=True)
    write_mp4(root / "data" / "vid00000001.mp4")
    rows = {
        "video_id": ["001", "001"],
        "duration": ["short", "short"],
        "domain": ["Knowledge"] * 2,
        "sub_category": ["Humanity & History"] * 2,
        "url": ["https://www.youtube.com/watch?v=vid00000001"] * 2,
        "videoID": ["vid00000001"] * 2,
        "question_id": ["001-1", "001-2"],
        "task_type": ["Counting Problem", "Object Recognition"],
        "question": ["When does the square turn green?", "What colour is the square at the end?"],
        "options": [["A. At 1 s.", "B. At 2 s.", "C. Never.", "D. At 0 s."], ["A. Red.", "B. Green.", "C. Blue.", "D. Black."]],
        "answer": ["A", "B"],
    }  # fmt: skip
    pq.write_table(pa.table(rows), root / "videomme" / "test-00000-of-00001.parquet")
    return root


def test_videomme_fields_runs_and_scores(tmp_path, model_dir):
    data = build_videomme(tmp_path / "v")
    samples = load_samples(TASKS["videomme"], data)
    first = samples[0]
    assert first.id == "001-1" and first.category == "short" and first.video.endswith("data/vid00000001.mp4")
    assert first.question.splitlines()[0].startswith("Select the best answer")
    assert first.question.endswith("D. At 0 s.\nThe best answer is:") and first.meta["options"]["B"] == "At 2 s."
    out = tmp_path / "out"
    argv = ["--task", "videomme", "--data", str(data), "--model", str(model_dir), "--output", str(out)]
    assert main([*argv, "--max-new-tokens", "3", "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["num_failed"] == 0
    given = tmp_path / "p.jsonl"
    given.write_text('{"id": "001-1", "prediction": "A"}\n{"id": "001-2", "prediction": "The best answer is C."}\n')
    argv = ["--task", "videomme", "--data", str(data), "--predictions", str(given), "--output", str(tmp_path / "o2")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "o2" / "metrics.json").read_text())
    assert result["metrics"] == {"choice_accuracy": 50.0} and result["categories"]["short"]["choice_accuracy"] == 50.0


def build_mvbench(root):
    """OpenGVLab/MVBench layout: json/<task>.json, videos under video/<source folder>/; Episodic
    Reasoning reads folders of frames."""
    (root / "json").mkdir(parents=True)
    write_mp4(root / "video" / "star" / "Charades_v1_480" / "AB12C.mp4", seconds=3, fps=12)
    for index in range(1, 31):  # 10 s of frames at 3 fps
        save_png(root / "video" / "tvqa" / "frames_fps3_hq" / "clip_1" / f"{index:05d}.jpg", index)
    sequence = [
        {
            "video": "AB12C.mp4",
            "question": "What happened after the person took the box?",
            "candidates": ["Put down the cup.", "Opened the door.", "Sat on the bed."],
            "answer": "Opened the door.",
            "start": 0.5,
            "end": 2.5,
        }
    ]
    episodic = [{"video": "clip_1", "question": "Why is Sheldon angry?",
                 "candidates": ["His spot was taken.", "He lost a game.", "It rained.", "No reason."],
                 "answer": "His spot was taken.", "start": 0.0, "end": 10.0}]  # fmt: skip
    (root / "json" / "action_sequence.json").write_text(json.dumps(sequence))
    (root / "json" / "episodic_reasoning.json").write_text(json.dumps(episodic))
    return root


def test_mvbench_fields_frames_and_run(tmp_path, model_dir):
    from qwen_vl.eval.datasets.mvbench import segment_middles

    assert segment_middles(32, 3, None) == list(range(1, 32, 2))  # the middles of 16 two-frame segments
    assert segment_middles(30, 3, (0.0, 10.0), first=1)[:3] == [1, 3, 5]
    data = build_mvbench(tmp_path / "mv")
    samples = {s.id: s for s in load_samples(TASKS["mvbench"], data)}
    sequence, episodic = samples["action_sequence:0"], samples["episodic_reasoning:0"]
    assert sequence.answers == ["B"] and sequence.category == "Action Sequence"
    assert sequence.meta["video_options"] == {"nframes": 16, "video_start": 0.5, "video_end": 2.5}
    assert "Question: What happened" in sequence.question and "\n(C) Sat on the bed.\n" in sequence.question
    assert episodic.answers == ["A"] and len(episodic.video) == 16 and episodic.video[0].endswith("clip_1/00001.jpg")
    out = tmp_path / "out"
    argv = ["--task", "mvbench", "--data", str(data), "--model", str(model_dir), "--output", str(out)]
    assert main([*argv, "--max-new-tokens", "3", "--no-progress"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["num_samples"] == 2 and result["num_failed"] == 0, result["failures"]
    assert set(result["categories"]) == {"Action Sequence", "Episodic Reasoning"}
