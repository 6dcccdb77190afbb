"""The Gradio page: chat with uploads and examples, settings, stop/regenerate/undo/clear, and
the `/answer` API endpoint (hidden components, so the API takes plain files and numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from qwen_vl.errors import QwenVLError
from qwen_vl.loading import BUNDLED_MODEL_NOTICE
from qwen_vl.webapp.chat import (
    FPS_RANGE,
    MAX_NEW_TOKENS,
    MAX_TEMPERATURE,
    MIN_MAX_PIXELS,
    GenerationSettings,
    Turn,
    answer_once,
    display,
    stream_answer,
)
from qwen_vl.webapp.engine import Engine
from qwen_vl.webapp.options import AppOptions

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
MODEL_CONCURRENCY_ID = "model"  # the chat and the API share one concurrency limit
CSS = "#qwen-vl-chat {flex-grow: 1}"


def load_examples(folder: Path = EXAMPLES_DIR) -> list[dict]:
    """[{text, files}] for the examples whose media exist (examples.json lists them)."""
    listing = folder / "examples.json"
    if not listing.is_file():
        return []
    items = json.loads(listing.read_text())
    return [
        {"text": item["question"], "files": [str(folder / item["file"])]}
        for item in items
        if (folder / item["file"]).is_file()
    ]


def build_ui(engine: Engine, options: AppOptions, examples_dir: Path = EXAMPLES_DIR) -> gr.Blocks:
    max_bytes = options.max_upload_bytes
    default_pixels = engine.default_max_pixels

    def settings_from(max_new_tokens, temperature, top_p, fps, max_pixels) -> GenerationSettings:
        # the default budget is passed as None so the prompt is exactly what the CLI builds
        pixels = None if not max_pixels or int(max_pixels) == default_pixels else int(max_pixels)
        return GenerationSettings(max_new_tokens, temperature, top_p, fps, pixels)

    # ---- chat handlers ------------------------------------------------------------------------
    def start_turn(message: dict, turns: list[Turn]):
        question = (message or {}).get("text", "").strip()
        files = list((message or {}).get("files") or [])
        if not question:
            gr.Warning("Type a question to go with the upload." if files else "Type a question.")
            return turns, display(turns), gr.update()
        turns = [*turns, Turn(question=question, files=files)]
        return turns, display(turns), gr.update(value=None, interactive=False)

    def respond(turns: list[Turn], *controls):
        if not turns or turns[-1].done:  # nothing pending (e.g. an empty question was refused)
            yield turns, display(turns)
            return
        for _ in stream_answer(engine, turns, settings_from(*controls), max_bytes):
            yield turns, display(turns)

    def unlock():
        return gr.update(interactive=True)

    def stopped(turns: list[Turn]):
        if turns and not turns[-1].done:
            turns[-1].done = True
            if not turns[-1].answer:
                turns[-1].error = "stopped before any text was generated"
        return turns, display(turns), gr.update(interactive=True)

    def reset_last(turns: list[Turn]):
        if not turns:
            gr.Warning("Nothing to regenerate yet.")
            return turns, display(turns), gr.update()
        turns[-1].answer, turns[-1].error, turns[-1].done = "", None, False
        return turns, display(turns), gr.update(interactive=False)

    def undo_last(turns: list[Turn]):
        if not turns:
            return turns, display(turns), gr.update(interactive=True)
        last, turns = turns[-1], turns[:-1]
        return turns, display(turns), gr.update(value={"text": last.question, "files": last.files}, interactive=True)

    def clear_all():
        return [], [], gr.update(value=None, interactive=True)

    # ---- API handler --------------------------------------------------------------------------
    def api_answer(files, question, max_new_tokens, temperature, top_p, fps, max_pixels):
        paths = [f if isinstance(f, str) else f.name for f in (files or [])]
        try:
            settings = settings_from(max_new_tokens, temperature, top_p, fps, max_pixels)
            return answer_once(engine, paths, question, settings, max_bytes)
        except QwenVLError as err:
            raise gr.Error(str(err), print_exception=False) from None

    # ---- layout -------------------------------------------------------------------------------
    with gr.Blocks(title="qwen-vl chat", analytics_enabled=False, fill_height=True, delete_cache=(1800, 7200)) as demo:
        gr.Markdown(f"## qwen-vl chat\n**Model:** {engine.describe()}", elem_id="model-info")
        if engine.is_demo:
            gr.Markdown(f"**Demo model:** {BUNDLED_MODEL_NOTICE} `python app.py --model DIR`.", elem_id="demo-notice")
        turns = gr.State([])
        chatbot = gr.Chatbot(
            elem_id="qwen-vl-chat",
            label="Conversation",
            height=460,
            placeholder="Upload images or a video, then ask a question about them.",
            buttons=["copy"],
        )
        textbox = gr.MultimodalTextbox(
            elem_id="question",
            file_count="multiple",
            file_types=["image", "video"],
            sources=["upload"],
            placeholder="Ask about your images or video… (attach files with the clip button)",
            show_label=False,
        )
        with gr.Row():
            stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
            regenerate_button = gr.Button("Regenerate", elem_id="regenerate")
            undo_button = gr.Button("Undo", elem_id="undo")
            clear_button = gr.Button("Clear", elem_id="clear")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=128, step=1, label="Max new tokens")
                temperature = gr.Slider(0.0, MAX_TEMPERATURE, value=0.0, step=0.05, label="Temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p")
            with gr.Row():
                fps = gr.Slider(*FPS_RANGE, value=2.0, step=0.5, label="Video frames per second")
                max_pixels = gr.Slider(
                    MIN_MAX_PIXELS,
                    default_pixels,
                    value=default_pixels,
                    step=28 * 28,
                    label="Max pixels per image/frame",
                )
        controls = [max_new_tokens, temperature, top_p, fps, max_pixels]
        examples = load_examples(examples_dir)
        if examples:
            gr.Examples(examples=examples, inputs=[textbox], label="Examples (click one, then send)")

        with gr.Column(visible=False):  # the /answer API's inputs and output
            api_files = gr.File(file_count="multiple", label="files")
            api_question = gr.Textbox(label="question")
            api_max_new = gr.Number(value=128, precision=0, label="max_new_tokens")
            api_temperature = gr.Number(value=0.0, label="temperature")
            api_top_p = gr.Number(value=1.0, label="top_p")
            api_fps = gr.Number(value=2.0, label="fps")
            api_pixels = gr.Number(value=0, precision=0, label="max_pixels (0 = model default)")
            api_output = gr.Textbox(label="answer")
            api_button = gr.Button("answer")

        model_events = dict(concurrency_id=MODEL_CONCURRENCY_ID, concurrency_limit=options.concurrency)
        private = dict(api_visibility="private")
        submitted = textbox.submit(start_turn, [textbox, turns], [turns, chatbot, textbox], queue=False, **private)
        answering = submitted.then(respond, [turns, *controls], [turns, chatbot], **model_events, **private)
        answering.then(unlock, None, textbox, queue=False, **private)
        regenerating = regenerate_button.click(reset_last, [turns], [turns, chatbot, textbox], queue=False, **private)
        reanswering = regenerating.then(respond, [turns, *controls], [turns, chatbot], **model_events, **private)
        reanswering.then(unlock, None, textbox, queue=False, **private)
        running = [answering, reanswering]
        stop_button.click(stopped, [turns], [turns, chatbot, textbox], cancels=running, queue=False, **private)
        undo_button.click(undo_last, [turns], [turns, chatbot, textbox], cancels=running, queue=False, **private)
        clear_button.click(clear_all, None, [turns, chatbot, textbox], cancels=running, queue=False, **private)
        chatbot.clear(clear_all, None, [turns, chatbot, textbox], cancels=running, queue=False, **private)
        api_button.click(
            api_answer,
            [api_files, api_question, api_max_new, api_temperature, api_top_p, api_fps, api_pixels],
            api_output,
            api_name="answer",
            **model_events,
        )
    demo.queue(default_concurrency_limit=options.concurrency, max_size=options.queue_size)
    return demo
