"""A tokenizer for inference that needs only `tokenizers` and `jinja2`.

Importing transformers costs more than a second, most of the 2.5 s a `qwen-vl caption` may
take. Inference uses a small part of a tokenizer (encode, decode, token ids, the chat template),
and that part lives in the Rust `tokenizers` backend and a Jinja template, so this class wraps
them directly. It reads the same files (`tokenizer.json`, `tokenizer_config.json`,
`chat_template.jinja`) and gives the same ids and text as transformers' fast tokenizer
(tests/processing/test_light_tokenizer.py). Training and saving keep using transformers.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from tokenizers import Tokenizer


class LightTokenizer:
    def __init__(self, backend: Tokenizer, config: dict, chat_template: str | None):
        self.backend = backend
        self.config = config
        self.chat_template = chat_template
        self.eos_token = _token_text(config.get("eos_token"))
        self.pad_token = _token_text(config.get("pad_token"))
        self._template = None

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> LightTokenizer:
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise OSError(f"{directory}: no tokenizer.json")
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        template_path = directory / "chat_template.jinja"
        template = template_path.read_text(encoding="utf-8") if template_path.is_file() else config.get("chat_template")
        if template is None and (directory / "chat_template.json").is_file():
            template = json.loads((directory / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
        return cls(Tokenizer.from_file(str(path)), config, template)

    # ---- ids ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.backend.token_to_id(tokens)
        return [self.backend.token_to_id(t) for t in tokens]

    @property
    def eos_token_id(self) -> int | None:
        return self.backend.token_to_id(self.eos_token) if self.eos_token else None

    @property
    def pad_token_id(self) -> int | None:
        return self.backend.token_to_id(self.pad_token) if self.pad_token else None

    # ---- text <-> ids ------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def __call__(self, text, add_special_tokens: bool = False) -> dict:
        if isinstance(text, str):
            return {"input_ids": self.encode(text, add_special_tokens)}
        batch = self.backend.encode_batch(list(text), add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in batch]}

    def decode(self, token_ids, skip_special_tokens: bool = False, **_) -> str:
        if hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
        return self.backend.decode(list(token_ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = False, **_) -> list[str]:
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]

    # ---- chat ----------------------------------------------------------------------------------
    def apply_chat_template(self, conversation, tokenize: bool = False, add_generation_prompt: bool = True, **kwargs):
        """Render like transformers does: a sandboxed Jinja environment with trim_blocks and
        lstrip_blocks, `raise_exception` and `strftime_now` available to the template."""
        if self._template is None:
            if not self.chat_template:
                raise ValueError("this tokenizer has no chat template")
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.globals["raise_exception"] = _raise
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(self.chat_template)
        specials = {k: _token_text(v) for k, v in self.config.items() if k.endswith("_token")}
        text = self._template.render(
            messages=conversation, add_generation_prompt=add_generation_prompt, **specials, **kwargs
        )
        return self.encode(text) if tokenize else text


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json stores it: a string or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def _raise(message: str):
    raise ValueError(message)
