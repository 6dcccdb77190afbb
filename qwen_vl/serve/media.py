"""Which media URLs a request may name, and what each becomes before the processor reads it.

data: URIs are read as they are (the body-size bound already holds them). file:// URLs are read
only under the directories the operator allowed. http(s) URLs are refused unless remote media is
allowed, and then fetched here with a size cap and a timeout. Anything else (bare paths, other
schemes) is refused: a client must never make the server read a file it did not mean to expose.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from qwen_vl.errors import MediaError

from .options import ServeOptions


def resolve_media_url(url: object, kind: str, options: ServeOptions) -> str | bytes:
    """A media URL from a request -> a source the processor reads (data URI, checked path, or bytes)."""
    if not isinstance(url, str) or not url:
        raise MediaError(f"{kind}: the url must be a non-empty string")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return url
    if scheme == "file":
        return _allowed_file(url, kind, options)
    if scheme in ("http", "https"):
        if not options.allow_remote_media:
            raise MediaError(
                f"{kind} {_short(url)}: remote URLs are not fetched by this server (started without "
                "--allow-remote-media); send the data as a data: URI"
            )
        return _fetch(url, kind, options)
    raise MediaError(f"{kind} {_short(url)}: use a data: URI, a file:// URL or an http(s) URL")


def _allowed_file(url: str, kind: str, options: ServeOptions) -> str:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise MediaError(f"{kind} {_short(url)}: file:// URLs name local files only")
    path = Path(unquote(parsed.path)).resolve()  # symlinks and '..' resolved before the check
    for directory in options.allowed_media_dirs:
        if path.is_relative_to(Path(directory).resolve()):
            return str(path)
    raise MediaError(
        f"{kind} {_short(url)}: file:// URLs are read only under a directory given with --allowed-media-dir"
    )


def _fetch(url: str, kind: str, options: ServeOptions) -> bytes:
    cap = options.remote_max_bytes
    request = urllib.request.Request(url, headers={"User-Agent": "qwen-vl-serve"})
    try:
        with urllib.request.urlopen(request, timeout=options.remote_timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > cap:
                raise MediaError(f"{kind} {_short(url)}: {int(declared):,} bytes, over the {cap:,}-byte limit")
            data = response.read(cap + 1)
    except MediaError:
        raise
    except urllib.error.HTTPError as err:
        raise MediaError(f"{kind} {_short(url)}: fetch failed with HTTP {err.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise MediaError(f"{kind} {_short(url)}: cannot fetch ({reason})") from None
    if len(data) > cap:
        raise MediaError(f"{kind} {_short(url)}: over the {cap:,}-byte limit")
    return data


def _short(url: str) -> str:
    return repr(url if len(url) <= 80 else url[:60] + "...")
