"""Fixtures of the recipe's tests."""

import pytest

from bundled_model.pretrain_llm import main as pretrain_llm


@pytest.fixture(scope="module")
def world_llm(tmp_path_factory):
    """A tiny stage-0 LLM with the world's tokenizer (its colour, kind and region words are one token each)."""
    out = tmp_path_factory.mktemp("stage0") / "llm"
    tiny = ["--lines", "40", "--chats", "40", "--hidden", "32", "--layers", "1", "--intermediate", "64"]
    tiny += ["--heads", "2", "--kv-heads", "1", "--batch-size", "2", "--seq-len", "32", "--steps", "1"]
    assert pretrain_llm(["--out", str(out), *tiny]) == 0
    return out
