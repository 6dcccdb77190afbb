"""Finding and loading a model: the bundled one, a local directory, or a hub name."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CheckpointError, OptionError

BUNDLED_MODEL_DIR = Path(__file__).parent / "assets" / "model"
BUNDLED_MODEL_NOTICE = (
    "the default model is a small demo that knows only a synthetic world of coloured shapes, not real "
    "photos; for real use download Qwen/Qwen2.5-VL-3B-Instruct and pass --model DIR (see the README)"
)


def is_bundled(ref: str | os.PathLike | None) -> bool:
    """Whether `ref` names the bundled demo model (None is its default name)."""
    return ref is None or Path(ref).expanduser().resolve() == BUNDLED_MODEL_DIR.resolve()


def resolve_model_dir(ref: str | os.PathLike | None = None) -> Path:
    """A model directory for `ref`: None = the bundled model; an existing directory; or a hub
    name ORG/NAME, found in the local Hugging Face cache (and downloaded where a network exists,
    unless HF_HUB_OFFLINE=1)."""
    if ref is None:
        if not (BUNDLED_MODEL_DIR / "config.json").is_file():
            raise CheckpointError(
                f"the bundled model is not installed at {BUNDLED_MODEL_DIR}; pass --model DIR "
                "or build it with `bash bundled_model/build.sh`"
            )
        return BUNDLED_MODEL_DIR
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    text = str(ref)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and not path.exists():
        return _from_hub(text)
    raise CheckpointError(f"model directory not found: {ref}")


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    except Exception as err:  # a malformed name, an unreadable cache
        raise CheckpointError(f"{repo_id}: not a usable hub model name ({err.__class__.__name__})") from None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise CheckpointError(f"{repo_id}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise CheckpointError(f"{repo_id}: cannot download ({first_line})") from None


def pick_device(device: str | None = None) -> str:
    """The device to run on: `device` checked against what this torch build and machine offer, or
    cuda where there is one, else cpu."""
    import torch

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise OptionError(f"--device {device}: not a device (use cpu, cuda, cuda:N or mps)") from None
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"--device {device}: cuda requested but this torch has no CUDA or sees no GPU")
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise OptionError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"--device {device}: mps requested but it is not available here")
    elif kind not in ("cpu", "cuda", "mps"):
        raise OptionError(f"--device {device}: {kind} is not supported (use cpu, cuda, cuda:N or mps)")
    return device


def load_model(
    ref: str | os.PathLike | None = None, device: str | None = None, dtype=None, quantize: str | None = None
):
    """(model, processor) for a model reference, for inference; dtype defaults to what the
    device runs fast. `quantize` ("int8" | "int4", CPU only) quantizes the weights as they
    load; a quantized checkpoint (AWQ, or `qwen-vl quantize`) loads as stored either way. On a
    CPU the bf16 layers of a small model are oneDNN-packed, each replacing its original as it loads;
    a large one stays memory-mapped as it is on disk."""
    import torch

    from . import kernels
    from .hardware import as_dtype, cpu_has_bf16_matmul, default_dtype
    from .modeling.model import QwenVLForConditionalGeneration
    from .processing import QwenVLProcessor
    from .quantization.convert import LinearConversion, check_bits, checkpoint_format, stream_model
    from .quantization.packed import onednn_linear_available

    check_bits(quantize)
    model_dir = resolve_model_dir(ref)
    device = pick_device(device)
    dtype = as_dtype(dtype) if dtype is not None else default_dtype(device)
    stored = checkpoint_format(read_quantization_config(model_dir))
    if (quantize or stored) and torch.device(device).type != "cpu":
        what = f"--quantize {quantize}" if quantize else f"{model_dir}: a quantized checkpoint"
        raise OptionError(f"{what} runs on the CPU only (pass --device cpu)")
    cpu_bf16 = torch.device(device).type == "cpu" and dtype == torch.bfloat16
    stream = cpu_bf16 and kernels.ops() is not None
    small = checkpoint_bytes(model_dir) <= PACK_MAX_BYTES
    convert = LinearConversion(
        dtype,
        bits=quantize,
        stored=stored,
        pack=cpu_bf16 and small and not stream and onednn_linear_available(),
        widen=cpu_bf16 and not cpu_has_bf16_matmul(),
    )
    convert = convert if convert.changes_anything else None
    model = QwenVLForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, device=device, convert=convert)
    if stream:
        stream_model(model)
    try:
        processor = QwenVLProcessor.from_pretrained(model_dir, light_tokenizer=True)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{model_dir}: tokenizer or preprocessor config unreadable ({err})") from None
    processor.max_prompt_tokens = model.config.text.max_position_embeddings  # refuse oversized images early
    return model, processor


# Without our kernels (qwen_vl/kernels), oneDNN packing: it reads and rewrites every weight once.
# On small models (the demo's) it makes one-row products 2-3x faster; on full-size ones 5-10%
# faster for about 35 s of loading a 3B (docs/performance.md), so models above this size keep
# their memory-mapped weights.
PACK_MAX_BYTES = 2 * 10**9


def checkpoint_bytes(model_dir: Path) -> int:
    """Bytes of a model directory's weight files (those its index names, or its single file)."""
    from .weights import checkpoint_files

    return sum(path.stat().st_size for path in checkpoint_files(model_dir))


def read_quantization_config(model_dir: Path) -> dict | None:
    """The `quantization_config` entry of a model directory's config.json, if any."""
    import json

    try:
        raw = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # from_pretrained reports an unreadable config
    return raw.get("quantization_config") if isinstance(raw, dict) else None
