"""The app's logic without a server: flags, conversation building, bad uploads, errors at start."""

from __future__ import annotations

import pytest

from qwen_vl.generation import SamplingConfig, stream_text
from qwen_vl.hardware import default_dtype
from qwen_vl.webapp import chat
from qwen_vl.webapp.chat import GenerationSettings, Turn, conversation, display, stream_answer
from qwen_vl.webapp.engine import Engine
from qwen_vl.webapp.options import parse_args
from qwen_vl.webapp.server import serve
from tests.app.support import EXAMPLES
from tests.tiny import save_tiny_model_dir

IMAGE = str(EXAMPLES / "shapes.png")
VIDEO = str(EXAMPLES / "green_star.mp4")
LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine.load(str(save_tiny_model_dir(tmp_path_factory.mktemp("chat_model"))))


# ---- flags --------------------------------------------------------------------------------------
def test_flags_defaults_and_values():
    options = parse_args([])
    assert (options.model, options.host, options.port, options.share, options.auth) == (
        None,
        "127.0.0.1",
        7860,
        False,
        None,
    )
    assert options.concurrency == 1
    options = parse_args(
        ["--model", "m", "--port", "9000", "--share", "false", "--auth", "ada:pa:ss", "--max-upload-mb", "2"]
    )
    assert (options.model, options.port, options.share, options.auth) == ("m", 9000, False, ("ada", "pa:ss"))
    assert options.max_upload_bytes == 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--auth", "nopassword"], "USER:PASSWORD"),
        (["--auth", ":secret"], "USER:PASSWORD"),
        (["--share", "maybe"], "true or false"),
        (["--concurrency", "0"], "at least 1"),
        (["--port", "70000"], "at most 65535"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(argv, reason, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and reason in err


def test_missing_bundled_model_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("qwen_vl.loading.BUNDLED_MODEL_DIR", tmp_path / "model")
    assert serve(parse_args([])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bundled model is not installed" in err


def test_missing_model_dir_is_one_line_and_exit_2(tmp_path, capsys):
    assert serve(parse_args(["--model", str(tmp_path / "nowhere")])) == 2
    err = capsys.readouterr().err
    assert err == f"error: model directory not found: {tmp_path / 'nowhere'}\n"


# ---- conversation ---------------------------------------------------------------------------------
def test_conversation_keeps_answered_turns_and_drops_failed_ones():
    turns = [
        Turn("What is this?", [IMAGE], answer="a red circle", done=True),
        Turn("And this?", ["/tmp/broken.png"], error="image broken.png: not a recognised image format", done=True),
        Turn("When?", [VIDEO]),
    ]
    settings = GenerationSettings(fps=4.0, max_pixels=100_000)
    assert conversation(turns, settings) == [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": IMAGE, "max_pixels": 100_000},
                {"type": "text", "text": "What is this?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "a red circle"}]},
        {
            "role": "user",
            "content": [
                {"type": "video", "video": VIDEO, "fps": 4.0, "max_pixels": 100_000},
                {"type": "text", "text": "When?"},
            ],
        },
    ]
    # without a pixel budget the items carry none, so the prompt is the CLI's
    assert conversation(turns[:1], GenerationSettings())[0]["content"][0] == {"type": "image", "image": IMAGE}


def test_display_shows_uploads_questions_answers_and_errors():
    turns = [
        Turn("q1", [IMAGE], answer="a1", done=True),
        Turn("q2", [], error="bad thing", done=True),
        Turn("q3"),  # pending: no answer bubble yet
    ]
    assert display(turns) == [
        {"role": "user", "content": {"path": IMAGE}},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": chat.ERROR_PREFIX + "bad thing"},
        {"role": "user", "content": "q3"},
    ]


# ---- answering ------------------------------------------------------------------------------------
def run(engine, turns, settings=None, limit=LIMIT) -> Turn:
    states = [t.answer for t in stream_answer(engine, turns, settings or GenerationSettings(max_new_tokens=6), limit)]
    assert states, "stream_answer yields at least once"
    return turns[-1]


def test_answer_is_the_models_greedy_answer(engine):
    turn = run(engine, [Turn("Describe this image.", [IMAGE])])
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "Describe this image."}],
        }
    ]
    expected = "".join(stream_text(engine.model, engine.processor, messages, SamplingConfig(max_new_tokens=6)))
    assert turn.done and turn.error is None and turn.answer == expected and expected


