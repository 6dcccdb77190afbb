"""`qwen-vl ask --add-vision-id` reaches the prompt (in process: the model is not needed)."""

import pytest
from PIL import Image
from typer.testing import CliRunner

from qwen_vl import cli
from qwen_vl.processing import QwenVLProcessor, build_tokenizer


@pytest.fixture
def prompts(monkeypatch):
    """The prompt text each `ask` renders; the answer is a fixed word."""
    processor = QwenVLProcessor(build_tokenizer(["What is it?"] * 10, vocab_size=300))
    seen = []

    def fake_stream(model, proc, conversation, sampling):
        seen.append(proc.apply_chat_template(conversation))
        yield "ok"

    monkeypatch.setattr(cli, "load", lambda *args: (None, processor))
    monkeypatch.setattr("qwen_vl.generation.stream_text", fake_stream)
    return seen


@pytest.mark.parametrize(("flag", "label"), [([], False), (["--add-vision-id"], True)])
def test_ask_add_vision_id(tmp_path, prompts, flag, label):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (32, 32), "red").save(tmp_path / name)
    args = ["ask", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-q", "What is it?", *flag]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert result.output == "ok\n"
    assert ("Picture 1: <|vision_start|>" in prompts[0]) is label
    assert ("Picture 2: <|vision_start|>" in prompts[0]) is label
