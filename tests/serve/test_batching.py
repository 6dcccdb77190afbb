"""The continuous-batching engine: rows of different lengths, joining mid-decode, answer exactly as
one-by-one generation does."""

import threading

import pytest
from PIL import Image

from qwen_vl.batching import BatchEngine, QueueFullError
from qwen_vl.errors import PromptTooLongError
from qwen_vl.generation import SamplingConfig, generate_ids, stop_token_ids, stream_text


def text_turn(text):
    return [{"role": "user", "content": text}]


def image_turn(size, text="Describe this image.", seed=60):
    image = Image.effect_noise(size, seed).convert("RGB")
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def video_turn():
    frames = [Image.effect_noise((56, 84), 40 + 10 * i).convert("RGB") for i in range(6)]
    return [
        {"role": "user", "content": [{"type": "video", "video": frames, "fps": 3}, {"type": "text", "text": "When?"}]}
    ]


CONVERSATIONS = [
    image_turn((60, 90)),
    text_turn("Hi"),
    video_turn(),
    image_turn((120, 70), "Describe this image in many more words, please.", seed=30),
    text_turn("How many shapes are there? There are three shapes and a circle on the left."),
]


def one_by_one(model, processor, conversation, cfg):
    batch = processor([conversation], add_generation_prompt=True, padding_side="left")
    stop_ids = stop_token_ids(model, processor.tokenizer)
    return generate_ids(model, batch, cfg, stop_ids)[0]


def run_engine(engine, processor, plan):
    """plan: (step at which to submit, conversation, sampling) -> generated ids per request, in order.
    Steps are taken by hand, so rows join at known points of the others' decoding."""
    requests = [None] * len(plan)
    step = 0
    while step < 10_000:
        for i, (at, conversation, cfg) in enumerate(plan):
            if at == step:
                inputs = processor([conversation], add_generation_prompt=True, padding_side="left")
                requests[i] = engine.submit(inputs, cfg)
        if all(r is not None and r.finish_reason is not None for r in requests):
            break
        engine.step()
        step += 1
    stop_ids = engine.stop_ids
    return [[t for t in r.tokens() if t not in stop_ids] for r in requests]


def test_greedy_rows_joining_mid_decode_equal_one_by_one(model, processor):
    lengths = [9, 14, 6, 11, 12]
    plan = [
        (at, conv, SamplingConfig(max_new_tokens=n))
        for at, conv, n in zip([0, 0, 3, 5, 5], CONVERSATIONS, lengths, strict=True)
    ]
    engine = BatchEngine(model, processor, max_batch=8)
    got = run_engine(engine, processor, plan)
    for (_, conv, cfg), answer in zip(plan, got, strict=True):
        assert answer == one_by_one(model, processor, conv, cfg)
    assert engine.load == {"running": 0, "waiting": 0}


def test_sampled_rows_keep_their_own_seed_and_settings(model, processor):
    cfgs = [
        SamplingConfig(max_new_tokens=10, temperature=0.9, top_p=0.8, seed=1),
        SamplingConfig(max_new_tokens=7, temperature=0.0, repetition_penalty=1.3),
        SamplingConfig(max_new_tokens=12, temperature=1.2, top_k=20, seed=7),
    ]
    plan = [(at, conv, cfg) for at, conv, cfg in zip([0, 2, 4], CONVERSATIONS[2:], cfgs, strict=True)]
    got = run_engine(BatchEngine(model, processor, max_batch=4), processor, plan)
    for (_, conv, cfg), answer in zip(plan, got, strict=True):
        assert answer == one_by_one(model, processor, conv, cfg)


def test_batch_limit_queues_the_rest_and_full_queue_refuses(model, processor):
    engine = BatchEngine(model, processor, max_batch=2, max_waiting=1)
    inputs = processor([text_turn("Hi")], add_generation_prompt=True)
    cfg = SamplingConfig(max_new_tokens=5)
    requests = [engine.submit(inputs, cfg) for _ in range(3)]
    with pytest.raises(QueueFullError):
        engine.submit(inputs, cfg)
    engine.step()
    assert engine.load == {"running": 2, "waiting": 1}
    while any(r.finish_reason is None for r in requests):
        engine.step()
    answers = [[t for t in r.tokens()] for r in requests]
    assert answers[0] == answers[1] == answers[2]


def test_cancelled_row_leaves_and_others_go_on(model, processor):
    engine = BatchEngine(model, processor, max_batch=4)
    cfg = SamplingConfig(max_new_tokens=10)
    a = engine.submit(processor([CONVERSATIONS[0]]), cfg)
    b = engine.submit(processor([CONVERSATIONS[1]]), cfg)
    engine.step()
    a.cancel()
    while b.finish_reason is None:
        engine.step()
    assert a.finish_reason == "cancelled"
    stop_ids = engine.stop_ids
    assert [t for t in b.tokens() if t not in stop_ids] == one_by_one(model, processor, CONVERSATIONS[1], cfg)


def test_prompt_past_the_context_is_refused(model, processor):
    engine = BatchEngine(model, processor)
    inputs = processor([text_turn("word " * 3000)])
    with pytest.raises(PromptTooLongError):
        engine.submit(inputs, SamplingConfig())


def test_threaded_stream_text_equals_generation_stream_text(model, processor):
    engine = BatchEngine(model, processor, max_batch=4).start()
    try:
        cfg = SamplingConfig(max_new_tokens=12, stop=("e",))
        results = {}

        def ask(i):
            results[i] = list(engine.stream_text(CONVERSATIONS[i], cfg))

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(CONVERSATIONS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for i, conv in enumerate(CONVERSATIONS):
            assert "".join(results[i]) == "".join(stream_text(model, processor, conv, cfg))
    finally:
        engine.close()


def test_ignore_eos_runs_to_max_new_tokens(model, processor):
    engine = BatchEngine(model, processor)
    inputs = processor([text_turn("Hi")])
    natural = engine.submit(inputs, SamplingConfig(max_new_tokens=40))
    fixed = engine.submit(inputs, SamplingConfig(max_new_tokens=40), ignore_eos=True)
    while fixed.finish_reason is None:
        engine.step()
    assert natural.finish_reason == "stop" and natural.completion_tokens < 40
    assert fixed.finish_reason == "length" and fixed.completion_tokens == 40
    assert list(fixed.tokens())[: natural.completion_tokens] == list(natural.tokens())
