"""The `qwen-vl` command line: caption, ask, ground, chat, quantize, info, train, eval, serve.

Heavy imports (torch, transformers) happen inside the commands, so `--help` is instant. Every
error a user can cause is one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .media_types import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

app = typer.Typer(
    name="qwen-vl",
    help="Qwen2.5-VL vision-language models on your machine: caption, ask, chat, train, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# ---- options shared by the generating commands ------------------------------------------------
Model = Annotated[
    str | None, typer.Option("--model", "-m", help="Model directory or hub name ORG/NAME (default: the bundled model).")
]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ... (default: cuda if available).")]
Dtype = Annotated[
    str | None, typer.Option(help="float32, bfloat16 or float16 (default: bf16 where the device computes it fast).")
]
Quantize = Annotated[
    str | None,
    typer.Option(help="int8 or int4: weight-only quantization as the model loads (CPU; see docs/quantization.md)."),
]
MaxNew = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Most tokens to generate per answer.")]
Temperature = Annotated[float, typer.Option(min=0.0, help="0 = greedy.")]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")]
TopK = Annotated[int, typer.Option("--top-k", min=0, help="Sample among the k most likely tokens (0 = all).")]
RepPenalty = Annotated[float, typer.Option("--repetition-penalty", min=0.01, help="> 1 discourages repeats.")]
Seed = Annotated[int | None, typer.Option(help="Seed for sampling.")]
Stop = Annotated[list[str] | None, typer.Option("--stop", help="Stop string (repeatable).")]


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed, stop=None):
    from .generation import SamplingConfig

    return SamplingConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        seed=seed,
        stop=tuple(stop or ()),
    )


def load(model: str | None, device: str | None, dtype: str | None, quantize: str | None = None):
    from rich.console import Console

    from .loading import BUNDLED_MODEL_NOTICE, is_bundled, load_model

    if is_bundled(model):
        typer.echo(f"note: {BUNDLED_MODEL_NOTICE}", err=True)
    with Console(stderr=True).status("loading model", spinner="dots"):
        return load_model(model, device=device, dtype=dtype, quantize=quantize)


def expand_media(items: list[str], extensions: set[str]) -> list[str]:
    """Files named directly, matched by a glob pattern, or found in a folder (sorted)."""
    out = []
    for item in items:
        if any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                fail(f"{item}: no file matches this pattern")
            out.extend(matches)
        elif Path(item).is_dir():
            found = sorted(str(p) for p in Path(item).iterdir() if p.suffix.lower() in extensions)
            if not found:
                fail(f"{item}: folder holds no {'/'.join(sorted(e[1:] for e in extensions))} files")
            out.extend(found)
        else:
            out.append(item)
    return out


def run_safely(fn):
    """Turn user-caused errors into one line and exit code 2."""
    from .errors import QwenVLError

    try:
        return fn()
    except QwenVLError as err:
        fail(str(err))
    except ValueError as err:  # bad option values found below the CLI layer
        fail(str(err))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


# ---- commands ---------------------------------------------------------------------------------
@app.command()
def caption(
    images: Annotated[list[str], typer.Argument(help="Image files, glob patterns or folders.")],
    json_lines: Annotated[
        bool, typer.Option("--json", help="Print JSON Lines {image, caption} instead of text.")
    ] = False,
    prompt: Annotated[str, typer.Option(help="Instruction sent with each image.")] = "Describe this image.",
    batch_size: Annotated[int, typer.Option(min=1, help="Images captioned together.")] = 4,
    max_pixels: Annotated[int | None, typer.Option(help="Pixel budget per image.")] = None,
    model: Model = None,
    device: Device = None,
    dtype: Dtype = None,
    quantize: Quantize = None,
    max_new_tokens: MaxNew = 64,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    repetition_penalty: RepPenalty = 1.0,
    seed: Seed = None,
):
    """Caption images, one line each: `IMAGE<TAB>caption` (or JSON Lines with --json)."""
    paths = expand_media(images, IMAGE_EXTENSIONS)

    def work():
        from .errors import QwenVLError
        from .generation import generate_text

        cfg = sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
        mdl, proc = load(model, device, dtype, quantize)
        failed = 0
        loaded = []
        for path in paths:  # check every image's header first so one bad file is reported, not fatal
            try:
                proc.open_checked_image(path, **({"max_pixels": max_pixels} if max_pixels else {}))
                loaded.append(path)
            except QwenVLError as err:
                typer.echo(f"error: {err}", err=True)
                failed += 1
        for start in range(0, len(loaded), batch_size):
            chunk = loaded[start : start + batch_size]
            extra = {"max_pixels": max_pixels} if max_pixels else {}
            convs = [
                [
                    {
                        "role": "user",
                        "content": [{"type": "image", "image": path, **extra}, {"type": "text", "text": prompt}],
                    }
                ]
                for path in chunk
            ]
            for path, text in zip(chunk, generate_text(mdl, proc, convs, cfg), strict=True):
                line = (
                    json.dumps({"image": path, "caption": text}, ensure_ascii=False)
                    if json_lines
                    else f"{path}\t{text}"
                )
                typer.echo(line)
        if failed:
            raise typer.Exit(2)

    run_safely(work)


@app.command()
def ask(
    question: Annotated[str, typer.Option("--question", "-q", help="The question to ask about the media.")],
    media: Annotated[
        list[str] | None,
        typer.Argument(help="Images and/or videos (by extension), globs or folders; none for text only."),
    ] = None,
    fps: Annotated[float | None, typer.Option(min=0.01, help="Video frames sampled per second (default 2).")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Pixel budget per image or video frame.")] = None,
    add_vision_id: Annotated[
        bool, typer.Option("--add-vision-id", help="Label the media 'Picture 1:', 'Video 1:', ... in the prompt.")
    ] = False,
    model: Model = None,
    device: Device = None,
    dtype: Dtype = None,
    quantize: Quantize = None,
    max_new_tokens: MaxNew = 128,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    repetition_penalty: RepPenalty = 1.0,
    seed: Seed = None,
    stop: Stop = None,
):
    """Ask a question about one or more images and videos; the answer streams to stdout."""
    paths = expand_media(media or [], IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)

    def work():
        from .generation import stream_text

        content = [media_item(p, fps, max_pixels) for p in paths] + [{"type": "text", "text": question}]
        cfg = sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed, stop)
        mdl, proc = load(model, device, dtype, quantize)
        if add_vision_id:
            proc.add_vision_id = True
        for piece in stream_text(mdl, proc, [{"role": "user", "content": content}], cfg):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")

    run_safely(work)


def media_item(path: str, fps: float | None = None, max_pixels: int | None = None) -> dict:
    if not Path(path).exists():
        from .errors import MediaError

        raise MediaError(f"{path}: no such file")
    extra = {"max_pixels": max_pixels} if max_pixels else {}
    if Path(path).suffix.lower() in VIDEO_EXTENSIONS:
        return {"type": "video", "video": path, **({"fps": fps} if fps else {}), **extra}
    return {"type": "image", "image": path, **extra}


@app.command()
def ground(
    image: Annotated[str, typer.Argument(help="The image to search.")],
    query: Annotated[
        str | None, typer.Argument(help="What to find, e.g. 'red car' (default: every object it can find).")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: image, width, height, boxes, points, answer.")
    ] = False,
    draw_path: Annotated[
        Path | None, typer.Option("--draw", help="Save the image with the boxes and points drawn (e.g. out.png).")
    ] = None,
    points: Annotated[bool, typer.Option("--points", help="Ask for points instead of boxes.")] = False,
    prompt: Annotated[str | None, typer.Option(help="Instruction sent instead of the built one.")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Pixel budget for the image.")] = None,
    model: Model = None,
    device: Device = None,
    dtype: Dtype = None,
    quantize: Quantize = None,
    max_new_tokens: MaxNew = 256,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    repetition_penalty: RepPenalty = 1.0,
    seed: Seed = None,
):
    """Find what QUERY names in IMAGE; boxes and points are printed in the image's own pixels."""

    def work():
        from .errors import MediaError
        from .generation import generate_text
        from .grounding import frame_for, grounding_prompt, grounding_to_original, parse_answer
        from .processing import load_image

        if Path(image).suffix.lower() in VIDEO_EXTENSIONS:
            raise MediaError(f"{image}: is a video; ground finds objects in still images")
        draw_format = image_format_for(draw_path) if draw_path else None
        picture = load_image(image)
        cfg = sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
        mdl, proc = load(model, device, dtype, quantize)
        extra = {"max_pixels": max_pixels} if max_pixels else {}
        instruction = prompt or grounding_prompt(query, points=points)
        content = [{"type": "image", "image": picture, **extra}, {"type": "text", "text": instruction}]
        answer = generate_text(mdl, proc, [[{"role": "user", "content": content}]], cfg)[0]
        frame = frame_for(mdl.config.model_type, picture.width, picture.height, proc.image_settings, **extra)
        found = grounding_to_original(parse_answer(answer), frame)
        if draw_path:
            save_drawing(picture, found, draw_path, draw_format)
        if json_output:
            typer.echo(json.dumps(grounding_record(image, picture, found, answer), ensure_ascii=False))
        else:
            for line in grounding_lines(found, answer):
                typer.echo(line)

    run_safely(work)


