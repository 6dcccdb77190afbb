"""Which media URLs the server reads: data URIs, file:// under allowed folders, http(s) when allowed."""

import contextlib
import http.server
import threading

import pytest

from qwen_vl.errors import MediaError
from qwen_vl.serve.media import resolve_media_url
from qwen_vl.serve.options import ServeOptions


def options(**kw):
    return ServeOptions(model_name="m", **kw)


def test_data_uri_passes_as_it_is():
    assert resolve_media_url("data:image/png;base64,AAAA", "image", options()) == "data:image/png;base64,AAAA"


def test_file_url_only_under_an_allowed_folder(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "a.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"x")
    (allowed / "link.png").symlink_to(tmp_path / "secret.png")
    opts = options(allowed_media_dirs=(allowed,))
    assert resolve_media_url((allowed / "a.png").as_uri(), "image", opts) == str(allowed / "a.png")
    for outside in [
        (tmp_path / "secret.png").as_uri(),
        f"file://{allowed}/../secret.png",
        (allowed / "link.png").as_uri(),
    ]:
        with pytest.raises(MediaError, match="--allowed-media-dir"):
            resolve_media_url(outside, "image", opts)
    with pytest.raises(MediaError, match="--allowed-media-dir"):
        resolve_media_url((allowed / "a.png").as_uri(), "image", options())


@pytest.mark.parametrize("url", ["/etc/passwd", "ftp://host/x.png", "relative.png", ""])
def test_other_sources_are_refused(url):
    with pytest.raises(MediaError):
        resolve_media_url(url, "image", options())


@contextlib.contextmanager
def http_server(payload: bytes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/x.png"
    finally:
        server.shutdown()


def test_remote_urls_need_the_flag_and_respect_the_size_cap():
    with http_server(b"0123456789" * 10) as url:
        with pytest.raises(MediaError, match="--allow-remote-media"):
            resolve_media_url(url, "image", options())
        assert resolve_media_url(url, "image", options(allow_remote_media=True)) == b"0123456789" * 10
        with pytest.raises(MediaError, match="limit"):
            resolve_media_url(url, "image", options(allow_remote_media=True, remote_max_bytes=50))
