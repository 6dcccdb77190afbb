"""Load the model once, build the page and serve it; user errors are one line and exit 2."""

from __future__ import annotations

import os
import sys

from qwen_vl.webapp.options import AppOptions, parse_args

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from the server


def fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 2


def serve(options: AppOptions) -> int:
    from qwen_vl.errors import QwenVLError
    from qwen_vl.webapp.engine import Engine

    try:
        engine = Engine.load(options.model, options.device, options.dtype, options.concurrency, options.quantize)
    except (QwenVLError, ValueError) as err:
        return fail(str(err))
    from qwen_vl.webapp.ui import EXAMPLES_DIR, build_ui

    demo = build_ui(engine, options)
    try:
        demo.launch(
            server_name=options.host,
            server_port=options.port or None,
            share=options.share,
            auth=options.auth,
            max_file_size=options.max_upload_bytes,
            allowed_paths=[str(EXAMPLES_DIR)],  # uploads (Gradio's cache) and the examples, nothing else
            footer_links=["api"],
            show_error=True,
        )
    except OSError as err:  # port taken, address not available
        return fail(f"cannot serve on {options.host}:{options.port} ({str(err).splitlines()[0]})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from qwen_vl.extras import MissingExtraError, needs_extras

    options = parse_args(argv)
    try:
        with needs_extras("the web app"):  # checked before the model loads, not after
            import gradio  # noqa: F401
    except MissingExtraError as err:
        return fail(str(err))
    try:
        return serve(options)
    except KeyboardInterrupt:
        return 130