def image_format_for(path: Path) -> str:
    """The Pillow format a file name asks for (checked before the model runs)."""
    from PIL import Image

    name = Image.registered_extensions().get(path.suffix.lower())
    if name is None:
        from .errors import MediaError

        raise MediaError(f"{path}: unknown image type {path.suffix or '(no extension)'}; use .png or .jpg")
    return name


def save_drawing(picture, found, path: Path, image_format: str) -> None:
    from .fileio import atomic_path
    from .grounding import draw

    with atomic_path(path) as tmp:
        draw(picture, found.boxes, found.points).save(tmp, format=image_format)


def pixels(values) -> list[int]:
    return [round(v) for v in values]


def grounding_record(image: str, picture, found, answer: str) -> dict:
    """The --json output: coordinates in original image pixels."""
    return {
        "image": image,
        "width": picture.width,
        "height": picture.height,
        "boxes": [{"label": b.label, "bbox_2d": pixels(b.corners)} for b in found.boxes],
        "points": [{"label": p.label, "point_2d": pixels(p.coords)} for p in found.points],
        "answer": answer,
    }


def grounding_lines(found, answer: str) -> list[str]:
    """Human-readable output: one line per box or point, or the answer when none could be read."""
    if not found:
        return ["no boxes or points in the answer:", answer]
    lines = []
    for box in found.boxes:
        x1, y1, x2, y2 = pixels(box.corners)
        lines.append(f"box    ({x1}, {y1}) - ({x2}, {y2})  {box.label}".rstrip())
    for point in found.points:
        x, y = pixels(point.coords)
        lines.append(f"point  ({x}, {y})  {point.label}".rstrip())
    return lines


