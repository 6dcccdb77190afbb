"""`qwen-vl serve` through the official `openai` client against a live server on a free localhost port."""

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image

from qwen_vl.loading import load_model
from tests.serve.support import REPO, ask_cli, data_uri, serve_subprocess

openai = pytest.importorskip("openai")

KEY = "test-key"
NEW = 16
VIDEO = REPO / "qwen_vl" / "assets" / "examples" / "green_star.mp4"


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    Image.effect_noise((90, 60), 50).convert("RGB").save(folder / "noise.png")
    shutil.copy(VIDEO, folder / "clip.mp4")
    return folder


@pytest.fixture(scope="module")
def base_url(tiny_dir, media_dir):
    args = ["--model", str(tiny_dir), "--dtype", "float32", "--api-key", KEY, "--max-batch", "4"]
    with serve_subprocess(*args, "--allowed-media-dir", str(media_dir)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=120)


def model_id(tiny_dir):
    return tiny_dir.name


def ask_image(client, tiny_dir, url, question="Describe this image.", **kw):
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]
    return client.chat.completions.create(
        model=model_id(tiny_dir), messages=[{"role": "user", "content": content}], **kw
    )


def universal_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def test_add_vision_id_labels_the_pictures_as_qwen_vl_ask_does(client, tiny_dir, media_dir):
    image = media_dir / "noise.png"
    plain = ask_image(client, tiny_dir, data_uri(image, "image/png"), max_tokens=NEW, temperature=0)
    labelled = ask_image(
        client,
        tiny_dir,
        data_uri(image, "image/png"),
        max_tokens=NEW,
        temperature=0,
        extra_body={"add_vision_id": True},
    )
    expected = ask_cli(str(image), "-q", "Describe this image.", "--model", str(tiny_dir), "--dtype", "float32",
                       "--max-new-tokens", str(NEW), "--add-vision-id")  # fmt: skip
    # ask_cli reads in text mode, which turns the \r or \r\n a tiny random model may emit into \n
    assert universal_newlines(labelled.choices[0].message.content) == universal_newlines(expected)
    assert labelled.usage.prompt_tokens > plain.usage.prompt_tokens  # "Picture 1: " is in the prompt


def test_models_lists_the_served_model(client, tiny_dir):
    assert [m.id for m in client.models.list().data] == [model_id(tiny_dir)]


def test_image_by_data_uri_equals_qwen_vl_ask(client, tiny_dir, media_dir):
    image = media_dir / "noise.png"
    reply = ask_image(client, tiny_dir, data_uri(image, "image/png"), max_tokens=NEW, temperature=0)
    expected = ask_cli(str(image), "-q", "Describe this image.", "--model", str(tiny_dir), "--dtype", "float32",
                       "--max-new-tokens", str(NEW))  # fmt: skip
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason in ("stop", "length")

    _, processor = load_model(tiny_dir, dtype=torch.float32)
    content = [{"type": "image", "image": str(image)}, {"type": "text", "text": "Describe this image."}]
    prompt_tokens = processor([[{"role": "user", "content": content}]])["input_ids"].shape[1]
    assert reply.usage.prompt_tokens == prompt_tokens  # vision tokens included
    assert 1 <= reply.usage.completion_tokens <= NEW
    assert reply.usage.total_tokens == prompt_tokens + reply.usage.completion_tokens


def test_video_by_file_url_with_fps_equals_qwen_vl_ask(client, tiny_dir, media_dir):
    video = media_dir / "clip.mp4"
    content = [{"type": "video_url", "video_url": {"url": video.as_uri()}}, {"type": "text", "text": "When?"}]
    reply = client.chat.completions.create(
        model=model_id(tiny_dir),
        messages=[{"role": "user", "content": content}],
        max_tokens=NEW,
        temperature=0,
        extra_body={"fps": 1},
    )
    expected = ask_cli(str(video), "-q", "When?", "--fps", "1", "--model", str(tiny_dir), "--dtype", "float32",
                       "--max-new-tokens", str(NEW))  # fmt: skip
    assert reply.choices[0].message.content == expected
    by_data = client.chat.completions.create(
        model=model_id(tiny_dir),
        messages=[
            {
                "role": "user",
                "content": [{**content[0], "video_url": {"url": data_uri(video, "video/mp4")}}, content[1]],
            }
        ],  # fmt: skip
        max_tokens=NEW,
        temperature=0,
        extra_body={"fps": 1},
    )
    assert by_data.choices[0].message.content == expected


def test_streaming_gives_the_same_answer_and_usage(client, tiny_dir, media_dir):
    url = data_uri(media_dir / "noise.png", "image/png")
    whole = ask_image(client, tiny_dir, url, max_tokens=NEW, temperature=0)
    chunks = list(
        ask_image(client, tiny_dir, url, max_tokens=NEW, temperature=0, stream=True,
                  stream_options={"include_usage": True})
    )  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_concurrent_greedy_requests_answer_as_one_by_one(client, tiny_dir, media_dir):
    questions = ["Describe this image.", "Hi", "How many shapes are there in this picture?", "What?", "Tell", "Why?"]
    url = data_uri(media_dir / "noise.png", "image/png")

    def one(question):
        return ask_image(client, tiny_dir, url, question, max_tokens=NEW, temperature=0).choices[0].message.content

    alone = [one(q) for q in questions]
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(one, questions))
    assert together == alone


