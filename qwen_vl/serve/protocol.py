"""OpenAI chat-completions bodies: a request -> (conversation, sampling settings), and the response,
stream-chunk and model-list bodies.

Content parts are `text`, `image_url` and `video_url` (the extension vLLM uses), each URL read
through serve.media. Extra body fields: `max_pixels` (per image or frame) and `fps` (videos) for
every media part of the request; `add_vision_id` ("Picture 1: " labels, as the chat template offers);
`top_k`, `repetition_penalty` and `ignore_eos` as vLLM takes them.
"""

from __future__ import annotations

import numbers
import time
import uuid
from dataclasses import dataclass

from qwen_vl.errors import MediaError, OptionError
from qwen_vl.generation import SamplingConfig
from qwen_vl.processing.chat import normalize_part

from .errors import ApiError, bad_request
from .media import resolve_media_url
from .options import ServeOptions

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 4
# Fields whose OpenAI meaning this server cannot honour: refused when set to anything but "off".
UNSUPPORTED = {
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none"),
    "function_call": (None, "none"),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "audio": (None,),
    "prediction": (None,),
}


@dataclass
class ChatRequest:
    conversation: list[dict]  # canonical messages the processor reads
    sampling: SamplingConfig
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever comes (benchmarks)
    add_vision_id: bool = False  # "Picture 1: " / "Video 1: " before each item, as the chat template offers


def parse_chat_request(body: object, options: ServeOptions, defaults: dict, context: int) -> ChatRequest:
    """Check every field and resolve every media URL; ApiError (400/404) names the first bad one.

    defaults: the model's own settings: sampling (temperature, top_p, ... from generation_config.json)
    and per-image / per-frame pixel budgets (image_max_pixels, video_max_pixels)."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if model != options.model_name:
        raise ApiError(
            404,
            f"model {model!r} is not served here; this server serves {options.model_name!r}",
            param="model",
            code="model_not_found",
        )
    n = body.get("n")
    if n not in (None, 1):
        raise bad_request(f"n={n!r}: this server returns one choice per request; send n=1 or leave it out", "n")
    for key, off in UNSUPPORTED.items():
        if key in body and body[key] not in off:
            raise bad_request(f"{key} is not supported by this server", key)
    response_format = body.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise bad_request("response_format: only plain text answers are supported", "response_format")

    media_options = {
        "max_pixels": _number(body, "max_pixels", integer=True, low=1),
        "fps": _number(body, "fps", low=0, low_open=True),
        "image_max_pixels": defaults["image_max_pixels"],
        "video_max_pixels": defaults["video_max_pixels"],
    }
    conversation = parse_messages(body.get("messages"), options, media_options)
    stream = _boolean(body, "stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and (not isinstance(stream_options, dict) or not stream):
        raise bad_request("stream_options is an object, and only with stream=true", "stream_options")
    include_usage = bool((stream_options or {}).get("include_usage"))
    sampling = parse_sampling(body, options, defaults, context)
    return ChatRequest(
        conversation,
        sampling,
        stream,
        include_usage,
        _boolean(body, "ignore_eos"),
        _boolean(body, "add_vision_id"),
    )


def parse_sampling(body: dict, options: ServeOptions, defaults: dict, context: int) -> SamplingConfig:
    ceiling = min(options.max_tokens or context, context)
    given = [k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
    max_tokens = _number(body, given[0], integer=True, low=1) if given else ceiling
    temperature = _number(body, "temperature", low=0, high=2)
    top_p = _number(body, "top_p", low=0, low_open=True, high=1)
    top_k = _number(body, "top_k", integer=True, low=-1)  # vLLM: -1 = no limit
    repetition_penalty = _number(body, "repetition_penalty", low=0, low_open=True)
    seed = _number(body, "seed", integer=True)
    stop = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    elif isinstance(stop, list) and len(stop) <= MAX_STOP_STRINGS and all(isinstance(s, str) for s in stop):
        stop = tuple(stop)
    else:
        raise bad_request(f"stop is a string or a list of at most {MAX_STOP_STRINGS} strings", "stop")
    try:
        return SamplingConfig(
            max_new_tokens=min(max_tokens, ceiling),  # capped, not refused: the answer just ends sooner
            temperature=defaults.get("temperature", 0.0) if temperature is None else temperature,
            top_p=defaults.get("top_p", 1.0) if top_p is None else top_p,
            top_k=defaults.get("top_k", 0) if top_k is None else max(top_k, 0),
            repetition_penalty=defaults.get("repetition_penalty", 1.0)
            if repetition_penalty is None
            else repetition_penalty,
            seed=seed,
            stop=stop,
        )
    except OptionError as err:
        raise bad_request(str(err)) from None


def parse_messages(messages: object, options: ServeOptions, media_options: dict) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", "messages")
    out = []
    for m, message in enumerate(messages):
        where = f"messages[{m}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with role and content", where)
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role {role!r} is not one of {', '.join(ROLES)}", f"{where}.role")
        content = message.get("content")
        if content is None or isinstance(content, str):
            out.append({"role": role, "content": content or ""})
        elif isinstance(content, list):
            parts = [_part(part, f"{where}.content[{p}]", options, media_options) for p, part in enumerate(content)]
            out.append({"role": role, "content": parts})
        else:
            raise bad_request(f"{where}.content must be a string or a list of parts", f"{where}.content")
    return out


def _part(part: object, where: str, options: ServeOptions, media_options: dict) -> dict:
    try:
        canonical = normalize_part(part, where)
        kind = canonical["type"]
        if kind == "text":
            return canonical
        canonical[kind] = resolve_media_url(canonical[kind], f"{where} ({kind})", options)
    except MediaError as err:
        raise bad_request(str(err), where, code="invalid_media") from None
    if kind == "video" and media_options["fps"] is not None and "nframes" not in canonical:
        canonical.setdefault("fps", media_options["fps"])
    # the model's own budget applies unless the request or the server's bound asks for fewer pixels
    cap, default = options.max_image_pixels, media_options[f"{kind}_max_pixels"]
    pixels = canonical.get("max_pixels", media_options["max_pixels"])
    if pixels is not None or default > cap:
        canonical["max_pixels"] = min(pixels or cap, cap)
    return canonical


def _number(body: dict, key: str, integer=False, low=None, high=None, low_open=False):
    value = body.get(key)
    if value is None:
        return None
    kind = numbers.Integral if integer else numbers.Real
    wrong_type = isinstance(value, bool) or not isinstance(value, kind)
    if (
        wrong_type
        or (low is not None and (value <= low if low_open else value < low))
        or (high is not None and value > high)
    ):
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            bounds.append(f"<= {high}")
        what = "an integer" if integer else "a number"
        raise bad_request(f"{key} must be {what}{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r}", key)
    return value


def _boolean(body: dict, key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be true or false, got {value!r}", key)
    return value


# ---- response bodies -----------------------------------------------------------------------------
def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    id: str, model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> dict:
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
        "system_fingerprint": None,
    }


def chunk_body(id: str, model: str, created: int, delta: dict | None, finish_reason: str | None = None, usage=None):
    """One stream chunk; delta None gives the usage-only chunk (no choices) that ends a stream."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": None,
    }


def models_body(model: str, created: int) -> dict:
    return {"object": "list", "data": [model_body(model, created)]}


def model_body(model: str, created: int) -> dict:
    return {"id": model, "object": "model", "created": created, "owned_by": "qwen-vl"}
