"""End-to-end latency of `qwen-vl caption` on a 640x480 image, process start included.

Runs the installed command in fresh processes (as a user would) and prints each wall time and
the best. Target for the bundled model on a 2-core CPU: at most 2.5 s.

    python benchmarks/caption_latency.py [--model DIR] [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from PIL import Image, ImageDraw

    exe = shutil.which("qwen-vl") or f"{sys.executable} -m qwen_vl.cli"
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "scene.png"
        canvas = Image.new("RGB", (640, 480), (230, 230, 230))
        draw = ImageDraw.Draw(canvas)
        draw.ellipse((60, 180, 180, 300), fill=(220, 30, 30))
        draw.rectangle((460, 170, 580, 290), fill=(30, 60, 220))
        canvas.save(image)
        cmd = exe.split() + ["caption", str(image)] + (["--model", args.model] if args.model else [])
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            result = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if result.returncode != 0:
                sys.exit(f"caption failed: {result.stderr.strip()}")
        print(f"output: {result.stdout.strip()}")
        print("runs (s): " + ", ".join(f"{t:.2f}" for t in times))
        print(f"best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s (target <= 2.5 s)")


if __name__ == "__main__":
    main()
