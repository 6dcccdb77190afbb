"""The labels that teach reading a rendered clip's event time (bundled_model/clip_events.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bundled_model.clip_events import ChangeProbe, changed_tokens, event_tokens, scene_from_record, shown_frames
from bundled_model.pretrain_vision import shape_labels, token_boxes
from bundled_model.synthetic import TRAIN_FPS
from bundled_model.synthetic_render import write_video
from bundled_model.synthetic_world import Background, Shape, VideoEvent, VideoScene, sample_video_scene
from qwen_vl.modeling.text import LayerIO
from qwen_vl.processing import QwenVLProcessor

SQUARE = [36, 36, 76, 76]  # on a 112 x 112 frame of 4 x 4 merged tokens of 28 px


def scene(event: VideoEvent) -> VideoScene:
    return VideoScene(112, 112, 4, 4, Background("dark grey", "plain", 0), [Shape("square", "red", SQUARE)], event)


def square_tokens(bbox=SQUARE) -> torch.Tensor:
    owners = shape_labels(
        {"shapes": [{"kind": "square", "colour": "red", "bbox": bbox}]}, token_boxes(112, 112, 4, 4, 28)
    )
    return torch.tensor(owners[3]) > 0


SHOWN = [0, 4, 8, 12]  # one frame a second: the first frame of each temporal token


@pytest.mark.parametrize(
    "event", [VideoEvent("appear", 2), VideoEvent("disappear", 2), VideoEvent("colour", 2, 0, "blue")]
)
def test_a_shape_that_comes_goes_or_changes_colour_changes_its_tokens_in_the_events_temporal_token_only(event):
    changed = changed_tokens(scene(event), SHOWN, 4, 4, 28)
    assert changed.shape == (4, 16)
    assert square_tokens().sum() == 4  # the square covers the middle 2 x 2 tokens
    assert torch.equal(changed[2], square_tokens())
    assert not changed[[0, 1, 3]].any()
    target = event_tokens(scene(event), SHOWN, changed)
    assert torch.equal(target[2], square_tokens()) and not target[[0, 1, 3]].any()


def test_a_moving_shape_changes_the_tokens_it_leaves_and_enters_while_it_moves():
    moving = scene(VideoEvent("move", 1, 0, direction="right", distance=56, move_seconds=2))
    changed = changed_tokens(moving, SHOWN, 4, 4, 28)
    assert not changed[[0, 1]].any() and changed[2].any() and changed[3].any()
    at_two = moving.shape_state(0, 8)[2]  # where the square is at second 2
    assert torch.equal(changed[2], square_tokens() ^ square_tokens(at_two))
    assert torch.equal(event_tokens(moving, SHOWN, changed)[2], changed[2])  # the move shows from second 2 on


def test_the_tokens_a_shape_only_partly_covers_change_too():
    corner = VideoScene(112, 112, 4, 4, Background("dark grey", "plain", 0), [Shape("square", "red", [20, 20, 50, 50])],
                        VideoEvent("appear", 2))  # fmt: skip
    changed = changed_tokens(corner, SHOWN, 4, 4, 28)
    # ink shares of the top-left 2 x 2 tokens: 8 x 8, 8 x 22, 22 x 8 and 22 x 22 px of 28 x 28; only (1, 1) holds
    # the square's centre pixel, all four hold more than INK_SHARE of its ink
    assert square_tokens([20, 20, 50, 50]).nonzero()[:, 0].tolist() == [5]
    assert changed[2].nonzero()[:, 0].tolist() == [0, 1, 4, 5] and not changed[[0, 1, 3]].any()
    recoloured = changed_tokens(scene(VideoEvent("colour", 2, 0, "blue")), SHOWN, 4, 4, 28)
    assert torch.equal(recoloured[2], square_tokens()) and not recoloured[[0, 1, 3]].any()


def test_an_event_the_sampled_frames_do_not_show_has_no_target():
    late = scene(VideoEvent("appear", 4))  # after the clip's last frame
    assert event_tokens(late, SHOWN, changed_tokens(late, SHOWN, 4, 4, 28)) is None


def test_the_scene_of_a_generated_line_is_rebuilt_and_its_shown_frames_match_the_processors_grid(world_llm, tmp_path):  # noqa: F811
    processor = QwenVLProcessor.from_pretrained(world_llm)
    original = sample_video_scene(np.random.default_rng(3), TRAIN_FPS)
    record = json.loads(json.dumps({"task": "video", "scene": original.to_dict()}))
    rebuilt = scene_from_record(record)
    assert rebuilt == original
    assert scene_from_record({"task": "caption", "scene": {}}) is None
    write_video(rebuilt, tmp_path / "clip.mp4")
    chat = [{"role": "user", "content": [{"type": "video", "video": "clip.mp4"}, {"type": "text", "text": "?"}]}]
    real = processor(chat, base_dir=tmp_path)
    t, h, w = real.video_grid_thw[0].tolist()
    assert len(shown_frames(rebuilt, processor)) == t
    merge = processor.image_settings.merge_size
    changed = changed_tokens(
        rebuilt, shown_frames(rebuilt, processor), h // merge, w // merge, processor.image_settings.factor
    )
    assert changed.numel() == int((real.input_ids == processor.video_token_id).sum())


def test_the_change_probe_weights_the_rare_changed_tokens_up_and_reports_how_many_it_finds():
    observers = []
    probe = ChangeProbe(SimpleNamespace(observe=observers.append), 4)  # a decoder layer's observe hook
    with torch.no_grad():
        probe.probe.weight.copy_(torch.tensor([[1.0, 0, 0, 0]]))
        probe.probe.bias.zero_()
    hidden = torch.tensor([[[5.0, 0, 0, 0], [-5.0, 0, 0, 0], [-5.0, 0, 0, 0], [-5.0, 0, 0, 0], [9.0, 0, 0, 0]]])
    (observer,) = observers
    observer(LayerIO(hidden, None, None, None, output=hidden))  # what the layer's forward tells it
    video = torch.tensor([[True, True, True, True, False]])  # the last token is text
    loss, found = probe.loss(video, torch.tensor([True, True, False, False]))
    assert found == 0.5  # one of the two changed tokens is found
    logits = torch.tensor([5.0, -5.0, -5.0, -5.0])
    terms = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([1.0, 1, 0, 0]), reduction="none")
    assert loss.item() == pytest.approx(((terms * torch.tensor([2.0, 2, 1, 1])).sum() / 6).item())  # 1 / share
    loss, _ = probe.loss(video, torch.tensor([False, True, False, False]))
    terms = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1, 0, 0]), reduction="none")
    assert loss.item() == pytest.approx(((terms * torch.tensor([1.0, 4, 1, 1])).sum() / 7).item())
