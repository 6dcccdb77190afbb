"""Evaluation through an OpenAI-compatible server: the same predictions as a local run of the same model."""

import json

import pytest

from qwen_vl.eval.runner import main
from tests.eval.layouts import build_grounding, build_jsonl
from tests.serve.support import serve_subprocess

pytest.importorskip("fastapi")


def predictions(out_dir) -> list[tuple]:
    lines = (out_dir / "predictions.jsonl").read_text().splitlines()
    return [(r["id"], r["prediction"], r["error"], r.get("frame")) for r in map(json.loads, lines)]


@pytest.mark.parametrize("build, task", [(build_jsonl, "jsonl"), (build_grounding, "grounding")])
def test_a_run_through_qwen_vl_serve_equals_a_local_run(tiny_dir, tmp_path, build, task):
    data = build(tmp_path / "data")
    common = ["--task", task, "--data", str(data), "--max-new-tokens", "6", "--no-progress"]
    assert main([*common, "--model", str(tiny_dir), "--dtype", "float32", "--output", str(tmp_path / "local")]) == 0
    with serve_subprocess("--model", str(tiny_dir), "--dtype", "float32") as url:
        remote = ["--api-base", url, "--api-model", tiny_dir.name, "--output", str(tmp_path / "api")]
        assert main([*common, *remote, "--batch-size", "3"]) == 0
    assert predictions(tmp_path / "api") == predictions(tmp_path / "local")
    local, api = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("local", "api"))
    assert {k: v for k, v in api.items() if k != "model"} == {k: v for k, v in local.items() if k != "model"}


def test_an_unreachable_server_stops_the_run_with_one_line(tmp_path, capsys):
    data = build_jsonl(tmp_path / "data")
    argv = ["--task", "jsonl", "--data", str(data), "--api-base", "http://127.0.0.1:9/v1", "--api-model", "m"]
    assert main([*argv, "--output", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the server" in err


def test_api_options_go_together(tmp_path, capsys):
    argv = ["--task", "jsonl", "--data", str(tmp_path), "--api-base", "http://127.0.0.1:9/v1"]
    assert main(argv) == 2
    assert "--api-base and --api-model go together" in capsys.readouterr().err
