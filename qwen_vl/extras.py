"""Optional dependencies: which extra installs each, and one clear line when one is missing."""

from __future__ import annotations

from contextlib import contextmanager

from .errors import QwenVLError

# top-level module -> (the package that provides it, the extra of pyproject.toml that installs it)
EXTRA_OF = {
    "gradio": ("gradio", "app"),
    "gradio_client": ("gradio_client", "app"),
    "accelerate": ("accelerate", "train"),
    "peft": ("peft", "train"),
    "yaml": ("pyyaml", "train"),
    "tensorboard": ("tensorboard", "train"),
    "pyarrow": ("pyarrow", "eval"),
    "decord": ("decord", "video"),
    "flash_attn": ("flash-attn", "gpu"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
}


class MissingExtraError(QwenVLError):
    """An optional dependency that the requested work needs is not installed."""


def missing_extra(err: ImportError, what: str) -> MissingExtraError | None:
    """The one-line error for an import of an optional dependency that failed; None for any other module."""
    module = (getattr(err, "name", None) or "").split(".")[0]
    if module not in EXTRA_OF:
        return None
    package, extra = EXTRA_OF[module]
    return MissingExtraError(f"{what} needs {package}, which is not installed: pip install 'qwen-vl[{extra}]'")


@contextmanager
def needs_extras(what: str):
    """Turn a missing optional dependency met inside the block into MissingExtraError naming its extra."""
    try:
        yield
    except ModuleNotFoundError as err:
        found = missing_extra(err, what)
        if found is None:
            raise
        raise found from None
