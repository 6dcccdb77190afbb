"""The FastAPI routes: POST /v1/chat/completions, GET /v1/models, GET /health.

Request handlers never touch the model: they check the body, preprocess the media in a worker
thread, submit the prompt to the BatchEngine and read its tokens from a per-request asyncio queue
that the scheduler thread fills. Every failure is an OpenAI-shaped error and the server goes on.
"""

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator

from qwen_vl.batching import BatchEngine, Finished, QueueFullError
from qwen_vl.errors import PromptTooLongError, QwenVLError
from qwen_vl.extras import needs_extras
from qwen_vl.text_pieces import TextPieces

from .errors import ApiError, bad_request
from .options import ServeOptions
from .protocol import chunk_body, completion_body, completion_id, model_body, models_body, parse_chat_request, usage

log = logging.getLogger("qwen_vl.serve")


def create_app(engine: BatchEngine, options: ServeOptions, defaults: dict):
    """defaults: the model's sampling settings and pixel budgets (see protocol.parse_chat_request)."""
    with needs_extras("qwen-vl serve"):
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, StreamingResponse
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException

    app = FastAPI(title="qwen-vl", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())
    processor = engine.processor

    @app.exception_handler(ApiError)
    async def api_error(_request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(_request, err: HTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(err.status_code, str(err.detail), type=kind).body(), status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, err: RequestValidationError):
        return JSONResponse(bad_request(f"invalid request: {err.errors()[:1]}").body(), status_code=400)

    @app.exception_handler(Exception)
    async def server_error(_request, err: Exception):
        log.exception("request failed")
        return JSONResponse(ApiError(500, f"internal error: {err}", type="server_error").body(), status_code=500)

    def check_key(request: Request) -> None:
        if options.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {options.api_key}".encode()):
            raise ApiError(401, "Incorrect API key provided", code="invalid_api_key")

    @app.get("/health")
    async def health():
        return {"status": "ok", **engine.load}

    @app.get("/v1/models")
    async def list_models(request: Request):
        check_key(request)
        return models_body(options.model_name, created)

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str, request: Request):
        check_key(request)
        if model != options.model_name:
            raise ApiError(404, f"model {model!r} is not served here", type="not_found_error", code="model_not_found")
        return model_body(model, created)

    def prepare(body: object):
        """Parse the body and preprocess its media (in a worker thread: it decodes images)."""
        chat = parse_chat_request(body, options, defaults, engine.context)
        try:
            inputs = processor(
                [chat.conversation], add_generation_prompt=True, padding_side="left", add_vision_id=chat.add_vision_id
            )
        except PromptTooLongError as err:
            raise bad_request(str(err), "messages", code="context_length_exceeded") from None
        except (QwenVLError, ValueError) as err:
            raise bad_request(str(err), "messages", code="invalid_media") from None
        pixels = request_pixels(inputs, processor.image_settings)
        if pixels > options.max_request_pixels:
            raise bad_request(
                f"the request's images and video frames hold {pixels:,} pixels after resizing, over this "
                f"server's {options.max_request_pixels:,} per request; send fewer or lower max_pixels",
                "messages",
                code="too_many_pixels",
            )
        return chat, inputs

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_key(request)
        body = await read_json(request, options.max_body_bytes)
        chat, inputs = await run_in_threadpool(prepare, body)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        try:
            deliver = lambda e: loop.call_soon_threadsafe(events.put_nowait, e)
            handle = engine.submit(inputs, chat.sampling, deliver, ignore_eos=chat.ignore_eos)
        except QueueFullError as err:
            raise ApiError(503, str(err), type="server_error", code="queue_full") from None
        except PromptTooLongError as err:
            raise bad_request(str(err), "messages", code="context_length_exceeded") from None
        answer = Answer(handle, events, TextPieces(decode, chat.sampling.stop), engine.stop_ids)
        name, ident = options.model_name, completion_id()
        if chat.stream:
            return StreamingResponse(
                stream_chunks(answer, ident, name, chat.include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        watcher = asyncio.create_task(cancel_when_gone(request, handle))
        try:
            text = "".join([piece async for piece in answer.pieces()])
        finally:
            watcher.cancel()
        return completion_body(ident, name, text, answer.finish_reason, handle.prompt_tokens, handle.completion_tokens)

    def decode(ids: list[int]) -> str:
        return processor.decode(ids, skip_special_tokens=True)

    return app


class Answer:
    """The text of one request as its tokens arrive from the engine."""

    def __init__(self, handle, events: asyncio.Queue, pieces: TextPieces, stop_ids: set[int]):
        self.handle = handle
        self.events = events
        self.text = pieces
        self.stop_ids = stop_ids
        self.finish_reason = "stop"

    async def pieces(self) -> AsyncIterator[str]:
        try:
            while True:
                event = await self.events.get()
                if isinstance(event, Finished):
                    self.finish_reason = "length" if event.reason == "length" else "stop"
                    break
                if isinstance(event, BaseException):
                    raise event
                if event in self.stop_ids:
                    continue  # the Finished event follows
                if piece := self.text.add(event):
                    yield piece
                if self.text.stopped:  # a stop string: the rest of the answer is not needed
                    self.finish_reason = "stop"
                    return
            if tail := self.text.finish():
                yield tail
        finally:
            self.handle.cancel()  # a client that went away frees its row at the next step


async def stream_chunks(answer: Answer, ident: str, model: str, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
    created = int(time.time())
    extra = {"usage": None} if include_usage else {}

    def event(body: dict) -> str:
        if not include_usage:
            body.pop("usage", None)
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield event(chunk_body(ident, model, created, {"role": "assistant", "content": ""}, **extra))
    try:
        async for piece in answer.pieces():
            yield event(chunk_body(ident, model, created, {"content": piece}, **extra))
        yield event(chunk_body(ident, model, created, {}, answer.finish_reason, **extra))
        if include_usage:
            counts = usage(answer.handle.prompt_tokens, answer.handle.completion_tokens)
            yield event(chunk_body(ident, model, created, None, usage=counts))
    except Exception as err:  # headers are sent: the error goes in the stream
        log.exception("generation failed")
        yield f"data: {json.dumps(ApiError(500, f'generation failed: {err}', type='server_error').body())}\n\n"
    yield "data: [DONE]\n\n"


async def cancel_when_gone(request, handle, every_s: float = 0.5) -> None:
    """Free the batch row of a client that hung up before its (non-streamed) answer was ready."""
    while not await request.is_disconnected():
        await asyncio.sleep(every_s)
    handle.cancel()


async def read_json(request, limit: int) -> object:
    """The body parsed as JSON, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    too_large = ApiError(413, f"request body over this server's limit of {limit:,} bytes", code="body_too_large")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        raise bad_request("the request body is not valid JSON") from None


def request_pixels(inputs, image_settings) -> int:
    """Pixels the model sees for one request: resized images, and every sampled video frame."""
    patch_area = image_settings.patch_size**2
    total = 0
    if inputs.get("image_grid_thw") is not None:
        total += int(inputs["image_grid_thw"][:, 1:].prod(-1).sum()) * patch_area
    if inputs.get("video_grid_thw") is not None:
        frames_per_patch = image_settings.temporal_patch_size
        total += int(inputs["video_grid_thw"].prod(-1).sum()) * patch_area * frames_per_patch
    return total