@app.command()
def chat(
    model: Model = None,
    device: Device = None,
    dtype: Dtype = None,
    quantize: Quantize = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    fps: Annotated[float | None, typer.Option(min=0.01, help="Video frames sampled per second (default 2).")] = None,
    max_new_tokens: MaxNew = 256,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    repetition_penalty: RepPenalty = 1.0,
    seed: Seed = None,
    stop: Stop = None,
):
    """Interactive multi-turn chat. Commands: /image PATH, /video PATH, /reset, /exit."""

    def work():
        from .errors import MediaError
        from .generation import stream_text
        from .processing import load_image, read_video

        cfg = sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed, stop)
        mdl, proc = load(model, device, dtype, quantize)
        history = [{"role": "system", "content": system}] if system else []
        pending: list[dict] = []
        interactive = sys.stdin.isatty()
        typer.echo("qwen-vl chat: /image PATH, /video PATH, /reset, /exit", err=True)
        while True:
            try:
                line = input("you> " if interactive else "")
            except EOFError:
                break
            line = line.strip()
            if not line:
                continue
            command, _, arg = line.partition(" ")
            if command == "/exit":
                break
            if command == "/reset":
                history, pending = history[:1] if system else [], []
                typer.echo("(conversation cleared)", err=True)
                continue
            if command in ("/image", "/video"):
                try:
                    item = media_item(arg.strip(), fps)
                    # read it now so that a bad file is reported here, not in the middle of a turn
                    load_image(item["image"]) if command == "/image" else read_video(
                        item["video"], fps=fps, nframes=None
                    )
                except MediaError as err:
                    typer.echo(f"error: {err}", err=True)
                    continue
                pending.append(item)
                typer.echo(f"(attached {arg.strip()})", err=True)
                continue
            turn = {"role": "user", "content": pending + [{"type": "text", "text": line}]}
            answer = []
            try:
                for piece in stream_text(mdl, proc, history + [turn], cfg):
                    answer.append(piece)
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            except MediaError as err:
                typer.echo(f"error: {err}", err=True)
                pending = []
                continue
            sys.stdout.write("\n")
            sys.stdout.flush()
            history += [turn, {"role": "assistant", "content": [{"type": "text", "text": "".join(answer)}]}]
            pending = []

    run_safely(work)


