"""Messages written the ways the ecosystem writes them (qwen-vl-utils, transformers, OpenAI) give the
same model inputs as the canonical form; total_pixels, sample_fps and add_vision_id follow the
published rules; a key that is not understood is one clear line."""

import base64
import io

import av
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as transformers_smart_resize

from qwen_vl.errors import MediaError, OptionError
from qwen_vl.loading import BUNDLED_MODEL_DIR
from qwen_vl.processing import QwenVLProcessor, build_tokenizer, render_chat, smart_resize
from qwen_vl.processing.chat import normalize_messages

CORPUS = ["Describe this image.", "What happens in the video? Compare them."] * 20

# The chat template published with Qwen2.5-VL-{3,7,72}B-Instruct (chat_template.json), the
# reference for add_vision_id.
OFFICIAL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def processor(tokenizer):
    return QwenVLProcessor(tokenizer)


def noise(height, width, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_bytes(image):
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def write_video(path, frames, fps):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].height, frames[0].width
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "10"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("forms")
    picture = noise(60, 90, 0)
    picture.save(root / "picture.png")
    frames = [noise(56, 84, i) for i in range(5)]
    for i, frame in enumerate(frames):
        frame.save(root / f"frame{i}.png")
    write_video(root / "clip.mp4", [noise(64, 96, 10 + i) for i in range(12)], fps=4)
    return root


def data_uri(path, mime):
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def ask(part, question="Describe this image."):
    return [{"role": "user", "content": [part, {"type": "text", "text": question}]}]


def assert_same_inputs(ours, reference):
    assert torch.equal(ours.input_ids, reference.input_ids)
    assert ours.keys() == reference.keys()
    for key in reference.keys():
        assert torch.equal(ours[key], reference[key]), key


IMAGE_FORMS = {
    "transformers url": lambda m: {"type": "image", "url": str(m / "picture.png")},
    "transformers path": lambda m: {"type": "image", "path": str(m / "picture.png")},
    "transformers base64": lambda m: {
        "type": "image",
        "base64": base64.b64encode((m / "picture.png").read_bytes()).decode(),
    },
    "file URI": lambda m: {"type": "image", "image": (m / "picture.png").as_uri()},
    "file URI in url": lambda m: {"type": "image", "url": (m / "picture.png").as_uri()},
    "data URI": lambda m: {"type": "image", "image": data_uri(m / "picture.png", "image/png")},
    "OpenAI image_url string": lambda m: {"type": "image_url", "image_url": str(m / "picture.png")},
    "OpenAI image_url dict": lambda m: {"type": "image_url", "image_url": {"url": str(m / "picture.png")}},
    "OpenAI data URI, detail auto": lambda m: {
        "type": "image_url",
        "image_url": {"url": data_uri(m / "picture.png", "image/png"), "detail": "auto"},
    },
    "qwen-vl-utils, no type": lambda m: {"image": str(m / "picture.png")},
    "qwen-vl-utils image_url, no type": lambda m: {"image_url": str(m / "picture.png")},
    "bytes": lambda m: {"type": "image", "image": (m / "picture.png").read_bytes()},
    "PIL image": lambda m: {"type": "image", "image": Image.open(m / "picture.png")},
    "keys set to None": lambda m: {"type": "image", "image": str(m / "picture.png"), "max_pixels": None, "url": None},
}


@pytest.mark.parametrize("form", IMAGE_FORMS)
def test_image_forms_give_the_canonical_inputs(processor, media, form):
    canonical = processor(ask({"type": "image", "image": str(media / "picture.png")}))
    assert_same_inputs(processor(ask(IMAGE_FORMS[form](media))), canonical)


VIDEO_FORMS = {
    "transformers url": lambda m: {"type": "video", "url": str(m / "clip.mp4")},
    "transformers path": lambda m: {"type": "video", "path": str(m / "clip.mp4")},
    "file URI": lambda m: {"type": "video", "video": (m / "clip.mp4").as_uri()},
    "data URI": lambda m: {"type": "video", "video": data_uri(m / "clip.mp4", "video/mp4")},
    "video_url string": lambda m: {"type": "video_url", "video_url": str(m / "clip.mp4")},
    "video_url dict": lambda m: {"type": "video_url", "video_url": {"url": str(m / "clip.mp4")}},
    "qwen-vl-utils, no type": lambda m: {"video": str(m / "clip.mp4")},
}


