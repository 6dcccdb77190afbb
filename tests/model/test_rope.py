"""M-RoPE position ids against the published rule, computed by hand."""

import torch

from qwen_vl.modeling.rope import mrope_position_ids
from tests.tiny import IMG, VE, VID, VS, hf_twin, mm_types, pixels, tiny_model

RULE = dict(image_token_id=IMG, video_token_id=VID, merge_size=2)


def test_long_video_resumes_after_the_largest_id(tmp_path):
    """6 temporal patches at 1.3 s each, 2 ids per second: temporal ids outrun the 2x2 grid.

    Text after the video resumes at max id + 1 (the published rule), not at start + max(h, w)/2."""
    grid = (6, 4, 4)  # merged 2x2 per frame
    ids = torch.tensor([[7, 8, VS] + [VID] * 24 + [VE, 9]])
    pos, deltas = mrope_position_ids(ids, None, None, torch.tensor([grid]), [1.3], tokens_per_second=2, **RULE)
    start = 3
    temporal = [0, 2, 5, 7, 10, 13]  # floor(k * 1.3 * 2)
    expect_t = [0, 1, 2] + [start + t for t in temporal for _ in range(4)] + [17, 18]
    expect_h = [0, 1, 2] + [start + h for _ in temporal for h in (0, 0, 1, 1)] + [17, 18]
    expect_w = [0, 1, 2] + [start + w for _ in temporal for w in (0, 1, 0, 1)] + [17, 18]
    assert pos[:, 0].tolist() == [expect_t, expect_h, expect_w]
    assert deltas.tolist() == [[19 - ids.shape[1]]]

    # transformers gives the same logits when handed these ids
    model = tiny_model("qwen2_5_vl")
    hf = hf_twin(model, tmp_path)
    kw = dict(
        pixel_values_videos=pixels([grid], 2),
        video_grid_thw=torch.tensor([grid]),
        second_per_grid_ts=torch.tensor([1.3]),
    )
    with torch.no_grad():
        ours = model(ids, **kw).logits
        theirs = hf(input_ids=ids, position_ids=pos, mm_token_type_ids=mm_types(ids), **kw).logits
    assert (ours - theirs).abs().max() <= 1e-4


def test_qwen2_vl_video_steps_one_per_temporal_patch():
    grid = (3, 2, 4)
    ids = torch.tensor([[VS] + [VID] * 6 + [VE]])
    pos, deltas = mrope_position_ids(ids, None, None, torch.tensor([grid]), [5.0], tokens_per_second=None, **RULE)
    assert pos[0, 0].tolist() == [0, 1, 1, 2, 2, 3, 3, 4]
    assert pos[1, 0].tolist() == [0, 1, 1, 1, 1, 1, 1, 4]
    assert pos[2, 0].tolist() == [0, 1, 2, 1, 2, 1, 2, 4]
    assert deltas.item() == 5 - 8


def test_image_ids_and_padding():
    """An image of 2x3 merged units after 2 text tokens, left padding of 2."""
    ids = torch.tensor([[0, 0, 5, VS] + [IMG] * 6 + [VE, 6]])
    mask = torch.tensor([[0, 0] + [1] * 10])
    pos, deltas = mrope_position_ids(ids, mask, torch.tensor([[1, 4, 6]]), None, None, tokens_per_second=2, **RULE)
    assert pos[0, 0].tolist() == [0, 0, 0, 1] + [2] * 6 + [5, 6]
    assert pos[1, 0].tolist() == [0, 0, 0, 1, 2, 2, 2, 3, 3, 3, 5, 6]
    assert pos[2, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 2, 3, 4, 5, 6]
    assert deltas.item() == 7 - 10


def test_text_only_counts_real_tokens():
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    pos, deltas = mrope_position_ids(ids, mask, None, None, None, tokens_per_second=2, **RULE)
    assert pos[0].tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert torch.equal(pos[0], pos[1]) and torch.equal(pos[0], pos[2])
    assert deltas.tolist() == [[0], [0]]
