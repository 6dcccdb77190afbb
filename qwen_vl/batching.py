"""Continuous batching: one scheduler thread owns the model; requests join the running batch
between decode steps and leave it when they are done.

Requests that arrived since the last step are prefilled together (left-padded, as
`generate_text` batches them; each row gets its own M-RoPE `rope_deltas`), then their KV cache is
merged into the running batch: caches are left-padded to a common length and an attention mask
[B, T] hides the padding, so rows of different lengths decode together, one token per step, each
with its own rope_deltas, sampling settings, seed and token budget. A finished or cancelled row is
dropped from the batch, and padding columns that no row needs any more are cut off.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .errors import PromptTooLongError, QwenVLError
from .generation import SamplingConfig, next_tokens, stop_token_ids
from .modeling.cache import KVCache
from .text_pieces import TextPieces

CACHE_CHUNK = 256  # tokens of KV cache added at a time, so decoding rarely reallocates
PREFILL_TOKENS = 8192  # most (padded) prompt tokens prefilled in one forward pass


class QueueFullError(QwenVLError):
    """More requests in flight than the engine's batch plus its waiting queue can hold."""


@dataclass
class Finished:
    """The last event of a request: why it ended ("stop", "length" or "cancelled")."""

    reason: str


Event = int | Finished | BaseException  # a token id, the end, or the error that ended the request


class Request:
    """One submitted generation: the engine delivers its events (token ids, then a Finished or an
    exception) to `deliver`, by default a queue read by `tokens()`."""

    def __init__(
        self,
        inputs,
        sampling: SamplingConfig,
        steps: int,
        deliver: Callable[[Event], None] | None = None,
        ignore_eos: bool = False,
    ):
        self.inputs = inputs  # one row of processor output: input_ids [1, P], pixel values, grids
        self.sampling = sampling
        self.steps = steps  # most tokens it may generate: max_new_tokens capped at the context
        self.prompt_tokens = int(inputs["input_ids"].shape[1])
        self.ignore_eos = ignore_eos  # run to `steps` tokens past end tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self._events: queue.Queue[Event] = queue.Queue()
        self.deliver = deliver or self._events.put
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Ask the engine to drop this request at its next step (a no-op once it has finished)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def tokens(self) -> Iterator[int]:
        """The generated token ids as they come (the final stop token included); raises the error
        that ended the request, if any. Only for requests submitted without `deliver`."""
        while True:
            event = self._events.get()
            if isinstance(event, Finished):
                return
            if isinstance(event, BaseException):
                raise event
            yield event


@dataclass(eq=False)
class _Row:
    """A request inside the running batch."""

    request: Request
    generator: torch.Generator
    seen: torch.Tensor | None  # bool [1, V] tokens seen so far; only with a repetition penalty
    token: int  # the last token generated, fed in at the next step
    produced: int = 1