def test_stop_string_and_seeded_sampling(client, tiny_dir, media_dir):
    url = data_uri(media_dir / "noise.png", "image/png")
    full = ask_image(client, tiny_dir, url, max_tokens=NEW, temperature=0).choices[0].message.content
    if len(full) > 3:
        cut = ask_image(client, tiny_dir, url, max_tokens=NEW, temperature=0, stop=[full[2:4]])
        assert cut.choices[0].message.content == full[: full.index(full[2:4])]
        assert cut.choices[0].finish_reason == "stop"
    sampled = [
        ask_image(client, tiny_dir, url, max_tokens=NEW, temperature=1.0, top_p=0.9, seed=5).choices[0].message.content
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]


def test_bad_image_is_400_and_the_server_goes_on(client, tiny_dir, media_dir):
    with pytest.raises(openai.BadRequestError) as caught:
        ask_image(client, tiny_dir, "data:image/png;base64,bm90IGFuIGltYWdl", max_tokens=4)
    error = caught.value.body
    assert error["type"] == "invalid_request_error" and "image" in error["message"]
    reply = ask_image(client, tiny_dir, data_uri(media_dir / "noise.png", "image/png"), max_tokens=4, temperature=0)
    assert reply.choices[0].message.content is not None


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"n": 2}, "n=2"),
        ({"temperature": 5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"extra_body": {"max_pixels": -3}}, "max_pixels"),
    ],
)
def test_bad_parameters_are_400(client, tiny_dir, media_dir, change, fragment):
    with pytest.raises(openai.BadRequestError) as caught:
        ask_image(client, tiny_dir, data_uri(media_dir / "noise.png", "image/png"), max_tokens=4, **change)
    assert fragment in caught.value.body["message"]


def test_media_urls_outside_the_allowed_places_are_refused(client, tiny_dir, tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (40, 40)).save(outside)
    for url, fragment in [
        (outside.as_uri(), "--allowed-media-dir"),
        ("http://127.0.0.1:9/x.png", "--allow-remote-media"),
        (str(outside), "data: URI"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            ask_image(client, tiny_dir, url, max_tokens=4)
        assert fragment in caught.value.body["message"]


def test_prompt_past_the_context_is_400(client, tiny_dir):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=model_id(tiny_dir), messages=[{"role": "user", "content": "word " * 5000}], max_tokens=4
        )
    assert caught.value.body["code"] == "context_length_exceeded"


def test_max_tokens_past_the_context_is_capped(client, tiny_dir):
    reply = client.chat.completions.create(
        model=model_id(tiny_dir), messages=[{"role": "user", "content": "Hi"}], max_tokens=10**9, temperature=0
    )
    assert reply.usage.completion_tokens >= 1


def test_wrong_key_is_401_and_unknown_model_404(base_url, client):
    bad = openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])


def test_full_queue_is_503_and_the_server_recovers(tiny_dir, media_dir):
    """A scheduler that is not running yet holds the first request, so the second finds no room.
    The same server's small bounds refuse a large body (413) and too many pixels (400)."""
    uvicorn = pytest.importorskip("uvicorn")
    from qwen_vl.batching import BatchEngine
    from qwen_vl.serve.app import create_app
    from qwen_vl.serve.options import ServeOptions
    from qwen_vl.serve.server import model_defaults
    from tests.serve.support import free_port, wait_until_up

    model, processor = load_model(tiny_dir, dtype=torch.float32)
    engine = BatchEngine(model, processor, max_batch=1, max_waiting=0)
    options = ServeOptions(model_name="tiny", max_body_bytes=100_000, max_request_pixels=6000)
    app = create_app(engine, options, model_defaults(tiny_dir, processor))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until_up(port)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": "Hi"}]
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(client.chat.completions.create, model="tiny", messages=messages, max_tokens=4)
            for _ in range(600):  # until the held request reaches the engine's queue
                if engine.load["waiting"] or held.done():
                    break
                threading.Event().wait(0.05)
            assert engine.load["waiting"] == 1
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(model="tiny", messages=messages, max_tokens=4)
            assert caught.value.status_code == 503 and caught.value.body["code"] == "queue_full"
            engine.start()
            assert held.result(timeout=60).choices[0].message.content is not None
        assert client.chat.completions.create(model="tiny", messages=messages, max_tokens=4).usage.completion_tokens

        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 200_000}])
        assert caught.value.status_code == 413
        image = {"type": "image_url", "image_url": {"url": data_uri(media_dir / "noise.png", "image/png")}}
        one = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": [image]}], max_tokens=2
        )  # 84 x 56 = 4704 pixels after resizing
        assert one.usage.prompt_tokens > 0
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [image, image]}])
        assert caught.value.body["code"] == "too_many_pixels"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        engine.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_frees_its_row(base_url, tiny_dir, stream):
    import json
    import socket
    import time
    import urllib.parse
    import urllib.request

    def running():
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/health") as reply:
            return json.loads(reply.read())["running"]

    def wait_for(condition, timeout=30):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    body = json.dumps(
        {"model": model_id(tiny_dir), "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4000,
         "ignore_eos": True, "stream": stream}
    ).encode()  # fmt: skip
    port = urllib.parse.urlparse(base_url).port
    with socket.create_connection(("127.0.0.1", port)) as conn:
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body)
        wait_for(lambda: running() == 1)
    wait_for(lambda: running() == 0, timeout=3)  # 4000 tokens would take longer than that
