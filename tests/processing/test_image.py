"""Image loading, smart_resize and patchify: parity with transformers' PIL processor and the published rule."""

import base64
import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from qwen_vl.errors import MediaError
from qwen_vl.processing import MAX_PIXELS, MIN_PIXELS, ImageSettings, image_to_patches, load_image, smart_resize


def random_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def reference(image, **kwargs):
    kwargs.setdefault("max_pixels", MAX_PIXELS)
    processor = Qwen2VLImageProcessorPil(**kwargs)
    out = processor(image, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


@pytest.mark.parametrize(
    "height,width",
    [(1, 1), (27, 1000), (1000, 27), (28, 28), (56, 56), (100, 100), (333, 517), (640, 480), (3000, 4000)],
)
def test_patches_match_transformers(height, width):
    image = random_image(height, width, seed=height * 7 + width)
    expected, expected_grid = reference(image)
    pixel_values, grid = image_to_patches(image)
    assert pixel_values.dtype == torch.float32
    assert list(grid) == expected_grid[0].tolist()
    assert pixel_values.shape == expected.shape
    assert (pixel_values - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "size,min_pixels,max_pixels",
    [((480, 640), 56 * 56, 128 * 28 * 28), ((50, 70), 256 * 28 * 28, MAX_PIXELS), ((900, 300), 3136, 100000)],
)
def test_per_request_pixel_budget_matches_transformers(size, min_pixels, max_pixels):
    image = random_image(*size, seed=1)
    expected, expected_grid = reference(image, min_pixels=min_pixels, max_pixels=max_pixels)
    pixel_values, grid = image_to_patches(image, ImageSettings(), min_pixels=min_pixels, max_pixels=max_pixels)
    assert list(grid) == expected_grid[0].tolist()
    assert (pixel_values - expected).abs().max().item() <= 1e-5


def test_resized_height_width_snap_to_factor():
    image = random_image(200, 300)
    _, grid = image_to_patches(image, resized_height=100, resized_width=170)
    assert grid == (1, 112 // 14, 168 // 14)  # round(100/28)*28=112, round(170/28)*28=168


def test_patch_rows_are_in_merge_group_order():
    # Pixel value encodes its patch (row, col); rows of one 2x2 merge group must be adjacent.
    height, width = 56, 84  # grid 4 x 6 patches
    rows = np.arange(height)[:, None] // 14
    cols = np.arange(width)[None, :] // 14
    codes_2d = np.broadcast_to(rows * 10 + cols, (height, width))
    pixels = np.stack([codes_2d, codes_2d * 0, codes_2d * 0], -1).astype(np.uint8)
    values, grid = image_to_patches(Image.fromarray(pixels), ImageSettings(image_mean=(0, 0, 0), image_std=(1, 1, 1)))
    codes = (values[:, 0] * 255).round().int().tolist()  # first value of each row = its patch code
    expected = [
        r * 10 + c for gr in range(2) for gc in range(3) for r in (2 * gr, 2 * gr + 1) for c in (2 * gc, 2 * gc + 1)
    ]
    assert grid == (1, 4, 6)
    assert codes == expected
    # A still image fills both temporal slots with the same values.
    both = values.view(-1, 3, 2, 196)
    assert torch.equal(both[:, :, 0], both[:, :, 1])


def published_smart_resize(height, width, factor, min_pixels, max_pixels):
    """The rule as published: round to the factor, then scale both sides by sqrt of the pixel ratio."""
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


@settings(max_examples=400, deadline=None)
@given(
    height=st.integers(1, 20000),
    width=st.integers(1, 20000),
    min_tokens=st.integers(4, 512),
    max_tokens=st.integers(512, 16384),
)
def test_smart_resize_follows_published_rule(height, width, min_tokens, max_tokens):
    min_pixels, max_pixels = min_tokens * 784, max_tokens * 784
    if max(height, width) / min(height, width) > 200:
        with pytest.raises(MediaError, match="aspect ratio"):
            smart_resize(height, width, 28, min_pixels, max_pixels)
        return
    h, w = smart_resize(height, width, 28, min_pixels, max_pixels)
    assert (h, w) == published_smart_resize(height, width, 28, min_pixels, max_pixels)
    assert h % 28 == 0 and w % 28 == 0 and h >= 28 and w >= 28


# ---- loading -----------------------------------------------------------------------------


def encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_sources_give_the_same_pixels(tmp_path):
    image = random_image(30, 40)
    png = encode(image, "PNG")
    path = tmp_path / "a b.png"
    path.write_bytes(png)
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    expected = np.asarray(image)
    for source in (str(path), path, f"file://{path}", data_uri, png, image):
        loaded = load_image(source)
        assert loaded.mode == "RGB"
        assert np.array_equal(np.asarray(loaded), expected)
    assert np.array_equal(np.asarray(load_image("a b.png", base_dir=tmp_path)), expected)


def test_exif_orientation_is_applied():
    image = random_image(20, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    loaded = load_image(encode(image, "PNG", exif=exif))
    assert loaded.size == (20, 40)
    assert np.array_equal(np.asarray(loaded), np.asarray(image.transpose(Image.Transpose.ROTATE_270)))


def test_modes_are_converted():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red -> white
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert load_image(half).getpixel((0, 0)) == (127, 127, 127)
    la = Image.new("LA", (4, 4), (0, 0))
    assert load_image(la).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.info["transparency"] = 0
    assert load_image(palette).getpixel((0, 0)) == (10, 20, 30)
    assert load_image(Image.new("L", (4, 4), 77)).getpixel((0, 0)) == (77, 77, 77)
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert deep.mode.startswith("I")
    assert load_image(deep).getpixel((0, 0)) == (255, 255, 255)
    mid = Image.fromarray(np.full((4, 4), 257 * 100, dtype=np.uint16))
    assert load_image(mid).getpixel((0, 0)) == (100, 100, 100)  # scaled, not clipped to white
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    assert load_image(encode(cmyk, "JPEG", quality=100)).getpixel((0, 0))[0] > 240


def test_first_frame_of_animation():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    loaded = load_image(buffer.getvalue())
    assert loaded.getpixel((0, 0)) == (255, 0, 0)


# ---- bad inputs: one MediaError line naming the input ----------------------------------------


def assert_one_line(error, *needles):
    message = str(error.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_missing_file(tmp_path):
    with pytest.raises(MediaError) as error:
        load_image(str(tmp_path / "nope.jpg"))
    assert_one_line(error, "nope.jpg", "not found")


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(MediaError) as error:
        load_image(str(tmp_path / "empty.jpg"))
    assert_one_line(error, "empty.jpg", "empty")


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("just some text\n")
    with pytest.raises(MediaError) as error:
        load_image(str(tmp_path / "notes.jpg"))
    assert_one_line(error, "notes.jpg", "not a recognised image")


def test_truncated_jpeg(tmp_path):
    data = encode(random_image(200, 200), "JPEG")
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as error:
        load_image(str(tmp_path / "cut.jpg"))
    assert_one_line(error, "cut.jpg", "truncated")


def test_aspect_ratio_above_200():
    with pytest.raises(MediaError) as error:
        image_to_patches(random_image(1, 201))
    assert_one_line(error, "1x201", "aspect ratio")


def test_decompression_bomb(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(encode(Image.new("RGB", (100, 100)), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 100*100 > 2*1000
    with pytest.raises(MediaError) as error:
        load_image(str(tmp_path / "bomb.png"))
    assert_one_line(error, "bomb.png", "decompression-bomb")


def test_bad_data_uri_and_type():
    with pytest.raises(MediaError, match="base64"):
        load_image("data:image/png,abc")
    with pytest.raises(MediaError, match="unsupported source"):
        load_image(12345)


def test_default_budget_constants():
    assert (MIN_PIXELS, MAX_PIXELS) == (56 * 56, 28 * 28 * 16384)
