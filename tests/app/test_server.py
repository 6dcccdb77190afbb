"""The app as a server: gradio_client answers equal the CLI's, bad uploads, file serving,
16 concurrent clients, login."""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from tests.app.support import EXAMPLES, REPO, app_server, cli_answer
from tests.tiny import save_tiny_model_dir

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AuthenticationError  # noqa: E402

MAX_NEW = 12
IMAGE = str(EXAMPLES / "shapes.png")
VIDEO = str(EXAMPLES / "green_star.mp4")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model_dir(tmp_path_factory.mktemp("app_model"))


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    with app_server(model_dir, "--max-upload-mb", "1", log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def ask(client, files, question, max_new_tokens=MAX_NEW, fps=2.0, max_pixels=0):
    return client.predict(
        [handle_file(f) for f in files], question, max_new_tokens, 0.0, 1.0, fps, max_pixels, api_name="/answer"
    )


@pytest.mark.parametrize(
    ("media", "question"), [(IMAGE, "Describe this image."), (VIDEO, "When does the green star appear?")]
)
def test_answer_equals_cli_greedy_answer(client, model_dir, media, question):
    expected = cli_answer(model_dir, media, question, MAX_NEW)
    assert expected  # the tiny model says something, so equality means something
    assert ask(client, [media], question).strip() == expected


def test_settings_change_the_answer(client):
    """max_new_tokens and max_pixels reach the model: fewer tokens = a prefix; fewer pixels = other tokens."""
    full = ask(client, [IMAGE], "Describe this image.")
    short = ask(client, [IMAGE], "Describe this image.", max_new_tokens=3)
    assert full.startswith(short) and len(short) < len(full)
    small = ask(client, [IMAGE], "Describe this image.", max_pixels=56 * 56)
    assert small != full


def test_corrupt_upload_is_one_clear_error_and_the_server_goes_on(client, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but the rest is not an image")
    with pytest.raises(Exception, match=r"broken\.png: not a recognised image format") as info:
        ask(client, [str(bad)], "What is this?")
    assert "/tmp/gradio" not in str(info.value)  # the user sees the file name, not the server path
    not_video = tmp_path / "clip.mp4"
    not_video.write_text("this is text, not a video")
    with pytest.raises(Exception, match=r"clip\.mp4"):
        ask(client, [str(not_video)], "What happens?")
    notes = tmp_path / "notes.txt"
    notes.write_text("plain text")
    with pytest.raises(Exception, match=r"notes\.txt: not an image or a video"):
        ask(client, [str(notes)], "What is this?")
    assert ask(client, [IMAGE], "Describe this image.")  # still serving


def test_upload_over_the_limit_is_refused(client, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (2 * 1024 * 1024))  # the server runs with --max-upload-mb 1
    with pytest.raises(Exception, match=r"(?i)size|large|exceed"):
        ask(client, [str(big)], "What is this?")
    assert ask(client, [IMAGE], "Describe this image.")


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_only_uploads_and_examples_are_served(server):
    url = server[0]
    assert status_of(f"{url}/gradio_api/file={EXAMPLES / 'shapes.png'}") == 200
    for private in ("/etc/passwd", str(REPO / "README.md"), str(REPO / "app.py"), "README.md"):
        assert status_of(f"{url}/gradio_api/file={private}") in (403, 404), private


def test_sixteen_concurrent_clients_each_get_their_answer(server, client):
    url, proc = server
    expected = {
        "Describe this image.": ask(client, [IMAGE], "Describe this image."),
        "How many shapes are there?": ask(client, [IMAGE], "How many shapes are there?"),
    }
    rss_before = psutil.Process(proc.pid).memory_info().rss

    def one(i: int):
        question = list(expected)[i % 2]
        return question, ask(Client(url, verbose=False), [IMAGE], question)

    for _ in range(2):  # two waves: memory must not keep growing per request
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(16)))
        assert len(results) == 16
        for question, answer in results:
            assert answer == expected[question]
    assert proc.poll() is None
    grown = psutil.Process(proc.pid).memory_info().rss - rss_before
    assert grown < 300 * 2**20, f"server RSS grew by {grown / 2**20:.0f} MB"


def test_login_is_required_with_auth(model_dir, tmp_path):
    with app_server(model_dir, "--auth", "ada:s3cret", log_dir=tmp_path) as (url, _):
        assert status_of(f"{url}/gradio_api/info") in (401, 403)
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(url, verbose=False)
        authed = Client(url, auth=("ada", "s3cret"), verbose=False)
        assert authed.predict([handle_file(IMAGE)], "Describe this image.", 4, 0.0, 1.0, 2.0, 0, api_name="/answer")
