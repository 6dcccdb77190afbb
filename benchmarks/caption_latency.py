"""End-to-end latency of `qwen-vl caption` on a 640x480 image, process start included, beside the
same caption done the transformers way (a script, not a test).

Each side runs in fresh processes, as a user would: ours is the installed command; the reference
is a short program that imports transformers, loads the same checkpoint with its tokenizer, image
processor and Qwen2_5_VLForConditionalGeneration in the same dtype, and generates greedily.
Prints each wall time, the medians, their ratio and whether the two captions agree. Target for
the bundled model on a 2-core CPU: ours at most 2.5 s.

    python benchmarks/caption_latency.py [--model DIR] [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = """
import sys
import torch
import transformers
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

image, model_dir, dtype = sys.argv[1:4]
# AutoProcessor would also build the video processor, which needs torchvision: the image half alone
tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
pictures = Qwen2VLImageProcessorPil.from_pretrained(model_dir)
model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
pixels = pictures(images=[Image.open(image).convert("RGB")], return_tensors="pt")
pads = int(pixels["image_grid_thw"].prod()) // pictures.merge_size**2
turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
prompt = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
batch = tokenizer([prompt.replace("<|image_pad|>", "<|image_pad|>" * pads)], return_tensors="pt")
mm_types = (batch["input_ids"] == model.config.image_token_id).int()
with torch.no_grad():
    out = model.generate(**batch, **pixels, mm_token_type_ids=mm_types, do_sample=False, max_new_tokens=64)
text = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
print(f"{image}\\t{text.strip()}")
"""


def timed_runs(side: str, cmd: list[str], runs: int) -> tuple[list[float], str]:
    """Wall times of `runs` fresh processes and the last one's output; exits if one fails."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            sys.exit(f"error: {side} failed: {result.stderr.strip()[-2000:]}")
    return times, result.stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from PIL import Image, ImageDraw

    from qwen_vl.errors import QwenVLError
    from qwen_vl.hardware import default_dtype
    from qwen_vl.loading import resolve_model_dir

    try:
        model_dir = resolve_model_dir(args.model)
    except QwenVLError as err:
        sys.exit(f"error: {err}")
    dtype = str(default_dtype("cpu")).removeprefix("torch.")  # what `qwen-vl caption` picks here
    exe = shutil.which("qwen-vl") or f"{sys.executable} -m qwen_vl.cli"
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "scene.png"
        canvas = Image.new("RGB", (640, 480), (230, 230, 230))
        draw = ImageDraw.Draw(canvas)
        draw.ellipse((60, 180, 180, 300), fill=(220, 30, 30))
        draw.rectangle((460, 170, 580, 290), fill=(30, 60, 220))
        canvas.save(image)
        ours, our_text = timed_runs(
            "qwen-vl caption", exe.split() + ["caption", str(image), "--model", str(model_dir)], args.runs
        )
        theirs, their_text = timed_runs(
            "the transformers reference",
            [sys.executable, "-c", REFERENCE, str(image), str(model_dir), dtype],
            args.runs,
        )
    print(f"ours:         {our_text}\ntransformers: {their_text}\nsame caption: {our_text == their_text}")
    print(f"dtype {dtype}, {args.runs} fresh processes each")
    print("| side | runs (s) | median s | best s |\n|---|---|---|---|")
    for name, times in (("qwen-vl caption", ours), ("transformers", theirs)):
        print(
            f"| {name} | {', '.join(f'{t:.2f}' for t in times)} | {statistics.median(times):.2f} | {min(times):.2f} |"
        )
    ratio = statistics.median(theirs) / statistics.median(ours)
    print(f"median ratio (transformers / ours): {ratio:.2f}x; target: ours <= 2.5 s")


if __name__ == "__main__":
    main()
