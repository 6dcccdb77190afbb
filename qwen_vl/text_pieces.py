"""Generated token ids -> text pieces that are safe to show while the answer is still growing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .generation import first_stop, held_back


class TextPieces:
    """Feed tokens one by one with `add`; each call returns the new text that can be shown now.

    A piece never ends inside a multi-byte character or inside a prefix of a stop string; once a
    stop string appears, `stopped` is set and the text before it is the whole answer. The pieces
    joined equal what `generation.stream_text` yields for the same tokens."""

    def __init__(self, decode: Callable[[list[int]], str], stops: Sequence[str] = ()):
        self.decode = decode
        self.stops = tuple(s for s in stops if s)
        self.ids: list[int] = []
        self.shown = 0  # characters already handed out
        self.stopped = False

    def add(self, token: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self.decode(self.ids)
        cut = first_stop(text, self.stops)
        if cut is not None:
            self.stopped = True
            piece = text[self.shown : cut] if cut > self.shown else ""
            self.shown = max(self.shown, cut)
            return piece
        safe = len(text) - held_back(text, self.stops)
        if safe <= self.shown:
            return ""
        piece, self.shown = text[self.shown : safe], safe
        return piece

    def finish(self) -> str:
        """The text held back so far, once no more tokens will come."""
        if self.stopped:
            return ""
        text = self.decode(self.ids)
        piece, self.shown = text[self.shown :], len(text)
        return piece
