"""Qwen ChatML: the chat template, the media items of a conversation, and placeholder expansion."""

from __future__ import annotations

import base64
import binascii
import difflib
import numbers
from dataclasses import dataclass, field
from typing import Any

from qwen_vl.errors import MediaError

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"

# ChatML. A conversation that does not open with a system turn gets the default one. Content is
# a string or a list of parts; an image/video part becomes one pad token between vision
# markers (expanded later to its real token count), a text part is copied verbatim.
# `add_vision_id` labels each item "Picture N: " / "Video N: ", counted over the whole
# conversation, as the published Qwen2-VL / Qwen2.5-VL template does.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}"
    "{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)


# Where a part may hold its media: qwen-vl-utils' `image` / `image_url` / `video`, transformers'
# `url` / `path` (and `base64` for images), OpenAI's `image_url` / `video_url` as a string or
# {"url": ...}.
SOURCE_KEYS = {
    "image": ("image", "image_url", "url", "path", "base64"),
    "video": ("video", "video_url", "url", "path"),
}
IMAGE_OPTION_KEYS = ("min_pixels", "max_pixels", "resized_height", "resized_width")
VIDEO_OPTION_KEYS = IMAGE_OPTION_KEYS + (
    "total_pixels",
    "fps",
    "sample_fps",
    "nframes",
    "min_frames",
    "max_frames",
    "video_start",
    "video_end",
)
OPTION_KEYS = {"image": IMAGE_OPTION_KEYS, "video": VIDEO_OPTION_KEYS}
_PART_TYPES = {"text": "text", "image": "image", "image_url": "image", "video": "video", "video_url": "video"}


def normalize_messages(messages: list[dict]) -> list[dict]:
    """A copy of the conversation whose list contents hold only canonical parts (see
    normalize_part); string contents and other message keys are kept as they are."""
    validate_messages(messages)
    out = []
    for m, message in enumerate(messages, 1):
        content = message["content"]
        if isinstance(content, (list, tuple)):
            where = f"message {m} ({message['role']})"
            content = [normalize_part(part, f"{where}, part {p}") for p, part in enumerate(content, 1)]
        out.append({**message, "content": content})
    return out


def normalize_part(part: dict, where: str = "content part") -> dict:
    """One content part in the canonical form {"type": "text", "text": ...} or
    {"type": "image"|"video", "image"|"video": source, **options}, whichever way it was written.

    Keys set to None count as absent (OpenAI clients send them). A key this processor does not
    understand is a MediaError naming it: a misspelt option must not be dropped unnoticed."""
    if not isinstance(part, dict):
        raise MediaError(f"{where}: a content part is a dict like {{'type': 'text', 'text': ...}}, got {part!r:.60}")
    given = {k: v for k, v in part.items() if v is not None}
    kind = part_kind(given, where)
    if kind == "text":
        _refuse_unknown(given, ("type", "text"), where, "text")
        return {"type": "text", "text": given.get("text", "")}
    return _media_part(kind, given, where)


def part_kind(part: dict, where: str = "content part") -> str:
    """'text', 'image' or 'video': by `type` when given, else by the key that holds the content
    (qwen-vl-utils accepts parts without a type)."""
    declared = part.get("type")
    if declared is not None:
        if not isinstance(declared, str) or declared not in _PART_TYPES:
            raise MediaError(f"{where}: type {declared!r} is not supported (use one of {', '.join(_PART_TYPES)})")
        return _PART_TYPES[declared]
    for key in ("image", "image_url", "video", "video_url", "text"):
        if key in part:
            return _PART_TYPES[key]
    raise MediaError(f"{where}: has no 'type' and no text, image or video")


def _media_part(kind: str, part: dict, where: str) -> dict:
    where = f"{where} ({kind})"
    _refuse_unknown(part, ("type", *SOURCE_KEYS[kind], *OPTION_KEYS[kind]), where, kind)
    given = [k for k in SOURCE_KEYS[kind] if k in part]
    if not given:
        raise MediaError(f"{where}: has no {kind}; give one of {', '.join(map(repr, SOURCE_KEYS[kind]))}")
    if len(given) > 1:
        raise MediaError(f"{where}: give the {kind} once, got {' and '.join(map(repr, given))}")
    source = _source_value(given[0], part[given[0]], where)
    options = {}
    for key in OPTION_KEYS[kind]:
        if key in part:
            options[key] = _number(part[key], key, where)
    return {"type": kind, kind: source, **options}