@app.command()
def quantize(
    src: Annotated[str, typer.Argument(help="Model directory or hub name to quantize.")],
    dst: Annotated[Path, typer.Argument(help="New model directory to write (must not exist or be empty).")],
    bits: Annotated[str, typer.Option(help="int8 (per output channel) or int4 (groups of 128, AWQ layout).")] = "int4",
):
    """Write a copy of a model with int8 or int4 weights; it loads again without re-quantizing."""

    def work():
        from .loading import resolve_model_dir
        from .quantization.checkpoint import quantize_checkpoint
        from .quantization.convert import check_bits

        check_bits(bits, "--bits")
        quantized, plain = quantize_checkpoint(resolve_model_dir(src), dst, bits)
        typer.echo(f"{dst}: {quantized} layers in {bits}, {plain} kept in bfloat16", err=True)

    run_safely(work)


@app.command()
def info(
    model: Annotated[
        str | None, typer.Argument(help="Model directory or hub name (default: the bundled model).")
    ] = None,
):
    """Print a model's architecture, sizes and dtype (reads file headers only, loads no weights)."""

    def work():
        from .config import QwenVLConfig
        from .loading import resolve_model_dir
        from .weights import checkpoint_files

        model_dir = resolve_model_dir(model)
        cfg = QwenVLConfig.from_pretrained(model_dir)
        counts, dtypes, size = parameter_counts(checkpoint_files(model_dir))
        t, v = cfg.text, cfg.vision
        rows = [
            ("directory", str(model_dir)),
            (
                "architecture",
                f"{cfg.model_type} ({'window + full attention' if v.window_size else 'full attention'} ViT)",
            ),
            (
                "parameters",
                f"{sum(counts.values()) / 1e6:.2f} M (vision {counts['vision'] / 1e6:.2f} M, text {counts['text'] / 1e6:.2f} M)",
            ),
            ("weights", f"{', '.join(sorted(dtypes))}, {size / 1e6:.1f} MB on disk"),
            (
                "vision",
                f"{v.depth} blocks, width {v.hidden_size}, {v.num_heads} heads, patch {v.patch_size}, merge {v.spatial_merge_size}",
            ),
            (
                "text",
                f"{t.num_hidden_layers} layers, hidden {t.hidden_size}, {t.num_attention_heads} heads / {t.num_key_value_heads} kv, vocab {t.vocab_size}",
            ),
            ("context", f"{t.max_position_embeddings} tokens, rope theta {t.rope_theta:g}, mrope {t.mrope_section}"),
            ("tied embeddings", str(cfg.tie_word_embeddings).lower()),
        ]
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            typer.echo(f"{key:<{width}}  {value}")

    run_safely(work)


def parameter_counts(files) -> tuple[dict[str, int], set[str], int]:
    """Parameters per tower, dtypes and bytes, from safetensors headers."""
    import math

    from .weights import read_header

    counts, dtypes, size = {"vision": 0, "text": 0}, set(), 0
    for path in files:
        for key, meta in read_header(path).items():
            if key in ("__metadata__", "__data_start__"):
                continue
            tower = "vision" if "visual." in key else "text"
            counts[tower] += math.prod(meta["shape"])
            dtypes.add(meta["dtype"])
        size += os.path.getsize(path)
    return counts, dtypes, size


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def train(ctx: typer.Context):
    """Train or fine-tune (stages 1-3): `qwen-vl train --config training/configs/stage1.yaml`. See training/README.md."""

    def work():
        from .extras import needs_extras

        with needs_extras("qwen-vl train"):
            from qwen_vl.training.train import main as train_main
        return train_main(ctx.args)

    raise typer.Exit(run_safely(work) or 0)


