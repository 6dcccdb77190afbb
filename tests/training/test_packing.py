"""Sequence packing: the loss of a packed batch equals the token-weighted mean over the same
samples run one by one; attention and M-RoPE ids do not cross sample borders."""

from __future__ import annotations

import pytest
import torch

from qwen_vl.modeling.model import QwenVLForConditionalGeneration
from qwen_vl.processing import QwenVLProcessor
from qwen_vl.training.config import DataSource
from qwen_vl.training.data import ConversationData
from qwen_vl.training.loss import answer_loss, predicting_positions, token_loss_sum
from qwen_vl.training.packing import pack_rows, packed_batch, padded_batch, sample_positions
from tests.training.helpers import mixed_set, model_dir  # noqa: F401


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packing")
    directory = model_dir(tmp / "tiny")
    model = QwenVLForConditionalGeneration.from_pretrained(directory, dtype=torch.float32)
    processor = QwenVLProcessor.from_pretrained(directory)
    data = ConversationData([DataSource(str(mixed_set(tmp / "data")))], processor, max_seq_len=256)
    samples = [data.encode((0, i)) for i in range(len(data.files[0]))]
    assert all(s is not None for s in samples)
    return model, processor.tokenizer.pad_token_id, samples


def loss_sum(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return token_loss_sum(model(**batch.model_inputs()).logits.double(), batch.labels)


def test_pack_rows_balances_the_fewest_rows():
    # 20 tokens need 3 rows of 9; longest first into the emptiest row: 6 | 5+2 | 4+3
    assert pack_rows([5, 4, 3, 2, 6], capacity=9) == [[0, 3], [1, 2], [4]]
    assert pack_rows([9, 1], capacity=9) == [[0], [1]]
    assert pack_rows([3, 3, 3], capacity=9) == [[0, 1, 2]]
    assert pack_rows([7, 7, 7, 1, 1, 1], capacity=9) == [[0, 3], [1, 4], [2, 5]]  # each 7 takes a 1
    # 30 tokens fit 3 rows by volume, but 8+2 does not fit 9: a fourth row takes the 2s
    assert pack_rows([8, 8, 8, 2, 2, 2], capacity=9) == [[0], [1], [2], [3, 4, 5]]


def test_packed_loss_equals_one_by_one(setup):
    model, pad_id, samples = setup
    packed = packed_batch(samples, 256, model.position_ids, pad_id)
    assert packed.input_ids.shape[0] < len(samples)  # several samples share a row
    assert packed.pixel_values is not None and packed.image_grid_thw.shape[0] == 4
    one_by_one = sum(loss_sum(model, padded_batch([s], model.position_ids, pad_id)) for s in samples)
    tokens = sum(s.label_tokens for s in samples)
    assert packed.label_tokens == tokens
    packed_mean = float(loss_sum(model, packed)) / tokens
    assert packed_mean == pytest.approx(float(one_by_one) / tokens, abs=1e-5)
    # the padded multi-row batch agrees too
    padded = padded_batch(samples, model.position_ids, pad_id)
    assert float(loss_sum(model, padded)) / tokens == pytest.approx(packed_mean, abs=1e-5)


def test_token_loss_matches_model_loss_per_sample(setup):
    model, pad_id, samples = setup
    for sample in samples[:3] + samples[-2:]:
        batch = padded_batch([sample], model.position_ids, pad_id)
        with torch.no_grad():
            out = model(**batch.model_inputs(), labels=batch.labels)
        assert float(loss_sum(model, batch)) / sample.label_tokens == pytest.approx(float(out.loss), abs=1e-5)


def test_answer_loss_runs_the_head_only_where_a_label_follows(setup):
    model, pad_id, samples = setup
    for batch in (
        packed_batch(samples, 256, model.position_ids, pad_id),
        padded_batch(samples, model.position_ids, pad_id),
    ):
        keep, targets = predicting_positions(batch.labels)
        assert len(targets) == batch.label_tokens and keep[:, -1].logical_not().all()
        assert torch.equal(targets, batch.labels[:, 1:][keep[:, :-1]])  # position t predicts label t + 1
        with torch.no_grad():
            flat = model(**batch.model_inputs(), logits_to_keep=keep).logits
            full = model(**batch.model_inputs()).logits
            assert flat.shape == (batch.label_tokens, full.shape[-1])
            assert torch.allclose(flat, full[keep], atol=1e-5)
            assert float(answer_loss(model, batch.model_inputs(), batch.labels)) == pytest.approx(
                float(loss_sum(model, batch)), rel=1e-5
            )
            mean = answer_loss(model, batch.model_inputs(), batch.labels, "mean")
            assert float(mean) == pytest.approx(float(loss_sum(model, batch)) / batch.label_tokens, rel=1e-5)
    with pytest.raises(ValueError, match="flat logits"):
        model(**batch.model_inputs(), labels=batch.labels, logits_to_keep=keep)


def test_positions_restart_and_segments_separate_samples(setup):
    model, pad_id, samples = setup
    first, second = samples[0], samples[-1]  # an image sample, then a text one
    packed = packed_batch([first, second], 512, model.position_ids, pad_id)
    n = len(first)
    assert packed.input_ids.shape == (1, n + len(second))
    assert packed.segment_ids[0, :n].eq(1).all() and packed.segment_ids[0, n:].eq(2).all()
    assert torch.equal(packed.position_ids[:, 0, :n], sample_positions(first, model.position_ids))
    assert torch.equal(packed.position_ids[:, 0, n:], torch.arange(len(second)).expand(3, -1))
    # an image sample's ids are not a plain count: the vision block shares temporal ids
    assert not torch.equal(packed.position_ids[0, 0, :n], torch.arange(n))


def test_second_sample_logits_do_not_see_the_first(setup):
    model, pad_id, samples = setup
    text = samples[-1]
    alone = padded_batch([text], model.position_ids, pad_id)
    for before in (samples[0], samples[4]):
        packed = packed_batch([before, text], 512, model.position_ids, pad_id)
        with torch.no_grad():
            got = model(**packed.model_inputs()).logits[0, len(before) :]
            want = model(**alone.model_inputs()).logits[0]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
