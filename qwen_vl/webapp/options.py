"""Command-line flags of the web app; a bad flag is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from qwen_vl.errors import OneLineParser

DEFAULT_PORT = 7860


@dataclass
class AppOptions:
    model: str | None = None  # None = the bundled model
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    share: bool = False
    auth: tuple[str, str] | None = None
    concurrency: int = 1  # generations running at once; more wait in the queue
    max_upload_mb: float = 50.0
    queue_size: int = 64  # requests waiting beyond this are refused with a "queue full" message
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None  # int8 | int4: weight-only quantization at load (CPU)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _auth(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD with both parts non-empty")
    return user, password


def _at_least(low: float, kind=int):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value

    return parse


def _port(text: str) -> int:
    value = _at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, got {text}")
    return value


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="app.py", description="qwen-vl chat web app (Gradio).")
    parser.add_argument("--model", "-m", default=None, help="model directory or hub name (default: the bundled model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    parser.add_argument("--share", type=_bool, default=False, help="create a public gradio.live link (true/false)")
    parser.add_argument("--auth", type=_auth, default=None, help="require a login, USER:PASSWORD")
    parser.add_argument("--concurrency", type=_at_least(1), default=1, help="generations at once (default 1)")
    parser.add_argument(
        "--max-upload-mb", type=_at_least(0.001, float), default=50.0, help="largest upload, MB (default 50)"
    )
    parser.add_argument("--queue-size", type=_at_least(1), default=64, help="most waiting requests (default 64)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: fast on the device)")
    parser.add_argument(
        "--quantize", default=None, choices=["int8", "int4"], help="weight-only quantization as the model loads (CPU)"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> AppOptions:
    args = build_parser().parse_args(argv)
    return AppOptions(**vars(args))
