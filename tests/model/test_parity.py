"""Our model against transformers' on identical weights: logits, position ids, rope_deltas, loss."""

import pytest
import torch

from qwen_vl.modeling import layers
from tests.tiny import IMG, VID, block, hf_twin, mm_types, pixels, tiny_model

TOL = 1e-4


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen2_vl"])
def pair(request, tmp_path_factory):
    model = tiny_model(request.param)
    return model, hf_twin(model, tmp_path_factory.mktemp(request.param))


def run_both(model, hf, ids, mask=None, images=(), videos=(), seconds=None, position_ids=None):
    kw = {}
    if images:
        kw.update(pixel_values=pixels(images, 1), image_grid_thw=torch.tensor(images))
    if videos:
        kw.update(pixel_values_videos=pixels(videos, 2), video_grid_thw=torch.tensor(videos))
        if seconds is not None:
            kw["second_per_grid_ts"] = torch.tensor(seconds)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask, position_ids=position_ids, **kw)
        theirs = hf(
            input_ids=ids, attention_mask=mask, mm_token_type_ids=mm_types(ids), position_ids=position_ids, **kw
        )
    return ours, theirs


def test_text_only(pair):
    model, hf = pair
    ids = torch.randint(0, 280, (2, 17), generator=torch.Generator().manual_seed(0))
    ours, theirs = run_both(model, hf, ids)
    assert ours.logits.abs().mean() > 0.1  # a real signal, not all zeros
    assert (ours.logits - theirs.logits).abs().max() <= TOL


@pytest.mark.parametrize("rows_per_chunk", [layers.ROWS_PER_CHUNK, 16])
def test_one_image_of_odd_size(pair, rows_per_chunk, monkeypatch):
    """11x17 merge units: the right and bottom windows are partial. With 16-row chunks the
    row-wise work (vision rotary and MLPs, decoder MLPs) runs in uneven slices."""
    monkeypatch.setattr(layers, "ROWS_PER_CHUNK", rows_per_chunk)
    model, hf = pair
    grid = (1, 22, 34)
    ids = torch.tensor([[3, 4] + block(IMG, grid) + [5, 6, 7]])
    ours, theirs = run_both(model, hf, ids, images=[grid])
    assert (ours.logits - theirs.logits).abs().max() <= TOL
    assert torch.equal(ours.rope_deltas, hf.model.rope_deltas)


def test_two_images_of_different_sizes(pair):
    model, hf = pair
    grids = [(1, 16, 8), (1, 10, 14)]
    ids = torch.tensor([[3] + block(IMG, grids[0]) + [4, 5] + block(IMG, grids[1]) + [6]])
    ours, theirs = run_both(model, hf, ids, images=grids)
    assert (ours.logits - theirs.logits).abs().max() <= TOL


def test_video_with_fractional_seconds_per_grid(pair):
    """4 temporal patches, 0.35 s per patch: temporal ids 0, 0, 1, 2 (floor of 0.7 t)."""
    model, hf = pair
    grid = (4, 6, 8)
    ids = torch.tensor([[3, 4] + block(VID, grid) + [5, 6]])
    ours, theirs = run_both(model, hf, ids, videos=[grid], seconds=[0.35])
    assert (ours.logits - theirs.logits).abs().max() <= TOL
    assert torch.equal(ours.rope_deltas, hf.model.rope_deltas)


def test_left_padded_batch_of_two_lengths(pair):
    model, hf = pair
    grids = [(1, 4, 6), (1, 8, 4)]
    a = [3, 4] + block(IMG, grids[0]) + [5, 6, 7, 8, 9]
    b = [10] + block(IMG, grids[1]) + [11]
    width = max(len(a), len(b))
    ids = torch.tensor([[0] * (width - len(a)) + a, [0] * (width - len(b)) + b])
    mask = torch.tensor([[0] * (width - len(a)) + [1] * len(a), [0] * (width - len(b)) + [1] * len(b)])
    ours, theirs = run_both(model, hf, ids, mask=mask, images=grids)
    real = mask.bool()
    assert (ours.logits[real] - theirs.logits[real]).abs().max() <= TOL
    # each row alone gives the same logits as in the batch
    single = torch.tensor([b])
    with torch.no_grad():
        alone = model(single, pixel_values=pixels(grids, 1)[24:], image_grid_thw=torch.tensor(grids[1:]))
    assert (alone.logits[0] - ours.logits[1, -len(b) :]).abs().max() <= TOL


def test_position_ids_match_transformers_where_rules_agree(pair):
    model, hf = pair
    grids, vgrid = [(1, 6, 4)], [(2, 4, 4)]
    row = [3] + block(IMG, grids[0]) + [4] + block(VID, vgrid[0]) + [5, 6]
    ids = torch.tensor([[0, 0] + row, [7] * 2 + row])
    mask = torch.tensor([[0, 0] + [1] * len(row), [1] * (len(row) + 2)])
    kw = dict(
        image_grid_thw=torch.tensor(grids * 2),
        video_grid_thw=torch.tensor(vgrid * 2),
        second_per_grid_ts=torch.tensor([0.5, 0.5]),
    )
    ours, deltas = model.position_ids(ids, mask, **kw)
    theirs, their_deltas = hf.model.get_rope_index(ids, mm_types(ids), attention_mask=mask, **kw)
    assert torch.equal(ours[:, mask.bool()], theirs[:, mask.bool()])
    assert torch.equal(deltas, their_deltas)


def test_loss_and_logits_to_keep(pair):
    model, hf = pair
    grid = (1, 4, 4)
    ids = torch.tensor([[3, 4] + block(IMG, grid) + [5, 6, 7, 8]])
    labels = ids.clone()
    labels[:, :8] = -100
    kw = dict(pixel_values=pixels([grid], 1), image_grid_thw=torch.tensor([grid]))
    with torch.no_grad():
        ours = model(ids, labels=labels, **kw)
        theirs = hf(input_ids=ids, labels=labels, mm_token_type_ids=mm_types(ids), **kw)
        last = model(ids, logits_to_keep=1, **kw)
    assert abs(ours.loss.item() - theirs.loss.item()) <= TOL
    assert last.logits.shape[1] == 1
    assert (last.logits[:, 0] - ours.logits[:, -1]).abs().max() <= TOL


def test_kv_cache_decoding_equals_full_recompute():
    model = tiny_model("qwen2_5_vl")
    grid = (2, 4, 4)
    prompt = [3, 4] + block(VID, grid) + [5]
    follow = [9, 10, 11]
    kw = dict(pixel_values_videos=pixels([grid], 2), video_grid_thw=torch.tensor([grid]), second_per_grid_ts=[1.5])
    with torch.no_grad():
        full = model(torch.tensor([prompt + follow]), **kw).logits
        cache = model.new_cache(1, 64)
        step = model(torch.tensor([prompt]), cache=cache, **kw).logits
        pieces = [step]
        for token in follow:
            pieces.append(model(torch.tensor([[token]]), cache=cache).logits)
    assert cache.length == len(prompt) + len(follow)
    assert (torch.cat(pieces, 1) - full).abs().max() <= TOL