@pytest.mark.parametrize("form", VIDEO_FORMS)
def test_video_forms_give_the_canonical_inputs(processor, media, form):
    canonical = processor(ask({"type": "video", "video": str(media / "clip.mp4")}, "What happens in the video?"))
    ours = processor(ask(VIDEO_FORMS[form](media), "What happens in the video?"))
    assert_same_inputs(ours, canonical)
    assert ours.second_per_grid_ts.tolist() == [1.0]  # 3 s at 4 fps, sampled at 2 fps: 2 / 2


def frame_paths(m):
    return [str(m / f"frame{i}.png") for i in range(5)]


FRAME_LIST_FORMS = {
    "fps (qwen-vl-utils 0.0.10)": lambda m: {"type": "video", "video": frame_paths(m), "fps": 1.0},
    "both, agreeing": lambda m: {"type": "video", "video": frame_paths(m), "fps": 1, "sample_fps": 1},
    "file URIs in url": lambda m: {
        "type": "video",
        "url": [(m / f"frame{i}.png").as_uri() for i in range(5)],
        "sample_fps": 1,
    },
    "data URIs in path": lambda m: {
        "type": "video",
        "path": [data_uri(m / f"frame{i}.png", "image/png") for i in range(5)],
        "sample_fps": 1,
    },
    "PIL images, video_url": lambda m: {
        "type": "video_url",
        "video_url": [Image.open(m / f"frame{i}.png") for i in range(5)],
        "sample_fps": 1,
    },
}


@pytest.mark.parametrize("form", FRAME_LIST_FORMS)
def test_frame_list_forms_give_the_canonical_inputs(processor, media, form):
    # qwen-vl-utils 0.0.14 reads a frame list's rate from sample_fps (default 2).
    canonical = processor(ask({"type": "video", "video": frame_paths(media), "sample_fps": 1}, "Compare them."))
    ours = processor(ask(FRAME_LIST_FORMS[form](media), "Compare them."))
    assert_same_inputs(ours, canonical)
    assert ours.video_grid_thw.tolist() == [[3, 20, 28]]  # 5 frames padded to 6; 56x84 grows to 280x392
    assert ours.second_per_grid_ts.tolist() == [2.0]  # temporal patch 2 / 1 fps


def test_frame_list_rate_defaults_to_two(processor, media):
    batch = processor(ask({"type": "video", "video": frame_paths(media)}, "Compare them."))
    assert batch.second_per_grid_ts.tolist() == [1.0]


def test_every_form_renders_the_canonical_prompt(media):
    """The rendered text too: normalisation runs before any template (official or ours)."""
    canonical = render_chat(ask({"type": "image", "image": "x.png"}))
    for form in IMAGE_FORMS.values():
        assert render_chat(ask(form(media))) == canonical
    video = render_chat(ask({"type": "video", "video": "x.mp4"}))
    for form in VIDEO_FORMS.values():
        assert render_chat(ask(form(media))) == video


# ---- total_pixels (qwen-vl-utils 0.0.14 fetch_video) ----------------------------------------------
def published_frame_cap(nframes, total_pixels, min_pixels=128 * 28 * 28, max_pixels=None):
    """max(min(VIDEO_MAX_PIXELS, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05)),
    then a given max_pixels may only lower it."""
    cap = max(min(768 * 28 * 28, total_pixels / nframes * 2), int(min_pixels * 1.05))
    return cap if max_pixels is None else min(cap, max_pixels)


@pytest.fixture(scope="module")
def large_frames(tmp_path_factory):
    """8 frames of 560x840 (470,400 px, under the 768-token frame cap of 602,112 px)."""
    frames = [noise(560, 840, 20 + i) for i in range(8)]
    return frames, write_video(tmp_path_factory.mktemp("large") / "large.mp4", frames, fps=8)


