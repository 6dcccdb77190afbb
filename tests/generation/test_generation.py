"""Generation: greedy parity with transformers' generate(), cache vs recompute, sampling, streaming."""

import pytest
import torch
from PIL import Image

from qwen_vl.generation import (
    SamplingConfig,
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
    generate_ids,
    generate_text,
    stream_text,
)

NEW = 12


@pytest.fixture(scope="module")
def hf(tiny_dir):
    import transformers

    return transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_dir, dtype=torch.float32).eval()


def image_turn(size, text="Describe this image."):
    img = Image.effect_noise(size, 60).convert("RGB")
    return [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": text}]}]


def video_turn():
    frames = [Image.effect_noise((56, 84), 40 + 10 * i).convert("RGB") for i in range(6)]
    return [
        {"role": "user", "content": [{"type": "video", "video": frames, "fps": 3}, {"type": "text", "text": "When?"}]}
    ]


def hf_greedy(hf, model, batch):
    ids = batch["input_ids"]
    mm = (ids == model.config.image_token_id).int() + 2 * (ids == model.config.video_token_id).int()
    out = hf.generate(
        **dict(batch.items()),
        mm_token_type_ids=mm,
        do_sample=False,
        max_new_tokens=NEW,
        eos_token_id=None,
        pad_token_id=0,
        min_new_tokens=NEW,
    )
    return out[:, ids.shape[1] :].tolist()


@pytest.mark.parametrize(
    "conversations",
    [
        [image_turn((60, 90))],
        [video_turn()],
        [image_turn((56, 56), "Hi"), image_turn((120, 70), "Describe this image in many more words, please.")],
    ],
    ids=["image", "video", "batch-of-two"],
)
def test_greedy_equals_transformers_generate(model, processor, hf, conversations):
    batch = processor(conversations, padding_side="left")
    ours = generate_ids(model, batch, SamplingConfig(max_new_tokens=NEW), stop_ids=set())
    assert ours == hf_greedy(hf, model, batch)
    assert all(len(row) == NEW for row in ours)


def test_cache_equals_recomputing_the_full_sequence(model, processor):
    batch = processor([image_turn((60, 90))])
    cached = generate_ids(model, batch, SamplingConfig(max_new_tokens=NEW), stop_ids=set())[0]
    ids = batch["input_ids"]
    vision = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    recomputed = []
    with torch.no_grad():
        for _ in range(NEW):
            token = model(ids, **vision).logits[0, -1].argmax().item()
            recomputed.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
    assert cached == recomputed


def test_rows_stop_on_their_own(model, processor):
    """A row that emits a stop token ends there; the other row runs on and is unchanged by it."""
    convs = [image_turn((56, 56), "Hi"), image_turn((120, 70), "Describe")]
    batch = processor(convs, padding_side="left")
    free = generate_ids(model, batch, SamplingConfig(max_new_tokens=NEW), stop_ids=set())
    stop = free[0][3]  # pretend the 4th token of row 0 is a stop token
    stopped = generate_ids(model, batch, SamplingConfig(max_new_tokens=NEW), stop_ids={stop})
    assert stopped[0] == free[0][: free[0].index(stop)]
    expect_1 = free[1][: free[1].index(stop)] if stop in free[1] else free[1]
    assert stopped[1] == expect_1


def test_sampling_is_reproducible_with_a_seed(model, processor):
    batch = processor([image_turn((60, 90))])
    cfg = dict(max_new_tokens=NEW, temperature=1.5, top_p=0.95, top_k=50)
    a = generate_ids(model, batch, SamplingConfig(**cfg, seed=7), stop_ids=set())
    b = generate_ids(model, batch, SamplingConfig(**cfg, seed=7), stop_ids=set())
    others = [generate_ids(model, batch, SamplingConfig(**cfg, seed=s), stop_ids=set()) for s in (8, 9, 10)]
    assert a == b
    assert any(o != a for o in others)


def test_top_k_and_top_p_keep_what_the_definitions_keep():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda x: torch.isfinite(x)[0].tolist()
    assert kept(filter_top_k(logits, 2)) == [True, True, False, False, False]
    # cumulative 0.5, 0.7, 0.85, 0.95, 1.0: p=0.7 needs the first two, p=0.71 the first three
    assert kept(filter_top_p(logits, 0.7)) == [True, True, False, False, False]
    assert kept(filter_top_p(logits, 0.71)) == [True, True, True, False, False]
    assert kept(filter_top_p(logits, 0.01)) == [True, False, False, False, False]
    shuffled = logits[:, [3, 0, 4, 2, 1]]
    assert kept(filter_top_p(shuffled, 0.7)) == [False, True, False, False, True]


def test_repetition_penalty_definition():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0]]