class BatchEngine:
    """Generation for many concurrent callers on one model.

    `submit` queues a request (QueueFullError when `max_batch + max_waiting` are already in
    flight); the scheduler thread admits waiting requests whenever the batch has room and decodes
    all rows together. `step()` runs one scheduler round by hand (tests do, without `start()`)."""

    def __init__(self, model, processor, max_batch: int = 16, max_waiting: int = 64):
        if max_batch < 1 or max_waiting < 0:
            raise ValueError("max_batch must be at least 1 and max_waiting 0 or more")
        self.model = model
        self.processor = processor
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.context = model.config.text.max_position_embeddings
        self.stop_ids = stop_token_ids(model, processor.tokenizer)
        pad = processor.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else processor.tokenizer.eos_token_id
        self._waiting: collections.deque[Request] = collections.deque()
        self._in_flight = 0
        self._lock = threading.Condition()
        self._rows: list[_Row] = []
        self._cache: KVCache | None = None  # the running batch's keys and values, left-padded
        self._mask: torch.Tensor | None = None  # long [B, cache.length], 0 on padding
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- callers -------------------------------------------------------------------------------
    def submit(
        self,
        inputs,
        sampling: SamplingConfig,
        deliver: Callable[[Event], None] | None = None,
        ignore_eos: bool = False,
    ) -> Request:
        """Queue one prompt (processor output with a single row) for generation. ignore_eos: run to
        max_new_tokens past end tokens (benchmarks measure fixed-length answers this way)."""
        rows, prompt_len = inputs["input_ids"].shape
        if rows != 1:
            raise ValueError(f"submit takes one conversation at a time, got {rows}")
        if prompt_len >= self.context:
            raise PromptTooLongError(
                f"prompt is {prompt_len} tokens (with vision tokens); the model's context is {self.context}"
            )
        steps = min(sampling.max_new_tokens, self.context - prompt_len)
        request = Request(inputs, sampling, steps, deliver, ignore_eos)
        with self._lock:
            if self._closed:
                raise QwenVLError("the engine is shut down")
            if self._in_flight >= self.max_batch + self.max_waiting:
                raise QueueFullError(
                    f"server busy: {self._in_flight} requests in flight (batch {self.max_batch} + "
                    f"queue {self.max_waiting}); retry later"
                )
            self._in_flight += 1
            self._waiting.append(request)
            self._lock.notify()
        return request

    def stream_text(self, conversation: list[dict], sampling: SamplingConfig) -> Iterator[str]:
        """Text pieces of the answer to one conversation, as `generation.stream_text` gives them."""
        inputs = self.processor([conversation], add_generation_prompt=True, padding_side="left")
        request = self.submit(inputs, sampling)
        pieces = TextPieces(lambda ids: self.processor.decode(ids, skip_special_tokens=True), sampling.stop)
        try:
            for token in request.tokens():
                if token in self.stop_ids:
                    break
                if piece := pieces.add(token):
                    yield piece
                if pieces.stopped:
                    return
            if tail := pieces.finish():
                yield tail
        finally:
            request.cancel()

    def generate_text(self, conversation: list[dict], sampling: SamplingConfig) -> str:
        return "".join(self.stream_text(conversation, sampling))

    @property
    def load(self) -> dict[str, int]:
        """Requests decoding now and requests waiting to join."""
        with self._lock:
            return {"running": len(self._rows), "waiting": len(self._waiting)}

    # ---- the scheduler thread ------------------------------------------------------------------
    def start(self) -> BatchEngine:
        """Run the scheduler thread (once, however many callers ask)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="qwen-vl-batch-engine", daemon=True)
                self._thread.start()
        return self

    def close(self) -> None:
        """Stop the scheduler; requests still in flight end with an error."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        stopped = QwenVLError("the engine was shut down")
        for row in self._rows:
            self._finish(row.request, stopped)
        while self._waiting:
            self._finish(self._waiting.popleft(), stopped)
        self._reset_batch()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._waiting and not self._rows:
                    self._lock.wait()
                if self._closed:
                    return
            self.step()

    def step(self) -> None:
        """Admit waiting requests while the batch has room, then decode one token for every row.
        An error fails the requests it touched, never the engine."""
        with torch.inference_mode():
            self._admit()
            if not self._rows:
                return
            try:
                self._decode()
            except Exception as err:  # a bug or out of memory: fail this batch, keep serving
                for row in self._rows:
                    self._finish(row.request, err)
                self._reset_batch()

    # ---- admission: prefill the newcomers, then join the batch ---------------------------------
    def _admit(self) -> None:
        """Prefill waiting requests (together, as one left-padded batch) while the batch has room."""
        newcomers: list[Request] = []
        while len(self._rows) + len(newcomers) < self.max_batch:
            with self._lock:
                if not self._waiting:
                    break
                request = self._waiting.popleft()
            if request.cancelled:
                self._finish(request, Finished("cancelled"))
                continue
            longest = max([r.prompt_tokens for r in newcomers] + [request.prompt_tokens])
            if newcomers and longest * (len(newcomers) + 1) > PREFILL_TOKENS:
                with self._lock:
                    self._waiting.appendleft(request)  # first in line at the next step
                break
            newcomers.append(request)
        if not newcomers:
            return
        try:
            self._prefill(newcomers)
        except Exception as err:
            for request in newcomers:
                self._finish(request, err)

    def _prefill(self, requests: list[Request]) -> None:
        model = self.model
        batch = _left_padded([r.inputs for r in requests], self._pad_id)
        input_ids = batch.pop("input_ids").to(model.device)  # [N, P]
        mask = batch.pop("attention_mask").to(model.device)  # [N, P]
        cache = model.new_cache(len(requests), input_ids.shape[1])
        out = model(
            input_ids, attention_mask=None if bool(mask.all()) else mask, cache=cache, logits_to_keep=1, **batch
        )
        logits = out.logits[:, -1]  # [N, V]
        rows = []
        for i, request in enumerate(requests):
            cfg = request.sampling
            generator = torch.Generator(device=model.device)
            generator.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
            seen = None
            if cfg.repetition_penalty != 1.0:
                real = input_ids[i, mask[i].bool()]
                seen = torch.zeros(1, model.config.text.vocab_size, dtype=torch.bool, device=model.device)
                seen[0, real.clamp(max=seen.shape[1] - 1)] = True
            token = int(next_tokens(logits[i : i + 1], seen, cfg, generator)[0])
            rows.append(_Row(request, generator, seen, token))
        self._join(cache, mask)
        self._rows.extend(rows)
        self._drop([row for row in rows if not self._emit(row, row.token)], None)

    def _join(self, cache: KVCache, mask: torch.Tensor) -> None:
        """Merge prefilled rows (cache and mask [N, P]) into the batch, left-padding whichever is shorter."""
        if self._cache is None:
            self._cache, self._mask = cache, mask
            return
        old = self._cache
        length = max(old.length, cache.length)
        layers, batch, heads, _, dim = old.keys.shape
        total = batch + mask.shape[0]
        shape = (layers, total, heads, length + CACHE_CHUNK, dim)
        # zeros, not empty: padded slots are masked out, but a NaN left there would still poison
        # the attention product (0 * NaN)
        keys = old.keys.new_zeros(shape)
        values = old.values.new_zeros(shape)
        merged_mask = self._mask.new_zeros(total, length)
        for rows, src, src_mask in ((slice(0, batch), old, self._mask), (slice(batch, total), cache, mask)):
            span = slice(length - src.length, length)
            keys[:, rows, :, span] = src.keys[:, :, :, : src.length]
            values[:, rows, :, span] = src.values[:, :, :, : src.length]
            merged_mask[rows, span] = src_mask
        self._cache = _cache_of(keys, values, length, torch.cat([old.rope_deltas, cache.rope_deltas]))
        self._mask = merged_mask

    # ---- one decode step -----------------------------------------------------------------------
    def _decode(self) -> None:
        self._drop([row for row in self._rows if row.request.cancelled], Finished("cancelled"))
        if not self._rows:
            return
        cache = self._cache
        if cache.length == cache.capacity:
            self._grow()
            cache = self._cache
        tokens = torch.tensor([[row.token] for row in self._rows], device=self.model.device)  # [B, 1]
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(self._rows), 1)], 1)
        mask = None if bool(self._mask.all()) else self._mask  # unpadded: the plain path generate_text takes
        logits = self.model(tokens, attention_mask=mask, cache=cache).logits[:, -1]  # [B, V]
        done = []
        for i, row in enumerate(self._rows):
            cfg = row.request.sampling
            if row.seen is not None:
                row.seen[0, row.token] = True
            token = int(next_tokens(logits[i : i + 1], row.seen, cfg, row.generator)[0])
            row.produced += 1
            row.token = token
            if not self._emit(row, token):
                done.append(row)
        self._drop(done, None)

    def _emit(self, row: _Row, token: int) -> bool:
        """Deliver a new token; end the request when it was the last one. True while it runs on."""
        request = row.request
        request.completion_tokens = row.produced
        _send(request, token)
        if token in self.stop_ids and not request.ignore_eos:
            self._finish(request, Finished("stop"))
        elif row.produced >= request.steps:
            self._finish(request, Finished("length"))
        else:
            return True
        return False

    def _drop(self, leaving: list[_Row], event: Event | None) -> None:
        """Take rows out of the batch (ending their requests with `event` unless None)."""
        if not leaving:
            return
        if event is not None:
            for row in leaving:
                self._finish(row.request, event)
        keep = [i for i, row in enumerate(self._rows) if row not in leaving]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._reset_batch()
            return
        index = torch.tensor(keep, device=self._mask.device)
        self._cache.select_rows(index)
        self._mask = self._mask[index]
        # columns that are padding in every remaining row hold nothing anyone attends to
        first_used = int(self._mask.any(0).nonzero()[0])
        if first_used:
            cache = self._cache
            cache.keys, cache.values = cache.keys[:, :, :, first_used:], cache.values[:, :, :, first_used:]
            cache.length -= first_used
            cache.capacity -= first_used
            self._mask = self._mask[:, first_used:]

    def _grow(self) -> None:
        old = self._cache
        shape = (*old.keys.shape[:3], old.capacity + CACHE_CHUNK, old.keys.shape[4])
        keys, values = old.keys.new_zeros(shape), old.values.new_zeros(shape)
        keys[:, :, :, : old.length] = old.keys[:, :, :, : old.length]
        values[:, :, :, : old.length] = old.values[:, :, :, : old.length]
        self._cache = _cache_of(keys, values, old.length, old.rope_deltas)

    def _reset_batch(self) -> None:
        self._rows, self._cache, self._mask = [], None, None

    def _finish(self, request: Request, event: Event) -> None:
        request.finish_reason = event.reason if isinstance(event, Finished) else "error"
        request.cancel()  # so that a request finished here is never run again
        with self._lock:
            self._in_flight -= 1
        _send(request, event)