@pytest.mark.parametrize("folder", ["", "a-folder-name-long-enough-that-every-upload-path-is-past-80-characters"])
def test_bad_uploads_become_turn_errors_and_the_session_goes_on(engine, tmp_path, folder):
    tmp_path = tmp_path / folder  # long paths: processing shortens them, and the error must still name the file
    tmp_path.mkdir(exist_ok=True)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    fake_video = tmp_path / "fake.mp4"
    fake_video.write_text("text, not a video")
    notes = tmp_path / "notes.txt"
    notes.write_text("text")
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (LIMIT + 1))
    turns: list[Turn] = []
    expected_errors = {
        corrupt: "image corrupt.png: not a recognised image format",
        fake_video: "fake.mp4",
        notes: "notes.txt: not an image or a video",
        big: "big.png: 1.0 MB is above the upload limit of 1.0 MB",
    }
    for path, message in expected_errors.items():
        turns.append(Turn("What is this?", [str(path)]))
        turn = run(engine, turns)
        assert turn.done and turn.answer == "" and message in turn.error
        assert str(tmp_path) not in turn.error  # file names, not server paths
    turns.append(Turn("Describe this image.", [IMAGE]))
    assert run(engine, turns).answer == run(engine, [Turn("Describe this image.", [IMAGE])]).answer


@pytest.mark.parametrize(
    "settings, message",
    [
        (GenerationSettings(top_p=0.0), "top_p must be in (0, 1], got 0.0"),
        (GenerationSettings(max_new_tokens=100_000), "max_new_tokens must be at most 1024, got 100000"),
        (GenerationSettings(temperature=5.0), "temperature must be at most 2.0, got 5.0"),
        (GenerationSettings(fps=100.0), "fps must be between 0.5 and 8.0, got 100.0"),
        (GenerationSettings(max_pixels=10**10), "max_pixels must be between 3136 and"),
    ],
)
def test_settings_past_the_pages_controls_become_turn_errors(engine, settings, message):
    """The API takes numbers the sliders cannot send: it is held to the sliders' bounds, before any media is read."""
    turn = run(engine, [Turn("hi", [IMAGE])], settings)
    assert turn.error.startswith(message) and turn.answer == ""


def test_a_lone_surrogate_in_a_question_is_replaced_not_fatal(engine):
    answer = chat.answer_once(engine, [IMAGE], "what\ud800 is this?", GenerationSettings(max_new_tokens=3), LIMIT)
    assert isinstance(answer, str)


def test_an_unexpected_failure_ends_the_turn_and_is_logged(engine, monkeypatch, caplog):
    def broken(*args, **kwargs):
        yield "half an ans"
        raise RuntimeError("a bug in the model code")

    monkeypatch.setattr(engine, "stream", broken)
    turn = run(engine, [Turn("Describe this image.", [IMAGE])])
    assert turn.done and turn.answer == "half an ans"
    assert turn.error == "internal error (RuntimeError); the server's log has the details"
    assert "a bug in the model code" in caplog.text  # the traceback is in the log, not in the chat


def test_answer_once_refuses_an_empty_question(engine):
    with pytest.raises(chat.QwenVLError, match="the question is empty"):
        chat.answer_once(engine, [IMAGE], "  ", GenerationSettings(), LIMIT)


def test_engine_describes_the_model(engine):
    count = sum(p.numel() for p in engine.model.parameters())
    dtype = str(default_dtype("cpu")).removeprefix("torch.")  # bfloat16 where the CPU has bf16 matrix units
    assert engine.describe() == f"chat_model0 · qwen2_5_vl · {count / 1e6:.1f} M parameters · {dtype} on cpu"