@pytest.mark.parametrize(
    ("options", "cap", "grid"),
    [
        # no total_pixels: the default budget (90% of 128k tokens) does not bite on 8 frames
        ({}, 768 * 28 * 28, (4, 40, 60)),
        # 8 frames share 200 tokens * 8: 313,600 px per frame -> 448x672
        ({"total_pixels": 8 * 200 * 784}, 313_600, (4, 32, 48)),
        # a share below the floor stops at int(1.05 * 128 * 784) = 105,369 px -> 252x392
        ({"total_pixels": 1000}, 105_369, (4, 18, 28)),
        # max_pixels may only lower the share: 156,800 px -> 308x476
        ({"total_pixels": 8 * 200 * 784, "max_pixels": 200 * 784}, 156_800, (4, 22, 34)),
    ],
)
def test_total_pixels_follows_the_published_rule(processor, large_frames, options, cap, grid):
    frames, path = large_frames
    default_total = 128000 * 28 * 28 * 0.9
    expected_cap = published_frame_cap(
        8, options.get("total_pixels", default_total), max_pixels=options.get("max_pixels")
    )
    assert int(expected_cap) == cap
    height, width = smart_resize(560, 840, 28, 128 * 28 * 28, expected_cap)
    assert (4, height // 14, width // 14) == grid
    from_list = processor(ask({"type": "video", "video": frames, **options}, "What happens in the video?"))
    from_file = processor(ask({"type": "video", "video": str(path), "nframes": 8, **options}, "What happens?"))
    assert from_list.video_grid_thw.tolist() == [list(grid)]
    assert from_file.video_grid_thw.tolist() == [list(grid)]
    tokens = grid[0] * grid[1] * grid[2] // 4
    assert (from_list.input_ids == processor.video_token_id).sum() == tokens


# ---- add_vision_id -------------------------------------------------------------------------------
def two_turns():
    return [
        {
            "role": "user",
            "content": [{"type": "image", "url": "a.png"}, {"type": "text", "text": "Describe this image."}],
        },
        {"role": "assistant", "content": "A cat."},
        {
            "role": "user",
            "content": [
                {"type": "video", "path": "b.mp4"},
                {"type": "image_url", "image_url": {"url": "c.png"}},
                {"type": "text", "text": "Compare them."},
            ],
        },
    ]


LABELLED = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
    "<|im_start|>assistant\nA cat.<|im_end|>\n"
    "<|im_start|>user\nVideo 1: <|vision_start|><|video_pad|><|vision_end|>"
    "Picture 2: <|vision_start|><|image_pad|><|vision_end|>Compare them.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_add_vision_id_renders_as_the_official_template(tokenizer):
    official = tokenizer.apply_chat_template(
        normalize_messages(two_turns()),
        chat_template=OFFICIAL_TEMPLATE,
        tokenize=False,
        add_generation_prompt=True,
        add_vision_id=True,
    )
    assert official == LABELLED
    assert render_chat(two_turns(), add_vision_id=True) == LABELLED
    assert QwenVLProcessor(tokenizer).apply_chat_template(two_turns(), add_vision_id=True) == LABELLED
    plain = LABELLED.replace("Picture 1: ", "").replace("Video 1: ", "").replace("Picture 2: ", "")
    assert render_chat(two_turns()) == plain
    # The bundled model's own tokenizer and template, rendered by transformers.
    bundled = AutoTokenizer.from_pretrained(BUNDLED_MODEL_DIR)
    assert (
        bundled.apply_chat_template(
            normalize_messages(two_turns()), tokenize=False, add_generation_prompt=True, add_vision_id=True
        )
        == LABELLED
    )


def test_add_vision_id_in_the_processor(tokenizer, media):
    conversation = ask({"type": "image", "image": str(media / "picture.png")})
    plain = QwenVLProcessor(tokenizer)
    labelled = plain(conversation, add_vision_id=True)
    label_ids = tokenizer("Picture 1: ", add_special_tokens=False)["input_ids"]
    start = plain(conversation).input_ids[0].tolist()
    ids = labelled.input_ids[0].tolist()
    cut = ids.index(tokenizer.convert_tokens_to_ids("<|vision_start|>"))
    assert ids[cut - len(label_ids) : cut] == label_ids and ids[: cut - len(label_ids)] == start[: cut - len(label_ids)]
    assert torch.equal(labelled.pixel_values, plain(conversation).pixel_values)
    # the processor's default, and one flag per conversation in a batch
    assert torch.equal(QwenVLProcessor(tokenizer, add_vision_id=True)(conversation).input_ids, labelled.input_ids)
    batch = plain([conversation, conversation], add_vision_id=[False, True], padding_side="right")
    assert batch.input_ids[1].tolist() == ids
    assert batch.input_ids[0, : len(start)].tolist() == start
    with pytest.raises(OptionError, match="2 flags for 1 conversations"):
        plain(conversation, add_vision_id=[True, False])


def test_add_vision_id_refused_by_a_template_without_it(media):
    tokenizer = build_tokenizer(CORPUS, vocab_size=400)
    tokenizer.chat_template = OFFICIAL_TEMPLATE.replace("{% if add_vision_id %}", "{% if false %}").replace(
        "add_vision_id", ""
    )
    with pytest.raises(OptionError, match="add_vision_id"):
        QwenVLProcessor(tokenizer)(ask({"type": "image", "image": str(media / "picture.png")}), add_vision_id=True)


# ---- what is refused ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("part", "fragment"),
    [
        (
            {"type": "image", "image": "x.png", "max_pixel": 1000},
            "key 'max_pixel' is not understood (did you mean 'max_pixels'?)",
        ),
        ({"type": "video", "video": "x.mp4", "sample_rate": 2}, "key 'sample_rate' is not understood"),
        ({"type": "image", "image": "x.png", "fps": 2}, "key 'fps' applies to videos only"),
        ({"type": "text", "text": "hi", "cache_control": {}}, "key 'cache_control' is not understood"),
        ({"type": "audio", "audio": "x.wav"}, "type 'audio' is not supported"),
        ({"type": "image", "image": "x.png", "url": "y.png"}, "give the image once, got 'image' and 'url'"),
        ({"type": "image"}, "has no image"),
        ({"type": "image", "image": "x.png", "max_pixels": "big"}, "max_pixels must be a number"),
        ({"type": "image_url", "image_url": {"url": "x.png", "detail": "high"}}, "detail='high' is not supported"),
        ({"type": "image", "base64": "not base64!"}, "base64 is not valid"),
        ({"url": "x.png"}, "has no 'type'"),
    ],
)
def test_a_key_not_understood_is_one_line(processor, part, fragment):
    with pytest.raises(MediaError) as caught:
        processor(ask(part))
    message = str(caught.value)
    assert fragment in message and "\n" not in message
    assert message.startswith("message 1 (user), part 1")


