"""Still images: load any source to RGB, choose the model resolution, cut into patch rows."""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from qwen_vl.errors import MediaError
from qwen_vl.processing.patches import (
    CLIP_MEAN,
    CLIP_STD,
    MERGE_SIZE,
    PATCH_SIZE,
    TEMPORAL_PATCH_SIZE,
    normalization,
    patchify,
)

# Published Qwen2.5-VL image resolution rules.
IMAGE_FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: both sides are multiples of this
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 16384
MAX_RATIO = 200
MAX_MEDIA_BYTES = 2**30  # 1 GiB: a larger image or video file is refused before it is read

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image

_EXIF_ORIENTATION = 0x0112


def describe(source: object) -> str:
    """A short printable name for a media source, used in error messages. A long path keeps its
    end, where the file name is."""
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        return repr(text if len(text) <= 80 else "..." + text[-60:])
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.width}x{source.height}>"
    return f"<{type(source).__name__}>"


def resolve_path(source: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> Path:
    """A local path or file:// URI as a Path; relative paths are taken against base_dir."""
    text = os.fspath(source)
    if text.startswith("file://"):
        text = unquote(urlparse(text).path)
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def checked_media_file(source: str | os.PathLike, path: Path, kind: str) -> Path:
    """`path` if it is a regular file (after symlinks) of at most MAX_MEDIA_BYTES; else one clear
    MediaError. A FIFO would block a read forever and /dev/zero would fill the memory."""
    name = describe(source)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MediaError(f"{kind} {name}: file not found ({path})") from None
    except OSError as exc:
        raise MediaError(f"{kind} {name}: cannot read file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise MediaError(f"{kind} {name}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise MediaError(f"{kind} {name}: not a regular file (a pipe, socket or device)")
    if info.st_size > MAX_MEDIA_BYTES:
        raise MediaError(f"{kind} {name}: {info.st_size / 2**30:.1f} GiB, over the {MAX_MEDIA_BYTES >> 30} GiB limit")
    return path


def read_media_bytes(source: str | os.PathLike, base_dir=None, kind: str = "image") -> bytes:
    """The raw bytes behind a path, file:// URI or data: URI."""
    name = describe(source)
    text = os.fspath(source)
    if text.startswith("data:"):
        header, _, payload = text.partition(",")
        if ";base64" not in header:
            raise MediaError(f"{kind} {name}: only base64 data: URIs are supported")
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise MediaError(f"{kind} {name}: invalid base64 payload ({exc})") from None
    elif text.startswith(("http://", "https://")):
        raise MediaError(f"{kind} {name}: remote URLs are not fetched; download the file first")
    else:
        path = checked_media_file(source, resolve_path(text, base_dir), kind)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise MediaError(f"{kind} {name}: cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise MediaError(f"{kind} {name}: file is empty")
    return data


def _open(data: bytes, name: str) -> Image.Image:
    """The image's header: size and mode known, pixels not decoded yet."""
    with _pil_errors(name):
        return Image.open(io.BytesIO(data))


def _decode(image: Image.Image, name: str) -> Image.Image:
    with _pil_errors(name):
        image.load()  # decode now so corrupt data fails here, not later
    return image


@contextlib.contextmanager
def _pil_errors(name: str):
    """Pillow's errors while opening or decoding, as one MediaError naming the image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombError:
        raise MediaError(
            f"image {name}: too many pixels (over Pillow's decompression-bomb limit of "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0)})"
        ) from None
    except UnidentifiedImageError:
        raise MediaError(f"image {name}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = "data is truncated" if "truncated" in str(exc) else f"corrupt image data ({exc})"
        raise MediaError(f"image {name}: {reason}") from None


def _high_depth_to_8bit(image: Image.Image) -> Image.Image:
    """I;16*, I and F images as 8-bit grey: 16-bit ranges scaled, not clipped to white."""
    values = np.asarray(image)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
        values = np.clip(values.astype(np.float32), 0, 65535) / 257.0
    elif image.mode == "F" and values.size and np.nanmax(values) <= 1.0:
        values = values * 255.0
    values = np.nan_to_num(values.astype(np.float32))
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> RGB: EXIF orientation applied, transparency composited on white,
    16-bit grey scaled to 8 bits, CMYK/YCbCr/P/1/L converted; first frame of an animation."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if hasattr(image, "getexif") else 1
    if orientation not in (1, None):
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = _high_depth_to_8bit(image)
    has_alpha = "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    if getattr(image, "is_animated", False):
        return image.copy()  # detach the first frame from the open animation
    return image


def open_image(source: ImageSource, base_dir: str | os.PathLike | None = None) -> Image.Image:
    """Any image source (see load_image), read up to its header: its size is known and its pixels are
    not decoded yet, so a pixel budget can be checked first. Pass the result to load_image."""
    name = describe(source)
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise MediaError(f"image {name}: data is empty")
        image = _open(bytes(source), name)
    elif isinstance(source, (str, os.PathLike)):
        image = _open(read_media_bytes(source, base_dir, "image"), name)
    else:
        raise MediaError(f"image {name}: unsupported source type (use a path, URI, bytes or PIL image)")
    if image.width < 1 or image.height < 1:
        raise MediaError(f"image {name}: has no pixels ({image.width}x{image.height})")
    return image


def load_image(source: ImageSource, base_dir: str | os.PathLike | None = None) -> Image.Image:
    """Local path, file:// URI, data:image/...;base64 URI, raw bytes or PIL image (also one from
    open_image) -> RGB PIL image."""
    name = describe(source)
    image = _decode(open_image(source, base_dir), name)
    try:
        return to_rgb(image)
    except (OSError, ValueError) as exc:
        raise MediaError(f"image {name}: cannot convert mode {image.mode} to RGB ({exc})") from None


def smart_resize(
    height: int,
    width: int,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """(height, width) -> the model resolution: both sides multiples of factor, area within
    [min_pixels, max_pixels], aspect ratio kept as closely as possible."""
    if height < 1 or width < 1:
        raise MediaError(f"image size {height}x{width}: has no pixels")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        raise MediaError(f"image size {height}x{width}: aspect ratio {ratio:.1f} is above {MAX_RATIO}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        # Shrink both sides by the same factor, rounding down so the area stays under budget.
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        # Grow both sides by the same factor, rounding up so the area reaches the minimum.
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class ImageSettings:
    """How still images become patch rows (defaults: the published Qwen2.5-VL values)."""

    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    patch_size: int = PATCH_SIZE
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE
    merge_size: int = MERGE_SIZE
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


def target_size(
    height: int,
    width: int,
    settings: ImageSettings,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    resized_height: int | None = None,
    resized_width: int | None = None,
) -> tuple[int, int]:
    """Model resolution for one image with optional per-request overrides. An explicit
    resized_height/resized_width is itself snapped to the factor grid (qwen-vl-utils rule)."""
    lo = settings.min_pixels if min_pixels is None else int(min_pixels)
    hi = settings.max_pixels if max_pixels is None else int(max_pixels)
    if (resized_height is None) != (resized_width is None):
        raise MediaError("image: resized_height and resized_width must be given together")
    if resized_height is not None:
        return smart_resize(int(resized_height), int(resized_width), settings.factor, lo, hi)
    return smart_resize(height, width, settings.factor, lo, hi)


def resize_bicubic(image: Image.Image, height: int, width: int) -> Image.Image:
    """PIL bicubic resize (what the reference PIL image processor does); no-op at equal size."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 [H, W, 3], one copy out of PIL (read-only; never written)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": we only read it
        return torch.from_numpy(np.asarray(image))


def image_to_patches(
    image: Image.Image,
    settings: ImageSettings = ImageSettings(),
    **overrides,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """RGB PIL image -> (pixel_values float32 [gh*gw, 3*tp*ps*ps], grid (1, gh, gw)).

    overrides: min_pixels, max_pixels, resized_height, resized_width (per request)."""
    height, width = target_size(image.height, image.width, settings, **overrides)
    resized = resize_bicubic(image, height, width)
    frame = pil_to_tensor(resized).unsqueeze(0)  # uint8 [1, H, W, 3]
    scale, bias = normalization(settings.image_mean, settings.image_std)
    return patchify(frame, scale, bias, settings.patch_size, settings.merge_size, settings.temporal_patch_size)


def preprocess_images(
    images: list[ImageSource],
    settings: ImageSettings = ImageSettings(),
    base_dir: str | os.PathLike | None = None,
    **overrides,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images -> (pixel_values float32 [sum gh*gw, 1176], image_grid_thw long [I, 3])."""
    rows, grids = [], []
    for source in images:
        patches, grid = image_to_patches(load_image(source, base_dir), settings, **overrides)
        rows.append(patches)
        grids.append(grid)
    return torch.cat(rows), torch.tensor(grids, dtype=torch.long)
