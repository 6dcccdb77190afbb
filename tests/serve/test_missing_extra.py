"""Without fastapi or uvicorn, `qwen-vl serve` says which extra to install, in one line."""

import sys

import pytest

from qwen_vl.extras import MissingExtraError
from qwen_vl.serve.options import ServeOptions
from qwen_vl.serve.server import run


@pytest.mark.parametrize("module", ["fastapi", "uvicorn"])
def test_missing_module_names_the_serve_extra(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingExtraError, match=r"qwen-vl serve needs .*pip install 'qwen-vl\[serve\]'"):
        run(ServeOptions(model_name="x"), None, "127.0.0.1", 8000)