@app.command(
    name="eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
)
def evaluate(ctx: typer.Context):
    """Run a benchmark: `qwen-vl eval --task textvqa --data DIR --model DIR`. See eval/README.md."""

    def work():
        from .extras import needs_extras

        with needs_extras("qwen-vl eval"):
            from qwen_vl.eval.runner import main as eval_main
        return eval_main(ctx.args)

    raise typer.Exit(run_safely(work) or 0)


@app.command()
def serve(
    model: Model = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(help="Require `Authorization: Bearer KEY` (default: $QWEN_VL_API_KEY, else none).")
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="Model id clients send (default: the hub name or the directory's name).")
    ] = None,
    allowed_media_dir: Annotated[
        list[Path] | None, typer.Option(help="Serve file:// media URLs from under this directory (repeatable).")
    ] = None,
    allow_remote_media: Annotated[
        bool, typer.Option(help="Fetch http(s) media URLs (size-capped, timed out).")
    ] = False,
    max_batch: Annotated[int, typer.Option(min=1, help="Requests decoding together.")] = 16,
    max_queue: Annotated[int, typer.Option(min=0, help="Requests waiting beyond the batch; more get 503.")] = 64,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Most tokens one answer may generate (default: the context).")
    ] = None,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body, base64 media included.")] = 32.0,
    max_image_pixels: Annotated[int, typer.Option(min=784, help="Pixels per image or video frame, at most.")] = 1280
    * 28
    * 28,
    max_request_pixels: Annotated[
        int, typer.Option(min=784, help="Pixels of all images and video frames of one request, at most.")
    ] = 16384 * 28 * 28,
    remote_max_mb: Annotated[float, typer.Option(min=0.001, help="Largest http(s) media download.")] = 20.0,
    remote_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds allowed for an http(s) media download.")
    ] = 10.0,
    device: Device = None,
    dtype: Dtype = None,
    quantize: Quantize = None,
):
    """An OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models) whose concurrent requests
    share decode steps. Needs the serve extra: pip install "qwen-vl[serve]". See docs/serve.md."""

    def work():
        from .loading import BUNDLED_MODEL_NOTICE, is_bundled
        from .serve.options import MIB, ServeOptions
        from .serve.server import run

        if is_bundled(model):
            typer.echo(f"note: {BUNDLED_MODEL_NOTICE}", err=True)
        options = ServeOptions(
            model_name=served_model_name or "",
            api_key=api_key or os.environ.get("QWEN_VL_API_KEY") or None,
            max_body_bytes=int(max_body_mb * MIB),
            max_image_pixels=max_image_pixels,
            max_request_pixels=max_request_pixels,
            max_tokens=max_tokens,
            max_batch=max_batch,
            max_queue=max_queue,
            allowed_media_dirs=tuple(allowed_media_dir or ()),
            allow_remote_media=allow_remote_media,
            remote_max_bytes=int(remote_max_mb * MIB),
            remote_timeout_s=remote_timeout,
        )
        for directory in options.allowed_media_dirs:
            if not directory.is_dir():
                fail(f"--allowed-media-dir {directory}: not a directory")
        run(options, model, host, port, device, dtype, quantize)

    run_safely(work)


# One-shot commands end once their output is flushed: they skip the interpreter's teardown, whose
# unloading of torch costs about 0.5 s on 2 cores (a fifth of `caption`'s budget). The others keep
# the normal exit, which joins worker processes and runs atexit hooks.
QUICK_EXIT_COMMANDS = {"caption", "ask", "ground"}


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in QUICK_EXIT_COMMANDS:
        try:
            app()
            code = 0
        except SystemExit as done:
            code = done.code
        if isinstance(code, str):  # sys.exit("message"): print it and fail, as Python would
            print(code, file=sys.stderr)
            code = 1
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):  # a closed pipe (`| head`) is not an error here
                stream.flush()
        os._exit(code or 0)
    app()


if __name__ == "__main__":
    main()
