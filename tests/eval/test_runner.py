"""The runner: scores by construction, failed samples, resume after SIGKILL, two processes = one,
bad input as one clear line."""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwen_vl.eval.predictions import PREDICTIONS, read_records
from qwen_vl.eval.runner import main
from tests.eval.layouts import build_jsonl, build_textvqa, png_bytes, save_png

REPO = Path(__file__).resolve().parents[2]
NO_MATCH = "no such answer 12345"


def env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.tiny import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("model"))


def run_eval(*argv) -> int:
    return main([str(a) for a in argv] + ["--no-progress"])


def predictions(out: Path) -> dict[str, str | None]:
    records = read_records(out / PREDICTIONS)
    assert len(records) == len({r["id"] for r in records}), "duplicate ids"
    return {r["id"]: r["prediction"] for r in records}


def test_scores_by_construction_and_failed_sample(tmp_path, model_dir):
    """Answers copied from the model's own predictions for two of four readable samples; a fifth
    sample has no image. VQA accuracy must be exactly 2 of 5 (the failed one counts as wrong)."""
    first = build_textvqa(tmp_path / "v1", answers=[[NO_MATCH] * 10] * 5, missing=(3,))
    assert (
        run_eval(
            "--task",
            "textvqa",
            "--data",
            first,
            "--model",
            model_dir,
            "--output",
            tmp_path / "o1",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "4",
        )
        == 0
    )
    said = predictions(tmp_path / "o1")
    assert said["7003"] is None
    answers = [[said["7000"]] * 10, [NO_MATCH] * 10, [said["7002"]] * 10, [NO_MATCH] * 10, [NO_MATCH] * 10]
    second = build_textvqa(tmp_path / "v2", answers=answers, missing=(3,))
    assert (
        run_eval(
            "--task",
            "textvqa",
            "--data",
            second,
            "--model",
            model_dir,
            "--output",
            tmp_path / "o2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "4",
        )
        == 0
    )
    result = json.loads((tmp_path / "o2" / "metrics.json").read_text())
    assert result["metrics"]["textvqa_accuracy"] == pytest.approx(100 * 2 / 5)
    assert (
        result["num_failed"] == 1
        and "img003.jpg" in result["failures"]["7003"]
        and "not found" in result["failures"]["7003"]
    )
    record = {r["id"]: r for r in read_records(tmp_path / "o2" / PREDICTIONS)}["7003"]
    assert record["prediction"] is None and "img003.jpg" in record["error"]
    assert predictions(tmp_path / "o2") == said  # greedy and batch-for-batch the same