def _source_value(key: str, value: Any, where: str) -> Any:
    """The media itself: URL dicts unwrapped, a bare base64 string decoded to bytes."""
    if key in ("image_url", "video_url") and isinstance(value, dict):
        extra = set(value) - {"url", "detail"}
        if extra:
            raise MediaError(f"{where}: {key} holds unknown key(s) {sorted(extra)}; only 'url' is read")
        if value.get("detail", "auto") != "auto":
            # OpenAI's detail level has no counterpart here: the pixel budget is max_pixels.
            raise MediaError(f"{where}: detail={value['detail']!r} is not supported; set max_pixels instead")
        if not value.get("url"):
            raise MediaError(f"{where}: {key} has no 'url'")
        return value["url"]
    if key == "base64":
        if not isinstance(value, str):
            raise MediaError(f"{where}: base64 must be a string")
        if value.startswith("data:"):
            return value
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise MediaError(f"{where}: base64 is not valid base64 data") from None
    return value


def _number(value: Any, key: str, where: str):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MediaError(f"{where}: {key} must be a number, got {value!r:.40}")
    return value


def _refuse_unknown(part: dict, known: tuple[str, ...], where: str, kind: str) -> None:
    unknown = [k for k in part if k not in known]
    if not unknown:
        return
    key = unknown[0]
    if kind == "image" and key in VIDEO_OPTION_KEYS:
        reason = "applies to videos only"
    elif close := difflib.get_close_matches(str(key), known, n=1):
        reason = f"is not understood (did you mean {close[0]!r}?)"
    else:
        reason = f"is not understood (known: {', '.join(k for k in known if k != 'type')})"
    raise MediaError(f"{where}: key {key!r} {reason}")


@dataclass
class MediaItem:
    """One image or video part of a conversation, in prompt order."""

    kind: str  # "image" | "video"
    source: Any  # path / URI / bytes / PIL image, or a list of frames for a video
    options: dict = field(default_factory=dict)  # per-item keys (min_pixels, fps, nframes, ...)


def media_items(messages: list[dict]) -> list[MediaItem]:
    """The image and video parts of a conversation in the order the template emits them."""
    items = []
    for message in normalize_messages(messages):
        if not isinstance(message["content"], list):
            continue
        for part in message["content"]:
            kind = part["type"]
            if kind != "text":
                options = {k: v for k, v in part.items() if k not in ("type", kind)}
                items.append(MediaItem(kind, part[kind], options))
    return items


def validate_messages(messages: list[dict]) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("a conversation is a non-empty list of {'role': ..., 'content': ...} dicts")
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"message {message!r}: needs 'role' and 'content'")


def render_chat(messages: list[dict], add_generation_prompt: bool = True, add_vision_id: bool = False) -> str:
    """The prompt text with one pad token per image/video (standalone, without a tokenizer)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(CHAT_TEMPLATE).render(
        messages=normalize_messages(messages),
        add_generation_prompt=add_generation_prompt,
        add_vision_id=add_vision_id,
    )


def expand_placeholders(
    input_ids: list[int], pad_ids: dict[str, int], token_counts: list[tuple[str, int]]
) -> list[int]:
    """Replace the k-th image/video pad id by token_counts[k][1] copies of it.

    pad_ids: {"image": id, "video": id}; token_counts: (kind, t*h*w / merge_size**2) per media
    item in prompt order. Special tokens are atomic, so expanding ids equals tokenising the
    expanded text."""
    kind_of = {token_id: kind for kind, token_id in pad_ids.items()}
    out: list[int] = []
    position = 0
    for token_id in input_ids:
        kind = kind_of.get(token_id)
        if kind is None:
            out.append(token_id)
            continue
        if position >= len(token_counts) or token_counts[position][0] != kind:
            raise MediaError(f"prompt: a {kind} placeholder does not match the media given")
        out.extend([token_id] * token_counts[position][1])
        position += 1
    if position != len(token_counts):
        raise MediaError(f"prompt: {len(token_counts)} media items but {position} placeholders")
    return out
