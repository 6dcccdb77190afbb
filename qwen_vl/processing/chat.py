"""Qwen ChatML: the chat template, the media items of a conversation, and placeholder expansion."""

from __future__ import annotations

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
CHAT_TEMPLATE = (
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
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
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


@dataclass
class MediaItem:
    """One image or video part of a conversation, in prompt order."""

    kind: str  # "image" | "video"
    source: Any  # path / URI / bytes / PIL image, or a list of frames for a video
    options: dict = field(default_factory=dict)  # per-item keys (min_pixels, fps, nframes, ...)


_MEDIA_OPTION_KEYS = (
    "min_pixels",
    "max_pixels",
    "resized_height",
    "resized_width",
    "fps",
    "nframes",
    "min_frames",
    "max_frames",
    "video_start",
    "video_end",
)


def _part_kind(part: dict) -> str | None:
    kind = part.get("type")
    if kind == "image" or "image" in part or "image_url" in part:
        return "image"
    if kind == "video" or "video" in part:
        return "video"
    return None


def media_items(messages: list[dict]) -> list[MediaItem]:
    """The image and video parts of a conversation in the order the template emits them."""
    items = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) or content is None:
            continue
        for part in content:
            kind = _part_kind(part)
            if kind is None:
                continue
            source = part.get(kind, part.get("image_url") if kind == "image" else None)
            if isinstance(source, dict):  # OpenAI style {"image_url": {"url": ...}}
                source = source.get("url")
            if source is None:
                raise MediaError(f"{kind} part {part!r}: has no '{kind}' value")
            options = {k: part[k] for k in _MEDIA_OPTION_KEYS if part.get(k) is not None}
            items.append(MediaItem(kind, source, options))
    return items


def validate_messages(messages: list[dict]) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("a conversation is a non-empty list of {'role': ..., 'content': ...} dicts")
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"message {message!r}: needs 'role' and 'content'")


def render_chat(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The prompt text with one pad token per image/video (standalone, without a tokenizer)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    validate_messages(messages)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=add_generation_prompt)


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
