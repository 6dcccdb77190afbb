"""What the server accepts: its bounds, with the defaults the command-line flags start from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20


@dataclass
class ServeOptions:
    model_name: str  # the id clients send as `model` and GET /v1/models lists
    api_key: str | None = None  # None: no key is checked
    max_body_bytes: int = 32 * MIB  # a request body, base64 media included
    max_image_pixels: int = 1280 * 28 * 28  # per image or video frame, after resizing
    max_request_pixels: int = 16384 * 28 * 28  # all images and video frames of one request, after resizing
    max_tokens: int | None = None  # most tokens one answer may generate; None: up to the context
    max_batch: int = 16  # requests decoding together
    max_queue: int = 64  # requests waiting for a place in the batch; more get 503
    allowed_media_dirs: tuple[Path, ...] = field(default_factory=tuple)  # file:// URLs only under these
    allow_remote_media: bool = False  # http(s) media URLs
    remote_max_bytes: int = 20 * MIB
    remote_timeout_s: float = 10.0
