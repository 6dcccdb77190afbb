"""Video decoders that return only the requested frames: decord first, PyAV as the fallback.

A reader exposes `total_frames`, `fps` and `frames(indices) -> uint8 [T, H, W, 3]`. Frame i is
the i-th frame in presentation order, the same numbering for both backends.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import sys
import tempfile
from typing import Protocol

import numpy as np

from qwen_vl.errors import MediaError


class VideoReader(Protocol):
    backend: str
    total_frames: int
    fps: float

    def frames(self, indices: list[int]) -> np.ndarray: ...


class DecordReader:
    """decord's frame index + get_batch: seeks to the keyframe before each wanted frame."""

    backend = "decord"

    def __init__(self, path: str):
        import decord  # optional dependency; ImportError means "use PyAV"

        self._reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0)
        self.total_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())

    def frames(self, indices: list[int]) -> np.ndarray:
        return self._reader.get_batch(indices).asnumpy()  # uint8 [T, H, W, 3]


class PyAVReader:
    """PyAV with sparse decoding: one demux pass builds the pts index (no decoding), then the
    decoder seeks to the keyframe before each wanted frame that lies beyond the next keyframe,
    and only wanted frames are converted to RGB."""

    backend = "pyav"

    def __init__(self, path: str):
        import av

        self._av = av
        self._path = path
        with av.open(path) as container:
            if not container.streams.video:
                raise MediaError(f"video {path!r}: no video stream")
            stream = container.streams.video[0]
            pts, keyframes = [], []
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # end-of-stream flush packet
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    continue
                pts.append(stamp)
                if packet.is_keyframe:
                    keyframes.append(stamp)
            rate = stream.average_rate or stream.guessed_rate
            duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
        self._frame_pts = sorted(pts)
        self._keyframe_pts = sorted(keyframes) or self._frame_pts[:1]
        self.total_frames = len(self._frame_pts)
        if rate:
            self.fps = float(rate)
        elif duration > 0:
            self.fps = self.total_frames / duration
        else:
            self.fps = 0.0

    def _keyframe_before(self, pts: int) -> int:
        at = bisect.bisect_right(self._keyframe_pts, pts) - 1
        return self._keyframe_pts[max(at, 0)]

    def frames(self, indices: list[int]) -> np.ndarray:
        wanted = sorted({self._frame_pts[i] for i in indices})
        found: dict[int, np.ndarray] = {}
        with self._av.open(self._path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            position = 0  # index into `wanted` of the next frame still to find
            while position < len(wanted):
                target = wanted[position]
                container.seek(self._keyframe_before(target), stream=stream, backward=True)
                reseek = False
                for frame in container.decode(stream):
                    if frame.pts is None:
                        continue
                    while position < len(wanted) and wanted[position] < frame.pts:
                        position += 1  # that frame never came out of the decoder; use a neighbour
                    if position < len(wanted) and frame.pts == wanted[position]:
                        found[frame.pts] = frame.to_ndarray(format="rgb24")
                        position += 1
                    if position == len(wanted):
                        break
                    # Skip whole GOPs with nothing wanted: jump if the next target lies
                    # beyond a keyframe that is still ahead of us.
                    if self._keyframe_before(wanted[position]) > frame.pts:
                        reseek = True
                        break
                if not reseek:
                    break  # stream exhausted or all found
        if not found:
            raise MediaError(f"video {self._path!r}: no decodable frames")
        decoded = sorted(found)
        out = []
        for i in indices:
            pts = self._frame_pts[i]
            if pts not in found:  # undecodable frame: nearest decoded one stands in
                pos = bisect.bisect_left(decoded, pts)
                pts = min(decoded[max(pos - 1, 0) : pos + 1], key=lambda p: abs(p - pts))
            out.append(found[pts])
        return np.stack(out)


def reader_error(exc: Exception, path: str) -> str:
    """First line of a reader's exception, the path cut to its file name (no server paths in
    messages), at most 120 characters."""
    text = str(exc).replace(path, os.path.basename(path))
    return text.splitlines()[0][:120] if text else type(exc).__name__


@contextlib.contextmanager
def native_logs_silenced():
    """Native decoders (decord and the FFmpeg inside it and PyAV) write their complaints about a bad
    file straight to file descriptor 2; swallow them, so the one-line error that follows stands alone."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def open_video(path: str, backend: str = "auto", name: str | None = None) -> VideoReader:
    """decord when installed and able to read the file, else PyAV; MediaError if neither can."""
    with native_logs_silenced():
        return _open_video(path, backend, name)


def _open_video(path: str, backend: str, name: str | None) -> VideoReader:
    name = name or repr(path)
    if os.path.getsize(path) == 0:
        raise MediaError(f"video {name}: file is empty")
    errors = []
    if backend in ("auto", "decord"):
        try:
            reader = DecordReader(path)
            if reader.total_frames > 0:
                return reader
            errors.append("decord: no frames")
        except ImportError:
            if backend == "decord":
                raise MediaError(f"video {name}: decord is not installed") from None
        except Exception as exc:  # decord raises bare RuntimeError/DECORDError on bad input
            errors.append(f"decord: {reader_error(exc, path)}")
        if backend == "decord":
            raise MediaError(f"video {name}: cannot decode ({errors[-1]})")
    try:
        reader = PyAVReader(path)
    except MediaError:
        raise
    except Exception as exc:  # av.error.* for containers ffmpeg cannot parse
        raise MediaError(f"video {name}: not a decodable video ({reader_error(exc, path)})") from None
    if reader.total_frames == 0:
        raise MediaError(f"video {name}: no decodable frames")
    return reader
