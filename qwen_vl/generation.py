"""Text generation: prefill + decode over a preallocated KV cache.

The prompt's M-RoPE `rope_deltas` ride on the cache into decoding. Rows of a left-padded batch
stop on their own (EOS, `<|im_end|>`, a stop string, or max_new_tokens) and leave the batch.
Greedy and sampling (temperature, top-k, top-p, repetition penalty, seed) follow the usual
definitions; `stream_text` yields text pieces that never split a multi-byte character.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .errors import OptionError, PromptTooLongError

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


@dataclass
class SamplingConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no limit
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self):
        """One line naming the first option out of range (the CLI, the app and eval report it as is)."""
        rules = [
            ("max_new_tokens", self.max_new_tokens, lambda v: v >= 1, "must be at least 1"),
            ("temperature", self.temperature, lambda v: v >= 0, "must be 0 or more"),
            ("top_p", self.top_p, lambda v: 0 < v <= 1, "must be in (0, 1]"),
            ("top_k", self.top_k, lambda v: v >= 0, "must be 0 or more"),
            ("repetition_penalty", self.repetition_penalty, lambda v: v > 0, "must be above 0"),
        ]
        for name, value, valid, rule in rules:
            if value is None or not valid(value):
                raise OptionError(f"{name} {rule}, got {value}")


# ---- choosing the next token -------------------------------------------------------------------
def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Divide positive, multiply negative logits of already seen tokens by `penalty` (CTRL, 2019).

    logits [B, V], seen [B, V] bool."""
    if penalty == 1.0:
        return logits
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties at the k-th value kept), the rest -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least p (nucleus)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    # a token is dropped when the mass before it already reaches p; the top token always stays
    drop_sorted = (probs.cumsum(-1) - probs) >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_tokens(logits: torch.Tensor, seen: torch.Tensor, cfg: SamplingConfig, generator) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    logits = apply_repetition_penalty(logits.float(), seen, cfg.repetition_penalty)
    if cfg.temperature == 0:
        return logits.argmax(-1)
    logits = filter_top_p(filter_top_k(logits / cfg.temperature, cfg.top_k), cfg.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


# ---- the decode loop ---------------------------------------------------------------------------
def stop_token_ids(model, tokenizer=None) -> set[int]:
    eos = model.config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        ids |= {vocab[t] for t in STOP_TOKENS if t in vocab}
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
    return ids


def decode_steps(model, batch, cfg: SamplingConfig, stop_ids: set[int]) -> Iterator[tuple[list[int], list[int]]]:
    """Yield (rows, tokens) once per step: the new token of every still-running row.

    A row whose token is a stop token is finished: the stop token is yielded (so callers can tell)
    and the row then leaves the batch."""
    input_ids = batch["input_ids"].to(model.device)
    batch_size, prompt_len = input_ids.shape
    context = model.config.text.max_position_embeddings
    if prompt_len >= context:
        raise PromptTooLongError(
            f"prompt is {prompt_len} tokens (with vision tokens); the model's context is {context}"
        )
    steps = min(cfg.max_new_tokens, context - prompt_len)
    mask = batch.get("attention_mask")
    mask = None if mask is None or bool(mask.all()) else mask.to(model.device)
    generator = torch.Generator(device=model.device)
    generator.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    seen = torch.zeros(batch_size, model.config.text.vocab_size, dtype=torch.bool, device=model.device)
    if cfg.repetition_penalty != 1.0:
        seen.scatter_(1, input_ids.clamp(max=seen.shape[1] - 1), True)
    stop = torch.tensor(sorted(stop_ids), dtype=torch.long, device=model.device)

    cache = model.new_cache(batch_size, prompt_len + steps)
    inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    rows = torch.arange(batch_size, device=model.device)
    # Grad mode is thread-local and a caller may resume this generator on another thread (Gradio
    # runs each step on a worker pool), so inference mode is entered per step, never across a yield.
    with torch.inference_mode():
        logits = model(input_ids, attention_mask=mask, cache=cache, logits_to_keep=1, **inputs).logits[:, -1]
        tokens = next_tokens(logits, seen, cfg, generator)
    for step in range(steps):
        yield rows.tolist(), tokens.tolist()
        with torch.inference_mode():
            running = ~torch.isin(tokens, stop)
            if step == steps - 1 or not running.any():
                return
            if not running.all():  # finished rows leave the batch
                keep = running.nonzero().squeeze(-1)
                rows, tokens, seen = rows[keep], tokens[keep], seen[keep]
                cache.select_rows(keep)
                mask = mask[keep] if mask is not None else None
            seen[torch.arange(len(rows)), tokens] = True
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(len(rows), 1)], 1)
            logits = model(tokens[:, None], attention_mask=mask, cache=cache).logits[:, -1]
            tokens = next_tokens(logits, seen, cfg, generator)


def generate_ids(
    model, batch, sampling: SamplingConfig | None = None, stop_ids: set[int] | None = None
) -> list[list[int]]:
    """New token ids per row, without the final stop token."""
    cfg = sampling or SamplingConfig()
    stop_ids = stop_token_ids(model) if stop_ids is None else stop_ids
    out: list[list[int]] = [[] for _ in range(batch["input_ids"].shape[0])]
    for rows, tokens in decode_steps(model, batch, cfg, stop_ids):
        for row, token in zip(rows, tokens, strict=True):
            if token not in stop_ids:
                out[row].append(token)
    return out


def generate_text(model, processor, conversations, sampling: SamplingConfig | None = None) -> list[str]:
    """Answers to a list of conversations (batched with left padding), one string each."""
    cfg = sampling or SamplingConfig()
    if not cfg.stop:
        batch = processor(conversations, add_generation_prompt=True, padding_side="left")
        ids = generate_ids(model, batch, cfg, stop_token_ids(model, processor.tokenizer))
        return [processor.decode(row, skip_special_tokens=True) for row in ids]
    return ["".join(stream_text(model, processor, conv, cfg)) for conv in conversations]


def stream_text(model, processor, conversation, sampling: SamplingConfig | None = None) -> Iterator[str]:
    """Text pieces of the answer to one conversation, as they are generated.

    A piece is held back while it ends inside a multi-byte character (the decoder shows U+FFFD)
    or while its tail could still grow into a stop string; the stop string itself is never shown."""
    cfg = sampling or SamplingConfig()
    batch = processor([conversation], add_generation_prompt=True, padding_side="left")
    stop_ids = stop_token_ids(model, processor.tokenizer)
    ids: list[int] = []
    shown = 0
    for _, (token,) in decode_steps(model, batch, cfg, stop_ids):
        if token in stop_ids:
            break
        ids.append(token)
        text = processor.decode(ids, skip_special_tokens=True)
        cut = first_stop(text, cfg.stop)
        if cut is not None:
            if cut > shown:
                yield text[shown:cut]
            return
        safe = len(text) - held_back(text, cfg.stop)
        if safe > shown:
            yield text[shown:safe]
            shown = safe
    text = processor.decode(ids, skip_special_tokens=True)
    if len(text) > shown:
        yield text[shown:]


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string found in `text` starts; None if none is there."""
    found = [text.find(s) for s in stops if s and s in text]
    return min(found) if found else None


def held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of `text` not to show yet."""
    if text.endswith("\ufffd"):  # an unfinished UTF-8 sequence
        return len(text) - len(text.rstrip("\ufffd"))
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest
