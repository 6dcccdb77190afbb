"""Conversation state of one browser session and the streaming of one answer.

A session is a list of `Turn`s (plain data, kept in a gr.State). The model sees every earlier
turn that was answered without error, with its media, followed by the new turn; a turn whose
upload could not be used shows its error and is left out of later prompts, so the session goes on.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qwen_vl.errors import MediaError, QwenVLError
from qwen_vl.generation import SamplingConfig
from qwen_vl.media_types import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from qwen_vl.processing import load_image
from qwen_vl.processing.image import describe

ERROR_PREFIX = "⚠️ "
MIN_MAX_PIXELS = 56 * 56  # the preprocessing floor: a smaller budget cannot be met
# What the page's sliders allow; the API is held to the same (the pixel ceiling is the model's default budget)
MAX_NEW_TOKENS = 1024
MAX_TEMPERATURE = 2.0
FPS_RANGE = (0.5, 8.0)
log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    """What the page's controls set; max_pixels None = the model's preprocessing default."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    fps: float = 2.0
    max_pixels: int | None = None

    def sampling(self) -> SamplingConfig:
        """The sampling settings, checked by SamplingConfig (one line naming a value out of range)."""
        steps = self.max_new_tokens
        return SamplingConfig(  # sliders send floats: the token count is a whole number
            max_new_tokens=int(steps) if steps is not None else None, temperature=self.temperature, top_p=self.top_p
        )

    def check(self, max_pixels_limit: int) -> None:
        """One line naming the first setting outside what the page's controls allow."""
        self.sampling()
        if self.max_new_tokens > MAX_NEW_TOKENS:
            raise QwenVLError(f"max_new_tokens must be at most {MAX_NEW_TOKENS}, got {self.max_new_tokens}")
        if self.temperature > MAX_TEMPERATURE:
            raise QwenVLError(f"temperature must be at most {MAX_TEMPERATURE}, got {self.temperature}")
        if self.fps is None or not FPS_RANGE[0] <= self.fps <= FPS_RANGE[1]:
            raise QwenVLError(f"fps must be between {FPS_RANGE[0]} and {FPS_RANGE[1]}, got {self.fps}")
        if self.max_pixels is not None and not MIN_MAX_PIXELS <= self.max_pixels <= max_pixels_limit:
            raise QwenVLError(
                f"max_pixels must be between {MIN_MAX_PIXELS} and {max_pixels_limit}, got {self.max_pixels}"
            )


@dataclass
class Turn:
    question: str
    files: list[str] = field(default_factory=list)  # server paths of the uploads
    answer: str = ""
    error: str | None = None
    done: bool = False
    picture: str | None = None  # the latest image with the answer's boxes and points drawn


# ---- media ------------------------------------------------------------------------------------
def display_name(path: str) -> str:
    return os.path.basename(path)


def media_kind(path: str) -> str:
    """'image' or 'video' by extension; an unknown extension is probed as an image."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    try:
        load_image(path)
    except MediaError:
        raise MediaError(
            f"{display_name(path)}: not an image or a video (expected "
            f"{', '.join(sorted(e[1:] for e in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))})"
        ) from None
    return "image"


def check_upload(path: str, max_bytes: int) -> None:
    """Size limit and, for images, a full decode: cheap, and names the bad file."""
    try:
        size = os.path.getsize(path)
    except OSError:
        raise MediaError(f"{display_name(path)}: the upload is missing on the server; attach it again") from None
    if size > max_bytes:
        raise MediaError(
            f"{display_name(path)}: {size / 2**20:.1f} MB is above the upload limit of {max_bytes / 2**20:.1f} MB"
        )
    if media_kind(path) == "image":
        load_image(path)


def media_item(path: str, settings: GenerationSettings) -> dict:
    extra = {"max_pixels": int(settings.max_pixels)} if settings.max_pixels else {}
    if media_kind(path) == "video":
        return {"type": "video", "video": path, "fps": float(settings.fps), **extra}
    return {"type": "image", "image": path, **extra}


def conversation(turns: list[Turn], settings: GenerationSettings) -> list[dict]:
    """Model messages: the answered turns without errors, then the last turn's question."""
    messages = []
    for index, turn in enumerate(turns):
        last = index == len(turns) - 1
        if not last and (turn.error or not turn.done):
            continue
        content = [media_item(p, settings) for p in turn.files] + [{"type": "text", "text": turn.question}]
        messages.append({"role": "user", "content": content})
        if not last:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": turn.answer}]})
    return messages


