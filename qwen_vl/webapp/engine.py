"""The model, loaded once and shared by every session, behind a guard on concurrent use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from qwen_vl.batching import BatchEngine
from qwen_vl.generation import SamplingConfig


class Engine:
    """Streams answers from one shared (model, processor) pair.

    At most `concurrency` generations run at once (the Gradio queue already limits this; the
    semaphore also covers callers outside the queue). They share decode steps: a BatchEngine
    (the one `qwen-vl serve` uses) batches the users' rows, so one more user costs far less than
    one more generation."""

    def __init__(self, model, processor, name: str, concurrency: int = 1, is_demo: bool = False):
        self.model = model
        self.processor = processor
        self.name = name
        self.is_demo = is_demo  # the bundled demo model, which knows only the synthetic shapes world
        self._slots = threading.BoundedSemaphore(concurrency)
        # waiting room for rows a closed stream left behind until the scheduler's next step drops them
        self.batch = BatchEngine(model, processor, max_batch=concurrency, max_waiting=concurrency)

    @classmethod
    def load(
        cls,
        ref: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        concurrency: int = 1,
        quantize: str | None = None,
    ):
        from qwen_vl.loading import is_bundled, load_model, resolve_model_dir

        model_dir = resolve_model_dir(ref)
        model, processor = load_model(
            model_dir, device=device, dtype=dtype, quantize=quantize
        )  # dtype name checked there
        demo = is_bundled(ref)
        return cls(model, processor, "bundled demo model" if demo else Path(model_dir).name, concurrency, demo)

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def default_max_pixels(self) -> int:
        return int(self.processor.image_settings.max_pixels)

    def describe(self) -> str:
        """One line: name, architecture, size, dtype and device."""
        count = self.parameter_count
        size = f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e6:.1f} M"
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        return f"{self.name} · {self.model.config.model_type} · {size} parameters · {dtype} on {self.model.device}"

    def stream(self, conversation: list[dict], sampling: SamplingConfig) -> Iterator[str]:
        """Text pieces of the answer; the slot is released when the generator ends or is closed."""
        with self._slots:
            yield from self.batch.start().stream_text(conversation, sampling)
