"""Shared test set-up: tests import their helpers as `tests.tiny` and `tests.app.support`; the
fixtures below give each test module that asks for them a saved tiny checkpoint and what loads it."""

import pytest
import torch

from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.processing import QwenVLProcessor
from tests.tiny import save_tiny_model_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL checkpoint folder (tests/tiny.py), one per test module."""
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def model(tiny_dir):
    return QwenVLForConditionalGeneration.from_pretrained(tiny_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def processor(tiny_dir):
    return QwenVLProcessor.from_pretrained(tiny_dir)