def programmed(model, processor, conversation, answer: str):
    """A copy of `model` whose greedy answer to `conversation` is exactly `answer`.

    With attention and MLP outputs zeroed the last hidden state is the current token's embedding;
    the lm_head then maps each token of the chain to its successor."""
    import copy

    tok = processor.tokenizer
    prompt = processor([conversation])["input_ids"][0].tolist()
    chain = [prompt[-1]] + tok.encode(answer, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    assert len(set(chain)) == len(chain), "answer must not repeat tokens"
    m = copy.deepcopy(model)
    with torch.no_grad():
        for layer in m.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        m.model.norm.weight.fill_(1.0)
        emb = m.model.embed_tokens.weight
        head = torch.zeros_like(m.lm_head.weight)
        for current, following in zip(chain, chain[1:], strict=False):
            head[following] = 10 * emb[current] / emb[current].norm()
        m.lm_head.weight = torch.nn.Parameter(head)
    return m


def test_stream_pieces_join_to_the_answer_and_never_split_characters(model, processor):
    conv = [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]
    answer = "你好，世界 🙂 ok"
    m = programmed(model, processor, conv, answer)
    pieces = list(stream_text(m, processor, conv, SamplingConfig(max_new_tokens=40)))
    assert "".join(pieces) == answer
    assert len(pieces) > 3 and not any("\ufffd" in p for p in pieces)
    assert generate_text(m, processor, [conv], SamplingConfig(max_new_tokens=40)) == [answer]


def test_a_stream_may_resume_on_another_thread(model, processor):
    # Gradio advances a streaming handler with one next() per worker-pool thread; grad mode is
    # thread-local, so no step may rely on a mode entered on an earlier step's thread.
    from concurrent.futures import ThreadPoolExecutor

    conv = [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]
    answer = "red circle on the left"
    m = programmed(model, processor, conv, answer)
    pieces = stream_text(m, processor, conv, SamplingConfig(max_new_tokens=40))
    joined = ""
    while True:
        with ThreadPoolExecutor(1) as fresh_thread:
            piece = fresh_thread.submit(next, pieces, None).result()
        if piece is None:
            break
        joined += piece
    assert joined == answer


def test_stop_strings_end_the_answer_and_are_not_shown(model, processor):
    conv = [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]
    m = programmed(model, processor, conv, "red circle. blue square")
    cfg = SamplingConfig(max_new_tokens=40, stop=[". blue"])
    assert "".join(stream_text(m, processor, conv, cfg)) == "red circle"
    assert generate_text(m, processor, [conv], cfg) == ["red circle"]


def test_prompt_longer_than_the_context_is_a_clear_error(model, processor):
    from qwen_vl.errors import PromptTooLongError

    batch = processor([image_turn((60, 90))])
    small = model.config.text.max_position_embeddings
    model.config.text.max_position_embeddings = 8
    try:
        with pytest.raises(PromptTooLongError, match="context is 8"):
            generate_ids(model, batch, SamplingConfig(max_new_tokens=4))
    finally:
        model.config.text.max_position_embeddings = small