def friendly(message: str, files: list[str]) -> str:
    """Error text with server paths of uploads shortened to their file names.

    Processing names a source by `describe(path)` (shortened when long) or by repr(path)."""
    for path in sorted(files, key=len, reverse=True):
        for shown in (repr(path), describe(path), path):
            message = message.replace(shown, display_name(path))
    return message


# ---- answering --------------------------------------------------------------------------------
def stream_answer(engine, turns: list[Turn], settings: GenerationSettings, max_upload_bytes: int) -> Iterator[Turn]:
    """Fill in the answer of turns[-1] piece by piece, yielding it after each piece.

    A user-caused failure (bad upload, bad setting, prompt too long) ends up in turn.error; so does
    an unexpected one, by its kind only (the traceback goes to the server's log), so that a bug ends
    the turn instead of leaving the chat waiting for an answer that never comes."""
    turn = turns[-1]
    turn.answer, turn.error, turn.done, turn.picture = "", None, False, None
    all_files = [p for t in turns for p in t.files]
    try:
        settings.check(engine.default_max_pixels)
        for path in turn.files:
            check_upload(path, max_upload_bytes)
        messages = conversation(turns, settings)
        for piece in engine.stream(messages, settings.sampling()):
            turn.answer += piece
            yield turn
        try:
            turn.picture = grounding_picture(engine, turns, settings)
        except (QwenVLError, ValueError, OSError):  # the answer stands without its picture
            log.exception("drawing the answer's boxes failed")
    except (QwenVLError, ValueError) as err:
        turn.error = friendly(str(err), all_files)
    except Exception as err:
        log.exception("answering failed")
        turn.error = f"internal error ({type(err).__name__}); the server's log has the details"
    turn.done = True
    yield turn


def grounding_picture(engine, turns: list[Turn], settings: GenerationSettings) -> str | None:
    """A PNG (in the temp folder, which Gradio serves) of the conversation's latest image with the
    boxes and points of the last answer drawn in its own pixels; None when the answer has none."""
    from qwen_vl.grounding import draw, frame_for, grounding_to_original, parse_answer

    found = parse_answer(turns[-1].answer)
    images = [p for t in turns if not t.error for p in t.files if media_kind(p) == "image"]
    if not found or not images:
        return None
    picture = load_image(images[-1])
    extra = {"max_pixels": int(settings.max_pixels)} if settings.max_pixels else {}
    model_type, image_settings = engine.model.config.model_type, engine.processor.image_settings
    frame = frame_for(model_type, picture.width, picture.height, image_settings, **extra)
    found = grounding_to_original(found, frame)
    handle, path = tempfile.mkstemp(prefix="qwen-vl-boxes-", suffix=".png")
    with os.fdopen(handle, "wb") as out:
        draw(picture, found.boxes, found.points).save(out, format="PNG")
    return path


def answer_once(engine, files: list[str], question: str, settings: GenerationSettings, max_upload_bytes: int) -> str:
    """A single-turn answer (the API endpoint); raises QwenVLError for bad input."""
    if not question or not question.strip():
        raise QwenVLError("the question is empty")
    turn = Turn(question=question, files=list(files))
    for _ in stream_answer(engine, [turn], settings, max_upload_bytes):
        pass
    if turn.error:
        raise QwenVLError(turn.error)
    return turn.answer


# ---- what the chatbot shows -------------------------------------------------------------------
def display(turns: list[Turn]) -> list[dict]:
    """Gradio chatbot messages: the uploads and question, then the answer or the error."""
    messages = []
    for turn in turns:
        for path in turn.files:
            messages.append({"role": "user", "content": {"path": path}})
        messages.append({"role": "user", "content": turn.question})
        if turn.error:
            messages.append({"role": "assistant", "content": ERROR_PREFIX + turn.error})
        elif turn.answer or turn.done:
            messages.append({"role": "assistant", "content": turn.answer or "(empty answer)"})
            if turn.picture:
                messages.append({"role": "assistant", "content": {"path": turn.picture}})
    return messages
