"""A command whose optional dependency is missing: one line naming the extra to install, exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.eval.layouts import build_parquet_textvqa

REPO = Path(__file__).resolve().parents[2]


def run_without(module: str, code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where importing `module` fails as if it were not installed."""
    blocked = f"import sys; sys.modules[{module!r}] = None\n"
    return subprocess.run([sys.executable, "-c", blocked + code], cwd=REPO, capture_output=True, text=True, timeout=120)


def cli(*args: str) -> str:
    return f"import sys; from qwen_vl.cli import main; sys.argv = ['qwen-vl', *{list(args)!r}]; main()"


@pytest.mark.parametrize(
    "module, code, extra",
    [
        ("gradio", "import runpy, sys; sys.argv = ['app.py']; runpy.run_path('app.py', run_name='__main__')", "app"),
        ("yaml", cli("train", "--config", "training/configs/stage1.yaml"), "train"),
        ("accelerate", cli("train", "--config", "training/configs/stage1.yaml"), "train"),
    ],
    ids=["app without gradio", "train without pyyaml", "train without accelerate"],
)
def test_a_missing_extra_is_one_line_naming_it(module, code, extra):
    run = run_without(module, code)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and f"pip install 'qwen-vl[{extra}]'" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_parquet_eval_without_pyarrow_names_the_eval_extra(tmp_path):
    data = build_parquet_textvqa(tmp_path / "textvqa")
    run = run_without("pyarrow", cli("eval", "--task", "textvqa", "--data", str(data), "--output", str(tmp_path / "o")))
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().endswith("pip install 'qwen-vl[eval]'") and run.stderr.count("\n") == 1, run.stderr
