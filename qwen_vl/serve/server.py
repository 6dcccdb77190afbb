"""Load the model once, start the batching engine, and run the API under uvicorn."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from qwen_vl.extras import needs_extras

from .options import ServeOptions

log = logging.getLogger("qwen_vl.serve")

BUNDLED_NAME = "qwen-vl-bundled"


def served_name(ref: str | None, model_dir: Path) -> str:
    """The model id clients send: a hub name as given, else the directory's name."""
    if ref is None:
        return BUNDLED_NAME
    if not Path(ref).expanduser().exists() and str(ref).count("/") == 1:
        return str(ref)
    return model_dir.name


def model_defaults(model_dir: Path, processor) -> dict:
    """The model's own sampling settings (generation_config.json; greedy without one) and pixel budgets."""
    from qwen_vl.processing.video_sampling import VIDEO_MAX_PIXELS

    defaults = {
        "image_max_pixels": int(processor.image_settings.max_pixels),
        "video_max_pixels": int(processor.video_settings.max_pixels or VIDEO_MAX_PIXELS),
    }
    path = model_dir / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if not config.get("do_sample", False):
        return {**defaults, "temperature": 0.0}
    for key in ("temperature", "top_p", "top_k", "repetition_penalty"):
        if isinstance(config.get(key), (int, float)):
            defaults[key] = config[key]
    return defaults


def load_engine(ref: str | None, device=None, dtype=None, quantize=None, max_batch=16, max_queue=64):
    """(BatchEngine started, the model directory)."""
    from qwen_vl.batching import BatchEngine
    from qwen_vl.loading import load_model, resolve_model_dir

    model_dir = resolve_model_dir(ref)
    model, processor = load_model(model_dir, device=device, dtype=dtype, quantize=quantize)
    return BatchEngine(model, processor, max_batch=max_batch, max_waiting=max_queue).start(), model_dir


def run(options: ServeOptions, ref: str | None, host: str, port: int, device=None, dtype=None, quantize=None) -> None:
    with needs_extras("qwen-vl serve"):
        import fastapi  # noqa: F401
        import uvicorn

    from .app import create_app

    engine, model_dir = load_engine(ref, device, dtype, quantize, options.max_batch, options.max_queue)
    if not options.model_name:
        options.model_name = served_name(ref, model_dir)
    app = create_app(engine, options, model_defaults(model_dir, engine.processor))
    if host not in ("127.0.0.1", "localhost", "::1") and options.api_key is None:
        log.warning("serving on %s without --api-key: anyone who reaches this port can use the model", host)
    print(f"serving {options.model_name!r} on http://{host}:{port}/v1", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        engine.close()