def test_killed_run_resumes_to_the_same_result(tmp_path, model_dir):
    rows = [
        {"id": f"s{i}", "image": f"imgs/{i}.png", "question": f"Describe picture {i}.", "answers": ["x"]}
        for i in range(60)
    ]
    data = build_jsonl(tmp_path / "v1", rows)
    common = ["--task", "jsonl", "--model", model_dir, "--batch-size", "2", "--max-new-tokens", "6"]
    assert run_eval(*common, "--data", data, "--output", tmp_path / "ref") == 0
    reference = predictions(tmp_path / "ref")
    for i, row in enumerate(rows):  # every third answer is what the model says: 20 of 60 exact matches
        row["answers"] = [reference[row["id"]]] if i % 3 == 0 else [NO_MATCH]
    (data / "set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "eval", *map(str, common), "--data", str(data), "--output", str(out), "--no-progress"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(read_records(out / PREDICTIONS)) < 4:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_records(out / PREDICTIONS))
    assert 4 <= done_before < 60, f"the run was not stopped mid-way ({done_before} of 60 written)"
    with open(out / PREDICTIONS, "ab") as handle:  # a write torn by the kill
        handle.write(b'{"id": "s59", "prediction": "tor')
    assert not (out / "metrics.json").exists()

    assert run_eval(*common, "--data", data, "--output", out, "--resume") == 0
    lines = (out / PREDICTIONS).read_text().splitlines()
    assert len(lines) == 60 and [json.loads(line)["id"] for line in lines] == [r["id"] for r in rows]
    assert predictions(out) == reference
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["exact_match"] == pytest.approx(100 * 20 / 60)
    assert result["num_samples"] == 60 and result["num_failed"] == 0 and result["num_missing"] == 0


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate launcher not installed")
def test_two_processes_give_the_same_metrics_as_one(tmp_path, model_dir):
    first = build_textvqa(tmp_path / "v1", answers=[[NO_MATCH] * 10] * 7, missing=(5,))
    common = ["--task", "textvqa", "--model", str(model_dir), "--batch-size", "1", "--max-new-tokens", "5"]
    assert run_eval(*common, "--data", first, "--output", tmp_path / "one") == 0
    said = predictions(tmp_path / "one")
    answers = [[said[f"{7000 + i}"] or NO_MATCH] * 10 if i in (0, 3, 4) else [NO_MATCH] * 10 for i in range(7)]
    data = build_textvqa(tmp_path / "v2", answers=answers, missing=(5,))
    assert run_eval(*common, "--data", data, "--output", tmp_path / "one-v2") == 0

    # accelerate 1.x: `--cpu` always starts one process; `--multi_gpu` runs torchrun, also on CPUs
    launch = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += [
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "eval",
        *common,
        "--data",
        str(data),
        "--output",
        str(tmp_path / "two"),
        "--no-progress",
    ]
    done = subprocess.run(launch, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one-v2" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["metrics"] == one["metrics"] and two["metrics"]["textvqa_accuracy"] == pytest.approx(100 * 3 / 7)
    for key in ("num_samples", "num_failed", "num_missing", "failures"):
        assert two[key] == one[key]
    assert predictions(tmp_path / "two") == said
    assert not list((tmp_path / "two").glob("predictions.part-*"))  # merged and removed


def test_bad_input_is_one_line_and_exit_2(tmp_path, model_dir, capsys):
    data = build_textvqa(tmp_path / "v")
    assert run_eval("--task", "textvqa", "--data", tmp_path / "nowhere", "--model", model_dir) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere: no such file or directory" in err and "\n" not in err

    out = tmp_path / "out"
    assert (
        run_eval("--task", "textvqa", "--data", data, "--model", model_dir, "--output", out, "--max-new-tokens", "2")
        == 0
    )
    before = (out / PREDICTIONS).read_bytes(), (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert run_eval("--task", "textvqa", "--data", data, "--model", model_dir, "--output", out) == 2
    err = capsys.readouterr().err.strip()
    assert "--resume" in err and "\n" not in err
    assert ((out / PREDICTIONS).read_bytes(), (out / "metrics.json").read_bytes()) == before  # untouched

    assert (
        run_eval(
            "--task", "textvqa", "--data", data, "--model", model_dir, "--output", tmp_path / "m", "--metric", "bleu"
        )
        == 2
    )
    assert "unknown metric" in capsys.readouterr().err
    assert (
        run_eval("--task", "textvqa", "--data", data, "--model", tmp_path / "no-model", "--output", tmp_path / "n") == 2
    )
    assert "no-model" in capsys.readouterr().err
    assert run_eval("--task", "textvqa", "--data", data, "--limit", "0") == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_resume_of_finished_run_rescores_without_the_model(tmp_path, model_dir):
    data = build_textvqa(tmp_path / "v")
    out = tmp_path / "out"
    assert (
        run_eval("--task", "textvqa", "--data", data, "--model", model_dir, "--output", out, "--max-new-tokens", "2")
        == 0
    )
    first = json.loads((out / "metrics.json").read_text())
    # nothing left to answer: the model is not even loaded (a missing model directory is fine)
    assert run_eval("--task", "textvqa", "--data", data, "--model", tmp_path / "gone", "--output", out, "--resume") == 0
    assert json.loads((out / "metrics.json").read_text())["metrics"] == first["metrics"]
    assert len((out / PREDICTIONS).read_text().splitlines()) == 3


@pytest.mark.skipif(shutil.which("qwen-vl") is None, reason="qwen-vl entry point not installed")
def test_qwen_vl_eval_subcommand(tmp_path):
    done = subprocess.run(
        ["qwen-vl", "eval", "--task", "textvqa", "--data", str(tmp_path / "nowhere")],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: ")


def test_resume_retries_failed_samples(tmp_path, model_dir):
    data = build_textvqa(tmp_path / "v", missing=(1,))
    out = tmp_path / "out"
    common = ["--task", "textvqa", "--data", data, "--model", model_dir, "--output", out, "--max-new-tokens", "2"]
    assert run_eval(*common) == 0
    assert json.loads((out / "metrics.json").read_text())["num_failed"] == 1
    save_png(data / "train_images" / "img001.jpg", 1)  # the missing image turns up
    assert run_eval(*common, "--resume") == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["num_failed"] == 0 and result["failures"] == {}
    said = predictions(out)
    assert len(said) == 3 and said["7001"] is not None


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_scoring_a_predictions_file_without_a_model(tmp_path, capsys):
    data = build_textvqa(tmp_path / "v")  # every answer is ten times "sign"
    given = write_lines(
        tmp_path / "p.jsonl",
        [{"id": 7000, "prediction": "Sign."}, {"id": "7001", "prediction": "board"}, {"id": "x", "prediction": "y"}],
    )
    out = tmp_path / "out"
    argv = ["--task", "textvqa", "--data", data, "--predictions", given, "--output", out]
    assert run_eval(*argv, "--model", tmp_path / "no-model") == 0  # the model is never loaded
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"] == {"textvqa_accuracy": 50.0}  # 7002 has no prediction: missing, not scored
    assert result["num_missing"] == 1 and result["unmatched_predictions"] == 1
    records = {r["id"]: r for r in read_records(out / PREDICTIONS)}
    assert records["7000"]["scores"] == {"textvqa_accuracy": 1.0} and records["7001"]["scores"] == {
        "textvqa_accuracy": 0.0
    }
    assert "| textvqa | 3 | 0 | 50.00 |" in (out / "metrics.md").read_text()
    assert run_eval(*argv, "--metric", "vqa_accuracy,vqa_accuracy_lmms", "--output", tmp_path / "o2") == 0
    assert json.loads((tmp_path / "o2" / "metrics.json").read_text())["metrics"] == {
        "vqa_accuracy": 0.0,  # vqaEval.py: the ten answers agree, so "Sign." is compared as written
        "vqa_accuracy_lmms": 50.0,
    }
    capsys.readouterr()
    assert run_eval(*argv) == 2  # the output folder holds a run
    assert "pick another --output" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "7000", "prediction": "a"}\nnot json\n')
    assert run_eval("--task", "textvqa", "--data", data, "--predictions", bad, "--output", tmp_path / "o3") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "bad.jsonl:2" in err and "\n" not in err
    other = write_lines(tmp_path / "other.jsonl", [{"id": "q1", "prediction": "a"}])
    assert run_eval("--task", "textvqa", "--data", data, "--predictions", other, "--output", tmp_path / "o4") == 2
    assert "none of its ids" in capsys.readouterr().err


def test_mmbench_main_questions_by_default_and_circular(tmp_path):
    data = build_mmbench_circular(tmp_path / "m")
    # question 11 (answer B) is right in all four rotations; question 12 (answer D) in three of four
    rows = [{"id": "11", "prediction": "**B**"}, {"id": "12", "prediction": "The answer is D."}]
    rows += [{"id": str(11 + k * 1_000_000), "prediction": f"<answer>{'ADC'[k - 1]}</answer>"} for k in (1, 2, 3)]
    rows += [{"id": str(12 + k * 1_000_000), "prediction": "CBB"[k - 1] + "."} for k in (1, 2, 3)]  # last: A
    given = write_lines(tmp_path / "p.jsonl", rows)
    common = ["--task", "mmbench", "--data", data, "--predictions", given]
    assert run_eval(*common, "--output", tmp_path / "plain") == 0
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert plain["num_samples"] == 2 and plain["metrics"] == {"choice_accuracy": 100.0}
    assert run_eval(*common, "--output", tmp_path / "circ", "--circular") == 0
    circ = json.loads((tmp_path / "circ" / "metrics.json").read_text())
    assert circ["num_samples"] == 8
    assert circ["metrics"] == {"circular_accuracy": 50.0, "choice_accuracy": 87.5}
    assert run_eval("--task", "textvqa", "--data", data, "--predictions", given, "--circular") == 2


def build_mmbench_circular(root):
    """Two questions and their three rotations each (index + k * 1e6, options shifted k places)."""
    root.mkdir(parents=True, exist_ok=True)
    image = base64.b64encode(png_bytes(0)).decode()
    header = ["index", "question", "A", "B", "C", "D", "answer", "category", "image"]
    lines = ["\t".join(header)]
    for index, options, answer in [(11, ["red", "green", "blue", "black"], 1), (12, ["a", "b", "c", "d"], 3)]:
        for k in range(4):
            shifted = options[k:] + options[:k]  # rotation k: the answer moves k places up
            letter = "ABCD"[(answer - k) % 4]
            row = [str(index + k * 1_000_000), "Which?", *shifted, letter, "colour", image if k == 0 else str(index)]
            lines.append("\t".join(row))
    (root / "MMBench_DEV_EN.tsv").write_text("\n".join(lines) + "\n")
    return root
