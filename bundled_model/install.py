"""Install a trained checkpoint as the bundled model (`qwen_vl/assets/model`).

Copies the model directory's files (weights, config, tokenizer, processor configs) into a
staging folder beside the target and swaps it in with one rename, so the package never holds
a half-copied model. Refuses a checkpoint that does not load or is larger than the size limit.

    python -m bundled_model.install runs/bundled/stage3/final
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from qwen_vl.errors import OneLineParser, QwenVLError
from qwen_vl.loading import BUNDLED_MODEL_DIR

MAX_MB = 40
FILES = ("*.json", "*.safetensors", "*.jinja", "*.txt")


def install(source: Path, target: Path = BUNDLED_MODEL_DIR, max_mb: float = MAX_MB) -> int:
    from qwen_vl.loading import load_model

    load_model(source)  # refuse what does not load
    files = sorted({p for pattern in FILES for p in source.glob(pattern) if p.is_file()})
    size = sum(p.stat().st_size for p in files) / 1e6
    if size > max_mb:
        raise SystemExit(f"error: {source} holds {size:.1f} MB of model files, over the {max_mb} MB limit")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".model."))
    for path in files:
        shutil.copy2(path, staging / path.name)
        (staging / path.name).chmod(0o644)  # package data is public; temp folders start private
    staging.chmod(0o755)
    old = target.with_name(".model.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    print(f"installed {source} -> {target} ({len(files)} files, {size:.1f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m bundled_model.install", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a trained model directory (e.g. runs/bundled/stage3/final)")
    args = parser.parse_args(argv)

    try:
        return install(args.checkpoint)
    except QwenVLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
