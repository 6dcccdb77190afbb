"""The Gradio web app: a multi-turn chat over images and videos with streamed answers.

Modules: `options` (command-line flags), `engine` (the shared model and its guard), `chat`
(conversation state, media checks, streaming one answer), `ui` (the Gradio page and the
`/answer` API endpoint), `server` (load, build, launch), `make_examples` (the example media).
Entry point: `python app.py` (see docs/app.md).
"""

from qwen_vl.webapp.chat import GenerationSettings, Turn
from qwen_vl.webapp.engine import Engine
from qwen_vl.webapp.options import AppOptions, parse_args

__all__ = ["AppOptions", "Engine", "GenerationSettings", "Turn", "parse_args"]