def _send(request: Request, event: Event) -> None:
    try:
        request.deliver(event)
    except Exception:  # a listener that went away (a closed event loop) must not stop the engine
        pass


def _cache_of(keys: torch.Tensor, values: torch.Tensor, length: int, rope_deltas: torch.Tensor) -> KVCache:
    """A KVCache over existing buffers keys, values [layers, B, Hkv, capacity, D]."""
    layers, _, heads, capacity, dim = keys.shape
    cache = KVCache(layers, 0, heads, dim, 0, keys.dtype, keys.device)
    cache.keys, cache.values, cache.capacity, cache.length = keys, values, capacity, length
    cache.rope_deltas = rope_deltas  # [B, 1]
    return cache


def _left_padded(inputs: list, pad_id: int) -> dict[str, torch.Tensor]:
    """One-row processor outputs -> one batch: input_ids and attention_mask [N, P] left-padded,
    pixel values and grids concatenated in row order (the order the model consumes them)."""
    length = max(x["input_ids"].shape[1] for x in inputs)
    input_ids = torch.full((len(inputs), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(inputs), length, dtype=torch.long)
    for row, x in enumerate(inputs):
        ids = x["input_ids"][0]
        input_ids[row, length - len(ids) :] = ids
        mask[row, length - len(ids) :] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
        parts = [x[key] for x in inputs if x.get(key) is not None]
        if parts:
            batch[key] = torch.cat(parts)
    return batch
