"""Fixtures of the recipe's tests."""

import pytest

from bundled_model.pretrain_llm import main as pretrain_llm
from bundled_model.tests.helpers import TINY


@pytest.fixture(scope="module")
def world_llm(tmp_path_factory):
    """A tiny stage-0 LLM with the world's tokenizer (its colour, kind and region words are one token each)."""
    out = tmp_path_factory.mktemp("stage0") / "llm"
    assert pretrain_llm(["--out", str(out), "--lines", "40", "--chats", "40", "--steps", "1"], TINY) == 0
    return out
