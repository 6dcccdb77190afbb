"""Fixtures of the CLI tests: a tiny model directory and a folder of good and bad media."""

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    (root / "imgs").mkdir()
    for i, colour in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (90 + 10 * i, 70), colour).save(root / "imgs" / f"{i}.png")
    (root / "text.jpg").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.mp4").write_text("not a video")
    import av

    with av.open(str(root / "clip.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(24):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 48), (10 * i, 100, 200)))
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return root
