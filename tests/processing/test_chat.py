"""Chat template, tokenizer, and the processor against transformers' Qwen2_5_VLProcessor."""

import json
import math
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from qwen_vl.errors import MediaError
from qwen_vl.processing import SPECIAL_TOKENS, QwenVLProcessor, build_tokenizer, render_chat

CORPUS = [
    "Describe this image.",
    "What is in the picture? A cat sitting on a red chair.",
    "Compare these two images and the video, please.",
    "The quick brown fox jumps over the lazy dog 0123456789.",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def ours(tokenizer):
    return QwenVLProcessor(tokenizer)


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """transformers' processor with its PIL image processor; its video processor needs
    torchvision, so a stand-in carrying merge_size takes its slot (videos are not compared)."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor":
            return type(argument)
        return super().check_argument_for_proper_class(argument_name, argument)


@pytest.fixture(scope="module")
def theirs(tokenizer):
    return ImageOnlyQwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(max_pixels=28 * 28 * 16384),
        tokenizer=tokenizer,
        video_processor=SimpleNamespace(merge_size=2, temporal_patch_size=2),
        chat_template=tokenizer.chat_template,
    )


def image(height, width, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_template_exact_text():
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": "cat.jpg"}, {"type": "text", "text": "Describe this image."}],
        }
    ]
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_chat(messages) == expected
    assert render_chat(messages, add_generation_prompt=False) == expected[: -len("<|im_start|>assistant\n")]


def test_template_multi_turn_system_and_videos(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
        {
            "role": "user",
            "content": [
                {"type": "video", "video": "a.mp4"},
                {"type": "image", "image": "b.png"},
                {"type": "image", "image": "c.png"},
                {"type": "text", "text": "Compare."},
            ],
        },
    ]
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>"
        "<|vision_start|><|image_pad|><|vision_end|>Compare.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_chat(messages) == expected
    # The tokenizer carries the same template, rendered by transformers' own machinery.
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected


def test_tokenizer_special_tokens_and_round_trip(tokenizer, tmp_path):
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(SPECIAL_TOKENS)))  # published order, consecutive
    assert len(tokenizer) <= 400 and ids[-1] == len(tokenizer) - 1  # specials follow the learned vocab
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    text = "<|im_start|>user\nA cat, 42 dogs!<|im_end|>"
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(tokenizer(text)["input_ids"]) == text
    assert loaded.chat_template == tokenizer.chat_template


def conversation(*parts, system=None):
    messages = [{"role": "system", "content": system}] if system else []
    content = [
        {"type": "image", "image": p} if isinstance(p, Image.Image) else {"type": "text", "text": p} for p in parts
    ]
    return messages + [{"role": "user", "content": content}]


CASES = {
    "single": lambda: conversation(image(480, 640, 0), "Describe this image."),
    "multi": lambda: conversation(image(100, 90, 1), "and", image(30, 500, 2), "Compare these two images."),
    "multi_turn": lambda: (
        conversation(image(64, 64, 3), "What is in the picture?", system="Be brief.")
        + [
            {"role": "assistant", "content": "A cat."},
            {
                "role": "user",
                "content": [{"type": "image", "image": image(300, 200, 4)}, {"type": "text", "text": "And now?"}],
            },
        ]
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_transformers_processor(ours, theirs, case):
    messages = CASES[case]()
    images = [
        p["image"] for m in messages if not isinstance(m["content"], str) for p in m["content"] if p["type"] == "image"
    ]
    text = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = theirs(text=[text], images=images, return_tensors="pt")
    got = ours(messages)
    assert got["input_ids"].tolist() == expected["input_ids"].tolist()
    assert torch.equal(got["attention_mask"], expected["attention_mask"])
    assert torch.equal(got["image_grid_thw"], expected["image_grid_thw"])
    assert (got["pixel_values"] - expected["pixel_values"]).abs().max().item() <= 1e-5
    assert got.input_ids.dtype == torch.long and got.pixel_values.dtype == torch.float32
    assert got.pixel_values_videos is None and got.second_per_grid_ts is None


def test_batch_padding_sides(ours, theirs):
    convs = [CASES["single"](), conversation("Describe this image.")]
    singles = [ours(c)["input_ids"][0].tolist() for c in convs]
    pad = ours.tokenizer.pad_token_id
    left = ours(convs)
    right = ours(convs, padding_side="right")
    length = max(map(len, singles))
    for row, seq in enumerate(singles):
        gap = length - len(seq)
        assert left.input_ids[row].tolist() == [pad] * gap + seq
        assert left.attention_mask[row].tolist() == [0] * gap + [1] * len(seq)
        assert right.input_ids[row].tolist() == seq + [pad] * gap
        assert right.attention_mask[row].tolist() == [1] * len(seq) + [0] * gap
    text = [theirs.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
    expected = theirs(
        text=text, images=[convs[0][0]["content"][0]["image"]], padding=True, padding_side="left", return_tensors="pt"
    )
    assert left.input_ids.tolist() == expected["input_ids"].tolist()


def test_per_item_pixel_budget(ours):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image(480, 640, 5), "max_pixels": 64 * 28 * 28},
                {"type": "image", "image": image(480, 640, 5), "resized_height": 56, "resized_width": 84},
            ],
        }
    ]
    out = ours(messages)
    # 480x640 over 50176 px: beta = sqrt(307200 / 50176); floor(480/beta/28)*28 = 168, floor(640/beta/28)*28 = 252.
    assert out.image_grid_thw.tolist() == [[1, 12, 18], [1, 4, 6]]
    image_pad = ours.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (out.input_ids == image_pad).sum().item() == (12 * 18 + 4 * 6) // 4


def write_video(path, num_frames, fps):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), i * 3 % 256, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_placeholders_and_relative_paths(ours, tmp_path):
    write_video(tmp_path / "clip.mp4", 50, 10)  # 5 s -> 10 frames at 2 fps
    Image.new("RGB", (56, 56), (1, 2, 3)).save(tmp_path / "still.png")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": "clip.mp4", "fps": 2},
                {"type": "image", "image": "still.png"},
                {"type": "video", "video": [Image.new("RGB", (56, 56))] * 4},
                {"type": "text", "text": "Describe."},
            ],
        }
    ]
    out = ours(messages, base_dir=tmp_path)
    video_pad = ours.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    grids = out.video_grid_thw.tolist()
    assert grids[0][0] == 5 and grids[1][0] == 2
    assert (out.input_ids == video_pad).sum().item() == sum(t * h * w // 4 for t, h, w in grids)
    assert out.pixel_values_videos.shape == (sum(t * h * w for t, h, w in grids), 1176)
    assert out.second_per_grid_ts.tolist() == pytest.approx([2 / (10 / 50 * 10), 1.0])
    # Pads appear in prompt order: the first run of video pads has the first video's length.
    ids = out.input_ids[0].tolist()
    first = ids.index(video_pad)
    run = next(i for i in range(first, len(ids)) if ids[i] != video_pad) - first
    assert run == math.prod(grids[0]) // 4


def test_save_and_load(ours, tmp_path):
    custom = QwenVLProcessor(ours.tokenizer, min_pixels=128 * 28 * 28, max_pixels=256 * 28 * 28)
    custom.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert config["size"] == {"shortest_edge": 128 * 28 * 28, "longest_edge": 256 * 28 * 28}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    loaded = QwenVLProcessor.from_pretrained(tmp_path)
    assert loaded.image_settings == custom.image_settings
    messages = CASES["single"]()
    assert torch.equal(loaded(messages).input_ids, custom(messages).input_ids)
    # transformers reads what we wrote.
    assert Qwen2VLImageProcessorPil.from_pretrained(tmp_path).size["longest_edge"] == 256 * 28 * 28


def test_reads_transformers_preprocessor_config(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    Qwen2VLImageProcessorPil(min_pixels=100 * 784, max_pixels=300 * 784).save_pretrained(tmp_path)
    loaded = QwenVLProcessor.from_pretrained(tmp_path)
    assert (loaded.image_settings.min_pixels, loaded.image_settings.max_pixels) == (100 * 784, 300 * 784)


def test_decode_and_device_move(ours):
    out = ours(conversation("Describe this image."))
    assert ours.decode(out.input_ids[0]).startswith("<|im_start|>system")
    assert ours.batch_decode(out.input_ids) == [ours.decode(out.input_ids[0])]
    moved = out.to("cpu")
    assert set(moved.keys()) == {"input_ids", "attention_mask"} and "pixel_values" not in moved


def test_bad_media_in_conversation(ours, tmp_path):
    with pytest.raises(MediaError, match="missing.png"):
        ours([{"role": "user", "content": [{"type": "image", "image": "missing.png"}]}], base_dir=tmp_path)
    with pytest.raises(MediaError, match="not both"):
        ours([{"role": "user", "content": [{"type": "video", "video": "x.mp4", "fps": 2, "nframes": 4}]}])