@pytest.mark.parametrize(
    ("part", "fragment"),
    [
        ({"type": "video", "video": "FRAMES", "nframes": 4}, "nframes picks frames from a video file"),
        ({"type": "video", "video": "FRAMES", "fps": 1, "sample_fps": 2}, "fps=1 and sample_fps=2 disagree"),
        ({"type": "video", "video": "CLIP", "sample_fps": 2}, "sample_fps is the rate of a frame list"),
    ],
)
def test_sampling_keys_that_do_not_apply_are_refused(processor, media, part, fragment):
    part = {**part, "video": frame_paths(media) if part["video"] == "FRAMES" else str(media / "clip.mp4")}
    with pytest.raises(MediaError, match=fragment):
        processor(ask(part))


# ---- documented differences -----------------------------------------------------------------------
def test_a_side_of_14_px_or_less_rounds_to_zero_first_as_in_transformers():
    # 14x2800: qwen-vl-utils keeps the short side at one factor first -> 28x2800 (78,400 px, in
    # range); transformers 5.23 rounds it to 0, so the area is "too small" and both sides grow.
    assert smart_resize(14, 2800) == transformers_smart_resize(14, 2800, 28, 56 * 56, 28 * 28 * 16384) == (28, 812)


def test_item_pixel_bounds_apply_to_an_explicit_size(processor, media):
    explicit = {"type": "image", "image": str(media / "picture.png"), "resized_height": 280, "resized_width": 420}
    assert processor(ask(explicit)).image_grid_thw.tolist() == [[1, 20, 30]]
    bounded = processor(ask({**explicit, "max_pixels": 100 * 28 * 28}))
    assert bounded.image_grid_thw.tolist() == [[1, 16, 24]]  # qwen-vl-utils would keep 280x420
    video = {"type": "video", "video": frame_paths(media), "resized_height": 280, "resized_width": 420}
    assert processor(ask({**video, "max_pixels": 100 * 28 * 28})).video_grid_thw.tolist() == [[3, 16, 24]]
