"""Answering through an OpenAI-compatible chat-completions server (`qwen-vl serve`, vLLM, ...).

Each conversation goes out as one request: images and videos travel inline as base64 data: URIs
(the original file bytes, or a lossless PNG of an in-memory picture), so the server decodes the
very pixels a local run would; per-item options (max_pixels, fps, nframes, ...) ride along in their
content part, where qwen-vl serve reads them and other servers ignore them. Answers are greedy.
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qwen_vl.errors import QwenVLError
from qwen_vl.processing.chat import normalize_messages
from qwen_vl.processing.image import ImageSettings, read_media_bytes


class ApiUnavailableError(QwenVLError):
    """The server cannot answer at all (unreachable, wrong key, unknown model): the run stops."""

    fatal = True


class ApiBackend:
    """Greedy answers from `base_url` (e.g. http://127.0.0.1:8000/v1) for the model `model`."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 8, timeout=600.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.concurrency = concurrency
        # grounding answers are read in Qwen2.5-VL's frame at the published image settings
        self.model_type, self.image_settings = "qwen2_5_vl", ImageSettings()

    def generate(self, conversations: list[list[dict]], max_new_tokens: int) -> list[str | QwenVLError]:
        """One answer per conversation, asked concurrently (a batching server decodes them together);
        a conversation the server refuses gets its error in place of the answer."""
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations)) or 1) as pool:
            return list(pool.map(lambda c: self._answer_or_error(c, max_new_tokens), conversations))

    def _answer_or_error(self, conversation: list[dict], max_new_tokens: int) -> str | QwenVLError:
        try:
            return self.answer(conversation, max_new_tokens)
        except ApiUnavailableError:
            raise
        except QwenVLError as err:
            return err

    def answer(self, conversation: list[dict], max_new_tokens: int) -> str:
        body = {
            "model": self.model,
            "messages": [openai_message(m) for m in normalize_messages(conversation)],
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
        }
        reply = self._post(body)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ApiUnavailableError(f"{self.url}: the reply is not a chat completion") from None

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            message = error_message(err)
            if err.code == 400:  # this sample's input (bad image, prompt past the context)
                raise QwenVLError(message) from None
            raise ApiUnavailableError(f"{self.url}: HTTP {err.code}: {message}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ApiUnavailableError(f"{self.url}: cannot reach the server ({reason})") from None


def error_message(err: urllib.error.HTTPError) -> str:
    """The message of an OpenAI-shaped error body, else the HTTP reason."""
    try:
        return str(json.loads(err.read())["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(err.reason)


def openai_message(message: dict) -> dict:
    """One canonical message (qwen_vl.processing.chat form) in the OpenAI wire form."""
    content = message["content"]
    if isinstance(content, str):
        return {"role": message["role"], "content": content}
    return {"role": message["role"], "content": [openai_part(p) for p in content]}


def openai_part(part: dict) -> dict:
    kind = part["type"]
    if kind == "text":
        return {"type": "text", "text": part["text"]}
    options = {k: v for k, v in part.items() if k not in ("type", kind)}  # max_pixels, fps, nframes, ...
    source = part[kind]
    if isinstance(source, (list, tuple)):
        raise QwenVLError(f"{kind}: frame lists cannot be sent to a server; pass a video file")
    return {"type": f"{kind}_url", f"{kind}_url": {"url": data_uri(source, kind)}, **options}


def data_uri(source, kind: str) -> str:
    """A path, file:// URI, data: URI, bytes or PIL image as a base64 data: URI of the same bytes
    (a PIL image as lossless PNG)."""
    if isinstance(source, str) and source.startswith("data:"):
        return source
    if isinstance(source, (str, os.PathLike)):
        data = read_media_bytes(source, kind=kind)
        mime = mimetypes.guess_type(Path(os.fspath(source)).name)[0] or f"{kind}/octet-stream"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data, mime = bytes(source), f"{kind}/octet-stream"
    else:  # a PIL image
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        data, mime = buffer.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
